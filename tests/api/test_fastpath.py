"""The read fast path answers exactly as the Quart route would."""

from __future__ import annotations

import json
from typing import Any

import httpx

from flowplane.api.fastpath import FastReads
from flowplane.app import Core, quart_app
from flowplane.testing.factories import cluster_body


async def test_fast_path_matches_quart(client: httpx.AsyncClient, core: Core) -> None:
    await client.post("/api/v1/native/clusters", json=cluster_body(http2=True))
    fast = await client.get("/api/v1/native/clusters/backend")
    quart = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=quart_app(core)),
        base_url="http://q",
        headers={"Authorization": client.headers["Authorization"]},
    )
    async with quart:
        slow = await quart.get("/api/v1/native/clusters/backend")
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    for header in ("content-type", "etag", "content-length"):
        assert fast.headers[header] == slow.headers[header], header


async def test_conditional_get_and_fallthrough(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/native/clusters", json=cluster_body())
    r = await client.get("/api/v1/native/clusters/backend", headers={"If-None-Match": '"1"'})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == '"1"'
    r = await client.get("/api/v1/native/clusters/backend", headers={"If-None-Match": '"7"'})
    assert r.status_code == 200
    # a miss, or a query string, is Quart's: same error format as everywhere
    r = await client.get("/api/v1/native/clusters/ghost")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.get("/api/v1/native/clusters/backend?x=1")
    assert r.status_code == 400 and r.json()["error"] == "bad_request"  # unknown parameter
    r = await client.get("/api/v1/native/clusters/backend?team=shared")
    assert r.status_code == 200 and r.json()["name"] == "backend"
    # a stale copy never survives a write: the version and body follow the change
    await client.patch("/api/v1/native/clusters/backend", json={"http2": True})
    r = await client.get("/api/v1/native/clusters/backend")
    assert r.headers["etag"] == '"2"' and r.json()["http2"] is True


async def test_content_length_with_transfer_encoding_is_refused_before_any_route(
    core: Core,
) -> None:
    """RFC 9112 §6.3 (issue 11 item 8): both framing headers -> 400 with `Connection: close`;
    no route sees the request, and its body is read to the end first (so hypercorn closes after
    the answer, not under it). tests/e2e/test_security_e2e.py checks the socket of a real server."""
    sent: list[dict[str, Any]] = []
    body = [{"type": "http.request", "body": b"0\r\n", "more_body": True},
            {"type": "http.request", "body": b"\r\n", "more_body": False}]  # fmt: skip

    async def receive() -> dict[str, Any]:
        assert not sent, "answered before the body was read"
        return body.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def no_route(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a refused request reached the application")

    headers = [(b"host", b"x"), (b"transfer-encoding", b"chunked"), (b"content-length", b"42")]
    scope = {"type": "http", "method": "POST", "path": "/api/v1/teams",
             "raw_path": b"/api/v1/teams", "query_string": b"", "headers": headers}  # fmt: skip
    await FastReads(no_route, core.services.resources, core.authenticator)(scope, receive, send)
    assert body == []
    assert sent[0]["status"] == 400
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "bad_request"
