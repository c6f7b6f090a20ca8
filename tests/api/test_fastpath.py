"""The read fast path answers exactly as the Quart route would."""

from __future__ import annotations

import httpx

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
    assert r.status_code == 200  # Quart's route ignores it too
    # a stale copy never survives a write: the version and body follow the change
    await client.patch("/api/v1/native/clusters/backend", json={"http2": True})
    r = await client.get("/api/v1/native/clusters/backend")
    assert r.headers["etag"] == '"2"' and r.json()["http2"] is True
