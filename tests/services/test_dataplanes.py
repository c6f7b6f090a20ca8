"""DataPlaneService (api.md "Data planes"): the connected nodes and Envoy bootstraps, called
directly with an explicit caller (no HTTP).

The service reads connected streams through the `NodeDirectory` protocol; most tests give it a
small in-memory directory (the protocol is the seam), and one connects real ADS clients to a real
in-process plane so the xDS edge's hub is proven to satisfy the same protocol."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse, DiscoveryResponse

from flowplane.app import Core, open_core
from flowplane.domain.auth import SYSTEM
from flowplane.domain.resources import Kind
from flowplane.errors import BadRequest, Forbidden, NotFound
from flowplane.services.audit import AuditFilter
from flowplane.services.common import Window
from flowplane.services.dataplanes import BootstrapOptions, DataPlaneService, NodeDirectory
from flowplane.settings import Settings, load_settings
from flowplane.testing.adsclient import delta_client, sotw_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import run_plane
from flowplane.xds.sotw import Rejection, TypeStatus
from flowplane.xds.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.services.helpers import ADMIN, all_but, assert_scope_refused, authenticate, caller

CONNECTED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
REJECTED = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Most bootstrap tests here are about the document's shape: xDS auth `none` (no token in
    it), chosen explicitly; `token_auth` below is the default, with tests of its own."""
    return load_settings(database_url=db_url, default_gateway=False, xds_auth="none")


# --- a NodeDirectory in memory ----------------------------------------------------------------


@dataclass
class Status:
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def status(self) -> Mapping[str, TypeStatus]:
        return self.types


@dataclass
class Stream:
    """One connected stream as `NodeStream` describes it."""

    stream_id: int
    node_id: str | None
    team: str | None
    accepted: bool = True
    protocol: str = "sotw"
    address: str = "10.0.0.7:40000"
    connected_since: datetime = CONNECTED
    state: Status = field(default_factory=Status)
    rejected_at: dict[str, datetime] = field(default_factory=dict)

    def rejection_time(self, type_url: str) -> datetime | None:
        return self.rejected_at.get(type_url)


@dataclass
class Directory:
    streams: list[Stream]

    def connected(self) -> Iterable[Stream]:
        return list(self.streams)


def service(core: Core, *streams: Stream, settings: Settings | None = None,
            port: int | None = 18123) -> DataPlaneService:  # fmt: skip
    nodes: NodeDirectory = Directory(list(streams))
    return DataPlaneService(nodes, core.services.tokens, settings or core.settings, lambda: port)


REJECTION = Rejection(CLUSTER_TYPE, "v2", "n-2", "cluster c1: bad", ("c1", "c2"), "team=a/dp-1")
NODE_A = Stream(
    3, "team=a/dp-1", "a",
    state=Status({
        CLUSTER_TYPE: TypeStatus("v2", "n-2", "v1", REJECTION),
        LISTENER_TYPE: TypeStatus("l1", "n-1", None, None),
    }),
    rejected_at={CLUSTER_TYPE: REJECTED},
)  # fmt: skip
NODE_SHARED = Stream(1, "dp-0", None, protocol="delta", address="10.0.0.9:1")
NOT_YET = Stream(9, "team=a/dp-9", None, accepted=False)  # no accepted first request yet


# --- list_nodes / get_node --------------------------------------------------------------------


async def test_list_nodes_renders_each_accepted_stream(core: Core) -> None:
    """Per resource type: version sent, version acknowledged, last rejection with its time."""
    nodes = service(core, NODE_A, NODE_SHARED, NOT_YET).list_nodes(ADMIN)
    assert [n["id"] for n in nodes] == ["dp-0", "team=a/dp-1"]  # by id; not-yet-accepted hidden
    assert nodes[1] == {
        "id": "team=a/dp-1", "team": "a", "address": "10.0.0.7:40000",
        "connectedSince": "2026-01-02T03:04:05.678Z", "protocol": "sotw", "streamId": 3,
        "resources": {
            "Cluster": {
                "typeUrl": CLUSTER_TYPE, "versionSent": "v2", "versionAcknowledged": "v1",
                "lastRejection": {"version": "v2", "errorDetail": "cluster c1: bad",
                                  "resourceNames": ["c1", "c2"],
                                  "time": "2026-01-02T03:05:00.000Z"},
            },
            "Listener": {"typeUrl": LISTENER_TYPE, "versionSent": "l1",
                         "versionAcknowledged": None, "lastRejection": None},
        },
    }  # fmt: skip
    assert (nodes[0]["team"], nodes[0]["protocol"], nodes[0]["resources"]) == (None, "delta", {})
    assert service(core).list_nodes(ADMIN) == []


