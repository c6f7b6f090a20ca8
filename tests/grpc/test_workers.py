"""xDS worker processes (issue 14): real worker processes on a real port, a real ADS client.

Each test starts the core in-process with `run_plane(settings, workers=N)`, which spawns N real
`python -m flowplane.grpc.worker` processes sharing the xDS port (SO_REUSEPORT), fed snapshots
over their Unix sockets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from grpclib.const import Status
from prometheus_client import REGISTRY

from flowplane.grpc.pool import WorkerPool
from flowplane.testing.adsclient import AdsStreamEnded, delta_client, resource_names, sotw_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import Plane, run_plane
from flowplane.xds.types import CLUSTER_TYPE
from tests.helpers import N, mtls_plane, ok, plane_settings

pytestmark = pytest.mark.e2e  # starts real worker processes


async def _nodes(plane: Plane) -> list[dict]:
    resp = await plane.api.get("/api/v1/nodes")
    assert resp.status_code == 200
    return resp.json()["items"]


async def _backend_held(plane: Plane, node_id: str) -> dict[str, str]:
    """Create cluster `backend`, fetch it on a delta stream (ACKed), close it: name -> version."""
    ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend")))
    await plane.settled()
    async with delta_client("127.0.0.1", plane.xds_port, node_id=node_id) as c:
        await c.send(CLUSTER_TYPE)
        resp = await c.recv()
        await c.ack(resp)
    return {r.name: r.version for r in resp.resources}


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _until(plane: Plane, pred) -> list[dict]:  # type: ignore[no-untyped-def]
    while True:
        items = await _nodes(plane)
        if pred(items):
            return items
        await trio.sleep(0.02)


def test_a_worker_runs_plain_asyncio() -> None:
    """A worker serves only xDS on plain asyncio (DESIGN.md §5). Importing trio-asyncio would
    replace asyncio's loop policy, so that `asyncio.run` ran trio-asyncio's loop instead:
    nothing the worker imports may import it."""
    code = (
        "import asyncio, sys, flowplane.grpc.worker\n"
        "assert 'trio_asyncio' not in sys.modules, 'trio_asyncio was imported'\n"
        "async def main():\n"
        "    assert type(asyncio.get_running_loop()).__module__.startswith('asyncio')\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


async def test_a_change_reaches_a_stream_through_a_worker_and_the_node_is_listed(
    db_url: str,
) -> None:
    """A stream on a worker gets the snapshot as in-process; a change written to the core
    reaches it; `/api/v1/nodes` on the core lists the node with the version it acknowledged."""
    with trio.fail_after(30):
        async with run_plane(plane_settings(db_url), workers=2) as plane:
            ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend")))
            await plane.settled()
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="w-1") as c:
                await c.send(CLUSTER_TYPE)
                first = await c.recv()
                assert [r.type_url for r in first.resources] == [CLUSTER_TYPE]
                await c.ack(first)
                items = await _until(plane, lambda it: any(
                    n["id"] == "w-1" and n["resources"]["Cluster"]["versionAcknowledged"]
                    == first.version_info for n in it))  # fmt: skip
                assert [n["id"] for n in items] == ["w-1"]
                ok(await plane.api.put(f"{N}/clusters/backend",
                                       json=cluster_body("backend", port=9090)), 200)  # fmt: skip
                second = await c.recv()
                assert second.version_info != first.version_info
                await c.ack(second)
                await c.expect_quiet(0.3)  # xds rule 7: nothing more is owed


async def test_delta_through_a_worker_and_reconnect_gets_nothing_new(db_url: str) -> None:
    """xds rule 12: a delta stream that reconnects (to any worker) with the versions it holds
    is sent nothing it already has."""
    with trio.fail_after(30):
        async with run_plane(plane_settings(db_url), workers=2) as plane:
            held = await _backend_held(plane, "d-1")
            assert list(held) == ["backend"]
            async with delta_client("127.0.0.1", plane.xds_port, node_id="d-1") as c:
                await c.send(CLUSTER_TYPE, initial_versions=held)
                await c.expect_quiet(0.5)


async def test_a_killed_worker_is_restarted_and_its_clients_reconnect(db_url: str) -> None:
    """Supervision: a worker that dies (SIGKILL: no goodbye) is restarted by the core; its
    streams leave `/api/v1/nodes`; a client reconnecting with what it holds (delta) is sent
    nothing it already has, and a later change reaches it."""
    with trio.fail_after(60):
        async with run_plane(plane_settings(db_url), workers=1) as plane:
            pool = plane.xds
            assert isinstance(pool, WorkerPool)
            ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend")))
            await plane.settled()
            async with delta_client("127.0.0.1", plane.xds_port, node_id="k-1") as c:
                await c.send(CLUSTER_TYPE)
                resp = await c.recv()
                held = {r.name: r.version for r in resp.resources}
                await c.ack(resp)
                await _until(plane, lambda it: [n["id"] for n in it] == ["k-1"])
                (pid,) = pool.pids().values()
                os.kill(pid, signal.SIGKILL)
                with pytest.raises(AdsStreamEnded):
                    await c.recv(timeout=10)
            await _until(plane, lambda it: it == [])
            while not pool.pids() or pool.pids()[0] == pid or pool.ready_workers() < 1:  # noqa: ASYNC110 -- polls another process
                await trio.sleep(0.02)
            assert pool.restarts == 1
            async with delta_client("127.0.0.1", plane.xds_port, node_id="k-1") as c:
                await c.send(CLUSTER_TYPE, initial_versions=held)
                await c.expect_quiet(0.5)  # xds rule 12: nothing it already has
                ok(await plane.api.put(f"{N}/clusters/backend",
                                       json=cluster_body("backend", port=9091)), 200)  # fmt: skip
                changed = await c.recv()
                assert [r.name for r in changed.resources] == ["backend"]


async def test_nack_on_a_worker_is_visible_on_the_core(db_url: str) -> None:
    """xds rule 5 across processes: a NACK on a worker's stream shows in the core's
    `/api/v1/nodes` (lastRejection with Envoy's error_detail) and in its `/metrics`."""
    with trio.fail_after(30):
        async with run_plane(plane_settings(db_url), workers=2) as plane:
            ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend")))
            await plane.settled()
            nacks_before = _sample("flowplane_xds_nacks_total", type="Cluster", team="-")
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="n-1") as c:
                await c.send(CLUSTER_TYPE)
                await c.nack(await c.recv(), "no such thing")
                items = await _until(plane, lambda it: bool(it) and it[0]["resources"]
                                     ["Cluster"]["lastRejection"] is not None)  # fmt: skip
                rej = items[0]["resources"]["Cluster"]["lastRejection"]
                assert rej["errorDetail"] == "no such thing"
                assert rej["resourceNames"] == ["backend"]
                # counters arrive with the next status report (metrics are per process: other
                # tests in this one may have counted before, hence the increase)
                while _sample("flowplane_xds_nacks_total", type="Cluster", team="-") < nacks_before + 1:  # noqa: ASYNC110
                    await trio.sleep(0.02)
                assert _sample("flowplane_xds_nacks_total", type="Cluster", team="-") == nacks_before + 1
                text = (await plane.api.get("/metrics")).text
                assert 'flowplane_xds_streams{protocol="sotw",team="-"} 1.0' in text


