"""Rollback commands for the config actor, and the start-up load of what history knows about
deleted resources (api.md "History and rollback").

A rollback is a write like any other: it plans, against the committed state, a new version whose
content is an old one (read from history by the service before the command is sent: history rows
never change), through the same `ConfigState` planning as a Native write (If-Match, team rules,
references, quotas, listener addresses) or, for an API definition, through `ApplyApi` (which
re-materialises everything the API generates in the same transaction). It is audited and kept in
history as `rollback`. A deleted resource or API is re-created, its versions going on from the
version of its deletion.
"""

from __future__ import annotations

from typing import Any

from flowplane.actors.config import PlanContext, Txn, TxnPlan, resource_txn
from flowplane.actors.platform import ApplyApi, Gateway
from flowplane.domain.auth import Principal
from flowplane.domain.naming import team_label, xds_name
from flowplane.domain.resources import Kind
from flowplane.domain.state import ConfigState, etag_matches
from flowplane.errors import PreconditionFailed
from flowplane.storage.base import Repository


class _Version:
    """An ETag for a deleted resource: the version of its deletion."""

    def __init__(self, version: int) -> None:
        self.etag = f'"{version}"'


class Rollback(Txn):
    """Make `spec` (an old version's content, in the current shape) the new version of the
    resource `kind` `name` of `team`, re-creating it if it was deleted."""

    logged = True

    def __init__(
        self,
        kind: Kind,
        team: str | None,
        name: str,
        version: int,
        spec: dict[str, Any],
        if_match: str | None,
        principal: Principal,
    ) -> None:
        super().__init__()
        self.kind, self.team, self.name, self.version = kind, team, name, version
        self.spec, self.if_match, self.principal = spec, if_match, principal

    def describe(self) -> str:
        return (
            f"rollback {self.kind.label} {self.name} to version {self.version}"
            f" by {self.principal.name}"
        )

    def plan(self, ctx: PlanContext) -> TxnPlan:
        s, p = ctx.state, self.principal
        body = {**self.spec, "name": self.name}
        current = s.get(self.kind, xds_name(self.team, self.name))
        if current is not None:
            # A Native write: a platform-owned resource keeps what its API generated (409).
            plan = s.plan_replace(
                self.kind, self.name, body, self.if_match, principal=p,
                team=team_label(self.team),
            )  # fmt: skip
        else:
            deleted = s.tombstones.get((self.kind, self.team, self.name), 0)
            if not etag_matches(self.if_match, _Version(deleted)):
                raise PreconditionFailed(
                    f"{self.kind.label} {self.name!r} was deleted at version {deleted};"
                    f" If-Match was {self.if_match}"
                )
            if "team" not in body:
                body["team"] = self.team  # not the caller's team by default: the old one
            plan = s.plan_create(self.kind, body, "native", principal=p)
        return resource_txn(ctx, p, plan, "rollback", "native")


class RollbackApi(ApplyApi):
    """Make `spec` (an old version of an API definition) its new version, re-materialising what
    it generates in one transaction; re-creates a deleted API under its old id."""

    def __init__(
        self,
        api_id: str,
        version: int,
        spec: dict[str, Any],
        if_match: str | None,
        principal: Principal,
        gateway: Gateway | None,
    ) -> None:
        super().__init__("replace", api_id, spec, if_match, principal, gateway)
        self.version = version
        self.action = "rollback"

    def describe(self) -> str:
        return f"rollback API {self.api_id} to version {self.version} by {self.principal.name}"

    def plan(self, ctx: PlanContext) -> TxnPlan:
        assert self.api_id is not None
        if self.api_id in ctx.state.apis:
            self.op = "replace"
        else:
            self.op = "create"
            _, deleted = ctx.state.api_tombstones.get(self.api_id, (None, 0))
            if not etag_matches(self.if_match, _Version(deleted)):
                raise PreconditionFailed(
                    f"API {self.api_id!r} was deleted at version {deleted};"
                    f" If-Match was {self.if_match}"
                )
        return super().plan(ctx)


async def load_history(repo: Repository, state: ConfigState) -> None:
    """Start-up, after resources and APIs are loaded: the deleted ones history still keeps, so
    a re-created name continues its versions (and a rollback can find them)."""
    for kind, team, name, version in await repo.history_heads():
        if kind == "api":
            if name not in state.apis:
                state.api_tombstones[name] = (team, version)
            continue
        k = Kind(kind)
        if state.get(k, xds_name(team, name)) is None:
            state.tombstones[k, team, name] = version
