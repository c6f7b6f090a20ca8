"""A configuration stored before names were per team starts, and keeps working, after the
upgrade (migration 0005): its references are carried into the new rules once, at start-up.

Before, a name was unique across teams, so a team's route config named a shared cluster
`backend` with the bare name, and the shared gateway named a team API's cluster the same way.
Now a bare name resolves inside the referring resource's team (api.md Conventions), so those
references would dangle and the server would refuse to start. Real SQLite files: the committed
database of commit 38facbe (`release-0.db`), and one written at migration 0004."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from flowplane.app import make_app, open_core
from flowplane.domain.resources import Kind
from flowplane.storage import open_repository, postgres, sqlite
from flowplane.testing.plane import admin_token
from tests.storage.fixtures.make_release_db import settings
from tests.storage.test_team_names_migration import _upto

RELEASE_0 = Path(__file__).parent / "fixtures" / "release-0.db"  # written by commit 38facbe
P = "/api/v1/platform"


def _client(core: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(core)), base_url="http://t",
        headers={"Authorization": f"Bearer {admin_token(core)}"},
    )  # fmt: skip


async def test_a_shared_gateway_of_the_old_release_names_team_clusters_by_team(
    tmp_path: Path,
) -> None:
    """release-0.db: team `payments`' shared-mode API `pets` put a virtual host naming its
    cluster `payments.pets.default` into the shared gateway. After the upgrade the gateway
    names it `payments/payments.pets.default`, the API still owns its virtual host (an update
    replaces it in place, no second one), and the upgrade is written once (a second start has
    nothing to rewrite)."""
    db = tmp_path / "old.db"
    shutil.copy(RELEASE_0, db)
    url = f"sqlite:///{db}"
    with trio.fail_after(30):
        async with open_core(settings(url)) as core, _client(core) as api:
            rc = core.state.get(Kind.ROUTE_CONFIG, "default-gateway-routes")
            assert rc is not None
            (vhost,) = [v for v in rc.spec["virtualHosts"] if "pets.example.com" in v["domains"]]
            assert {r["action"]["cluster"] for r in vhost["routes"]} == {
                "payments/payments.pets.default"
            }
            (api_rec,) = core.state.apis.values()
            assert api_rec.vhosts()["default-gateway-routes"] == vhost  # still the API's
            r = await api.patch(f"{P}/apis/{api_rec.id}",
                                json={"upstreams": [{"url": "http://127.0.0.1:8001"}]})  # fmt: skip
            assert r.status_code == 200, r.text
            rc = core.state.get(Kind.ROUTE_CONFIG, "default-gateway-routes")
            assert rc is not None
            pets = [v for v in rc.spec["virtualHosts"] if "pets.example.com" in v["domains"]]
            assert len(pets) == 1
        with sqlite3.connect(db) as conn:
            stored = conn.execute(
                "SELECT spec FROM resources WHERE xds_name = 'default-gateway-routes'"
            ).fetchone()[0]
        assert "payments/payments.pets.default" in stored
        async with open_core(settings(url)) as again:
            assert again.state.dangling() == []


async def test_a_team_resource_naming_a_shared_one_gets_shared_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written at migration 0004: team `a`'s route config forwards to the shared cluster
    `backend` by its bare name, and its listener names its own route config. After the
    upgrade the route config says `shared/backend` (the same cluster), the listener is
    untouched, and a team cluster `backend` created afterwards does not re-point it."""
    db = tmp_path / "legacy.db"
    url = f"sqlite:///{db}"
    with monkeypatch.context() as m:
        for module in (sqlite, postgres):
            m.setattr(module, "load_migrations", _upto(4, module.load_migrations))
        repo = await open_repository(url)
        try:
            await repo.migrate()
        finally:
            await repo.aclose()
    now = datetime(2026, 11, 30, tzinfo=UTC).isoformat()
    rc = ('{"name":"routes","team":"a","virtualHosts":[{"name":"all","domains":["*"],'
          '"routes":[{"match":{"path":{"type":"prefix","value":"/"}},'
          '"action":{"type":"forward","cluster":"backend"}}]}]}')  # fmt: skip
    lis = ('{"name":"edge","team":"a","address":"127.0.0.1","port":10081,"filterChains":'
           '[{"filters":[{"type":"httpConnectionManager","routeConfigName":"routes"}]}]}')  # fmt: skip
    rows = [
        ("cluster", "backend", None, '{"name":"backend","endpoints":[{"host":"127.0.0.1","port":1}]}'),
        ("route_config", "routes", "a", rc),
        ("listener", "edge", "a", lis),
    ]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO resources (kind, name, team, version, source, spec, created_at,"
            " updated_at) VALUES (?,?,?,1,'native',?,?,?)",
            [(k, n, t, spec, now, now) for k, n, t, spec in rows],
        )
    with trio.fail_after(30):
        async with open_core(settings(url)) as core, _client(core) as api:
            got = core.state.get(Kind.ROUTE_CONFIG, "a/routes")
            assert got is not None and got.version == 1
            assert got.spec["virtualHosts"][0]["routes"][0]["action"]["cluster"] == "shared/backend"
            assert [str(r) for r in got.refs] == ["cluster 'backend'"]
            edge = core.state.get(Kind.LISTENER, "a/edge")
            assert edge is not None and edge.spec["filterChains"][0]["filters"][0][
                "routeConfigName"] == "routes"  # its own team's: unchanged
            r = await api.post("/api/v1/native/clusters", json={
                "name": "backend", "team": "a", "endpoints": [{"host": "127.0.0.1", "port": 2}]})
            assert r.status_code == 201, r.text
            got = core.state.get(Kind.ROUTE_CONFIG, "a/routes")
            assert got is not None and [str(r) for r in got.refs] == ["cluster 'backend'"]
