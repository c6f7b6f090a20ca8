"""History and rollback endpoints (api.md "History and rollback"): for each Native kind under
`/api/v1/native/{kind}/{name}` and for API definitions under `/api/v1/platform/apis/{id}`:
`GET .../history`, `GET .../history/{version}[?diff=previous]`, `POST .../rollback`.

Thin adapters over `flowplane.services.history.HistoryService`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import Field
from quart import Blueprint, Response, g, request
from quart_schema import document_querystring, document_request, tag

from flowplane.api.http import json_body, json_response, page_response, query
from flowplane.api.native import PATHS, _resource_response
from flowplane.api.platform import _api_response
from flowplane.api.schemas import ListQuery, _Out
from flowplane.domain.common import ApiModel, parse
from flowplane.domain.resources import Kind, StoredResource
from flowplane.errors import BadRequest, FieldProblem
from flowplane.services.common import Window
from flowplane.services.history import API, HistoryService, Version, history_item

View = Callable[..., Awaitable[Response]]


class VersionQuery(_Out):
    diff: Literal["previous"] | None = None
    team: str | None = None


class TeamQuery(_Out):
    team: str | None = None


class RollbackIn(ApiModel):
    """`POST .../rollback` body: the version whose content becomes the new version."""

    version: Annotated[int, Field(ge=1)]


def _version(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequest(
            f"version {raw!r} is not a version number",
            [FieldProblem("version", "a positive integer")],
        )
    return int(raw)


def history_blueprint(history: HistoryService) -> Blueprint:
    bp = Blueprint("history", __name__, url_prefix="/api/v1")
    for kind, path in PATHS.items():
        _register(bp, history, kind.value, f"/native/{path}", f"native:{path}")
    _register(bp, history, API, "/platform/apis", "platform:apis")
    return bp


def _register(bp: Blueprint, history: HistoryService, kind: str, base: str, group: str) -> None:
    label = "API" if kind == API else Kind(kind).label

    async def list_(name: str) -> Response:
        q = query(ListQuery)
        page = await history.list(g.principal, kind, name, Window(q.limit, q.offset), team=q.team)
        return page_response(page, history_item)

    async def version(name: str, number: str) -> Response:
        q = query(VersionQuery)
        found = await history.version(
            g.principal, kind, name, _version(number), team=q.team, diff=q.diff
        )
        if isinstance(found, Version):
            return json_response(found.to_json())
        resp = json_response(found)  # an RFC 6902 patch
        resp.headers["Content-Type"] = "application/json-patch+json"
        return resp

    async def rollback(name: str) -> Response:
        q = query(TeamQuery)
        body: Any = parse(RollbackIn, await json_body(), "rollback request")
        out = await history.rollback(
            g.principal, kind, name, body.version, request.headers.get("If-Match"), team=q.team
        )
        if isinstance(out, StoredResource):
            return _resource_response(out)
        assert out.api is not None
        return _api_response(out.api)

    views: dict[str, tuple[View, str]] = {
        "history": (
            document_querystring(ListQuery)(list_),
            f"Versions of a {label}, newest first (deleted ones too)",
        ),
        "history_version": (
            document_querystring(VersionQuery)(version),
            f"One version of a {label} as it was; ?diff=previous: an RFC 6902 patch",
        ),
        "rollback": (
            document_request(RollbackIn)(rollback),
            f"Roll a {label} back: a new version with an old one's content (re-creates it)",
        ),
    }
    for op, (view, summary) in views.items():
        view.__name__ = f"{kind}_{op}"
        view.__doc__ = summary
        views[op] = (tag([group])(view), summary)
    bp.add_url_rule(f"{base}/<name>/history", view_func=views["history"][0], methods=["GET"])
    bp.add_url_rule(
        f"{base}/<name>/history/<number>", view_func=views["history_version"][0], methods=["GET"]
    )
    bp.add_url_rule(f"{base}/<name>/rollback", view_func=views["rollback"][0], methods=["POST"])
