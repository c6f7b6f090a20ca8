"""The config-actor transaction of the Platform API: one API definition and everything it
generates, changed in one transaction (api.md "Platform API", Materialisation).

`ApplyApi` plans the definition's change and the Native changes it implies against the committed
state: the API's clusters, its virtual host in the shared gateway's route config (shared mode) or
its own route config and listener (isolation), the gateway listener's filter chain when the set
of shared-mode providers changes, and the deletion of what the API no longer generates. Every
Native change goes through the same `ConfigState` planning as a Native write (references, team
rules, quotas, listener addresses) and the same extra validation (the xDS translator), with
`source: platform` and the API as owner. The steps are applied to memory one by one while
planning, so each sees the previous ones, and undone before returning: if any step is refused the
whole command is refused and nothing has changed. Unchanged resources are not written (they keep
their versions), so re-importing the same document changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from flowplane.actors.config import PlanContext, Txn, TxnPlan, change_of, row_of
from flowplane.auth.audit import audit_row, history_row, resource_history
from flowplane.domain import schema
from flowplane.domain.api_definition import parse_api_definition
from flowplane.domain.apis import (
    GENERATED_KEYS,
    SCHEMA_VERSIONS,
    VHOSTS,
    ApiRecord,
    api_client_spec,
    upgrade_generated,
)
from flowplane.domain.auth import SYSTEM, Principal
from flowplane.domain.common import parse
from flowplane.domain.naming import SHARED, rewrite_refs, team_label, xds_name
from flowplane.domain.resources import Kind, StoredResource
from flowplane.domain.route import VirtualHost
from flowplane.domain.state import ConfigState, Plan, etag_matches, merge_patch
from flowplane.errors import (
    BadRequest,
    Conflict,
    FieldProblem,
    FlowplaneError,
    Forbidden,
    Internal,
    PreconditionFailed,
    QuotaExceeded,
)
from flowplane.observability.metrics import NO_TEAM
from flowplane.platform.materialise import gateway_http_filters, materialise
from flowplane.storage.base import Delete, DeleteRow, Repository, Row, Upsert, Write

ApiOp = Literal["create", "replace", "patch", "delete"]
ORDER = (Kind.CLUSTER, Kind.ROUTE_CONFIG, Kind.LISTENER)  # creates/updates; deletes reversed


@dataclass(frozen=True, slots=True)
class Gateway:
    """The shared gateway that shared-mode APIs join (None: there is none, isolation only)."""

    listener: str
    route_config: str


@dataclass(frozen=True, slots=True)
class NativeChange:
    """One Native resource an API write creates, updates or deletes (for dry runs and audit)."""

    action: Literal["create", "update", "delete"]
    kind: Kind
    name: str
    spec: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "kind": self.kind.value,
            "name": self.name,
            "spec": self.spec,
        }


@dataclass(frozen=True, slots=True)
class ApiOutcome:
    """What an API write did (or, on a dry run, would do)."""

    api: ApiRecord | None  # None after a delete
    changes: tuple[NativeChange, ...]
    created: bool = False


@dataclass
class _Steps:
    """Native plans applied to memory one by one while planning (each sees the previous)."""

    state: ConfigState
    validate: Callable[[Kind, BaseModel], object] | None
    plans: list[Plan] = field(default_factory=list)
    changes: list[NativeChange] = field(default_factory=list)

    def add(self, plan: Plan, action: Literal["create", "update", "delete"]) -> None:
        if plan.after is not None and self.validate is not None:
            self.validate(plan.kind, plan.after.xds_model)
        self.state.apply(plan)
        self.plans.append(plan)
        subject = plan.after or plan.before
        assert subject is not None
        self.changes.append(
            NativeChange(action, plan.kind, subject.name, plan.after.spec if plan.after else None)
        )

    def undo(self) -> None:
        for plan in reversed(self.plans):
            self.state.apply(plan.inverse())

    def redo(self) -> None:
        for plan in self.plans:
            self.state.apply(plan)


class ApplyApi(Txn):
    """Create, replace, merge-patch or delete one API definition with what it generates."""

    logged = True

    def __init__(
        self,
        op: ApiOp,
        api_id: str | None,
        body: Any,
        if_match: str | None,
        principal: Principal,
        gateway: Gateway | None,
        *,
        dry_run: bool = False,
    ) -> None:
        super().__init__()
        self.op, self.api_id, self.body, self.if_match = op, api_id, body, if_match
        self.principal, self.gateway, self.dry_run = principal, gateway, dry_run
        # What the API's audit and history rows call this write (a rollback says so).
        self.action: str | None = None

    def describe(self) -> str:
        what = "dry run of " if self.dry_run else ""
        return f"{what}{self.op} API {self.api_id or '(new)'} by {self.principal.name}"

    # -- the definition ---------------------------------------------------------------------
    def _after(
        self, state: ConfigState, before: ApiRecord | None, now: datetime
    ) -> ApiRecord | None:
        p = self.principal
        if self.op == "delete":
            return None
        body = self.body
        if self.op == "patch":
            if not isinstance(body, dict):
                raise BadRequest("a PATCH body is a JSON object (RFC 7386 merge patch)")
            assert before is not None
            body = merge_patch(before.spec, body)
        if isinstance(body, dict) and "team" not in body:
            if before is not None:
                body = {**body, "team": before.team}
            elif len(p.teams) == 1:
                body = {**body, "team": next(iter(p.teams))}
        spec = api_client_spec(body)
        model = parse_api_definition(spec)
        team: str | None = model.team
        name: str = model.name
        if not p.can_write_team(team):
            if team is None:
                raise Forbidden("only admins manage shared (team-less) APIs; give the API a team")
            raise Forbidden(f"this token cannot write APIs of team {team!r}")
        if before is not None:
            if name != before.name:
                raise BadRequest(
                    "an API cannot be renamed", [FieldProblem("name", f"must be {before.name!r}")]
                )
            if team != before.team:
                raise BadRequest(
                    "an API cannot move to another team",
                    [FieldProblem("team", f"must be {before.team!r}")],
                )
            if _isolated(before.model) and not _isolated(model):
                raise BadRequest(
                    "listener isolation cannot be switched off once on",
                    [FieldProblem("listener.isolation", "must stay true")],
                )
        for other in state.apis.values():
            if before is not None and other.id == before.id:
                continue
            if other.team == team and other.name == name:
                raise Conflict(
                    f"API {name!r} already exists" + (f" in team {team!r}" if team else "")
                )
            if other.model.domain == model.domain:
                owner = other.label if p.can_read_team(other.team) else "another team's API"
                raise Conflict(
                    f"domain {model.domain!r} is taken by {owner}",
                    [FieldProblem("domain", "taken")],
                )
        if before is None and team is not None:
            limit = state.team_quotas.get(team, {}).get("maxApis")
            used = sum(1 for a in state.apis.values() if a.team == team)
            if limit is not None and used >= limit:
                raise QuotaExceeded(f"team {team!r} has reached its quota of {limit} APIs")
        if not _isolated(model) and self.gateway is None:
            raise BadRequest(
                "there is no shared gateway (FLOWPLANE_DEFAULT_GATEWAY is off): set"
                " listener.isolation to true",
                [FieldProblem("listener.isolation", "must be true without a shared gateway")],
            )
        if team is not None:
            size = len(json.dumps(spec, separators=(",", ":")).encode())
            if before is None or size > before.spec_bytes:
                state.check_storage(team, size, replacing=before)
        api_id = before.id if before is not None else (self.api_id or str(uuid.uuid4()))
        # A re-created API (a rollback of a deleted one) goes on from its deletion's version.
        deleted = state.api_tombstones.get(api_id, (None, 0))[1] if before is None else 0
        return ApiRecord(
            id=api_id, name=name, team=team,
            version=before.version + 1 if before else deleted + 1,
            spec=spec, generated={}, created_at=before.created_at if before else now,
            updated_at=now, model=model,
        )  # fmt: skip

    # -- the plan -------------------------------------------------------------------------
    def plan(self, ctx: PlanContext) -> TxnPlan:
        state, p = ctx.state, self.principal
        now = datetime.now(UTC)
        before = None
        if self.op != "create":
            assert self.api_id is not None
            before = state.require_api(self.api_id, p)
            if not p.can_write_team(before.team):
                raise Forbidden(f"this token cannot write APIs of team {before.team!r}")
            if not etag_matches(self.if_match, before):
                raise PreconditionFailed(
                    f"API {before.name!r} is at version {before.version};"
                    f" If-Match was {self.if_match}"
                )
        after = self._after(state, before, now)
        steps = _Steps(state, ctx.validate)
        try:
            generated = self._materialise(state, steps, before, after)
        except BaseException:
            steps.undo()
            raise
        if after is not None:
            after = replace(after, generated=generated)
        # The shared gateway's filter chain follows the set of shared-mode APIs.
        others = {k: v for k, v in state.apis.items() if before is None or k != before.id}
        if after is not None:
            others[after.id] = after
        try:
            self._gateway_listener(state, steps, others)
            # Deletes last: the gateway listener may have named a JWKS cluster this API no
            # longer makes (a reference blocks the delete until the listener drops it).
            self._delete_unmade(state, steps, before, generated)
        except BaseException:
            steps.undo()
            raise
        steps.undo()  # memory back to the committed state; `apply` redoes it after the commit
        outcome = ApiOutcome(after, tuple(steps.changes), created=before is None)
        if self.dry_run:
            return TxnPlan([], lambda: None, outcome)
        subject = after or before
        assert subject is not None
        writes: list[Write] = []
        for plan, ch in zip(steps.plans, steps.changes, strict=True):
            writes.append(
                Upsert(row_of(plan.after)) if plan.after else Delete(plan.kind.value, plan.key)
            )
            writes.append(audit_row(
                p, ch.action, ch.kind.value, ch.name, (plan.after or plan.before).team,  # type: ignore[union-attr]
                plan.before.spec if plan.before else None, ch.spec,
            ))  # fmt: skip
            writes.append(resource_history(p, ch.action, plan))
        writes.append(
            Row("apis", after.id, after.row_values()) if after else DeleteRow("apis", subject.id)
        )
        api_action = self.action or (
            "create" if before is None else ("delete" if after is None else "update")
        )
        writes.append(audit_row(
            p, api_action, "api", subject.id, subject.team,
            before.to_json() if before else None, after.to_json() if after else None,
        ))  # fmt: skip
        writes.append(
            history_row(p, api_action, "api", after.team, after.id, after.version, after.spec,
                        source="platform")
            if after is not None
            else history_row(p, "delete", "api", subject.team, subject.id, subject.version + 1,
                             None, source="platform")
        )  # fmt: skip
        tombstone = state.api_tombstones.get(subject.id)

        def apply() -> None:
            steps.redo()
            if after is None:
                state.apis.pop(subject.id, None)
                state.api_tombstones[subject.id] = (subject.team, subject.version + 1)
            else:
                state.apis[after.id] = after
                state.api_tombstones.pop(after.id, None)

        def undo() -> None:
            steps.undo()
            if before is None:
                state.apis.pop(subject.id, None)
            else:
                state.apis[before.id] = before
            if tombstone is None:
                state.api_tombstones.pop(subject.id, None)
            else:
                state.api_tombstones[subject.id] = tombstone

        return TxnPlan(
            writes,
            apply,
            outcome,
            tuple(change_of(pl) for pl in steps.plans),
            undo=undo,
            counted=tuple(
                (ch.kind.value, ch.action, "platform", subject.team or NO_TEAM)
                for ch in steps.changes
            ),
        )

    def _materialise(
        self, state: ConfigState, steps: _Steps, before: ApiRecord | None, after: ApiRecord | None
    ) -> dict[str, dict[str, Any]]:
        """Plan the Native creates and updates; return what `after` generated (empty for a
        delete). What `before` made and `after` does not is deleted by `_delete_unmade`."""
        owner = (after or before).id  # type: ignore[union-attr]
        p = SYSTEM if self.principal.admin else self.principal
        desired: dict[Kind, dict[str, dict[str, Any]]] = {k: {} for k in ORDER}
        vhost: dict[str, Any] | None = None
        if after is not None:
            gateway = self.gateway.listener if self.gateway is not None else None
            out = materialise(after.model, api_id=after.id, gateway_listener=gateway)
            team = {} if after.team is None else {"team": after.team}
            for c in out.clusters:
                desired[Kind.CLUSTER][c["name"]] = {**c, **team}
            if out.route_config is not None:
                desired[Kind.ROUTE_CONFIG][out.route_config["name"]] = {**out.route_config, **team}
            if out.listener is not None:
                desired[Kind.LISTENER][out.listener["name"]] = {**out.listener, **team}
            vhost = out.virtual_host if out.route_config is None else None
        # creates and updates, inner first (a route config's clusters exist before it does)
        for kind in ORDER:
            for name, gen in sorted(desired[kind].items()):
                self._upsert(state, steps, kind, name, gen, owner, p)
            if kind is Kind.ROUTE_CONFIG:
                self._shared_vhost(state, steps, before, vhost, p)
        generated: dict[str, dict[str, Any]] = {
            GENERATED_KEYS[k]: desired[k] for k in ORDER if desired[k]
        }
        if vhost is not None and self.gateway is not None:
            generated[VHOSTS] = {self.gateway.route_config: vhost}
        return generated

    def _delete_unmade(
        self, state: ConfigState, steps: _Steps, before: ApiRecord | None,
        generated: dict[str, dict[str, Any]],
    ) -> None:  # fmt: skip
        """Delete what `before` made and `generated` no longer has, outer first (a listener
        goes before the route config it names, a route config before its clusters)."""
        if before is None:
            return
        p = SYSTEM if self.principal.admin else self.principal
        for kind in reversed(ORDER):
            keep = generated.get(GENERATED_KEYS[kind], {})
            for name in sorted(before.owned(kind)):
                res = state.get(kind, xds_name(before.team, name))
                if name not in keep and res is not None and res.owner == before.id:
                    steps.add(
                        state.plan_delete(
                            kind, name, None, p, source="platform", team=team_label(before.team)
                        ),
                        "delete",
                    )

    def _upsert(
        self, state: ConfigState, steps: _Steps, kind: Kind, name: str, gen: dict[str, Any],
        owner: str, p: Principal,
    ) -> None:  # fmt: skip
        team = gen.get("team")
        existing = state.get(kind, xds_name(team, name))
        if existing is None:
            steps.add(state.plan_create(kind, gen, "platform", principal=p, owner=owner), "create")
            return
        if existing.owner != owner:
            raise Conflict(
                f"{kind.label} {name!r} already exists and was not made by this API",
                [FieldProblem("name", f"{kind.label} {name!r} is taken")],
            )
        # Native-only additions survive: the API's fields replace theirs, the rest is kept.
        spec = {**existing.spec, **gen}
        if spec == existing.spec:
            return
        steps.add(
            state.plan_replace(
                kind, name, spec, None, source="platform", principal=p, team=team_label(team)
            ),
            "update",
        )

    def _shared_vhost(
        self, state: ConfigState, steps: _Steps, before: ApiRecord | None,
        vhost: dict[str, Any] | None, p: Principal,
    ) -> None:  # fmt: skip
        old = before.vhosts() if before else {}
        if self.gateway is None and vhost is None and not old:
            return
        targets = set(old) | (
            {self.gateway.route_config} if vhost is not None and self.gateway else set()
        )
        for rc_name in sorted(targets):
            rc = state.get(Kind.ROUTE_CONFIG, rc_name)
            if rc is None:
                raise BadRequest(f"the shared gateway's route config {rc_name!r} does not exist")
            old_vh = old.get(rc_name)
            hosts = [v for v in rc.spec.get("virtualHosts", []) if v != old_vh]
            new_vh = vhost if self.gateway and rc_name == self.gateway.route_config else None
            if new_vh is not None:
                clash = [v.get("name") for v in hosts if v.get("name") == new_vh.get("name")]
                if clash:
                    raise Conflict(
                        f"route config {rc_name!r} already has a virtual host {clash[0]!r}"
                    )
                # in place of the old one, so other APIs' hosts keep their order
                idx = (
                    rc.spec.get("virtualHosts", []).index(old_vh)
                    if old_vh in rc.spec.get("virtualHosts", [])
                    else len(hosts)
                )
                hosts.insert(idx, new_vh)
            _update_shared(state, steps, rc, {**rc.spec, "virtualHosts": hosts})

    def _gateway_listener(
        self, state: ConfigState, steps: _Steps, apis: dict[str, ApiRecord]
    ) -> None:
        if self.gateway is None:
            return
        lis = state.get(Kind.LISTENER, self.gateway.listener)
        if lis is None:
            return
        shared = sorted((a.id, a.model) for a in apis.values() if not _isolated(a.model))
        _update_shared(
            state, steps, lis, gateway_listener_spec(lis.spec, gateway_http_filters(shared))
        )


def _update_shared(
    state: ConfigState, steps: _Steps, res: StoredResource, spec: dict[str, Any]
) -> None:
    """Plan `spec` for the shared gateway's `res` (its route config or listener), as the system,
    if it changes anything."""
    if spec != res.spec:
        steps.add(
            state.plan_replace(
                res.kind, res.name, spec, None, source="platform", principal=SYSTEM, team=SHARED
            ),
            "update",
        )


def gateway_listener_spec(
    spec: dict[str, Any], http_filters: list[dict[str, Any]]
) -> dict[str, Any]:
    """`spec` (the gateway listener) with its HTTP connection manager's filters replaced."""
    chains = []
    for chain in spec.get("filterChains", []):
        filters = [
            {**f, "httpFilters": http_filters} if f.get("type") == "httpConnectionManager" else f
            for f in chain.get("filters", [])
        ]
        chains.append({**chain, "filters": filters})
    return {**spec, "filterChains": chains}


