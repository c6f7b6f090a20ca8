"""Clusters, route configurations and listeners (api.md "Native API"): list, get, create,
replace, merge-patch, delete — with the caller's scopes and teams applied.

Reads come from the committed in-memory state (synchronous: no I/O, microseconds); writes are
commands to the config actor, which validates them against the same state, persists them with
their audit row in one transaction, and only then makes them visible.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flowplane.actors.config import Command, ConfigActor
from flowplane.domain.apis import without_apis
from flowplane.domain.auth import Principal
from flowplane.domain.resources import Kind, StoredResource
from flowplane.domain.state import ConfigState
from flowplane.services.common import Page, Window, require_scope

_VIEWS_LIMIT = 256  # memoised team views of shared resources (oldest dropped first)


class ResourceService:
    def __init__(self, state: ConfigState, actor: ConfigActor) -> None:
        self._state = state
        self._actor = actor
        self._views: dict[tuple[object, ...], StoredResource] = {}

    # -- reads ----------------------------------------------------------------------------
    def list(
        self, caller: Principal, kind: Kind, window: Window, *, team: str | None = None
    ) -> Page[StoredResource]:
        """What `caller` may read of `kind` (optionally of one team), sorted by name."""
        require_scope(caller, kind.scope("read"))
        page = Page.of(self._state.visible(kind, caller, team=team), window)
        return replace(page, items=[self._view(caller, r) for r in page.items])

    def get(
        self, caller: Principal, kind: Kind, name: str, *, team: str | None = None
    ) -> StoredResource:
        """One resource (of `team` when given — `shared` for a shared one; needed only when the
        caller sees the name in several teams: 400 listing them); 404 when missing or of a team
        `caller` cannot read (no leak). A shared resource comes without the parts other teams'
        APIs put into it (`without_apis`)."""
        require_scope(caller, kind.scope("read"))
        return self._view(caller, self._state.require(kind, name, caller, team))

    def _view(self, caller: Principal, res: StoredResource) -> StoredResource:
        # Only shared route configs and listeners hold parts of APIs (virtual hosts, jwt_authn
        # providers); everything else is served as stored, with its cached JSON.
        if res.team is not None or not caller.team_bound or res.kind is Kind.CLUSTER:
            return res
        # Memoised per state serial and caller teams: the gateway's view is computed once per
        # change, not on every read (the fast path serves GETs of it too).
        key = (res.kind, res.key, res.version, caller.teams, self._state.serial)
        view = self._views.get(key)
        if view is None:
            hidden = [a for a in self._state.apis.values() if not caller.can_read_team(a.team)]
            view = without_apis(res, hidden)
            if len(self._views) >= _VIEWS_LIMIT:
                self._views.pop(next(iter(self._views)))
            self._views[key] = view
        return view

    # -- writes ---------------------------------------------------------------------------
    async def create(self, caller: Principal, kind: Kind, body: Any) -> StoredResource:
        return await self._write(caller, Command("create", kind, body=body, principal=caller))

    async def replace(
        self, caller: Principal, kind: Kind, name: str, body: Any, if_match: str | None = None,
        *, team: str | None = None,
    ) -> StoredResource:  # fmt: skip
        """Replace resource `name` (of `team`, as in `get`); it cannot move to another team."""
        return await self._write(
            caller, Command("replace", kind, name, body, if_match, principal=caller, team=team)
        )

    async def patch(
        self, caller: Principal, kind: Kind, name: str, patch: Any, if_match: str | None = None,
        *, team: str | None = None,
    ) -> StoredResource:  # fmt: skip
        """RFC 7386 merge patch of the stored JSON."""
        return await self._write(
            caller, Command("patch", kind, name, patch, if_match, principal=caller, team=team)
        )

    async def delete(
        self, caller: Principal, kind: Kind, name: str, if_match: str | None = None,
        *, team: str | None = None,
    ) -> None:  # fmt: skip
        """409 while referenced or protected; 412 when `if_match` is stale."""
        await self._write(
            caller,
            Command("delete", kind, name, if_match=if_match, principal=caller, team=team),
        )

    async def _write(self, caller: Principal, cmd: Command) -> StoredResource:
        require_scope(caller, cmd.kind.scope("write"))
        res: StoredResource = await self._actor.submit(cmd)
        return res
