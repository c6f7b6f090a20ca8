"""Every typed filter on one listener, through a real Envoy: they coexist in one HTTP connection
manager, run in the order given, and per-scope overrides of several types apply together.

Order (as a gateway would use them): cors (answers preflights before anything asks for a
token), custom (the buffer filter, before anything that pauses the request: Envoy sets the
buffer's limit in its decodeHeaders, so a body that arrives while ext_authz is waiting would be
buffered whole under the default limit), jwt_authn, ext_authz, local_rate_limit,
header_mutation, custom_response, then the router.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from flowplane.settings import Settings
from flowplane.testing.plane import run_plane
from flowplane.testing.upstream import run_upstream
from tests.filters.helpers import edge_listener, envoy_validates, routes_body, serving
from tests.filters.test_jwt_authn import Signer

pytestmark = pytest.mark.e2e

ORIGIN = "https://app.example.com"


def _chain(signer: Signer) -> list[dict[str, object]]:
    return [
        {"type": "cors"},
        {"type": "custom", "config": {
            "typeUrl": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "config": {"maxRequestBytes": 1024},
        }},
        {"type": "jwt_authn", "config": {
            "providers": {"main": {"issuer": "https://issuer.test",
                                   "localJwks": {"inline": signer.jwks},
                                   "claimToHeaders": [{"headerName": "x-user",
                                                       "claimName": "sub"}]}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "main"}}],
        }},
        {"type": "ext_authz", "config": {
            "service": {"type": "http", "cluster": "authz", "pathPrefix": "/check",
                        "allowedHeaders": ["x-user"]},
        }},
        {"type": "local_rate_limit", "config": {
            "tokenBucket": {"maxTokens": 2, "fillIntervalSeconds": 3600},
        }},
        {"type": "header_mutation", "config": {
            "requestHeadersToAdd": [{"name": "x-gateway", "value": "flowplane"}],
        }},
        {"type": "custom_response", "config": {
            "rules": [{"statusCodes": [429], "response": {"status": 429, "body": "slow down"}}],
        }},
    ]  # fmt: skip


def _routes() -> dict[str, object]:
    return routes_body(
        rc_filters={"cors": {"origins": [{"exact": ORIGIN}], "methods": ["GET", "POST"],
                             "headers": ["authorization"]}},
        extra_routes=[{
            "name": "health",
            "match": {"path": {"type": "exact", "value": "/health"}},
            "action": {"type": "forward", "cluster": "backend"},
            # open and unlimited: several types switched off on one route
            "filters": {"jwt_authn": {"disabled": True}, "ext_authz": {"disabled": True},
                        "local_rate_limit": {"disabled": True}},
        }],
    )  # fmt: skip


async def test_the_whole_chain_passes_envoy_validate(tmp_path: Path) -> None:
    authz = {"name": "authz", "endpoints": [{"host": "127.0.0.1", "port": 9}]}
    backend = {"name": "backend", "endpoints": [{"host": "127.0.0.1", "port": 8080}]}
    with trio.fail_after(30):
        await envoy_validates(tmp_path, edge_listener(_chain(Signer("k"))), _routes(),
                              backend, authz)  # fmt: skip


async def test_the_whole_chain_in_real_traffic(xds_settings: Settings, tmp_path: Path) -> None:
    signer = Signer("k1")
    bearer = {"authorization": f"Bearer {signer.token()}"}
    with trio.fail_after(60):
        async with run_plane(xds_settings) as plane, run_upstream("one") as up, run_upstream(
            "authz"
        ) as authz:
            authz_cluster = {"name": "authz", "endpoints": [{"host": "127.0.0.1",
                                                             "port": authz.port}]}  # fmt: skip
            async with serving(plane, tmp_path, up.port, _chain(signer), _routes(),
                               extra_clusters=(authz_cluster,)) as (envoy, port):  # fmt: skip
                # a CORS preflight is answered by Envoy, no token needed
                status, headers, _ = await envoy.request(port, "/x", method="OPTIONS", headers={
                    "origin": ORIGIN, "access-control-request-method": "POST"})  # fmt: skip
                assert headers.get("access-control-allow-origin") == ORIGIN, (status, headers)
                assert not up.requests and not authz.requests
                # no token: jwt_authn refuses before ext_authz is asked
                status, _, _ = await envoy.request(port, "/x")
                assert status == 401 and not authz.requests
                # a token: authz asked (with the claim header), upstream gets the added header
                status, _, _ = await envoy.request(port, "/x", headers=bearer)
                assert status == 200
                assert authz.requests[-1].path == "/check/x"
                assert authz.requests[-1].headers["x-user"] == "alice"
                assert up.requests[-1].headers["x-gateway"] == "flowplane"
                assert up.requests[-1].headers["x-user"] == "alice"
                # the buffer filter refuses a body over 1 KiB (before the token is even checked)
                status, _, _ = await envoy.request(port, "/x", method="POST", headers=bearer,
                                                   body=b"z" * 4096)  # fmt: skip
                assert status == 413
                # the bucket holds 2: one was spent above (the 401 and 413 never reached it)
                status, _, _ = await envoy.request(port, "/x", headers=bearer)
                assert status == 200
                status, _, body = await envoy.request(port, "/x", headers=bearer)
                assert (status, body) == (429, b"slow down")  # custom_response's body
                # /health: no token, no authz, no limit — yet still mutated
                for _ in range(5):
                    status, _, _ = await envoy.request(port, "/health")
                    assert status == 200
                assert up.requests[-1].headers["x-gateway"] == "flowplane"
                assert all(r.path != "/check/health" for r in authz.requests)
