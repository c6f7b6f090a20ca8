"""An API developer's first API, through a real Envoy (issue 10's acceptance): an OpenAPI
document imported over REST is served on the shared default gateway with the paths, rate
limits, JWT checks and CORS it declares — and, imported again with `listenerIsolation=true`, on
a listener of its own. Envoy rejects nothing throughout (`/api/v1/nodes` shows no NACK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from flowplane.settings import load_settings
from flowplane.testing.envoy import EnvoyProcess, ads_bootstrap, run_envoy
from flowplane.testing.plane import Plane, run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import run_upstream
from tests.filters.test_jwt_authn import Signer
from tests.helpers import ok

pytestmark = pytest.mark.e2e

P = "/api/v1/platform"
ORIGIN = "https://shop.example.com"
ISSUER = "https://issuer.test"


def petstore(upstream_port: int, jwks_port: int) -> dict[str, Any]:
    """A small OpenAPI 3.0 document: three paths (one a template), a rate limit per client IP on
    one operation, CORS for the whole API, one operation that needs a JWT."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Pet Store", "version": "1.0.0"},
        "servers": [{"url": f"http://127.0.0.1:{upstream_port}"}],
        "x-flowplane-cors": {"origins": [ORIGIN], "methods": ["GET", "POST"],
                             "headers": ["authorization", "content-type"]},
        "paths": {
            "/pets": {
                "get": {"responses": {"200": {"description": "pets"}}},
                "post": {
                    "x-flowplane-ratelimit": {"requests": 2, "interval": "1m",
                                              "keyBy": "client_ip"},
                    "responses": {"201": {"description": "created"}},
                },
            },
            "/pets/{petId}": {
                "parameters": [{"name": "petId", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "get": {"responses": {"200": {"description": "a pet"}}},
            },
            "/admin/stats": {
                "get": {
                    "x-flowplane-jwt-auth": {
                        "issuer": ISSUER, "audiences": ["pets"],
                        "jwksUri": f"http://127.0.0.1:{jwks_port}/jwks.json",
                    },
                    "responses": {"200": {"description": "stats"}},
                },
            },
        },
    }  # fmt: skip


async def _request(port: int, method: str, path: str, host: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        return await client.request(
            method, f"http://127.0.0.1:{port}{path}", headers={"host": host, **headers}
        )


async def _serves(envoy: EnvoyProcess, port: int, host: str, path: str) -> bool:
    """`host` + `path` reach an upstream through `port` (a GET that no filter limits)."""
    try:
        resp = await _request(port, "GET", path, host)
    except httpx.TransportError:
        return False
    return resp.status_code == 200


async def _no_nacks(plane: Plane) -> None:
    nodes = ok(await plane.api.get("/api/v1/nodes"), 200)["items"]
    assert nodes
    for node in nodes:
        for res in node["resources"].values():
            assert res["lastRejection"] is None, res


async def test_an_imported_api_is_served_on_the_shared_gateway_and_isolated(
    db_url: str, tmp_path: Path
) -> None:
    signer = Signer("k1")
    gateway = free_port()
    settings = load_settings(
        database_url=db_url, xds_address="127.0.0.1:0", default_gateway=True,
        default_gateway_address=f"127.0.0.1:{gateway}", snapshot_debounce_seconds=0.001,
        xds_auth="none",  # bootstraps made here carry no token
    )  # fmt: skip
    with trio.fail_after(90):
        async with (
            run_plane(settings) as plane,
            run_upstream("pets") as pets,
            run_upstream("other") as other,
            run_upstream("issuer", documents={"/jwks.json": signer.jwks.encode()}) as issuer,
        ):
            doc = yaml.safe_dump(petstore(pets.port, issuer.port)).encode()
            imported = ok(await plane.api.post(
                f"{P}/import/openapi?domain=pets.test", content=doc,
                headers={"content-type": "application/yaml"},
            ))  # fmt: skip
            assert imported["api"]["name"] == "pet-store"
            # a second API on the same gateway, made with POST /apis
            ok(await plane.api.post(f"{P}/apis", json={
                "name": "other", "domain": "other.test",
                "upstreams": [{"host": "127.0.0.1", "port": other.port}],
                "routes": [{"path": "/pets", "methods": ["POST"]}],
            }))  # fmt: skip
            await plane.settled()
            boot = ads_bootstrap("envoy-platform", "127.0.0.1", plane.xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                await envoy.wait_ready()
                await envoy.wait_for(lambda: _serves(envoy, gateway, "pets.test", "/pets"), 20,
                                     what="the gateway serving pets.test")  # fmt: skip
                # the API's Host reaches its upstream; the template matches one segment only
                resp = await _request(gateway, "GET", "/pets/42", "pets.test")
                assert resp.status_code == 200 and resp.headers["x-upstream"] == "pets"
                assert pets.requests[-1].path == "/pets/42"
                assert (
                    await _request(gateway, "GET", "/pets/42/x", "pets.test")
                ).status_code == 404
                assert (await _request(gateway, "GET", "/pets", "nobody.test")).status_code == 404
                # the limited operation: 2 per minute per client, then 429 ...
                codes = [(await _request(gateway, "POST", "/pets", "pets.test")).status_code
                         for _ in range(3)]  # fmt: skip
                assert codes == [200, 200, 429]
                # ... while another operation of the API and another API are not limited
                for _ in range(3):
                    assert (await _request(gateway, "GET", "/pets", "pets.test")).status_code == 200
                    resp = await _request(gateway, "POST", "/pets", "other.test")
                    assert resp.status_code == 200 and resp.headers["x-upstream"] == "other"
                # the JWT operation alone needs a token
                assert (
                    await _request(gateway, "GET", "/admin/stats", "pets.test")
                ).status_code == 401
                token = signer.token(iss=ISSUER, aud="pets")
                resp = await _request(gateway, "GET", "/admin/stats", "pets.test",
                                      authorization=f"Bearer {token}")  # fmt: skip
                assert resp.status_code == 200, resp.text
                assert (await _request(gateway, "GET", "/pets/7", "pets.test")).status_code == 200
                # a preflight from an allowed origin gets the CORS headers
                resp = await _request(gateway, "OPTIONS", "/pets", "pets.test", origin=ORIGIN,
                                      **{"access-control-request-method": "POST"})  # fmt: skip
                assert resp.headers.get("access-control-allow-origin") == ORIGIN, resp.headers
                await _no_nacks(plane)

                # the same document with listener isolation: served on its own port too
                own = free_port()
                ok(await plane.api.post(
                    f"{P}/import/openapi?domain=pets-isolated.test&name=pets-isolated"
                    f"&listenerIsolation=true&port={own}",
                    content=doc, headers={"content-type": "application/yaml"},
                ))  # fmt: skip
                await plane.settled()
                await envoy.wait_for(
                    lambda: _serves(envoy, own, "pets-isolated.test", "/pets/1"), 20,
                    what="the isolated listener serving",
                )  # fmt: skip
                resp = await _request(own, "GET", "/pets/9", "pets-isolated.test")
                assert resp.headers["x-upstream"] == "pets"
                assert (
                    await _request(own, "GET", "/admin/stats", "pets-isolated.test")
                ).status_code == 401
                await _no_nacks(plane)


async def _http11(stream: trio.SocketStream, host: str, path: str) -> bytes:
    """One keep-alive HTTP/1.1 GET on `stream`; the response head and body (Content-Length)."""
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head.lower()


async def test_adding_an_api_leaves_the_gateways_connections_open(
    db_url: str, tmp_path: Path
) -> None:
    """api.md: changing a listener makes Envoy drain its connections, so adding an API must not
    rewrite the gateway listener. Its filter chain is fixed (jwt_authn's providers come over
    ECDS), so adding an API — here one with a JWT provider, which changes the gateway's
    jwt_authn config — modifies no listener, and a keep-alive connection opened before serves
    the new API after it (a draining listener would answer `connection: close`)."""
    gateway = free_port()
    settings = load_settings(
        database_url=db_url, xds_address="127.0.0.1:0", default_gateway=True,
        default_gateway_address=f"127.0.0.1:{gateway}", snapshot_debounce_seconds=0.001,
        xds_auth="none",  # bootstraps made here carry no token
    )  # fmt: skip

    def api(name: str, port: int) -> dict[str, Any]:
        return {"name": name, "domain": f"{name}.test", "routes": [{"path": "/"}],
                "upstreams": [{"host": "127.0.0.1", "port": port}],
                "filters": {"rateLimit": {"requests": 100, "interval": "1m"},
                            "cors": {"origins": [ORIGIN]}}}  # fmt: skip

    with trio.fail_after(60):
        async with (
            run_plane(settings) as plane,
            run_upstream("one") as one,
            run_upstream("two") as two,
        ):
            ok(await plane.api.post(f"{P}/apis", json=api("one", one.port)))
            await plane.settled()
            boot = ads_bootstrap("envoy-drain", "127.0.0.1", plane.xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                await envoy.wait_ready()
                await envoy.wait_for(lambda: _serves(envoy, gateway, "one.test", "/"), 20,
                                     what="the gateway serving one.test")  # fmt: skip
                modified = await envoy.stat("listener_manager.listener_modified")
                stream = await trio.open_tcp_stream("127.0.0.1", gateway)
                async with stream:
                    assert b"200 ok" in await _http11(stream, "one.test", "/")
                    jwt = {"issuer": ISSUER, "jwksUri": f"http://127.0.0.1:{one.port}/jwks.json",
                           "required": False}  # a token is checked if sent  # fmt: skip
                    body = api("two", two.port)
                    ok(await plane.api.post(
                        f"{P}/apis", json={**body, "filters": {**body["filters"], "jwtAuth": jwt}}
                    ))  # fmt: skip
                    await plane.settled()
                    await envoy.wait_for(lambda: _serves(envoy, gateway, "two.test", "/"), 20,
                                         what="the gateway serving two.test")  # fmt: skip
                    head = await _http11(stream, "two.test", "/")
                    assert b"200 ok" in head and b"connection: close" not in head, head
                    assert two.requests and two.requests[-1].path == "/"
                assert await envoy.stat("listener_manager.listener_modified") == modified
                await _no_nacks(plane)
