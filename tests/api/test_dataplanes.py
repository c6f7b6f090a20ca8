"""Bootstrap generation, the default gateway, and the nodes endpoints (no Envoy needed)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from flowplane.app import make_app, open_core
from flowplane.domain.resources import Kind
from flowplane.settings import load_settings
from flowplane.testing.envoy import validate_bootstrap
from flowplane.testing.plane import admin_token
from flowplane.xds.types import LISTENER_TYPE, ROUTE_TYPE


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
    for query in ("format=json", "format=json&mode=delta", "format=json&scope=allowlist&allowlist=a,b"):
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
    assert (await client.get("/api/v1/nodes")).json() == {"items": [], "total": 0, "limit": 0, "offset": 0}
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
