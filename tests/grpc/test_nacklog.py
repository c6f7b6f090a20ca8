"""NACK floods do not flood the log (issue 11, item 12; flowplane/grpc/nacklog.py).

"NACK floods amplify into logs: 10,000 NACKs in 0.16 s -> 30 MB of WARNING lines listing every
resource name. Rate-limit and summarise per node." The rules: per node the first NACK is logged
with its detail, then at most one summary line per interval with the count; names are truncated.
"""

from __future__ import annotations

import logging

import pytest
import trio

from flowplane.grpc.nacklog import MAX_LOGGED_NAMES, NackLog, summarise_names
from flowplane.settings import Settings
from flowplane.testing.adsclient import delta_client, sotw_client
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import run_plane
from flowplane.xds.sotw import Rejection
from flowplane.xds.types import CLUSTER_TYPE
from tests.helpers import N, ok

LOGGER = "flowplane.grpc.ads"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _rej(message: str = "bad cluster", names: tuple[str, ...] = ("a", "b")) -> Rejection:
    return Rejection(CLUSTER_TYPE, "v1", "1", message, names, "n1")


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_first_nack_in_full_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    nacks = NackLog(logging.getLogger(LOGGER), interval=10.0, clock=clock)
    for i in range(10_000):
        clock.now = i * 0.16 / 10_000  # 10,000 NACKs in 0.16 s
        nacks.nack("n1", _rej(f"bad cluster #{i}"))
    lines = _lines(caplog)
    assert lines == ["node n1 rejected Cluster version v1 (a, b): bad cluster #0"]
    clock.now = 10.5  # the interval has passed: the next NACK brings the summary
    nacks.nack("n1", _rej("bad cluster #10000"))
    lines = _lines(caplog)
    assert len(lines) == 2
    assert "node n1 sent 10000 more NACKs in the last 10 s" in lines[1]
    assert "bad cluster #10000" in lines[1]
    clock.now = 11.0
    for _ in range(5):
        nacks.nack("n1", _rej())
    assert len(_lines(caplog)) == 2  # within the interval again: counted, not logged
    nacks.close("n1")  # the stream ends: the pending count is not lost
    lines = _lines(caplog)
    assert len(lines) == 3
    assert "node n1 sent 5 more NACKs" in lines[2]
    nacks.close("n1")
    assert len(_lines(caplog)) == 3  # nothing pending: no line


def test_nodes_are_limited_separately(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    nacks = NackLog(logging.getLogger(LOGGER), interval=10.0, clock=FakeClock())
    for _ in range(100):
        nacks.nack("n1", _rej())
        nacks.nack("n2", _rej())
    lines = _lines(caplog)
    assert [line.split()[1] for line in lines] == ["n1", "n2"]


def test_a_quiet_interval_starts_over_with_a_full_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    nacks = NackLog(logging.getLogger(LOGGER), interval=10.0, clock=clock)
    nacks.nack("n1", _rej("first"))
    clock.now = 60.0
    nacks.nack("n1", _rej("much later"))
    assert [line.rpartition(": ")[2] for line in _lines(caplog)] == ["first", "much later"]


def test_remembered_nodes_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    nacks = NackLog(logging.getLogger(LOGGER), interval=10.0, clock=FakeClock(), max_nodes=3)
    nacks.nack("n0", _rej())
    nacks.nack("n0", _rej())  # pending for n0
    for i in range(1, 10):
        nacks.nack(f"n{i}", _rej())
    assert len(nacks._nodes) == 3
    # n0 was forgotten, but its pending count was written first
    assert any(line.startswith("node n0 sent 1 more NACKs") for line in _lines(caplog))


def test_names_and_messages_are_truncated() -> None:
    names = tuple(f"cluster-{i}" for i in range(50_000))
    text = summarise_names(names)
    assert text.endswith(f"and {50_000 - MAX_LOGGED_NAMES} more")
    assert text.count("cluster-") == MAX_LOGGED_NAMES
    assert summarise_names(()) == "-"
    assert summarise_names(("a", "b")) == "a, b"


async def test_a_nack_burst_on_a_real_stream_logs_two_lines(
    xds_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """300 NACKs of one response on one SotW stream: one line for the first, one summary when
    the stream closes; every NACK is still recorded as the node's last rejection."""
    caplog.set_level(logging.WARNING)
    names = [f"c{i:03}" for i in range(30)]
    with trio.fail_after(30):
        async with run_plane(xds_settings) as plane:
            for i, name in enumerate(names):
                ok(await plane.api.post(f"{N}/clusters", json=cluster_body(name, 9000 + i)))
            await plane.settled()
            async with sotw_client("127.0.0.1", plane.xds_port, node_id="flooder") as c:
                await c.send(CLUSTER_TYPE)
                resp = await c.recv()
                assert len(resp.resources) == len(names)
                for i in range(300):
                    await c.nack(resp, f"rejected #{i}")
                await c.expect_quiet(0.3)
                got = ok(await plane.api.get("/api/v1/nodes"), 200)
                (node,) = got["items"]
                rej = node["resources"]["Cluster"]["lastRejection"]
                assert rej["errorDetail"] == "rejected #299"
                assert len(_lines(caplog)) == 1
            with trio.fail_after(5):
                while len(_lines(caplog)) < 2:  # noqa: ASYNC110 -- the server ends the stream
                    await trio.sleep(0.01)
    lines = _lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0].startswith("node flooder rejected Cluster")
    assert f"and {len(names) - MAX_LOGGED_NAMES} more" in lines[0]  # 10 names, not 30
    assert lines[1].startswith("node flooder sent 299 more NACKs")
    assert "rejected #299" in lines[1]


async def test_a_delta_nack_burst_logs_one_line(
    xds_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(30):
        async with run_plane(xds_settings) as plane:
            ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend")))
            await plane.settled()
            async with delta_client("127.0.0.1", plane.xds_port, node_id="dflood") as c:
                await c.send(CLUSTER_TYPE)
                resp = await c.recv()
                await c.nack(resp, "rejected")
                for _ in range(200):  # NACKs of a nonce no longer outstanding: still recorded
                    await c.send(CLUSTER_TYPE, nonce=f"x{_}", error="stale rejected")
                await c.expect_quiet(0.3)
                assert len(_lines(caplog)) == 1, _lines(caplog)
