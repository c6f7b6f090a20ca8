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
from flowplane.domain.resources import (
    Kind,
    Ref,
    StoredResource,
    client_spec,
    parse_spec,
    references,
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


@dataclass(frozen=True, slots=True)
class Plan:
    """One validated change: `after` None means delete. `before` None means create."""

    kind: Kind
    name: str
    before: StoredResource | None
    after: StoredResource | None
    # A create of a name that was deleted: the version of that deletion (its history goes on
    # from there), kept so `inverse` can restore it.
    tombstone: int | None = None

    def inverse(self) -> Plan:
        """The plan that undoes this one exactly (tombstones included)."""
        return Plan(self.kind, self.name, self.after, self.before, self.tombstone)


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
    def __init__(self) -> None:
        self._by_kind: dict[Kind, dict[str, StoredResource]] = {k: {} for k in Kind}
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
    def get(self, kind: Kind, name: str) -> StoredResource | None:
        return self._by_kind[kind].get(name)

    def require(self, kind: Kind, name: str, principal: Principal = SYSTEM) -> StoredResource:
        """The resource, if it exists and `principal` may read it; else 404 (another team's
        resource is reported as missing, so its existence does not leak)."""
        res = self.get(kind, name)
        if res is None or not principal.can_read_team(res.team):
            raise NotFound(f"{kind.label} {name!r} does not exist")
        return res

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
        items = self._by_kind[kind].values()
        if team is not None:
            items = [r for r in items if r.team == team]  # type: ignore[assignment]
        return sorted(items, key=lambda r: r.name)

    def all(self) -> Iterator[StoredResource]:
        for kind in Kind:
            yield from self._by_kind[kind].values()

    def referrers(self, kind: Kind, name: str) -> list[Ref]:
        return sorted(self._referrers.get(Ref(kind, name), ()), key=lambda r: (r.kind, r.name))

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
        self._check_write(principal, kind, name, model.team)  # type: ignore[attr-defined]
        if self.get(kind, name) is not None:
            raise Conflict(f"{kind.label} {name!r} already exists")
        self._check_quota(kind, model.team)  # type: ignore[attr-defined]
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
        return Plan(kind, name, None, after, tombstone)

    def plan_replace(
        self,
        kind: Kind,
        name: str,
        body: Any,
        if_match: str | None,
        source: str | None = None,
        now: datetime | None = None,
        principal: Principal = SYSTEM,
    ) -> Plan:
        before = self.require(kind, name, principal)
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
        model = parse_spec(kind, body)
        spec = client_spec(body)
        if source != "platform":
            check_native_write(self.apis, before, spec)
        if model.team != before.team:  # type: ignore[attr-defined]
            self._check_write(principal, kind, name, model.team)  # type: ignore[attr-defined]
            self._check_quota(kind, model.team)  # type: ignore[attr-defined]
        after = replace(
            before,
            team=model.team,  # type: ignore[attr-defined]
            version=before.version + 1,
            source=source or before.source,
            spec=spec,
            updated_at=now or datetime.now(UTC),
            model=model,
        )
        if after.spec_bytes > before.spec_bytes or after.team != before.team:
            self.check_storage(after.team, after.spec_bytes, replacing=before)
        self._check(after, principal)
        return Plan(kind, name, before, after)

    def plan_patch(
        self,
        kind: Kind,
        name: str,
        patch: Any,
        if_match: str | None,
        source: str | None = None,
        principal: Principal = SYSTEM,
    ) -> Plan:
        if not isinstance(patch, dict):
            raise BadRequest("a PATCH body is a JSON object (RFC 7386 merge patch)")
        before = self.require(kind, name, principal)
        return self.plan_replace(
            kind, name, merge_patch(before.spec, patch), if_match, source=source,
            principal=principal,
        )  # fmt: skip

    def plan_delete(
        self,
        kind: Kind,
        name: str,
        if_match: str | None,
        principal: Principal = SYSTEM,
        source: str = "native",
    ) -> Plan:
        before = self.require(kind, name, principal)
        self._check_write(principal, kind, name, before.team)
        if not etag_matches(if_match, before):
            raise PreconditionFailed(
                f"{kind.label} {name!r} is at version {before.version}; If-Match was {if_match}"
            )
        why = self.protected.get(Ref(kind, name))
        if why is not None:
            raise Conflict(f"{kind.label} {name!r} cannot be deleted: {why}")
        if source != "platform":
            check_native_write(self.apis, before, None)
        users = self.referrers(kind, name)
        if users:
            raise Conflict(
                f"{kind.label} {name!r} is still referenced by " + ", ".join(str(u) for u in users),
                [FieldProblem("name", f"referenced by {u}") for u in users],
            )
        return Plan(kind, name, before, None)

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

        missing = sorted(
            (r for r in references(res.kind, res.model) if not usable(r)),
            key=lambda r: (r.kind, r.name),
        )
        if missing:
            raise BadRequest(
                f"{res.kind.label} {res.name!r} references what does not exist"
                f"{'' if res.team is None else f' in team {res.team!r} or shared'}: "
                + ", ".join(str(m) for m in missing),
                [FieldProblem("(references)", f"{m} does not exist") for m in missing],
            )
        if res.kind is Kind.LISTENER:
            self._check_address(res)

    def _check_address(self, res: StoredResource) -> None:
        new = res.model
        assert isinstance(new, Listener)
        if new.api_listener or new.address is None:
            return
        for other in self._by_kind[Kind.LISTENER].values():
            old = other.model
            assert isinstance(old, Listener)
            if other.name == res.name or old.address is None or old.port != new.port:
                continue
            same_family = (
                ipaddress.ip_address(old.address).version
                == ipaddress.ip_address(new.address).version
            )
            if old.address == new.address or (
                same_family and (_wildcard(old.address) or _wildcard(new.address))
            ):
                raise Conflict(
                    f"listener {other.name!r} already uses {old.address}:{old.port}",
                    [FieldProblem("port", f"{new.address}:{new.port} is taken by {other.name!r}")],
                )

    # --- applying ------------------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """Make a persisted plan visible. Never fails (it was checked when planned)."""
        ref = Ref(plan.kind, plan.name)
        for old in self._refs.pop(ref, frozenset()):
            users = self._referrers.get(old)
            if users is not None:
                users.discard(ref)
                if not users:
                    del self._referrers[old]
        if plan.after is None:
            self._by_kind[plan.kind].pop(plan.name, None)
            if plan.before is not None:
                self.tombstones[plan.kind, plan.before.team, plan.name] = (
                    plan.tombstone if plan.tombstone is not None else plan.before.version + 1
                )
        else:
            if plan.before is None:
                self.tombstones.pop((plan.kind, plan.after.team, plan.name), None)
            self._by_kind[plan.kind][plan.name] = plan.after
            refs = frozenset(references(plan.kind, plan.after.model))
            self._refs[ref] = refs
            for r in refs:
                self._referrers.setdefault(r, set()).add(ref)

    def load(self, res: StoredResource) -> None:
        """Start-up: add a resource read from storage (references are checked after all load)."""
        self.apply(Plan(res.kind, res.name, None, res))

    def dangling(self) -> list[tuple[Ref, Ref]]:
        """(user, missing) pairs: should be empty for any state storage gave us."""
        return sorted(
            ((user, r) for user, refs in self._refs.items() for r in refs
             if self.get(r.kind, r.name) is None),
            key=lambda p: (p[0].kind, p[0].name, p[1].kind, p[1].name),
        )  # fmt: skip
