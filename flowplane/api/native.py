"""The Native API (api.md "Native API"): CRUD for clusters, route configs and listeners.

Thin adapters over `flowplane.services.resources.ResourceService`: parse, call, render.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from quart import Blueprint, Response, g, request
from quart_schema import document_querystring, document_request, document_response, tag

from flowplane.api.http import json_body, query
from flowplane.api.schemas import ErrorOut, ListQuery, TeamQuery, out_model, page_model
from flowplane.domain.resources import Kind, StoredResource
from flowplane.services.common import Window
from flowplane.services.resources import ResourceService

PATHS = {Kind.CLUSTER: "clusters", Kind.ROUTE_CONFIG: "route-configs", Kind.LISTENER: "listeners"}
MERGE_PATCH = "application/merge-patch+json"

View = Callable[..., Awaitable[Response]]


def _resource_response(res: StoredResource, status: int = 200) -> Response:
    headers = {"ETag": res.etag}
    if status == 201:
        headers["Location"] = location(f"/api/v1/native/{PATHS[res.kind]}", res)
    resp = Response(res.json_bytes, status=status, content_type="application/json")
    for k, v in headers.items():
        resp.headers[k] = v
    return resp


def location(collection: str, res: StoredResource) -> str:
    """The URL of `res` in `collection`: a team's resource carries `?team=` (names are unique
    only within a team)."""
    return f"{collection}/{res.name}" + ("" if res.team is None else f"?team={res.team}")


def by_name(view: View) -> View:
    """Document the `?team=` of a `.../{name}` path."""
    return document_querystring(TeamQuery)(view)


def _errors(view: View) -> View:
    for code in (400, 404, 409, 412, 413, 415):
        view = document_response(ErrorOut, code)(view)
    return view


def native_blueprint(resources: ResourceService) -> Blueprint:
    bp = Blueprint("native", __name__, url_prefix="/api/v1/native")
    for kind, path in PATHS.items():
        _register(bp, kind, path, resources)
    return bp


def _register(bp: Blueprint, kind: Kind, path: str, resources: ResourceService) -> None:
    model, item = kind.model, out_model(kind)
    page = page_model(kind, item)
    label = kind.label

    async def list_(**_: Any) -> Response:
        q = query(ListQuery)
        page = resources.list(g.principal, kind, Window(q.limit, q.offset), team=q.team)
        # Splice each resource's cached JSON instead of re-serialising it.
        body = b"".join(
            (
                b'{"items":[',
                b",".join(r.json_bytes for r in page.items),
                f'],"total":{page.total},"limit":{page.limit},"offset":{page.offset}}}'.encode(),
            )
        )
        return Response(body, content_type="application/json")

    async def create() -> Response:
        return _resource_response(await resources.create(g.principal, kind, await json_body()), 201)

    async def get(name: str) -> Response:
        team = query(TeamQuery).team
        return _resource_response(resources.get(g.principal, kind, name, team=team))

    async def put(name: str) -> Response:
        team = query(TeamQuery).team
        body, if_match = await json_body(), request.headers.get("If-Match")
        return _resource_response(
            await resources.replace(g.principal, kind, name, body, if_match, team=team)
        )

    async def patch(name: str) -> Response:
        team = query(TeamQuery).team
        body, if_match = await json_body(MERGE_PATCH), request.headers.get("If-Match")
        return _resource_response(
            await resources.patch(g.principal, kind, name, body, if_match, team=team)
        )

    async def delete(name: str) -> Response:
        team = query(TeamQuery).team
        await resources.delete(g.principal, kind, name, request.headers.get("If-Match"), team=team)
        return Response(b"", status=204)

    docs: dict[str, tuple[View, str]] = {
        "list": (document_querystring(ListQuery)(document_response(page)(list_)), f"List {label}s"),
        "create": (
            document_request(model)(document_response(item, 201)(create)),
            f"Create a {label}",
        ),
        "get": (by_name(document_response(item)(get)), f"Get a {label}"),
        "put": (
            by_name(document_request(model)(document_response(item)(put))),
            f"Replace a {label}",
        ),
        "patch": (by_name(document_response(item)(patch)), f"Merge-patch a {label} (RFC 7386)"),
        "delete": (by_name(delete), f"Delete a {label} (409 while referenced)"),
    }
    views = {}
    for op, (view, summary) in docs.items():
        view.__name__ = f"{kind.value}_{op}"
        view.__doc__ = summary
        views[op] = tag([f"native:{path}"])(_errors(view))
    bp.add_url_rule(f"/{path}", view_func=views["list"], methods=["GET"])
    bp.add_url_rule(f"/{path}", view_func=views["create"], methods=["POST"])
    bp.add_url_rule(f"/{path}/<name>", view_func=views["get"], methods=["GET"])
    bp.add_url_rule(f"/{path}/<name>", view_func=views["put"], methods=["PUT"])
    bp.add_url_rule(f"/{path}/<name>", view_func=views["patch"], methods=["PATCH"])
    bp.add_url_rule(f"/{path}/<name>", view_func=views["delete"], methods=["DELETE"])
