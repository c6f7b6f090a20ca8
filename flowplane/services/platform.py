"""The Platform API (api.md "Platform API"): API definitions, OpenAPI import, and read views of
clusters and listeners in Platform terms (endpoints, services).

One implementation: an OpenAPI import builds an API definition and goes through `create` /
`replace` like `POST /apis`, so both are checked, materialised and audited the same way.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import trio

from flowplane.actors.config import ConfigActor
from flowplane.actors.platform import ApiOp, ApiOutcome, ApplyApi, Gateway
from flowplane.domain.api_definition import parse_api_definition
from flowplane.domain.apis import ApiRecord
from flowplane.domain.auth import Principal
from flowplane.domain.cluster import Cluster
from flowplane.domain.listener import Listener
from flowplane.domain.resources import Kind, StoredResource
from flowplane.domain.state import ConfigState
from flowplane.errors import BadRequest, Conflict, FieldProblem
from flowplane.platform.openapi import ImportResult, import_openapi
from flowplane.services.common import Page, Window, require_scope

__all__ = ["ApiOutcome", "ImportOptions", "ImportOutcome", "PlatformService"]


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """`POST /import/openapi` query parameters."""

    team: str | None = None
    name: str | None = None
    domain: str | None = None
    listener_isolation: bool = False
    port: int | None = None
    dry_run: bool = False


def _check_in_document_terms(result: ImportResult) -> None:
    """Validate the imported definition now, so a refusal names the document's operations
    (`/paths/~1pets/get`) rather than the definition's route indexes alone."""
    try:
        parse_api_definition(result.definition)
    except (BadRequest, Conflict) as err:
        details = []
        for d in err.details:
            m = _ROUTE_FIELD.match(d.field)
            if m and int(m.group(1)) < len(result.route_sources):
                field = f"{result.route_sources[int(m.group(1))]} ({d.field})"
                details.append(FieldProblem(field, d.message))
            else:
                details.append(d)
        raise type(err)(err.message, details) from None


