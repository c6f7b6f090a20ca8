"""Data-plane endpoints: connected nodes (`/api/v1/nodes`) and Envoy bootstraps; thin adapters
over `flowplane.services.dataplanes`."""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import Field
from quart import Blueprint, Response, g
from quart_schema import document_querystring, tag

from flowplane.api.http import json_response, page_response, query
from flowplane.api.schemas import _Out
from flowplane.services.common import Page, Window
from flowplane.services.dataplanes import BootstrapOptions, DataPlaneService


class NodesQuery(_Out):
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)


class BootstrapQuery(_Out):
    format: Literal["yaml", "json"] = "yaml"
    mode: Literal["sotw", "delta"] = "sotw"
    scope: Literal["team", "allowlist", "all"] = "team"
    allowlist: str | None = None
    include_default: bool = Field(False, alias="includeDefault")
    ca_file: str = Field("/etc/flowplane/xds-ca.pem", alias="caFile")
    cert_file: str = Field("/etc/flowplane/dataplane.pem", alias="certFile")
    key_file: str = Field("/etc/flowplane/dataplane-key.pem", alias="keyFile")
    admin_port: int = Field(9901, ge=1, le=65535, alias="adminPort")


def dataplanes_blueprint(dataplanes: DataPlaneService) -> Blueprint:
    bp = Blueprint("dataplanes", __name__, url_prefix="/api/v1")

    @bp.get("/nodes")
    @tag(["data planes"])
    @document_querystring(NodesQuery)
    async def list_nodes() -> Response:
        """Connected Envoys: per resource type, version sent and acknowledged, last rejection
        (`?limit=&offset=` like every list; `team` is not a filter here)."""
        q = query(NodesQuery)
        page = Page.of(dataplanes.list_nodes(g.principal), Window(q.limit, q.offset))
        return page_response(page, lambda n: n)

    @bp.get("/nodes/<path:node_id>")
    @tag(["data planes"])
    async def get_node(node_id: str) -> Response:
        """One connected node (its most recent stream; `streams` lists all of them)."""
        return json_response(dataplanes.get_node(g.principal, node_id))

    @bp.get("/teams/<team>/bootstrap")
    @tag(["data planes"])
    @document_querystring(BootstrapQuery)
    async def bootstrap(team: str) -> Response:
        """An Envoy bootstrap for `team`, pointing at the advertised xDS address."""
        q = query(BootstrapQuery)
        options = BootstrapOptions(
            q.format, q.mode, q.scope, tuple(n for n in (q.allowlist or "").split(",") if n),
            q.include_default, q.ca_file, q.cert_file, q.key_file, q.admin_port,
        )  # fmt: skip
        doc = await dataplanes.bootstrap(g.principal, team, options)
        if q.format == "json":
            return json_response(doc)
        return Response(yaml.safe_dump(doc, sort_keys=False), content_type="application/yaml")

    return bp
