"""Two real `flowplane serve` processes on one PostgreSQL database (README "Replicas"): a write
through A's REST API is served by B's REST API and by B's xDS server, with the same type version
A serves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import trio
import trio_asyncio

from flowplane.testing.adsclient import resource_names, sotw_client
from flowplane.testing.factories import cluster_body
from flowplane.testing.ports import free_port
from flowplane.xds.types import CLUSTER_TYPE
from tests.replicas.conftest import PG, sql

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


async def start(url: str, api: int, xds: int, log: Path) -> trio.Process:
    env = {
        **os.environ,
        "FLOWPLANE_DATABASE_URL": url,
        "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{api}",
        "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{xds}",
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


async def test_write_on_one_process_is_served_by_the_other(tmp_path: Path) -> None:
    """The rule: "a write on any replica reaches the Envoys of every replica" (api.md
    Operations), and "xDS versions are content hashes, so an Envoy that moves to another
    replica receives nothing it already has": a cluster created through A's REST API is read
    back from B's REST API and pushed on B's ADS stream, at the version A's ADS stream serves."""
    schema = f"r_{uuid.uuid4().hex[:12]}"
    url = f"{PG}?schema={schema}"
    ports = {r: (free_port(), free_port()) for r in "ab"}
    async with trio_asyncio.open_loop() as loop:
        a = await start(url, *ports["a"], tmp_path / "a.log")
        procs = [a]
        try:
            token = re.search(r"^ (ey[\w-]+\.[\w-]+\.[\w-]+)$", (tmp_path / "a.log").read_text(),
                              re.M)  # fmt: skip
            assert token
            procs.append(await start(url, *ports["b"], tmp_path / "b.log"))
            auth = {"Authorization": f"Bearer {token.group(1)}"}
            api = {r: f"http://127.0.0.1:{p[0]}/api/v1/native" for r, p in ports.items()}
            async with httpx.AsyncClient(headers=auth) as c:
                with trio.fail_after(30):
                    r = await c.post(f"{api['a']}/clusters", json=cluster_body("backend"))
                    assert r.status_code == 201, r.text
                    via_b = await clusters_from(ports["b"][1], "backend")
                    via_a = await clusters_from(ports["a"][1], "backend")
                    got = await c.get(f"{api['b']}/clusters/backend")
            assert got.status_code == 200 and got.json() == r.json()
            assert via_b == via_a  # same version, same names
        finally:
            with trio.CancelScope(shield=True):
                for p in procs:
                    await stop(p)
                await sql(loop, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
