"""The Platform API (api.md "Platform API"): thin adapters over
`flowplane.services.platform.PlatformService`."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from quart import Blueprint, Response, g, request
from quart_schema import document_querystring, document_request, tag

from flowplane.api.http import json_body, json_response, page_response, query
from flowplane.api.native import MERGE_PATCH
from flowplane.api.schemas import ListQuery, TeamQuery, _Out
from flowplane.domain.api_definition import ApiDefinition, ApiRoute
from flowplane.domain.apis import ApiRecord
from flowplane.errors import PayloadTooLarge
from flowplane.services.common import Window
from flowplane.services.platform import (
    ApiOutcome,
    ImportOptions,
    PlatformService,
    endpoint_json,
    service_json,
)

PREFIX = "/api/v1/platform"


class ImportQuery(_Out):
    team: str | None = None
    name: str | None = None
    domain: str | None = None
    listener_isolation: bool = Field(False, alias="listenerIsolation")
    port: int | None = Field(None, ge=1, le=65535)
    dry_run: bool = Field(False, alias="dryRun")


def _api_response(api: ApiRecord, status: int = 200) -> Response:
    headers = {"ETag": api.etag}
    if status == 201:
        headers["Location"] = f"{PREFIX}/apis/{api.id}"
    return json_response(api.to_json(), status, headers)


def _outcome_json(outcome: ApiOutcome) -> dict[str, Any]:
    return {
        "api": outcome.api.to_json() if outcome.api else None,
        "changes": [c.to_json() for c in outcome.changes],
    }


def platform_blueprint(platform: PlatformService) -> Blueprint:
    bp = Blueprint("platform", __name__, url_prefix=PREFIX)

    @bp.get("/apis")
    @tag(["platform:apis"])
    @document_querystring(ListQuery)
    async def list_apis() -> Response:
        """API definitions this caller may see."""
        q = query(ListQuery)
        page = platform.list(g.principal, Window(q.limit, q.offset), team=q.team)
        return page_response(page, ApiRecord.to_json)

    @bp.post("/apis")
    @tag(["platform:apis"])
    @document_request(ApiDefinition)
    async def create_api() -> Response:
        """Create an API: its clusters, routes and (isolation) listener, in one transaction."""
        outcome = await platform.create(g.principal, await json_body())
        assert outcome.api is not None
        return _api_response(outcome.api, 201)

    @bp.get("/apis/<api_id>")
    @tag(["platform:apis"])
    async def get_api(api_id: str) -> Response:
        """One API definition, with the names of what it generated."""
        return _api_response(platform.get(g.principal, api_id))

    @bp.put("/apis/<api_id>")
    @tag(["platform:apis"])
    @document_request(ApiDefinition)
    async def put_api(api_id: str) -> Response:
        """Replace an API definition (and re-materialise it)."""
        body, if_match = await json_body(), request.headers.get("If-Match")
        outcome = await platform.replace(g.principal, api_id, body, if_match)
        assert outcome.api is not None
        return _api_response(outcome.api)

    @bp.patch("/apis/<api_id>")
    @tag(["platform:apis"])
    async def patch_api(api_id: str) -> Response:
        """Merge-patch an API definition (RFC 7386)."""
        body, if_match = await json_body(MERGE_PATCH), request.headers.get("If-Match")
        outcome = await platform.patch(g.principal, api_id, body, if_match)
        assert outcome.api is not None
        return _api_response(outcome.api)

    @bp.delete("/apis/<api_id>")
    @tag(["platform:apis"])
    async def delete_api(api_id: str) -> Response:
        """Delete an API and exactly what it generated."""
        await platform.delete(g.principal, api_id, request.headers.get("If-Match"))
        return Response(b"", status=204)

    @bp.post("/apis/<api_id>/routes")
    @tag(["platform:apis"])
    @document_request(ApiRoute)
    async def append_route(api_id: str) -> Response:
        """Append one route; 201 with the new revision."""
        body, if_match = await json_body(), request.headers.get("If-Match")
        outcome = await platform.append_route(g.principal, api_id, body, if_match)
        assert outcome.api is not None
        return _api_response(outcome.api, 201)

    @bp.post("/import/openapi")
    @tag(["platform:import"])
    @document_querystring(ImportQuery)
    async def import_openapi() -> Response:
        """Import an OpenAPI 3.0/3.1 document (JSON or YAML): creates the API, or updates the
        team's API of the same name in place. `dryRun=true` changes nothing and answers what
        would be created, changed or deleted."""
        q = query(ImportQuery)
        # the document limit (ImportLimits.max_bytes, the app's body cap), not the JSON one
        limit = request.max_content_length
        if limit is not None and (request.content_length or 0) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        raw = await request.get_data(cache=False, as_text=False)
        assert isinstance(raw, bytes)
        options = ImportOptions(q.team, q.name, q.domain, q.listener_isolation, q.port, q.dry_run)
        result = await platform.import_openapi(
            g.principal, raw, request.content_type or "", options
        )
        body = {**_outcome_json(result.outcome), "warnings": list(result.warnings),
                "dryRun": q.dry_run}  # fmt: skip
        status = 201 if result.outcome.created and not q.dry_run else 200
        return json_response(body, status)

    @bp.get("/endpoints")
    @tag(["platform:views"])
    @document_querystring(ListQuery)
    async def list_endpoints() -> Response:
        """Clusters of any source, as endpoints (upstreams)."""
        q = query(ListQuery)
        page = platform.endpoints(g.principal, Window(q.limit, q.offset), team=q.team)
        return page_response(page, endpoint_json)

    @bp.get("/endpoints/<name>")
    @tag(["platform:views"])
    @document_querystring(TeamQuery)
    async def get_endpoint(name: str) -> Response:
        """One cluster as an endpoint."""
        team = query(TeamQuery).team
        return json_response(endpoint_json(platform.endpoint(g.principal, name, team=team)))

    @bp.get("/services")
    @tag(["platform:views"])
    @document_querystring(ListQuery)
    async def list_services() -> Response:
        """Listeners of any source, as services."""
        q = query(ListQuery)
        page = platform.services(g.principal, Window(q.limit, q.offset), team=q.team)
        return page_response(page, service_json)

    @bp.get("/services/<name>")
    @tag(["platform:views"])
    @document_querystring(TeamQuery)
    async def get_service(name: str) -> Response:
        """One listener as a service."""
        team = query(TeamQuery).team
        return json_response(service_json(platform.service(g.principal, name, team=team)))

    return bp
