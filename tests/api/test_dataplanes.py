"""Bootstrap generation, the default gateway, and the nodes endpoints (no Envoy needed)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from grpclib.const import Status

from flowplane.app import make_app, open_core
from flowplane.domain.resources import Kind
from flowplane.settings import load_settings
from flowplane.testing.adsclient import AdsStreamEnded, decode, delta_client, sotw_client
from flowplane.testing.envoy import validate_bootstrap
from flowplane.testing.plane import admin_token, run_plane
from flowplane.xds.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.helpers import mtls_plane, ok, plane_settings


async def test_bootstrap_yaml_points_at_advertised_address(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/teams/payments/bootstrap")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    doc = yaml.safe_load(r.text)
    assert re.fullmatch(r"team=payments/dp-[0-9a-f-]{36}", doc["node"]["id"])
    assert doc["node"]["metadata"]["team"] == "payments"
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    addr = doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
        "lb_endpoints"][0]["endpoint"]["address"]["socket_address"]  # fmt: skip
    # default FLOWPLANE_XDS_ADDRESS is 0.0.0.0:18000; clients must never be told 0.0.0.0
    assert addr == {"address": "127.0.0.1", "port_value": 18000}
    assert doc["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.mark.e2e
async def test_bootstrap_is_valid_for_envoy(client: httpx.AsyncClient, tmp_path: Path) -> None:
    for query in (
        "format=json",
        "format=json&mode=delta",
        "format=json&scope=allowlist&allowlist=a,b",
    ):
        r = await client.get(f"/api/v1/teams/payments/bootstrap?{query}")
        assert r.status_code == 200, r.text
        await validate_bootstrap(r.json(), tmp_dir=tmp_path)
    doc = (await client.get("/api/v1/teams/t/bootstrap?format=json&mode=delta")).json()
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


async def test_bootstrap_advertise_setting(db_url: str) -> None:
    s = load_settings(database_url=db_url, default_gateway=False,
                      xds_advertise_address="xds.example.internal:443")  # fmt: skip
    async with open_core(s) as core:
        t = httpx.ASGITransport(app=make_app(core))
        h = {"Authorization": f"Bearer {admin_token(core)}"}
        async with httpx.AsyncClient(transport=t, base_url="http://x", headers=h) as c:
            doc = (await c.get("/api/v1/teams/a/bootstrap?format=json")).json()
    cluster = doc["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"
    sa = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert sa["socket_address"] == {"address": "xds.example.internal", "port_value": 443}


@pytest.mark.parametrize(
    "query", ["format=xml", "mode=fast", "scope=allowlist", "bogus=1", "includeDefault=maybe"]
)
async def test_bootstrap_bad_query_is_400(client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/api/v1/teams/payments/bootstrap?{query}")
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


async def test_bootstrap_bad_team_is_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/teams/Not_A_Team/bootstrap")
    assert r.status_code == 400


async def test_nodes_empty_and_unknown(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/nodes")).json() == {
        "items": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }
    r = await client.get("/api/v1/nodes/team=x/dp-1")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_default_gateway_created_protected_and_optional(db_url: str) -> None:
    on = load_settings(database_url=db_url)
    async with open_core(on) as core:
        t = httpx.ASGITransport(app=make_app(core))
        h = {"Authorization": f"Bearer {admin_token(core)}"}
        async with httpx.AsyncClient(transport=t, base_url="http://x", headers=h) as c:
            gw = (await c.get("/api/v1/native/listeners/default-gateway")).json()
            assert (gw["address"], gw["port"]) == ("0.0.0.0", 10000)
            rc = (await c.get("/api/v1/native/route-configs/default-gateway-routes")).json()
            assert rc["virtualHosts"] == []
            r = await c.delete("/api/v1/native/listeners/default-gateway")
            assert r.status_code == 409 and "default gateway" in r.json()["message"]
            await core.snapshots.caught_up(core.state.serial)
            assert "default-gateway" in core.hub.snapshot.resources(LISTENER_TYPE)
            assert "default-gateway-routes" in core.hub.snapshot.resources(ROUTE_TYPE)
    async with open_core(on) as core:  # a second start does not duplicate or fail
        assert core.state.count(Kind.LISTENER) == 1
    off = load_settings(database_url=db_url, default_gateway=False)
    async with open_core(off) as core:
        t = httpx.ASGITransport(app=make_app(core))
        h = {"Authorization": f"Bearer {admin_token(core)}"}
        async with httpx.AsyncClient(transport=t, base_url="http://x", headers=h) as c:
            assert (await c.delete("/api/v1/native/listeners/default-gateway")).status_code == 204
    async with open_core(load_settings(database_url=f"{db_url}-2", default_gateway=False)) as core:
        assert not list(core.state.all())  # switched off: nothing is created


def _keepalive(doc: dict[str, object]) -> object:
    cluster = doc["static_resources"]["clusters"][0]  # type: ignore[index]
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    return http["explicit_http_config"]["http2_protocol_options"].get("connection_keepalive")


async def test_bootstrap_asks_envoy_for_the_configured_keepalive(
    client: httpx.AsyncClient, db_url: str
) -> None:
    doc = (await client.get("/api/v1/teams/a/bootstrap?format=json")).json()
    assert _keepalive(doc) == {"interval": "30.000s", "timeout": "10.000s"}  # the defaults
    s = load_settings(database_url=db_url + ".2", default_gateway=False,
                      xds_keepalive_seconds=2.5, xds_keepalive_timeout_seconds=0.75)  # fmt: skip
    async with open_core(s) as core:
        t = httpx.ASGITransport(app=make_app(core))
        h = {"Authorization": f"Bearer {admin_token(core)}"}
        async with httpx.AsyncClient(transport=t, base_url="http://x", headers=h) as c:
            doc = (await c.get("/api/v1/teams/a/bootstrap?format=json")).json()
    assert _keepalive(doc) == {"interval": "2.500s", "timeout": "0.750s"}


# --- a node's team is the one xDS scoping decided (issue 9, bug 1) ---------------------------
# api.md "Data planes": GET /api/v1/nodes lists each node's team, and a token bound to teams sees
# only its teams' nodes. The team is what xDS scoping decided — from node metadata, the node id
# *or the authenticated identity* — so a node whose team comes only from its data-plane token or
# client certificate is listed with that team, not `null` (which hid it from its own team).


async def _nodes_as_seen_by(api: httpx.AsyncClient, token: str | None = None) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = await api.get("/api/v1/nodes", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


async def _token(api: httpx.AsyncClient, **body: Any) -> str:
    r = await api.post("/api/v1/tokens", json={"name": "t", **body})
    assert r.status_code == 201, r.text
    return r.json()["token"]  # type: ignore[no-any-return]


async def _assert_listed_as_team_a(api: httpx.AsyncClient, node_id: str) -> None:
    (node,) = await _nodes_as_seen_by(api)  # admin
    assert (node["id"], node["team"]) == (node_id, "a")
    viewer_a = await _token(api, role="platform-engineer", teams=["a"])
    viewer_b = await _token(api, role="platform-engineer", teams=["b"])
    assert [n["id"] for n in await _nodes_as_seen_by(api, viewer_a)] == [node_id]
    assert await _nodes_as_seen_by(api, viewer_b) == []
    r = await api.get(f"/api/v1/nodes/{node_id}", headers={"Authorization": f"Bearer {viewer_a}"})
    assert r.status_code == 200 and r.json()["team"] == "a"
    r = await api.get(f"/api/v1/nodes/{node_id}", headers={"Authorization": f"Bearer {viewer_b}"})
    assert r.status_code == 404


@pytest.mark.parametrize("client_kind", [sotw_client, delta_client])
async def test_node_team_from_data_plane_token(
    db_url: str, client_kind: Callable[..., AbstractAsyncContextManager[Any]]
) -> None:
    """Token auth: the node id and metadata say nothing of a team; the token is bound to a."""
    with trio.fail_after(30):
        async with run_plane(plane_settings(db_url, xds_auth="token")) as plane:
            api = plane.api
            for team in ("a", "b"):
                ok(await api.post("/api/v1/teams", json={"name": team}))
            dp = await _token(api, role="data-plane", teams=["a"])
            async with client_kind(
                "127.0.0.1", plane.xds_port, node_id="dp-anonymous",
                metadata={"authorization": f"Bearer {dp}"},
            ) as c:  # fmt: skip
                await c.send(CLUSTER_TYPE)
                await c.recv()  # answered: the stream's scope (and team) is fixed
                await _assert_listed_as_team_a(api, "dp-anonymous")


async def test_node_team_from_mtls_certificate(db_url: str, tmp_path: Path) -> None:
    """mTLS: the node id and metadata say nothing of a team; the client certificate names a."""
    settings, tls = mtls_plane(db_url, tmp_path, "a")
    with trio.fail_after(30):
        async with run_plane(settings) as plane:
            api = plane.api
            for team in ("a", "b"):
                ok(await api.post("/api/v1/teams", json={"name": team}))
            async with sotw_client(
                "127.0.0.1", plane.xds_port, node_id="dp-anonymous", tls=tls
            ) as c:
                await c.send(CLUSTER_TYPE)
                await c.recv()
                await _assert_listed_as_team_a(api, "dp-anonymous")


async def test_nodes_list_honours_limit_and_offset(db_url: str) -> None:
    """Issue 17 item 4: `GET /api/v1/nodes` said `"limit": 1` whatever `?limit=` said. It is a
    list like every other: `?limit=&offset=` window the nodes (sorted by id), `total` counts
    them all, and the window is reported as asked."""
    with trio.fail_after(30):
        async with (
            run_plane(plane_settings(db_url)) as plane,
            sotw_client("127.0.0.1", plane.xds_port, node_id="dp-a") as a,
            sotw_client("127.0.0.1", plane.xds_port, node_id="dp-b") as b,
        ):
            for c in (a, b):
                await c.send(CLUSTER_TYPE)
                await c.recv()
            page = ok(await plane.api.get("/api/v1/nodes?limit=1&offset=1"), 200)
            assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)
            assert [n["id"] for n in page["items"]] == ["dp-b"]
            assert (await plane.api.get("/api/v1/nodes?limit=0")).status_code == 400


async def test_bootstrap_admin_port_is_a_parameter(client: httpx.AsyncClient) -> None:
    """Issue 17 item 8: two Envoys on one host need two admin ports."""

    def admin_port(doc: dict[str, Any]) -> int:
        return int(doc["admin"]["address"]["socket_address"]["port_value"])

    doc = (await client.get("/api/v1/teams/a/bootstrap?format=json")).json()
    assert admin_port(doc) == 9901
    doc = (await client.get("/api/v1/teams/a/bootstrap?format=json&adminPort=9902")).json()
    assert admin_port(doc) == 9902
    assert (await client.get("/api/v1/teams/a/bootstrap?adminPort=0")).status_code == 400


async def test_envoy_connecting_and_disconnecting_is_logged_at_info(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17 item 5: at INFO an operator sees a data plane connect (node, team, address) and
    go."""
    caplog.set_level(logging.INFO, logger="flowplane.grpc.ads")
    with trio.fail_after(30):
        async with run_plane(plane_settings(db_url)) as plane:
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="team=a/dp-1") as c:
                await c.send(CLUSTER_TYPE)
                await c.recv()
            with trio.fail_after(5):
                while not any("disconnected" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110 -- a log record has no event
                    await trio.sleep(0.01)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("connected: node team=a/dp-1 (team a)" in m for m in messages), messages
    assert any("disconnected: node team=a/dp-1" in m for m in messages), messages


async def test_xds_is_authenticated_by_default(db_url: str) -> None:
    """Issue 17 item 7: "Make authenticated xDS the default ... `none` must be chosen explicitly".
    With no FLOWPLANE_XDS_AUTH set, a stream without a token is refused (UNAUTHENTICATED) and
    receives nothing. An admin's scope=all bootstrap token connects a node of no team, which
    receives every team's clusters; a team's data-plane token cannot make its node a node of no
    team (PERMISSION_DENIED): team isolation is as before."""
    settings = load_settings(  # no xds_auth: the default is what is tested
        database_url=db_url, xds_address="127.0.0.1:0", default_gateway=False
    )
    with trio.fail_after(30):
        async with run_plane(settings) as plane:
            api = plane.api
            for team in ("a", "b"):
                ok(await api.post("/api/v1/teams", json={"name": team}))
                ok(await api.post("/api/v1/native/clusters", json={
                    "name": f"{team}-backend", "team": team,
                    "endpoints": [{"host": "127.0.0.1", "port": 8000}]}))  # fmt: skip
            await plane.settled()
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="dp-anonymous",
                                   node_metadata={"scope": "all"}) as bare:  # fmt: skip
                await bare.send(CLUSTER_TYPE)
                with pytest.raises(AdsStreamEnded) as ended:
                    await bare.recv()
                assert ended.value.end.status == Status.UNAUTHENTICATED, ended.value.end

            r = await api.get("/api/v1/teams/a/bootstrap?scope=all&format=json")
            boot = ok(r, 200)
            (meta,) = boot["dynamic_resources"]["ads_config"]["grpc_services"][0][
                "initial_metadata"]  # fmt: skip
            async with sotw_client(
                "127.0.0.1", plane.xds_port, node_id=boot["node"]["id"],
                node_metadata=boot["node"]["metadata"], metadata={"authorization": meta["value"]},
            ) as everything:  # fmt: skip
                await everything.send(CLUSTER_TYPE)
                names = {decode(r).name for r in (await everything.recv()).resources}
                assert names == {"a/a-backend", "b/b-backend"}  # xDS names: <team>/<name>

            dp_a = await _token(api, role="data-plane", teams=["a"])
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="dp-sneaky",
                                   node_metadata={"scope": "all"},
                                   metadata={"authorization": f"Bearer {dp_a}"}) as sneaky:  # fmt: skip
                await sneaky.send(CLUSTER_TYPE)
                with pytest.raises(AdsStreamEnded) as ended:
                    await sneaky.recv()
                assert ended.value.end.status == Status.PERMISSION_DENIED, ended.value.end
