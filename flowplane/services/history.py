"""History and rollback of every resource and API definition (api.md "History and rollback").

Reads come from storage (history is not kept in memory); each is allowed as a read of the
resource itself (the kind's read scope, `apis:read` for APIs; another team's resource is a 404,
deleted or not). A rollback is a write (the write scope) sent to the config actor, which checks
it like any write of the resource. Old versions are returned in the current shape: a version
written under an older schemaVersion is upgraded when read (`flowplane.domain.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import jsonpatch

from flowplane.actors.config import ConfigActor
from flowplane.actors.history import Rollback, RollbackApi
from flowplane.actors.platform import ApiOutcome, Gateway
from flowplane.domain import schema
from flowplane.domain.auth import Principal
from flowplane.domain.common import rfc3339
from flowplane.domain.naming import SHARED, team_label
from flowplane.domain.resources import Kind, StoredResource
from flowplane.domain.state import ConfigState
from flowplane.errors import BadRequest, FieldProblem, Forbidden, NotFound
from flowplane.services.common import Page, Window, require_scope
from flowplane.storage.base import HistoryKey, HistoryRow, Repository

Patch = list[dict[str, Any]]  # an RFC 6902 JSON patch
API = "api"  # the history kind of API definitions (their `name` in history is the API id)
_HOLD_APIS = (Kind.ROUTE_CONFIG.value, Kind.LISTENER.value)  # shared ones hold APIs' parts


@dataclass(frozen=True, slots=True)
class Version:
    """One version as it was, its content in the current shape (None: the deletion)."""

    row: HistoryRow
    spec: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """The document as it was, with its history metadata."""
        r = self.row
        out: dict[str, Any] = dict(self.spec or {})
        if r.kind == API:
            out.update(id=r.name)
        else:
            out.update(name=r.name)
        out.update(team=r.team, version=r.version, source=r.source)
        if r.owner is not None:
            out["owner"] = {"kind": "api", "id": r.owner}
        out.update(history_item(r))
        return out


_Versions = list[Version]


def history_item(r: HistoryRow) -> dict[str, Any]:
    """One entry of a history list."""
    return {
        "version": r.version,
        "action": r.action,
        "actor": r.actor_name,
        "actorId": r.actor_id,
        "at": rfc3339(r.at, "microseconds"),
        "schemaVersion": r.schema_version,
    }


def _label(kind: str) -> str:
    return "API" if kind == API else Kind(kind).label


class HistoryService:
    def __init__(
        self, state: ConfigState, actor: ConfigActor, repo: Repository, gateway: Gateway | None
    ) -> None:
        self._state = state
        self._actor = actor
        self._repo = repo
        self._gateway = gateway

    # -- which resource ---------------------------------------------------------------------
    def _locate(
        self, caller: Principal, kind: str, name: str, action: str, team: str | None
    ) -> HistoryKey:
        """The history key of `name` as `caller` may see it, current or deleted: 403 without
        the scope, 404 if it is not there or of a team `caller` cannot read (no leak), 400 if
        the name is visible in several teams and `team` does not choose."""
        require_scope(caller, f"apis:{action}" if kind == API else Kind(kind).scope(action))
        teams: list[str | None] = []
        if kind == API:
            api = self._state.apis.get(name)
            if api is not None:
                teams.append(api.team)
            elif name in self._state.api_tombstones:
                teams.append(self._state.api_tombstones[name][0])
        else:
            k = Kind(kind)
            teams += sorted(self._state.teams_of(k, name), key=lambda t: t or "")
            teams += [
                t for (kk, t, n) in self._state.tombstones
                if kk is k and n == name and t not in teams
            ]  # fmt: skip
        wanted = None if team == SHARED else team  # `?team=shared`: the shared one
        teams = [
            t for t in teams
            if caller.can_read_team(t) and (team is None or t == wanted)
        ]  # fmt: skip
        if not teams:
            raise NotFound(f"{_label(kind)} {name!r} has no history")
        if teams == [None] and caller.team_bound and kind in _HOLD_APIS:
            # A team token reads a shared route config or listener without the parts other
            # teams' APIs put into it (`without_apis`); its past versions hold them too (and
            # those of APIs deleted since), so their history is not the team token's to read.
            raise Forbidden(
                f"the history of shared {_label(kind)} {name!r} holds other teams' APIs: only a"
                " token not bound to teams may read it"
            )
        if len(teams) > 1:
            raise BadRequest(
                f"{_label(kind)} {name!r} exists in several teams: choose one with ?team=",
                [FieldProblem("team", f"one of {', '.join(sorted(map(team_label, teams)))}")],
            )
        return HistoryKey(kind, teams[0], name)

    # -- reads ------------------------------------------------------------------------------
    async def list(
        self, caller: Principal, kind: str, name: str, window: Window, *, team: str | None = None
    ) -> Page[HistoryRow]:
        """The versions of one resource, newest first."""
        key = self._locate(caller, kind, name, "read", team)
        rows, total = await self._repo.history(key, window.limit, window.offset)
        return Page(rows, total, window.limit, window.offset)

    async def version(
        self, caller: Principal, kind: str, name: str, version: int, *,
        team: str | None = None, diff: Literal["previous"] | None = None,
    ) -> Version | Patch:  # fmt: skip
        """One version as it was; 404 if history does not have it (never was, or pruned).
        `diff="previous"`: what it changed from the version before it, as an RFC 6902 JSON
        patch instead (a first version: from the empty document; a deletion: to it)."""
        key = self._locate(caller, kind, name, "read", team)
        if diff is None:
            return (await self._versions(key, version, 1))[0]
        got = await self._versions(key, version, 2)
        before = got[1].spec if len(got) > 1 and got[1].spec is not None else {}
        ops: Patch = jsonpatch.make_patch(before, got[0].spec or {}).patch
        return ops

    async def _versions(self, key: HistoryKey, version: int, count: int) -> _Versions:
        rows = await self._repo.history_versions(key, version, count)
        if not rows or rows[0].version != version:
            raise NotFound(f"{_label(key.kind)} {key.name!r} has no version {version} in history")
        return [Version(r, self._upgraded(r)) for r in rows]

    @staticmethod
    def _upgraded(r: HistoryRow) -> dict[str, Any] | None:
        if r.spec is None:
            return None
        what = f"version {r.version} of {_label(r.kind)} {r.name!r} in history"
        return schema.REGISTRY.upgrade(r.kind, r.spec, r.schema_version, what)

    # -- rollback ---------------------------------------------------------------------------
    async def rollback(
        self, caller: Principal, kind: str, name: str, version: int, if_match: str | None,
        *, team: str | None = None,
    ) -> StoredResource | ApiOutcome:  # fmt: skip
        """A new version whose content is `version`'s, checked like any write and audited as
        `rollback`; re-creates a deleted resource or API. 400 if `version` is a deletion."""
        key = self._locate(caller, kind, name, "write", team)
        target = (await self._versions(key, version, 1))[0]  # (a write may roll back unread)
        if target.spec is None:
            raise BadRequest(
                f"version {version} of {_label(kind)} {name!r} is its deletion: roll back to a"
                " version with content (or delete it)",
                [FieldProblem("version", "is a deletion")],
            )
        if kind == API:
            outcome: ApiOutcome = await self._actor.submit(
                RollbackApi(name, version, target.spec, if_match, caller, self._gateway)
            )
            return outcome
        res: StoredResource = await self._actor.submit(
            Rollback(Kind(kind), key.team, name, version, target.spec, if_match, caller)
        )
        return res
