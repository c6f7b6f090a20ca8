"""Two real `flowplane serve` processes on one PostgreSQL database (README "Replicas"): a write
through A's REST API is served by B's REST API and by B's xDS server, with the same type version
A serves."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from flowplane.testing.adsclient import resource_names, sotw_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.ports import free_port
from flowplane.xds.types import CLUSTER_TYPE
from tests.replicas.conftest import PG, sql

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
N = "/api/v1/native"


async def start(url: str, api: int, xds: int, log: Path) -> trio.Process:
    env = {
        **os.environ,
        "FLOWPLANE_DATABASE_URL": url,
        "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{api}",
        "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{xds}",
        "FLOWPLANE_XDS_AUTH": "none",  # these tests' ADS clients and Envoys carry no token
    }
    with log.open("ab") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "flowplane.cli.main", "serve"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    async with httpx.AsyncClient() as c:
        with trio.fail_after(30):
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited early:\n{log.read_bytes().decode()}")  # noqa: ASYNC240
                try:
                    if (await c.get(f"http://127.0.0.1:{api}/readyz")).status_code == 200:
                        return proc
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


async def stop(proc: trio.Process) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await proc.wait()
    if proc.poll() is None:
        proc.kill()
        await proc.wait()


async def clusters_from(port: int, want: str) -> tuple[str, list[str]]:
    """(version, names) of the first SotW cluster response from `port` that names `want`."""
    async with sotw_client("127.0.0.1", port, node_id=f"envoy-{port}") as c:
        await c.send(CLUSTER_TYPE)
        while True:
            resp = await c.recv(timeout=10)
            await c.ack(resp)
            if want in resource_names(resp):
                return resp.version_info, resource_names(resp)


@dataclass
class Processes:
    """Two `flowplane serve` processes on one fresh schema."""

    loop: asyncio.AbstractEventLoop
    procs: list[trio.Process]
    api: list[str]  # REST base URLs
    xds: list[int]  # xDS ports
    auth: dict[str, str]  # the admin token's header
    url: str

    async def sql(self, query: str, *args: object) -> Any:
        return await sql(self.loop, query, *args, schema=self.url)


@asynccontextmanager
async def serve_two(tmp_path: Path) -> AsyncIterator[Processes]:
    """Start replica 0 (it creates the admin token), then replica 1; stop both and drop the
    schema on exit."""
    schema = f"r_{uuid.uuid4().hex[:12]}"
    url = f"{PG}?schema={schema}"
    ports = [(free_port(), free_port()) for _ in range(2)]
    async with trio_asyncio.open_loop() as loop:
        procs = [await start(url, *ports[0], tmp_path / "r0.log")]
        try:
            found = re.search(r"^ (ey[\w-]+\.[\w-]+\.[\w-]+)$", (tmp_path / "r0.log").read_text(),
                              re.M)  # fmt: skip
            assert found
            procs.append(await start(url, *ports[1], tmp_path / "r1.log"))
            yield Processes(
                loop, procs, [f"http://127.0.0.1:{api}" for api, _ in ports],
                [xds for _, xds in ports], {"Authorization": f"Bearer {found.group(1)}"}, url,
            )  # fmt: skip
        finally:
            with trio.CancelScope(shield=True):
                for p in procs:
                    await stop(p)
                await sql(loop, f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_write_on_one_process_is_served_by_the_other(tmp_path: Path) -> None:
    """The rule: "a write on any replica reaches the Envoys of every replica" (api.md
    Operations), and "xDS versions are content hashes, so an Envoy that moves to another
    replica receives nothing it already has": a cluster created through A's REST API is read
    back from B's REST API and pushed on B's ADS stream, at the version A's ADS stream serves."""
    async with serve_two(tmp_path) as s, httpx.AsyncClient(headers=s.auth) as c:
        with trio.fail_after(30):
            r = await c.post(f"{s.api[0]}{N}/clusters", json=cluster_body("backend"))
            assert r.status_code == 201, r.text
            via_b = await clusters_from(s.xds[1], "backend")
            via_a = await clusters_from(s.xds[0], "backend")
            got = await c.get(f"{s.api[1]}{N}/clusters/backend")
    assert got.status_code == 200 and got.json() == r.json()
    assert via_b == via_a  # same version, same names


async def test_concurrent_conflicting_writes_across_processes(tmp_path: Path) -> None:
    """The rule: "2 x 200 concurrent conflicting writes (same names, same ports, same If-Match)
    across both -> exactly one winner each, the rest 409/412, no duplicates in the database"
    (issue 13): 2 x 200 of each over real sockets to two real processes."""
    pairs = 200

    async def both(c: httpx.AsyncClient, request: Any) -> Counter[tuple[int, ...]]:
        out: dict[int, list[int]] = {i: [] for i in range(pairs)}

        async def one(side: int, i: int) -> None:
            out[i].append((await request(c, side, i)).status_code)

        async with trio.open_nursery() as nursery:
            for i in range(pairs):
                nursery.start_soon(one, 0, i)
                nursery.start_soon(one, 1, i)
        return Counter(tuple(sorted(v)) for v in out.values())

    limits = httpx.Limits(max_connections=40)
    async with (
        serve_two(tmp_path) as s,
        httpx.AsyncClient(headers=s.auth, limits=limits, timeout=30) as c,
    ):
        with trio.fail_after(120):
            creates = await both(c, lambda c, side, i: c.post(
                f"{s.api[side]}{N}/clusters", json=cluster_body(f"c{i}")))  # fmt: skip
            replaces = await both(c, lambda c, side, i: c.put(
                f"{s.api[side]}{N}/clusters/c{i}", json=cluster_body(f"c{i}", 9000 + side),
                headers={"If-Match": '"1"'}))  # fmt: skip
            r = await c.post(f"{s.api[0]}{N}/route-configs", json=route_config_body(cluster="c0"))
            assert r.status_code == 201, r.text
            listeners = await both(c, lambda c, side, i: c.post(
                f"{s.api[side]}{N}/listeners", json=listener_body(f"l{side}-{i}", port=11000 + i)
            ))  # fmt: skip
        assert creates == {(201, 409): pairs}
        assert replaces == {(200, 412): pairs}
        assert listeners == {(201, 409): pairs}
        assert await s.sql("SELECT count(*) FROM resources WHERE kind = 'cluster'") == pairs
        assert await s.sql("SELECT count(*) FROM resources WHERE version = 2") == pairs
        # (the default gateway's listener is there too: only the test's listeners are counted)
        assert (
            await s.sql(
                "SELECT count(*) FROM resources WHERE kind = 'listener' AND name LIKE 'l%-%'"
            )
            == pairs
        )
