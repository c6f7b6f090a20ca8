"""Data written through the API survives closing and reopening the core on the same file."""

from __future__ import annotations

import httpx

from flowplane.app import make_app, open_core
from flowplane.settings import Settings
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import admin_token

N = "/api/v1/native"


async def test_reopen_restores_state_and_references(settings: Settings) -> None:
    async with open_core(settings) as core:
        t = httpx.ASGITransport(app=make_app(core))
        h = {"Authorization": f"Bearer {admin_token(core)}"}
        async with httpx.AsyncClient(transport=t, base_url="http://x", headers=h) as c:
            await c.post(f"{N}/clusters", json=cluster_body())
            await c.post(f"{N}/route-configs", json=route_config_body())
            await c.post(f"{N}/listeners", json=listener_body())
            await c.patch(f"{N}/clusters/backend", json={"http2": True})
            before = {
                p: (await c.get(f"{N}/{p}")).json()
                for p in ("clusters", "route-configs", "listeners")
            }
    async with open_core(settings) as core:
        t = httpx.ASGITransport(app=make_app(core))
        h = {"Authorization": f"Bearer {admin_token(core)}"}
        async with httpx.AsyncClient(transport=t, base_url="http://x", headers=h) as c:
            after = {p: (await c.get(f"{N}/{p}")).json() for p in before}
            assert after == before
            assert after["clusters"]["items"][0]["version"] == 2
            # the reference index was rebuilt too
            assert (await c.delete(f"{N}/clusters/backend")).status_code == 409
