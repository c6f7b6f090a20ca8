"""Change feed between two replicas on one PostgreSQL database (README "Replicas"): a write on
one replica reaches the other's memory, REST and snapshot through the change log and
LISTEN/NOTIFY, and survives the loss of the listening connection."""

from __future__ import annotations

import pytest
import trio

from flowplane.actors.config import ConfigChange
from flowplane.actors.feed import CatchUp
from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.testing.factories import cluster_body
from flowplane.xds.types import CLUSTER_TYPE
from tests.helpers import ok
from tests.replicas.conftest import Replica

pytestmark = pytest.mark.postgres

N = "/api/v1/native"


def watch(core: Core) -> trio.MemoryReceiveChannel[ConfigChange]:
    """Every change `core` publishes from now on."""
    send, receive = trio.open_memory_channel[ConfigChange](1000)
    core.actor.subscribe(send)
    return receive


async def until_changed(changes: trio.MemoryReceiveChannel[ConfigChange], key: str) -> None:
    async for change in changes:
        if any(k == key for _, k, _ in change.changes):
            return


async def test_write_on_a_is_served_by_b(replicas: tuple[Replica, Replica]) -> None:
    """The rule: "A write on any replica reaches the Envoys of every replica" (api.md
    Operations): B's REST answer and B's published snapshot have the cluster created on A, and
    its deletion."""
    a, b = replicas
    seen = watch(b.core)
    with trio.fail_after(10):
        created = ok(await a.api.post(f"{N}/clusters", json=cluster_body("backend")))
        await until_changed(seen, "backend")
        assert ok(await b.api.get(f"{N}/clusters/backend"), 200) == created
        await b.core.snapshots.caught_up(b.core.state.serial)
        assert "backend" in b.core.hub.snapshot.get(CLUSTER_TYPE)
        assert b.core.feed is not None and b.core.feed.applied == 1

        ok(await a.api.delete(f"{N}/clusters/backend"), 204)
        await until_changed(seen, "backend")
        assert (await b.api.get(f"{N}/clusters/backend")).status_code == 404
        await b.core.snapshots.caught_up(b.core.state.serial)
        assert "backend" not in b.core.hub.snapshot.get(CLUSTER_TYPE)


async def test_a_replica_skips_its_own_changes(replicas: tuple[Replica, Replica]) -> None:
    """The rule: "A replica skips changes it made itself": A's feed reads its own change-log row and
    applies nothing; the log holds exactly one row for the write."""
    a, b = replicas
    seen = watch(b.core)
    with trio.fail_after(10):
        ok(await a.api.post(f"{N}/clusters", json=cluster_body("own")))
        await until_changed(seen, "own")
        assert a.core.feed is not None
        await a.core.actor.submit(CatchUp(a.core.feed))
    assert a.core.feed.applied == 0
    assert await a.sql(_in_log("own")) == 1


async def test_b_resyncs_after_its_listen_connection_is_killed(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: "A lost notification can delay a change, never lose it": with B's LISTEN connection
    ended by the server (pg_terminate_backend), writes on A committed while B is not listening
    reach B once it reconnects and reads the log."""
    a, b = replicas
    feed = b.core.feed
    assert feed is not None and feed.session_pid is not None
    reconnected = feed.next_session
    seen = watch(b.core)
    with trio.fail_after(20):
        assert await a.sql("SELECT pg_terminate_backend($1)", feed.session_pid)
        for i in range(5):  # committed before B listens again (it waits 0.5 s to reconnect)
            ok(await a.api.post(f"{N}/clusters", json=cluster_body(f"while-away-{i}")))
        assert not reconnected.is_set()
        await reconnected.wait()
        await until_changed(seen, "while-away-4")
    assert {r.name for r in b.core.state.list_resources(Kind.CLUSTER)} == {
        f"while-away-{i}" for i in range(5)
    }


def _in_log(key: str) -> str:
    return f"SELECT count(*) FROM change_log WHERE entries LIKE '%\"{key}\"%'"


async def test_a_platform_api_made_on_a_is_served_by_b(replicas: tuple[Replica, Replica]) -> None:
    """The rule: API definitions are shared state: an API created and then replaced on A is
    listed by B at A's version, with the Native resources it generated."""
    a, b = replicas
    seen = watch(b.core)
    body = {"name": "echo", "domain": "echo.local", "upstreams": [{"url": "http://127.0.0.1:8000"}],
            "routes": [{"path": "/"}], "listener": {"isolation": True, "port": 10080}}  # fmt: skip
    with trio.fail_after(10):
        made = ok(await a.api.post("/api/v1/platform/apis", json=body))
        body["routes"] = [{"path": "/"}, {"path": "/v2"}]
        replaced = ok(await a.api.put(
            f"/api/v1/platform/apis/{made['id']}", json=body, headers={"If-Match": '"1"'}
        ), 200)  # fmt: skip
        ok(await a.api.post(f"{N}/clusters", json=cluster_body("marker")))
        await until_changed(seen, "marker")  # B applied everything committed before it
        got = ok(await b.api.get(f"/api/v1/platform/apis/{made['id']}"), 200)
    assert got == replaced
    for kind in (Kind.CLUSTER, Kind.ROUTE_CONFIG, Kind.LISTENER):
        assert {r.key for r in b.core.state.list_resources(kind)} == {
            r.key for r in a.core.state.list_resources(kind)
        }
