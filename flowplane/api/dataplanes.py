"""Data-plane endpoints: connected nodes (`/api/v1/nodes`) and Envoy bootstraps."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field
from quart import Blueprint, Response, g
from quart_schema import document_querystring, tag

from flowplane.actors.auth import CreateToken
from flowplane.api.http import json_response, query
from flowplane.api.schemas import _Out
from flowplane.domain.auth import Principal
from flowplane.domain.common import NAME_RE
from flowplane.errors import BadRequest, Forbidden, NotFound
from flowplane.grpc.hub import StreamInfo
from flowplane.xds.bootstrap import XdsTls, ads_bootstrap

if TYPE_CHECKING:
    from flowplane.app import Core


class BootstrapQuery(_Out):
    format: Literal["yaml", "json"] = "yaml"
    mode: Literal["sotw", "delta"] = "sotw"
    scope: Literal["team", "allowlist", "all"] = "team"
    allowlist: str | None = None
    include_default: bool = Field(False, alias="includeDefault")
    ca_file: str = Field("/etc/flowplane/xds-ca.pem", alias="caFile")
    cert_file: str = Field("/etc/flowplane/dataplane.pem", alias="certFile")
    key_file: str = Field("/etc/flowplane/dataplane-key.pem", alias="keyFile")


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def node_json(info: StreamInfo) -> dict[str, Any]:
    node_id = info.node_id
    resources = {}
    for type_url, st in info.state.status().items():
        rej = st.last_rejection
        resources[type_url.rpartition(".")[2]] = {
            "typeUrl": type_url,
            "versionSent": st.version_sent,
            "versionAcknowledged": st.version_acked,
            "lastRejection": None
            if rej is None
            else {
                "version": rej.version,
                "errorDetail": rej.message,
                "resourceNames": list(rej.resource_names),
                "time": _ts(t) if (t := info.rejection_time(type_url)) else None,
            },
        }
    return {
        "id": node_id,
        "team": info.team,  # as xDS scoping decided it, identity included
        "address": info.address,
        "connectedSince": _ts(info.connected_since),
        "protocol": info.protocol,
        "streamId": info.stream_id,
        "resources": resources,
    }


def _nodes(core: Core) -> list[StreamInfo]:
    """Streams that are nodes: accepted, with the scope of their first request fixed."""
    return [i for i in core.hub.streams.values() if i.scope is not None]


def _sees(principal: Principal, node: dict[str, Any]) -> bool:
    """Team-bound tokens see their teams' nodes only (a node without a team: admins only)."""
    return not principal.team_bound or node["team"] in principal.teams


def dataplanes_blueprint(core: Core) -> Blueprint:
    bp = Blueprint("dataplanes", __name__, url_prefix="/api/v1")

    @bp.get("/nodes")
    @tag(["data planes"])
    async def list_nodes() -> Response:
        """Connected Envoys: per resource type, version sent and acknowledged, last rejection."""
        p = g.principal
        items = [n for n in map(node_json, _nodes(core)) if _sees(p, n)]
        items.sort(key=lambda n: (n["id"] or "", n["streamId"]))
        return json_response({"items": items, "total": len(items), "limit": len(items),
                              "offset": 0})  # fmt: skip

    @bp.get("/nodes/<path:node_id>")
    @tag(["data planes"])
    async def get_node(node_id: str) -> Response:
        """One connected node (its most recent stream; `streams` lists all of them)."""
        streams = [
            n for n in map(node_json, _nodes(core))
            if n["id"] == node_id and _sees(g.principal, n)
        ]  # fmt: skip
        if not streams:
            raise NotFound(f"no connected node {node_id!r}")
        streams.sort(key=lambda n: n["streamId"])
        return json_response({**streams[-1], "streams": streams})

    @bp.get("/teams/<team>/bootstrap")
    @tag(["data planes"])
    @document_querystring(BootstrapQuery)
    async def bootstrap(team: str) -> Response:
        """An Envoy bootstrap for `team`, pointing at the advertised xDS address."""
        if not NAME_RE.match(team):
            raise BadRequest(f"{team!r} is not a valid team name")
        if not g.principal.can_read_team(team):
            raise NotFound(f"team {team!r} does not exist")
        q = query(BootstrapQuery)
        host, port = core.settings.advertised_xds(core.xds_port)
        metadata: dict[str, Any] = {"team": team, "scope": q.scope,
                                    "include_default": q.include_default}  # fmt: skip
        node_id = f"team={team}/dp-{uuid.uuid4()}"
        if q.scope == "all":
            # Everything, for every team: an admin's choice, and a node without a team.
            if not g.principal.admin:
                raise Forbidden("scope=all (every team's resources) needs admin:all")
            if core.settings.xds_auth != "none":
                raise BadRequest("scope=all needs FLOWPLANE_XDS_AUTH=none (nodes have a team)")
            metadata = {"scope": "all"}
            node_id = f"dp-{uuid.uuid4()}"
        if q.scope == "allowlist":
            names = [n for n in (q.allowlist or "").split(",") if n]
            if not names:
                raise BadRequest("scope=allowlist needs allowlist=name1,name2")
            metadata["listener_allowlist"] = names
        settings = core.settings
        tls = None
        if settings.xds_tls_cert:
            mtls = bool(settings.xds_tls_client_ca)
            tls = XdsTls(
                q.ca_file, q.cert_file if mtls else None, q.key_file if mtls else None, sni=host
            )
        token = None
        if settings.xds_auth == "token":
            # A data-plane token for this team (scope xds:connect), minted for this bootstrap.
            if not g.principal.has("tokens:write"):
                raise Forbidden(
                    "xDS token auth is on: minting a data-plane token needs tokens:write"
                )
            body = {"name": f"dataplane-{team}", "role": "data-plane", "teams": [team]}
            _, token = await core.actor.submit(CreateToken(body, g.principal))
        doc = ads_bootstrap(
            node_id, host, port, delta=q.mode == "delta",
            cluster=team, metadata=metadata, admin_port=9901, tls=tls, token=token,
            keepalive=(settings.xds_keepalive_seconds, settings.xds_keepalive_timeout_seconds),
        )  # fmt: skip
        if q.format == "json":
            return json_response(doc)
        return Response(yaml.safe_dump(doc, sort_keys=False), content_type="application/yaml")

    return bp
