"""Fixtures of the Platform tests: `no_network` (a test that uses it fails if anything tries to
reach the network: the OpenAPI import must never fetch anything), and a core with the default
gateway on (shared-mode APIs join it) with an admin client (`api`)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from flowplane.app import Core, make_app, open_core
from flowplane.settings import Settings, load_settings
from flowplane.testing.plane import admin_token


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access in an OpenAPI import test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert not attempts, f"the import tried to reach the network: {attempts}"


@pytest.fixture
def gw_settings(db_url: str) -> Settings:
    return load_settings(
        database_url=db_url, api_address="127.0.0.1:0", default_gateway=True,
        default_gateway_address="127.0.0.1:10000",
    )  # fmt: skip


@pytest.fixture
async def gw_core(gw_settings: Settings) -> AsyncIterator[Core]:
    async with open_core(gw_settings) as c:
        yield c


@pytest.fixture
async def api(gw_core: Core) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(gw_core))
    headers = {"Authorization": f"Bearer {admin_token(gw_core)}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://flowplane.test", headers=headers
    ) as c:
        yield c
