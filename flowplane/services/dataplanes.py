"""Data planes (api.md "Data planes"): the connected Envoys, and bootstraps for new ones.

The service reads connected streams through the `NodeDirectory` protocol (the xDS edge's hub
implements it), so nothing here depends on the gRPC edge.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from flowplane.domain.auth import Principal
from flowplane.domain.common import NAME_RE, rfc3339
from flowplane.errors import BadRequest, Forbidden, NotFound
from flowplane.services.common import require_scope
from flowplane.services.security import TokenService
from flowplane.settings import Settings
from flowplane.xds.bootstrap import XdsTls, ads_bootstrap
from flowplane.xds.sotw import TypeStatus


class StreamStatus(Protocol):
    def status(self) -> Mapping[str, TypeStatus]: ...


class NodeStream(Protocol):
    """One connected xDS stream, as far as the nodes API needs to know it (read-only)."""

    @property
    def stream_id(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def connected_since(self) -> datetime: ...
    @property
    def state(self) -> StreamStatus: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def team(self) -> str | None:
        """The team xDS scoping decided for the node (one rule: `xds.scope.scope_from_node`)."""

    def rejection_time(self, type_url: str) -> datetime | None: ...


class NodeDirectory(Protocol):
    """Where the connected streams are listed (the xDS edge's hub)."""

    def connected(self) -> Iterable[NodeStream]: ...


def node_json(info: NodeStream) -> dict[str, Any]:
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
                "time": rfc3339(t, "milliseconds")
                if (t := info.rejection_time(type_url))
                else None,
            },
        }
    return {
        "id": node_id,
        "team": info.team,
        "address": info.address,
        "connectedSince": rfc3339(info.connected_since, "milliseconds"),
        "protocol": info.protocol,
        "streamId": info.stream_id,
        "resources": resources,
    }


def _sees(caller: Principal, node: dict[str, Any]) -> bool:
    """Team-bound tokens see their teams' nodes only (a node without a team: admins only)."""
    return not caller.team_bound or node["team"] in caller.teams


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    format: Literal["yaml", "json"] = "yaml"
    mode: Literal["sotw", "delta"] = "sotw"
    scope: Literal["team", "allowlist", "all"] = "team"
    allowlist: tuple[str, ...] = ()
    include_default: bool = False
    ca_file: str = "/etc/flowplane/xds-ca.pem"
    cert_file: str = "/etc/flowplane/dataplane.pem"
    key_file: str = "/etc/flowplane/dataplane-key.pem"
    admin_port: int = 9901  # Envoy's admin listener on 127.0.0.1 (one per Envoy on a host)


class DataPlaneService:
    def __init__(
        self,
        nodes: NodeDirectory,
        tokens: TokenService,
        settings: Settings,
        xds_port: Callable[[], int | None],
    ) -> None:
        self._nodes = nodes
        self._tokens = tokens
        self._settings = settings
        self._xds_port = xds_port  # the bound port, known once the xDS server started

    def _visible(self, caller: Principal) -> list[dict[str, Any]]:
        require_scope(caller, "nodes:read")
        nodes = (node_json(i) for i in self._nodes.connected() if i.accepted)
        return [n for n in nodes if _sees(caller, n)]

    def list_nodes(self, caller: Principal) -> list[dict[str, Any]]:
        """Connected nodes `caller` may see, by id: per resource type the version sent, the
        version acknowledged and the last rejection."""
        items = self._visible(caller)
        items.sort(key=lambda n: (n["id"] or "", n["streamId"]))
        return items

    def get_node(self, caller: Principal, node_id: str) -> dict[str, Any]:
        """One node's most recent stream, with all of its streams under `streams`."""
        streams = [n for n in self._visible(caller) if n["id"] == node_id]
        if not streams:
            raise NotFound(f"no connected node {node_id!r}")
        streams.sort(key=lambda n: n["streamId"])
        return {**streams[-1], "streams": streams}

    async def bootstrap(self, caller: Principal, team: str, q: BootstrapOptions) -> dict[str, Any]:
        """An Envoy bootstrap for `team` pointing at the advertised xDS address. With xDS token
        auth on (the default), a data-plane token is minted into it (needs tokens:write): bound
        to the team, or for scope=all (admins only) a team-less token with `xds:all`."""
        require_scope(caller, "listeners:read")
        if not NAME_RE.fullmatch(team):
            raise BadRequest(f"{team!r} is not a valid team name")
        if not caller.can_read_team(team):
            raise NotFound(f"team {team!r} does not exist")
        settings = self._settings
        host, port = settings.advertised_xds(self._xds_port())
        metadata: dict[str, Any] = {"team": team, "scope": q.scope,
                                    "include_default": q.include_default}  # fmt: skip
        node_id = f"team={team}/dp-{uuid.uuid4()}"
        if q.scope == "all":
            # Everything, for every team: an admin's choice, and a node without a team.
            if not caller.admin:
                raise Forbidden("scope=all (every team's resources) needs admin:all")
            if settings.xds_auth == "mtls":
                raise BadRequest(
                    "scope=all needs FLOWPLANE_XDS_AUTH=token or none "
                    "(with mtls a node's team comes from its client certificate)"
                )
            metadata = {"scope": "all"}
            node_id = f"dp-{uuid.uuid4()}"
        if q.scope == "allowlist":
            if not q.allowlist:
                raise BadRequest("scope=allowlist needs allowlist=name1,name2")
            metadata["listener_allowlist"] = list(q.allowlist)
        tls = None
        if settings.xds_tls_cert:
            mtls = bool(settings.xds_tls_client_ca)
            tls = XdsTls(
                q.ca_file, q.cert_file if mtls else None, q.key_file if mtls else None, sni=host
            )
        token = None
        if settings.xds_auth == "token":
            # A data-plane token for this team (scope xds:connect), minted for this bootstrap.
            if not caller.has("tokens:write"):
                raise Forbidden(
                    "xDS token auth is on: minting a data-plane token needs tokens:write"
                )
            body: dict[str, Any] = {
                "name": f"dataplane-{team}", "role": "data-plane", "teams": [team]
            }  # fmt: skip
            if q.scope == "all":
                # A node of no team (every team's configuration): xds:all and no team, which only
                # an admin can hand out (checked above); the token's creation is audited.
                body = {"name": "dataplane-all", "scopes": ["xds:connect", "xds:all"]}
            token = (await self._tokens.create(caller, body)).token
        return ads_bootstrap(
            node_id, host, port, delta=q.mode == "delta",
            cluster=team, metadata=metadata, admin_port=q.admin_port, tls=tls, token=token,
            keepalive=(settings.xds_keepalive_seconds, settings.xds_keepalive_timeout_seconds),
        )  # fmt: skip