def _isolated(model: Any) -> bool:
    listener = getattr(model, "listener", None)
    return bool(listener is not None and listener.isolation)


async def load_apis(repo: Repository, state: ConfigState) -> None:
    """Start-up: the stored API definitions into `state.apis` (after the Native resources)."""
    for r in await repo.load_rows("apis"):
        what = f"stored API {r['name']!r} (id {r['id']})"
        spec = schema.REGISTRY.upgrade("api", r["spec"], r.get("schema_version", 1), what)
        try:
            model = parse_api_definition(spec)
        except FlowplaneError as err:
            raise Internal(f"stored API {r['name']!r} no longer validates: {err.message}") from err
        generated = upgrade_generated(r["generated"], what)  # as is when current
        generated = {k: v for k, v in generated.items() if k != SCHEMA_VERSIONS}
        state.apis[r["id"]] = ApiRecord(
            id=r["id"], name=r["name"], team=r["team"], version=r["version"], spec=spec,
            generated=generated, created_at=datetime.fromisoformat(r["created_at"]),
            updated_at=datetime.fromisoformat(r["updated_at"]), model=model,
        )  # fmt: skip
    repaired = _repair_legacy_vhosts(state)
    if repaired:
        await repo.write([Row("apis", a.id, a.row_values()) for a in repaired])


def _repair_legacy_vhosts(state: ConfigState) -> list[ApiRecord]:
    """Start-up, once: the virtual host a team's shared-mode API put into the shared gateway,
    as the API remembers it, names the API's clusters `<team>/<name>` since names are per team
    (as `ConfigState.repair_legacy_references` rewrote the gateway's route config itself), so
    that the API still recognises its virtual host there."""
    repaired = []
    for api in list(state.apis.values()):
        owned = set(api.owned(Kind.CLUSTER))
        if api.team is None or not owned or not api.vhosts():
            continue
        mapping = {name: f"{api.team}/{name}" for name in owned}
        vhosts = {}
        for rc, vhost in api.vhosts().items():
            model = parse(VirtualHost, vhost, "virtual host")
            fixed = rewrite_refs(model, vhost, lambda r, m=mapping: m.get(r, r))  # type: ignore[misc]
            vhosts[rc] = vhost if fixed is None else fixed
        if vhosts != dict(api.vhosts()):
            api = replace(api, generated={**api.generated, VHOSTS: vhosts})
            state.apis[api.id] = api
            repaired.append(api)
    return repaired
