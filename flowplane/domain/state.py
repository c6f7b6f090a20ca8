"""The in-memory configuration state and the rules a change must pass (no I/O).

The config actor owns the one `ConfigState`. For each command it asks the state to *plan* the
change (validation, referential checks, conflicts, If-Match); the plan is persisted; only then
is it *applied* to memory. Readers (REST GETs) read the state synchronously between the actor's
steps, so they always see a committed, consistent state.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from flowplane.domain.apis import ApiRecord, check_native_write
from flowplane.domain.auth import SYSTEM, Principal
from flowplane.domain.listener import Listener
from flowplane.domain.naming import (
    SHARED,
    display,
    rewrite_refs,
    split_key,
    team_label,
    xds_name,
)
from flowplane.domain.resources import (
    Kind,
    Ref,
    StoredResource,
    client_spec,
    parse_spec,
)
from flowplane.errors import (
    BadRequest,
    Conflict,
    FieldProblem,
    Forbidden,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
)

QUOTA_KEYS = {
    Kind.CLUSTER: "maxClusters",
    Kind.ROUTE_CONFIG: "maxRouteConfigs",
    Kind.LISTENER: "maxListeners",
}


NO_TOMBSTONE = 0  # a Plan's `tombstone` when undoing a create of a name never deleted before


@dataclass(frozen=True, slots=True)
class Plan:
    """One validated change of the resource `key` (its xDS name, flowplane.domain.naming):
    `after` None means delete. `before` None means create."""

    kind: Kind
    key: str
    before: StoredResource | None
    after: StoredResource | None
    # A create of a name that was deleted: the version of that deletion (its history goes on
    # from there), kept so `inverse` can restore it.
    tombstone: int | None = None

    def inverse(self) -> Plan:
        """The plan that undoes this one exactly (tombstones included): undoing a create
        restores the tombstone it replaced, or none (`NO_TOMBSTONE`) — not the one a delete
        would leave, which made the next create of the name skip versions."""
        if self.before is None and self.tombstone is None:
            return Plan(self.kind, self.key, self.after, None, NO_TOMBSTONE)
        return Plan(self.kind, self.key, self.after, self.before, self.tombstone)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class _Versioned(Protocol):
    @property
    def etag(self) -> str: ...


def etag_matches(if_match: str | None, current: _Versioned) -> bool:
    """RFC 9110 If-Match against a resource's ETag (`*` matches anything; weak tags compared by
    their value): the one If-Match check of every versioned thing."""
    if if_match is None:
        return True
    for tag in (t.strip() for t in if_match.split(",")):
        if tag == "*" or tag.removeprefix("W/") == current.etag:
            return True
    return False


def _wildcard(addr: str) -> bool:
    return ipaddress.ip_address(addr).is_unspecified


class ConfigState:
    """Resources by kind and key (`<team>/<name>`, or the bare name of a shared one): names are
    unique within a team (api.md Conventions)."""

    def __init__(self) -> None:
        self._by_kind: dict[Kind, dict[str, StoredResource]] = {k: {} for k in Kind}
        # kind -> name -> the teams (None: shared) that have a resource of that name
        self._teams_of: dict[Kind, dict[str, set[str | None]]] = {k: {} for k in Kind}
        self._refs: dict[Ref, frozenset[Ref]] = {}
        self._referrers: dict[Ref, set[Ref]] = {}
        self.serial = 0  # +1 per committed change (kept by the config actor)
        self.protected: dict[Ref, str] = {}  # resources that cannot be deleted, and why
        self.team_quotas: dict[str, dict[str, Any]] = {}  # team -> quotas (kept by the actor)
        self.apis: dict[str, ApiRecord] = {}  # Platform API id -> its definition
        # Deleted resources and APIs whose history is kept: (kind, team, name) -> the version
        # of the deletion, and API id -> (team, version of the deletion). A re-created name
        # continues from there, so (kind, team, name, version) names one version for ever.
        self.tombstones: dict[tuple[Kind, str | None, str], int] = {}
        self.api_tombstones: dict[str, tuple[str | None, int]] = {}

    # --- reading -------------------------------------------------------------------------
    def get(self, kind: Kind, key: str) -> StoredResource | None:
        """The resource of `kind` whose key is `key` (`<team>/<name>`, or a shared one's name)."""
        return self._by_kind[kind].get(key)

    def require(
        self,
        kind: Kind,
        name: str,
        principal: Principal = SYSTEM,
        team: str | None = None,
    ) -> StoredResource:
        """The resource `name` that `principal` may read: of `team` when given (`shared` for a
        shared one: the `?team=` of a `.../{name}` path), else the only one of that name the
        caller can see — 400 listing the teams when it can see several. 404 if there is none:
        another team's resource is reported as missing, so its existence does not leak."""
        if team is not None:
            owner = None if team == SHARED else team
            res = self.get(kind, xds_name(owner, name))
            if res is None or not principal.can_read_team(res.team):
                raise NotFound(f"{kind.label} {name!r} does not exist in {_team_words(owner)}")
            return res
        teams = [t for t in self._teams_of[kind].get(name, ()) if principal.can_read_team(t)]
        if not teams:
            raise NotFound(f"{kind.label} {name!r} does not exist")
        if len(teams) > 1:
            labels = sorted(team_label(t) for t in teams)
            raise BadRequest(
                f"there are {len(teams)} {kind.label}s named {name!r} you can see (teams "
                f"{', '.join(labels)}): say which with ?team=",
                [FieldProblem("team", f"one of {', '.join(labels)}")],
            )
        found = self.get(kind, xds_name(teams[0], name))
        assert found is not None
        return found

    def teams_of(self, kind: Kind, name: str) -> frozenset[str | None]:
        """The teams (None: shared) that have a resource `name` of `kind`."""
        return frozenset(self._teams_of[kind].get(name, ()))

    def require_api(self, api_id: str, principal: Principal = SYSTEM) -> ApiRecord:
        """The API definition, if it exists and `principal` may read it; else 404 (as
        `require`: another team's API is reported as missing)."""
        api = self.apis.get(api_id)
        if api is None or not principal.can_read_team(api.team):
            raise NotFound(f"API {api_id!r} does not exist")
        return api

    def visible(
        self, kind: Kind, principal: Principal, team: str | None = None
    ) -> list[StoredResource]:
        """What `principal` may read of `kind`, optionally of one team, sorted by name."""
        return [
            r for r in self.list_resources(kind, team)
            if principal.can_read_team(r.team)
        ]  # fmt: skip

    def list_resources(self, kind: Kind, team: str | None = None) -> list[StoredResource]:
        """Every resource of `kind` (of `team` when given; `shared`: the shared ones), sorted
        by name, then team (shared first)."""
        items = self._by_kind[kind].values()
        if team is not None:
            owner = None if team == SHARED else team
            items = [r for r in items if r.team == owner]  # type: ignore[assignment]
        return sorted(items, key=lambda r: (r.name, r.team or ""))

    def all(self) -> Iterator[StoredResource]:
        for kind in Kind:
            yield from self._by_kind[kind].values()

    def referrers(self, kind: Kind, key: str) -> list[Ref]:
        return sorted(self._referrers.get(Ref(kind, key), ()), key=lambda r: (r.kind, r.name))

    def count(self, kind: Kind) -> int:
        return len(self._by_kind[kind])

    # --- planning ------------------------------------------------------------------------
    def plan_create(
        self,
        kind: Kind,
        body: Any,
        source: str,
        now: datetime | None = None,
        principal: Principal = SYSTEM,
        owner: str | None = None,
    ) -> Plan:
        if isinstance(body, dict) and "team" not in body and len(principal.teams) == 1:
            # A token bound to one team creates in that team unless told otherwise.
            body = {**body, "team": next(iter(principal.teams))}
        model = parse_spec(kind, body)
        name = model.name  # type: ignore[attr-defined]
        team = model.team  # type: ignore[attr-defined]
        self._check_write(principal, kind, name, team)
        if self.get(kind, xds_name(team, name)) is not None:
            # Only a name in the same team conflicts, and the caller may write that team: this
            # tells it nothing about other teams (a name another team uses is no error).
            raise Conflict(f"{kind.label} {name!r} already exists in {_team_words(team)}")
        self._check_quota(kind, team)
        now = now or datetime.now(UTC)
        tombstone = self.tombstones.get((kind, model.team, name))  # type: ignore[attr-defined]
        after = StoredResource(
            kind=kind,
            name=name,
            team=model.team,  # type: ignore[attr-defined]
            version=(tombstone or 0) + 1,
            source=source,
            spec=client_spec(body),
            created_at=now,
            updated_at=now,
            model=model,
            owner=owner,
        )
        self.check_storage(after.team, after.spec_bytes)
        self._check(after, principal)
        return Plan(kind, after.key, None, after, tombstone)

    def plan_replace(
        self,
        kind: Kind,
        name: str,
        body: Any,
        if_match: str | None,
        source: str | None = None,
        now: datetime | None = None,
        principal: Principal = SYSTEM,
        team: str | None = None,
    ) -> Plan:
        before = self.require(kind, name, principal, team)
        self._check_write(principal, kind, name, before.team)
        if not etag_matches(if_match, before):
            raise PreconditionFailed(
                f"{kind.label} {name!r} is at version {before.version}; If-Match was {if_match}"
            )
        if isinstance(body, dict):
            if "name" not in body:
                body = {"name": name, **body}
            elif body["name"] != name:
                raise BadRequest(
                    "a resource cannot be renamed",
                    [FieldProblem("name", f"must be {name!r} (the name in the URL)")],
                )
            if "team" not in body and before.team is not None:
                # The path (and ?team=) chose the resource: a body without `team` keeps it there.
                body = {**body, "team": before.team}
        model = parse_spec(kind, body)
        spec = client_spec(body)
        if model.team != before.team:  # type: ignore[attr-defined]
            raise _cannot_move(before)
        if source != "platform":
            check_native_write(self.apis, before, spec)
        after = replace(
            before,
            version=before.version + 1,
            source=source or before.source,
            spec=spec,
            updated_at=now or datetime.now(UTC),
            model=model,
        )
        if after.spec_bytes > before.spec_bytes:
            self.check_storage(after.team, after.spec_bytes, replacing=before)
        self._check(after, principal)
        return Plan(kind, before.key, before, after)

    def plan_patch(
        self,
        kind: Kind,
        name: str,
        patch: Any,
        if_match: str | None,
        source: str | None = None,
        principal: Principal = SYSTEM,
        team: str | None = None,
    ) -> Plan:
        if not isinstance(patch, dict):
            raise BadRequest("a PATCH body is a JSON object (RFC 7386 merge patch)")
        before = self.require(kind, name, principal, team)
        if "team" in patch and patch["team"] != before.team:
            raise _cannot_move(before)
        return self.plan_replace(
            kind, name, merge_patch(before.spec, patch), if_match, source=source,
            principal=principal, team=team_label(before.team),
        )  # fmt: skip

    def plan_delete(
        self,
        kind: Kind,
        name: str,
        if_match: str | None,
        principal: Principal = SYSTEM,
        source: str = "native",
        team: str | None = None,
    ) -> Plan:
        before = self.require(kind, name, principal, team)
        self._check_write(principal, kind, name, before.team)
        if not etag_matches(if_match, before):
            raise PreconditionFailed(
                f"{kind.label} {name!r} is at version {before.version}; If-Match was {if_match}"
            )
        why = self.protected.get(before.ref)
        if why is not None:
            raise Conflict(f"{kind.label} {name!r} cannot be deleted: {why}")
        if source != "platform":
            check_native_write(self.apis, before, None)
        users = self.referrers(kind, before.key)
        if users:
            # A shared resource can be used by several teams' resources: name only those the
            # caller can read, and count the others.
            seen = [u for u in users if self._readable(u, principal)]
            hidden = len(users) - len(seen)
            names = [str(u) for u in seen]
            if hidden:
                names.append(f"{hidden} resource(s) of other teams")
            raise Conflict(
                f"{kind.label} {name!r} is still referenced by " + ", ".join(names),
                [FieldProblem("name", f"referenced by {n}") for n in names],
            )
        return Plan(kind, before.key, before, None)

    def _readable(self, ref: Ref, principal: Principal) -> bool:
        res = self.get(ref.kind, ref.name)
        return res is not None and principal.can_read_team(res.team)

    def _check_write(self, principal: Principal, kind: Kind, name: str, team: str | None) -> None:
        if not principal.can_write_team(team):
            if team is None:
                raise Forbidden(
                    f"only admins change shared (team-less) resources; give {kind.label} "
                    f"{name!r} a team you belong to"
                )
            raise Forbidden(f"this token cannot write resources of team {team!r}")

    def storage_used(self, team: str, *, without: object = None) -> int:
        """The bytes of `team`'s stored JSON: its resources' and APIs' specs (`without`: a
        resource or API record to leave out, the one a write replaces)."""
        resources = sum(
            r.spec_bytes for kind in Kind for r in self._by_kind[kind].values()
            if r.team == team and r is not without
        )  # fmt: skip
        apis = sum(a.spec_bytes for a in self.apis.values() if a.team == team and a is not without)
        return resources + apis

    def check_storage(self, team: str | None, adding: int, *, replacing: object = None) -> None:
        """403 quota_exceeded if storing `adding` bytes (in place of `replacing`) takes `team`
        over its maxStorageBytes."""
        if team is None:
            return
        limit = self.team_quotas.get(team, {}).get("maxStorageBytes")
        if limit is None:
            return
        total = self.storage_used(team, without=replacing) + adding
        if total > limit:
            raise QuotaExceeded(
                f"team {team!r} would store {total} bytes; its quota is {limit} (maxStorageBytes)"
            )

    def _check_quota(self, kind: Kind, team: str | None) -> None:
        if team is None or kind not in QUOTA_KEYS:
            return
        limit = self.team_quotas.get(team, {}).get(QUOTA_KEYS[kind])
        if limit is not None:
            used = sum(1 for r in self._by_kind[kind].values() if r.team == team)
            if used >= limit:
                raise QuotaExceeded(f"team {team!r} has reached its quota of {limit} {kind.label}s")

    def _check(self, res: StoredResource, principal: Principal = SYSTEM) -> None:
        """Referential integrity and conflicts for a resource about to be stored.

        A resource of team T may reference resources of T or shared ones only (so each team's
        data planes receive a self-contained configuration); what `principal` may not read is
        reported as missing (no existence leak)."""

        def usable(r: Ref) -> bool:
            target = self.get(r.kind, r.name)
            if target is None:
                return False
            if res.team is None and target.owner is not None:
                # A shared resource (the shared gateway's route config and listener) may use a
                # team's upstreams that a Platform API made: that is how a shared-mode API is
                # served. What a team's data planes receive stays self-contained.
                return True
            return principal.can_read_team(target.team) and (
                target.team is None or target.team == res.team
            )

        missing = [
            f"{r.kind.label} {display(r.name, res.team)!r}"
            for r in sorted(res.refs, key=lambda r: (r.kind, r.name))
            if not usable(r)
        ]
        if missing:
            raise BadRequest(
                f"{res.kind.label} {res.name!r} references what does not exist"
                f"{'' if res.team is None else f' in team {res.team!r} or shared'}: "
                + ", ".join(missing),
                [FieldProblem("(references)", f"{m} does not exist") for m in missing],
            )
        if res.kind is Kind.LISTENER:
            self._check_address(res, principal)

    def _check_address(self, res: StoredResource, principal: Principal) -> None:
        new = res.model
        assert isinstance(new, Listener)
        if new.api_listener or new.address is None:
            return
        for other in self._by_kind[Kind.LISTENER].values():
            old = other.model
            assert isinstance(old, Listener)
            if other.key == res.key or old.address is None or old.port != new.port:
                continue
            same_family = (
                ipaddress.ip_address(old.address).version
                == ipaddress.ip_address(new.address).version
            )
            if old.address == new.address or (
                same_family and (_wildcard(old.address) or _wildcard(new.address))
            ):
                # Addresses are physical, unique across teams; what the caller cannot read is
                # not named (api.md Conventions).
                taken = f"{new.address}:{new.port}"
                if not principal.can_read_team(other.team):
                    raise Conflict(
                        f"{taken} is already in use by another listener",
                        [FieldProblem("port", f"{taken} is taken")],
                    )
                who = f"listener {other.name!r} of {_team_words(other.team)}"
                raise Conflict(
                    f"{who} already uses {old.address}:{old.port}",
                    [FieldProblem("port", f"{taken} is taken by {who}")],
                )

    # --- applying ------------------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """Make a persisted plan visible. Never fails (it was checked when planned)."""
        ref = Ref(plan.kind, plan.key)
        for old in self._refs.pop(ref, frozenset()):
            users = self._referrers.get(old)
            if users is not None:
                users.discard(ref)
                if not users:
                    del self._referrers[old]
        gone = self._by_kind[plan.kind].pop(plan.key, None)
        if gone is not None:
            teams = self._teams_of[plan.kind].get(gone.name)
            if teams is not None:
                teams.discard(gone.team)
                if not teams:
                    del self._teams_of[plan.kind][gone.name]
        if plan.after is None:
            if plan.before is not None:
                deleted = (plan.kind, plan.before.team, plan.before.name)
                if plan.tombstone == NO_TOMBSTONE:
                    self.tombstones.pop(deleted, None)
                else:
                    self.tombstones[deleted] = (
                        plan.tombstone if plan.tombstone is not None else plan.before.version + 1
                    )
        else:
            if plan.before is None:
                self.tombstones.pop((plan.kind, plan.after.team, plan.after.name), None)
            self._by_kind[plan.kind][plan.key] = plan.after
            self._teams_of[plan.kind].setdefault(plan.after.name, set()).add(plan.after.team)
            refs = plan.after.refs
            self._refs[ref] = refs
            for r in refs:
                self._referrers.setdefault(r, set()).add(ref)

    def load(self, res: StoredResource) -> None:
        """Start-up: add a resource read from storage (references are checked after all load)."""
        self.apply(Plan(res.kind, res.key, None, res))

    def repair_legacy_references(self) -> list[StoredResource]:
        """Start-up, once: carry references stored before names were per team (migration 0005)
        into the new rules, and return the resources rewritten (already applied here; the
        caller persists them). Names were unique across teams then, so what a bare name meant
        is known: in a team's resource, a name the team does not have was the shared one
        (now `shared/<name>`); in a shared resource (the shared gateway), a name no shared
        resource has was the one team resource of that name (now `<team>/<name>`). Anything
        else is left for `dangling` to report."""
        fixes: dict[Ref, dict[str, str]] = {}
        for user, missing in self.dangling():
            res = self.get(user.kind, user.name)
            assert res is not None
            team, name = split_key(missing.name)
            if res.team is not None and team == res.team:
                if self.get(missing.kind, name) is not None:
                    fixes.setdefault(user, {})[name] = f"{SHARED}/{name}"
            elif res.team is None and team is None:
                owners = [t for t in self._teams_of[missing.kind].get(name, ()) if t is not None]
                if len(owners) == 1:
                    fixes.setdefault(user, {})[name] = xds_name(owners[0], name)
        repaired = []
        for user, mapping in sorted(fixes.items(), key=lambda f: (f[0].kind, f[0].name)):
            res = self.get(user.kind, user.name)
            assert res is not None
            spec = rewrite_refs(res.model, res.spec, lambda r, m=mapping: m.get(r, r))  # type: ignore[misc]
            if spec is None:
                continue
            new = replace(res, spec=spec, model=parse_spec(res.kind, spec))
            self.apply(Plan(res.kind, res.key, res, new))
            repaired.append(new)
        return repaired

    def dangling(self) -> list[tuple[Ref, Ref]]:
        """(user, missing) pairs: should be empty for any state storage gave us."""
        return sorted(
            ((user, r) for user, refs in self._refs.items() for r in refs
             if self.get(r.kind, r.name) is None),
            key=lambda p: (p[0].kind, p[0].name, p[1].kind, p[1].name),
        )  # fmt: skip


def _team_words(team: str | None) -> str:
    return "the shared resources" if team is None else f"team {team!r}"


def _cannot_move(before: StoredResource) -> BadRequest:
    # References resolve inside a team: moving a resource would re-point or break them.
    must = "absent or null" if before.team is None else repr(before.team)
    return BadRequest(
        "a resource cannot move to another team (create it in the other team, then delete "
        "this one)",
        [FieldProblem("team", f"must be {must}")],
    )