_ROUTE_FIELD = re.compile(r"^routes\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    outcome: ApiOutcome
    warnings: tuple[str, ...]


def endpoint_json(res: StoredResource) -> dict[str, Any]:
    """A cluster as an endpoint (upstream) in Platform terms."""
    c = res.model
    assert isinstance(c, Cluster)
    return {
        "name": res.name, "team": res.team, "source": res.source,
        "owner": None if res.owner is None else {"kind": "api", "id": res.owner},
        "targets": [{"host": e.host, "port": e.port} for e in c.endpoints],
        "tls": bool(c.tls and c.tls.enabled), "version": res.version,
    }  # fmt: skip


def service_json(res: StoredResource) -> dict[str, Any]:
    """A listener as a service in Platform terms."""
    lis = res.model
    assert isinstance(lis, Listener)
    return {
        "name": res.name, "team": res.team, "source": res.source,
        "owner": None if res.owner is None else {"kind": "api", "id": res.owner},
        "address": lis.address, "port": lis.port,
        "routeConfigs": sorted(lis.route_config_names()), "version": res.version,
    }  # fmt: skip


class PlatformService:
    def __init__(self, state: ConfigState, actor: ConfigActor, gateway: Gateway | None) -> None:
        self._state = state
        self._actor = actor
        self._gateway = gateway

    # -- API definitions --------------------------------------------------------------------
    def list(
        self, caller: Principal, window: Window, *, team: str | None = None
    ) -> Page[ApiRecord]:
        """APIs `caller` may read (optionally of one team), by team and name."""
        require_scope(caller, "apis:read")
        items = sorted(
            (a for a in self._state.apis.values()
             if caller.can_read_team(a.team) and (team is None or a.team == team)),
            key=lambda a: (a.team or "", a.name),
        )  # fmt: skip
        return Page.of(items, window)

    def get(self, caller: Principal, api_id: str) -> ApiRecord:
        require_scope(caller, "apis:read")
        return self._state.require_api(api_id, caller)

    async def _apply(
        self, caller: Principal, op: ApiOp, api_id: str | None, body: Any,
        if_match: str | None = None, *, dry_run: bool = False,
    ) -> ApiOutcome:  # fmt: skip
        require_scope(caller, "apis:write")
        txn = ApplyApi(op, api_id, body, if_match, caller, self._gateway, dry_run=dry_run)
        outcome: ApiOutcome = await self._actor.submit(txn)
        return outcome

    async def create(self, caller: Principal, body: Any, *, dry_run: bool = False) -> ApiOutcome:
        """A new API and what it generates, in one transaction (409: name in team, domain)."""
        return await self._apply(caller, "create", None, body, dry_run=dry_run)

    async def replace(
        self, caller: Principal, api_id: str, body: Any, if_match: str | None = None,
        *, dry_run: bool = False,
    ) -> ApiOutcome:  # fmt: skip
        return await self._apply(caller, "replace", api_id, body, if_match, dry_run=dry_run)

    async def patch(
        self, caller: Principal, api_id: str, patch: Any, if_match: str | None = None
    ) -> ApiOutcome:
        return await self._apply(caller, "patch", api_id, patch, if_match)

    async def delete(self, caller: Principal, api_id: str, if_match: str | None = None) -> None:
        """The API and exactly what it generated (Native-made resources stay)."""
        await self._apply(caller, "delete", api_id, None, if_match)

    async def append_route(
        self, caller: Principal, api_id: str, route: Any, if_match: str | None = None
    ) -> ApiOutcome:
        """One more route at the end of the API's routes (a new revision). Without `if_match`
        the revision read here is the one extended (412 if another write came between)."""
        require_scope(caller, "apis:write")
        api = self._state.require_api(api_id, caller)
        if not isinstance(route, dict):
            raise BadRequest("a route is a JSON object")
        body = {**api.spec, "routes": [*api.spec.get("routes", []), route]}
        return await self._apply(caller, "replace", api_id, body, if_match or api.etag)

    async def import_openapi(
        self, caller: Principal, document: bytes, content_type: str, options: ImportOptions
    ) -> ImportOutcome:
        """Build an API definition from an OpenAPI 3.0/3.1 document and create it, or update
        the API of the same name in the same team in place (re-import)."""
        require_scope(caller, "apis:write")
        team = options.team
        if team is None and caller.team_bound and len(caller.teams) == 1:
            team = next(iter(caller.teams))
        # The import is CPU work of up to a few seconds for a large or hostile document: in a
        # worker thread, so the event loop (REST and every xDS stream) keeps serving meanwhile.
        result = await trio.to_thread.run_sync(
            functools.partial(
                import_openapi, document, content_type, name=options.name, team=team,
                domain=options.domain, listener_isolation=options.listener_isolation,
                port=options.port,
            )
        )  # fmt: skip
        _check_in_document_terms(result)
        definition = result.definition
        existing = next(
            (a for a in self._state.apis.values()
             if a.team == definition.get("team") and a.name == definition.get("name")),
            None,
        )  # fmt: skip
        if existing is not None and caller.can_read_team(existing.team):
            outcome = await self.replace(
                caller, existing.id, definition, None, dry_run=options.dry_run
            )
        else:
            outcome = await self.create(caller, definition, dry_run=options.dry_run)
        return ImportOutcome(outcome, tuple(result.warnings))

    # -- read views -------------------------------------------------------------------------
    def endpoints(
        self, caller: Principal, window: Window, *, team: str | None = None
    ) -> Page[StoredResource]:
        require_scope(caller, "apis:read")
        return Page.of(self._state.visible(Kind.CLUSTER, caller, team=team), window)

    def endpoint(
        self, caller: Principal, name: str, *, team: str | None = None
    ) -> StoredResource:
        require_scope(caller, "apis:read")
        return self._state.require(Kind.CLUSTER, name, caller, team)

    def services(
        self, caller: Principal, window: Window, *, team: str | None = None
    ) -> Page[StoredResource]:
        require_scope(caller, "apis:read")
        return Page.of(self._state.visible(Kind.LISTENER, caller, team=team), window)

    def service(
        self, caller: Principal, name: str, *, team: str | None = None
    ) -> StoredResource:
        require_scope(caller, "apis:read")
        return self._state.require(Kind.LISTENER, name, caller, team)