async def test_a_team_bound_caller_lists_its_teams_nodes_only(core: Core) -> None:
    """A node without a team is visible only to callers not bound to teams."""
    node_b = Stream(4, "team=b/dp-2", "b")
    svc = service(core, NODE_A, NODE_SHARED, node_b)
    seen = {
        who: [n["id"] for n in svc.list_nodes(caller("nodes:read", teams=who))]
        for who in ((), ("a",), ("b",), ("a", "b"), ("c",))
    }
    assert seen == {
        (): ["dp-0", "team=a/dp-1", "team=b/dp-2"],
        ("a",): ["team=a/dp-1"],
        ("b",): ["team=b/dp-2"],
        ("a", "b"): ["team=a/dp-1", "team=b/dp-2"],
        ("c",): [],
    }


async def test_get_node_is_its_latest_stream_with_all_of_them(core: Core) -> None:
    older = Stream(2, "team=a/dp-1", "a", protocol="delta")
    svc = service(core, NODE_A, older, NODE_SHARED)
    got = svc.get_node(caller("nodes:read", teams=["a"]), "team=a/dp-1")
    assert got["streamId"] == 3 and got["protocol"] == "sotw"
    assert [s["streamId"] for s in got["streams"]] == [2, 3]
    assert {k: v for k, v in got.items() if k != "streams"} == got["streams"][-1]


async def test_get_node_refusals(core: Core) -> None:
    """Missing, not yet accepted, or another team's node: 404 alike (no existence leak)."""
    svc = service(core, NODE_A, NODE_SHARED, NOT_YET)
    b = caller("nodes:read", teams=["b"])
    for who, node_id in ((ADMIN, "nope"), (ADMIN, "team=a/dp-9"), (b, "team=a/dp-1"),
                         (b, "dp-0")):  # fmt: skip
        with pytest.raises(NotFound, match=re.escape(repr(node_id))):
            svc.get_node(who, node_id)


@pytest.mark.parametrize("op", ["list_nodes", "get_node"])
async def test_node_reads_check_their_scope(core: Core, op: str) -> None:
    svc = service(core, NODE_A)
    args = () if op == "list_nodes" else ("team=a/dp-1",)
    with pytest.raises(Forbidden) as refused:
        getattr(svc, op)(all_but("nodes:read"), *args)
    assert_scope_refused(refused.value, "nodes:read")
    assert getattr(svc, op)(caller("nodes:read"), *args)


# --- bootstrap ------------------------------------------------------------------------------


def xds_address(doc: dict[str, Any]) -> dict[str, Any]:
    cluster = doc["static_resources"]["clusters"][0]
    lb = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    return lb["endpoint"]["address"]["socket_address"]  # type: ignore[no-any-return]


