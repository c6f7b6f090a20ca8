"""Materialised resources in a real Envoy: `envoy --mode validate` on an isolated API (listener,
route config, clusters) and on the shared gateway; then real traffic through an isolated API
created over the Native REST API exactly as materialised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from flowplane.platform.materialise import gateway_http_filters, materialise
from flowplane.settings import Settings
from flowplane.testing.envoy import EnvoyProcess, ads_bootstrap, run_envoy
from flowplane.testing.plane import run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import run_upstream
from tests.filters.helpers import envoy_validates
from tests.helpers import N, ok
from tests.platform.helpers import API_ID, JWKS, api
from tests.platform.test_gateway_filters import gateway_listener
from tests.platform.test_materialise import DEFINITIONS

pytestmark = pytest.mark.e2e


async def test_envoy_validates_an_isolated_api(tmp_path: Path) -> None:
    from flowplane.domain.api_definition import parse_api_definition

    m = materialise(parse_api_definition(DEFINITIONS["everything at every level"]), api_id=API_ID)
    assert m.listener is not None and m.route_config is not None
    with trio.fail_after(30):
        await envoy_validates(tmp_path, m.listener, m.route_config, *m.clusters)


async def test_envoy_validates_the_shared_gateway(tmp_path: Path) -> None:
    jwt = {"issuer": "https://issuer.example", "jwksUri": JWKS}
    apis = [
        ("a1", api(name="a", domain="a.example", filters={"jwtAuth": jwt, "cors": {
            "origins": ["https://app.example"]}})),
        ("b2", api(name="b", team="t", domain="*.b.example", routes=[
            {"path": "/x/{id}", "methods": ["GET"], "rewrite": "/y/{id}",
             "filters": {"jwtAuth": {**jwt, "required": False},
                         "rateLimit": {"requests": 3, "interval": "1m", "keyBy": "client_ip"}}},
            {"path": "/z/*", "filters": {"rateLimit": {"requests": 1, "interval": "1s"}}},
        ])),
    ]  # fmt: skip
    made = [materialise(a, api_id=i) for i, a in apis]
    routes = {"name": "default-gateway-routes", "virtualHosts": [m.virtual_host for m in made]}
    clusters = [c for m in made for c in m.clusters]
    with trio.fail_after(30):
        await envoy_validates(tmp_path, gateway_listener(gateway_http_filters(apis)), routes,
                              *clusters)  # fmt: skip


async def _serving(envoy: EnvoyProcess, port: int) -> bool:
    have = await envoy.resource_versions()
    if "petstore" not in have.get("listeners", {}):
        return False
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def _request(port: int, method: str, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        return await client.request(
            method, f"http://127.0.0.1:{port}{path}",
            headers={"host": "petstore.example.com", **headers},
        )  # fmt: skip


async def test_an_isolated_api_serves_real_traffic(xds_settings: Settings, tmp_path: Path) -> None:
    """Paths, methods, the base path, rewrites, per-route rate limits and CORS preflights behave
    as the definition says, through Envoy."""
    port = free_port()
    with trio.fail_after(60):
        async with run_plane(xds_settings) as plane, run_upstream("pets") as up:
            definition = api(
                basePath="/v1",
                upstreams=[{"host": "127.0.0.1", "port": up.port}],
                routes=[
                    {"path": "/pets/{id}", "methods": ["GET"], "rewrite": "/api/pets/{id}"},
                    {"path": "/pets", "methods": ["GET", "POST"],
                     "filters": {"rateLimit": {"requests": 2, "interval": "1h"}}},
                    {"path": "/files/*/raw", "methods": ["GET"]},
                ],
                filters={"cors": {"origins": ["https://app.example"]}},  # methods: the route's
                listener={"isolation": True, "address": "127.0.0.1", "port": port},
            )  # fmt: skip
            m = materialise(definition, api_id=API_ID)
            assert m.listener is not None and m.route_config is not None
            for c in m.clusters:
                ok(await plane.api.post(f"{N}/clusters", json=c))
            ok(await plane.api.post(f"{N}/route-configs", json=m.route_config))
            ok(await plane.api.post(f"{N}/listeners", json=m.listener))
            await plane.settled()
            boot = ads_bootstrap("envoy-platform", "127.0.0.1", plane.xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                await envoy.wait_ready()
                await envoy.wait_for(lambda: _serving(envoy, port), 20, what="listener serving")
                await _check_traffic(port, up.requests)
                assert all(v == 0 for v in (await envoy.rejected_counts()).values())


async def _check_traffic(port: int, seen: list[Any]) -> None:
    # a template: one segment, rewritten with its variable
    r = await _request(port, "GET", "/v1/pets/42")
    assert (r.status_code, seen[-1].path) == (200, "/api/pets/42")
    # ... not /v1/pets/42/x: that one falls to the prefix route /v1/pets (not rewritten)
    r = await _request(port, "GET", "/v1/pets/42/x")
    assert (r.status_code, seen[-1].path) == (200, "/v1/pets/42/x")
    assert (await _request(port, "DELETE", "/v1/pets/42")).status_code == 404  # GET only
    # a `*` segment: exactly one segment
    assert (await _request(port, "GET", "/v1/files/a/raw")).status_code == 200
    assert seen[-1].path == "/v1/files/a/raw"  # no rewrite: the base path stays
    assert (await _request(port, "GET", "/v1/files/a/b/raw")).status_code == 404
    assert (await _request(port, "GET", "/pets")).status_code == 404  # the base path is required
    # its own bucket: 2 per hour for the prefix /v1/pets (GET and POST share the route; the
    # request to /v1/pets/42/x above took one token), none on /v1/pets/{id}
    assert [(await _request(port, m, "/v1/pets")).status_code for m in ("POST", "GET")] == [
        200, 429,
    ]  # fmt: skip
    assert (await _request(port, "GET", "/v1/pets/7")).status_code == 200
    # a CORS preflight is answered by Envoy (the upstream never sees it)
    before = len(seen)
    r = await _request(port, "OPTIONS", "/v1/pets/9", origin="https://app.example",
                       **{"access-control-request-method": "GET"})  # fmt: skip
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-methods"] == "GET"  # the route's methods
    assert len(seen) == before
    r = await _request(port, "GET", "/v1/pets/9", origin="https://app.example")
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = await _request(port, "GET", "/v1/pets/9", origin="https://evil.example")
    assert "access-control-allow-origin" not in r.headers
