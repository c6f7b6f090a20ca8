"""Shared fixtures: a real SQLite file per test, the core (storage + config actor) and an
in-process HTTP client talking ASGI to the real app."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flowplane.app import Core, make_app, open_core
from flowplane.settings import Settings, load_settings
from flowplane.testing.plane import admin_token
from tests.helpers import plane_settings

# `flowplane serve` defaults to one xDS worker process per CPU; the suite serves xDS in-process
# (and so do the servers it starts, which inherit this) unless a test is about workers.
os.environ.setdefault("FLOWPLANE_XDS_WORKERS", "0")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/flowplane.db"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings(database_url=db_url, api_address="127.0.0.1:0", default_gateway=False)


@pytest.fixture
def xds_settings(db_url: str) -> Settings:
    """Settings for `run_plane`: any free xDS port, no default gateway, a 1 ms debounce (every
    REST write is published on its own unless a test asks for a longer window)."""
    return plane_settings(db_url, snapshot_debounce_seconds=0.001)


@pytest.fixture
async def core(settings: Settings) -> AsyncIterator[Core]:
    async with open_core(settings) as c:
        yield c


@pytest.fixture
async def client(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(core))
    headers = {"Authorization": f"Bearer {admin_token(core)}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://flowplane.test", headers=headers
    ) as c:
        yield c


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` tests (minutes-long soaks) run only with FLOWPLANE_SLOW_TESTS=1."""
    if os.environ.get("FLOWPLANE_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow soak test: set FLOWPLANE_SLOW_TESTS=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