async def test_token_revocation_ends_a_stream_held_by_a_worker(db_url: str) -> None:
    """FLOWPLANE_XDS_AUTH=token with workers: the core authenticates the stream (team from the
    token), and revoking the token on the core ends the stream on the worker."""
    with trio.fail_after(30):
        async with run_plane(plane_settings(db_url, xds_auth="token"), workers=1) as plane:
            api = plane.api
            ok(await api.post("/api/v1/teams", json={"name": "a"}))
            made = ok(await api.post("/api/v1/tokens", json={
                "name": "dp", "role": "data-plane", "teams": ["a"]}))  # fmt: skip
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="dp-x") as bad:
                await bad.send(CLUSTER_TYPE)
                end = await bad.wait_end(timeout=15)  # generous: a loaded machine
                assert end.status == Status.UNAUTHENTICATED  # no token
            async with sotw_client(
                "127.0.0.1", plane.xds_port, node_id="dp-x",
                metadata={"authorization": f"Bearer {made['token']}"},
            ) as c:  # fmt: skip
                await c.send(CLUSTER_TYPE)
                await c.recv()
                items = await _until(plane, lambda it: bool(it))
                assert items[0]["team"] == "a"
                ok(await api.delete(f"/api/v1/tokens/{made['id']}"), 204)
                end = await c.wait_end(timeout=15)
                assert end.status == Status.UNAUTHENTICATED


async def test_mtls_and_team_scoping_on_a_worker(db_url: str, tmp_path: Path) -> None:
    """FLOWPLANE_XDS_AUTH=mtls with workers: the worker terminates TLS with the core's
    certificate settings, takes the team from the client certificate, and scopes what it sends
    by the scope index the core shipped (team a's cluster only, not team b's)."""
    settings, tls = mtls_plane(db_url, tmp_path, "a")
    with trio.fail_after(30):
        async with run_plane(settings, workers=1) as plane:
            api = plane.api
            for team in ("a", "b"):
                ok(await api.post("/api/v1/teams", json={"name": team}))
                ok(await api.post(f"{N}/clusters", json=cluster_body(f"c-{team}", team=team)))
                ok(await api.post(f"{N}/route-configs", json=route_config_body(
                    f"r-{team}", cluster=f"c-{team}", team=team)))  # fmt: skip
                ok(await api.post(f"{N}/listeners", json=listener_body(
                    f"l-{team}", route_config=f"r-{team}", port=10100 + ord(team), team=team)))
            await plane.settled()
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="dp-a", tls=tls) as c:
                await c.send(CLUSTER_TYPE)
                resp = await c.recv()
                assert resource_names(resp) == ["a/c-a"]  # xDS names: <team>/<name>
                items = await _until(plane, lambda it: bool(it))
                assert (items[0]["id"], items[0]["team"]) == ("dp-a", "a")


async def test_after_a_core_restart_the_new_workers_send_nothing_new(db_url: str) -> None:
    """A core restart ends its workers; the next core's workers start from a full snapshot of
    the same database, and a node reconnecting with what it holds (delta, xds rule 12) is sent
    nothing: versions are content hashes, equal across processes and restarts (rule 8)."""
    with trio.fail_after(60):
        async with run_plane(plane_settings(db_url), workers=1) as plane:
            held = await _backend_held(plane, "r-1")
        async with (
            run_plane(plane_settings(db_url), workers=1) as plane,
            delta_client("127.0.0.1", plane.xds_port, node_id="r-1") as c,
        ):
            await c.send(CLUSTER_TYPE, initial_versions=held)
            await c.expect_quiet(0.5)
            await _until(plane, lambda it: [n["id"] for n in it] == ["r-1"])