def ads(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["dynamic_resources"]["ads_config"]  # type: ignore[no-any-return]


async def test_bootstrap_for_a_team(core: Core) -> None:
    """Team scope: the node id names the team, the metadata carries the scope, ADS points at
    the advertised address (the bound xDS port), admin on 127.0.0.1, no credentials."""
    doc = await service(core).bootstrap(ADMIN, "payments", BootstrapOptions())
    node = doc["node"]
    assert re.fullmatch(r"team=payments/dp-[0-9a-f-]{36}", node["id"])
    assert node["cluster"] == "payments"
    assert node["metadata"] == {"team": "payments", "scope": "team", "include_default": False}
    assert xds_address(doc) == {"address": "127.0.0.1", "port_value": 18123}
    assert ads(doc)["api_type"] == "GRPC" and "initial_metadata" not in ads(doc)["grpc_services"][0]
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert "transport_socket" not in doc["static_resources"]["clusters"][0]
    again = await service(core).bootstrap(ADMIN, "payments", BootstrapOptions())
    assert again["node"]["id"] != node["id"]  # each bootstrap is a new data plane
    # before the xDS server is bound, the configured port (FLOWPLANE_XDS_ADDRESS) is used
    unbound = await service(core, port=None).bootstrap(ADMIN, "payments", BootstrapOptions())
    assert xds_address(unbound) == {"address": "127.0.0.1", "port_value": 18000}


async def test_bootstrap_options(core: Core) -> None:
    svc = service(core)
    delta = await svc.bootstrap(ADMIN, "a", BootstrapOptions(mode="delta", include_default=True))
    assert ads(delta)["api_type"] == "DELTA_GRPC"
    assert delta["node"]["metadata"]["include_default"] is True
    allow = await svc.bootstrap(ADMIN, "a", BootstrapOptions(scope="allowlist",
                                                             allowlist=("l1", "l2")))  # fmt: skip
    assert allow["node"]["metadata"] == {"team": "a", "scope": "allowlist",
                                         "include_default": False,
                                         "listener_allowlist": ["l1", "l2"]}  # fmt: skip
    with pytest.raises(BadRequest, match="allowlist=name1,name2"):
        await svc.bootstrap(ADMIN, "a", BootstrapOptions(scope="allowlist"))


async def test_bootstrap_scope_all_is_for_admins(core: Core) -> None:
    """scope=all: every team's resources, a node without a team; admin:all only (403)."""
    svc = service(core)
    doc = await svc.bootstrap(ADMIN, "a", BootstrapOptions(scope="all"))
    assert doc["node"]["metadata"] == {"scope": "all"}
    assert re.fullmatch(r"dp-[0-9a-f-]{36}", doc["node"]["id"])
    for who in (
        caller("listeners:read"),
        caller("listeners:read", teams=["a"]),
        all_but("admin:all"),
    ):
        with pytest.raises(Forbidden, match="admin:all"):
            await svc.bootstrap(who, "a", BootstrapOptions(scope="all"))


async def test_bootstrap_team_rules(core: Core) -> None:
    svc = service(core)
    a = caller("listeners:read", teams=["a"])
    assert (await svc.bootstrap(a, "a", BootstrapOptions()))["node"]["metadata"]["team"] == "a"
    with pytest.raises(NotFound, match="team 'b'"):
        await svc.bootstrap(a, "b", BootstrapOptions())
    with pytest.raises(BadRequest, match="not a valid team name"):
        await svc.bootstrap(ADMIN, "Not_A_Team", BootstrapOptions())


async def test_bootstrap_checks_its_scope(core: Core) -> None:
    with pytest.raises(Forbidden) as refused:
        await service(core).bootstrap(all_but("listeners:read"), "a", BootstrapOptions())
    assert_scope_refused(refused.value, "listeners:read")


async def test_bootstrap_with_xds_tls(core: Core) -> None:
    """TLS on the xDS port -> the bootstrap verifies the server; with a client CA (mTLS) it
    also presents the data plane's certificate (paths from the options)."""
    base = {"database_url": core.settings.database_url, "xds_tls_cert": "/s.pem",
            "xds_tls_key": "/s-key.pem", "xds_advertise_address": "xds.example.internal:443"}  # fmt: skip
    opts = BootstrapOptions(ca_file="/ca.pem", cert_file="/dp.pem", key_file="/dp-key.pem")
    tls_only = await service(core, settings=load_settings(**base)).bootstrap(ADMIN, "a", opts)
    ctx = tls_only["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert ctx["sni"] == "xds.example.internal"
    assert ctx["common_tls_context"]["validation_context"] == {
        "trusted_ca": {"filename": "/ca.pem"}
    }
    assert "tls_certificates" not in ctx["common_tls_context"]
    assert xds_address(tls_only) == {"address": "xds.example.internal", "port_value": 443}
    mtls = load_settings(**base, xds_tls_client_ca="/clients.pem")
    doc = await service(core, settings=mtls).bootstrap(ADMIN, "a", opts)
    ctx = doc["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert ctx["common_tls_context"]["tls_certificates"] == [
        {"certificate_chain": {"filename": "/dp.pem"}, "private_key": {"filename": "/dp-key.pem"}}
    ]


def token_auth(db_url: str) -> Settings:
    return load_settings(database_url=db_url, default_gateway=False, xds_auth="token")


def minted(doc: dict[str, Any]) -> str:
    (header,) = ads(doc)["grpc_services"][0]["initial_metadata"]
    assert header["key"] == "authorization" and header["value"].startswith("Bearer ")
    return header["value"].removeprefix("Bearer ")  # type: ignore[no-any-return]


async def test_bootstrap_with_token_auth_mints_a_data_plane_token(db_url: str) -> None:
    """FLOWPLANE_XDS_AUTH=token: each bootstrap carries a new data-plane token (xds:connect only)
    bound to the team, made by the caller; it is stored like any token."""
    async with open_core(token_auth(db_url)) as core:
        svc = core.services.dataplanes
        doc = await svc.bootstrap(ADMIN, "a", BootstrapOptions())
        dp = authenticate(core, minted(doc))
        assert (dp.name, dp.scopes, dp.teams) == ("dataplane-a", {"xds:connect"}, {"a"})
        rec = core.services.tokens.get(ADMIN, dp.token_id or "").record
        assert (rec.role, rec.created_by, rec.status) == ("data-plane", ADMIN.token_id, "active")
        # a team-bound caller may mint for its own team, if it holds what it hands out
        a = caller("listeners:read", "tokens:write", "xds:connect", teams=["a"])
        assert authenticate(
            core, minted(await svc.bootstrap(a, "a", BootstrapOptions()))
        ).teams == {"a"}
    async with open_core(token_auth(db_url)) as core:  # persisted: still a valid token
        assert authenticate(core, minted(doc)).token_id == dp.token_id


async def test_token_auth_is_the_default(db_url: str) -> None:
    """Issue 17 item 7: "Make authenticated xDS the default (bootstraps already carry data-plane
    tokens); `none` must be chosen explicitly" -- settings without FLOWPLANE_XDS_AUTH mean token
    auth, and a bootstrap made under them carries a token."""
    settings = load_settings(database_url=db_url, default_gateway=False)
    assert settings.xds_auth == "token"
    async with open_core(settings) as core:
        doc = await core.services.dataplanes.bootstrap(ADMIN, "a", BootstrapOptions())
        assert authenticate(core, minted(doc)).teams == {"a"}


async def test_scope_all_bootstrap_under_token_auth(db_url: str) -> None:
    """An admin's scope=all bootstrap under token auth carries a team-less token holding
    `xds:connect` and `xds:all` (what authenticated xDS accepts for a node of no team); its
    creation is audited with the admin as actor. Nobody else gets one (403 before anything is
    minted), and no token bound to a team can ever hold `xds:all` (400), created or patched."""
    async with open_core(token_auth(db_url)) as core:
        svc, tokens = core.services.dataplanes, core.services.tokens
        doc = await svc.bootstrap(ADMIN, "a", BootstrapOptions(scope="all"))
        assert doc["node"]["metadata"] == {"scope": "all"}
        dp = authenticate(core, minted(doc))
        assert (dp.name, dp.scopes, dp.teams) == ("dataplane-all", {"xds:connect", "xds:all"},
                                                   frozenset())  # fmt: skip
        audit = await core.services.audit.query(ADMIN, AuditFilter(resource_type="token"),
                                                Window())  # fmt: skip
        assert any(
            row.resource_name == dp.token_id and row.action == "create"
            and row.actor_name == ADMIN.name for row in audit.items
        ), audit.items
        before = tokens.list(ADMIN, Window()).total
        engineer = caller("listeners:read", "tokens:write", "xds:connect", "xds:all")
        with pytest.raises(Forbidden, match="admin:all"):
            await svc.bootstrap(engineer, "a", BootstrapOptions(scope="all"))
        assert tokens.list(ADMIN, Window()).total == before
        with pytest.raises(BadRequest, match="xds:all"):
            await tokens.create(ADMIN, {"name": "x", "scopes": ["xds:all"], "teams": ["a"]})
        with pytest.raises(BadRequest, match="xds:all"):
            await tokens.patch(ADMIN, dp.token_id or "", {"teams": ["a"]})
        assert tokens.list(ADMIN, Window()).total == before


async def test_bootstrap_with_token_auth_refusals(db_url: str) -> None:
    """Minting needs tokens:write (403), and no escalation: a caller without xds:connect cannot
    hand it out (403); under mtls a node's team comes from its certificate, so scope=all is
    refused (400). Nothing is minted."""
    async with open_core(token_auth(db_url)) as core:
        svc, tokens = core.services.dataplanes, core.services.tokens
        before = tokens.list(ADMIN, Window()).total
        with pytest.raises(Forbidden, match=r"xDS token auth is on: .* needs tokens:write"):
            await svc.bootstrap(caller("listeners:read"), "a", BootstrapOptions())
        with pytest.raises(Forbidden, match="xds:connect"):
            await svc.bootstrap(caller("listeners:read", "tokens:write", teams=["a"]), "a",
                                BootstrapOptions())  # fmt: skip
        mtls = load_settings(database_url=db_url, xds_tls_cert="/s.pem", xds_tls_key="/k.pem",
                             xds_tls_client_ca="/ca.pem", xds_auth="mtls")  # fmt: skip
        with pytest.raises(BadRequest, match="FLOWPLANE_XDS_AUTH=token or none"):
            await service(core, settings=mtls).bootstrap(ADMIN, "a", BootstrapOptions(scope="all"))
        assert tokens.list(ADMIN, Window()).total == before


# --- the real hub satisfies NodeDirectory -------------------------------------------------------


async def _seed_team_a(core: Core) -> None:
    res = core.services.resources
    await res.create(SYSTEM, Kind.CLUSTER, cluster_body(team="a"))
    await res.create(SYSTEM, Kind.ROUTE_CONFIG, route_config_body(team="a"))
    await res.create(SYSTEM, Kind.LISTENER, listener_body(team="a", port=10010))


def version(resp: DiscoveryResponse | DeltaDiscoveryResponse) -> str:
    if isinstance(resp, DeltaDiscoveryResponse):
        return resp.system_version_info
    return resp.version_info


@pytest.mark.parametrize(
    ("protocol", "client_kind"), [("sotw", sotw_client), ("delta", delta_client)]
)
async def test_the_xds_hub_is_a_node_directory(
    xds_settings: Settings,
    protocol: str,
    client_kind: Callable[..., AbstractAsyncContextManager[Any]],
) -> None:
    """A real ADS client on a real in-process plane: the service lists it through the hub,
    with the versions it was sent and acknowledged and the rejection it sent."""
    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await _seed_team_a(plane.core)
            await plane.settled()
            # the service as the composition root made it: reading the hub
            svc = plane.core.services.dataplanes
            async with client_kind("127.0.0.1", plane.xds_port, node_id="team=a/dp-real") as c:
                await c.send(CLUSTER_TYPE)
                cds = await c.recv()
                await c.ack(cds)
                await c.send(LISTENER_TYPE)
                lds = await c.recv()  # requests are handled in order: the ACK is recorded
                await c.nack(lds, "listener a/edge: refused")
                await c.send(ROUTE_TYPE, ["a/routes"])  # a team's xDS names: `<team>/<name>`
                rds = await c.recv()  # ... and so is the NACK
                (node,) = svc.list_nodes(caller("nodes:read", teams=["a"]))
                assert svc.get_node(ADMIN, "team=a/dp-real")["streams"] == [node]
                with pytest.raises(NotFound):
                    svc.get_node(caller("nodes:read", teams=["b"]), "team=a/dp-real")
    assert (node["id"], node["team"], node["protocol"]) == ("team=a/dp-real", "a", protocol)
    assert node["address"].startswith("127.0.0.1:")
    got = node["resources"]
    assert got["Cluster"] == {"typeUrl": CLUSTER_TYPE, "versionSent": version(cds),
                              "versionAcknowledged": version(cds), "lastRejection": None}  # fmt: skip
    assert (got["Listener"]["versionSent"], got["Listener"]["versionAcknowledged"]) == (
        version(lds), None,
    )  # fmt: skip
    rejection = got["Listener"]["lastRejection"]
    assert (rejection["errorDetail"], rejection["resourceNames"], rejection["version"]) == (
        "listener a/edge: refused", ["a/edge"], version(lds),
    )  # fmt: skip
    assert rejection["time"].endswith("Z")
    assert got["RouteConfiguration"]["versionSent"] == version(rds)
