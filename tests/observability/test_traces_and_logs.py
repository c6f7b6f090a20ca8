"""Issue 15, traces and logs, on a real `flowplane serve` process.

Tracing is turned on the standard way (OTEL_EXPORTER_OTLP_ENDPOINT) and the spans are received by
an OTLP/HTTP collector written in the test (`collectors.py`, decoding the protobuf request with
opentelemetry-proto): no mock of the SDK. Logs are the process's stderr in JSON mode, parsed line
by line. xDS traffic comes from the repository's gRPC test client, acting as a team's node.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from flowplane.testing.adsclient import sotw_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.ports import free_port
from flowplane.xds.types import CLUSTER_TYPE
from tests.e2e.test_security_e2e import serve_process
from tests.observability.collectors import Span, otlp_http_collector

pytestmark = pytest.mark.e2e

N = "/api/v1/native"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@asynccontextmanager
async def serve(tmp: Path, env: Mapping[str, str]) -> AsyncIterator[tuple[str, int, Path]]:
    """`flowplane serve` with JSON logs and `env`; yields (API base URL, xDS port, log file).
    Stopped with SIGTERM on exit (which flushes the spans still queued)."""
    xds = free_port()
    async with serve_process(
        tmp, FLOWPLANE_XDS_ADDRESS=f"127.0.0.1:{xds}", FLOWPLANE_LOG_FORMAT="json",
        FLOWPLANE_XDS_AUTH="none", **env
    ) as served:
        yield served.base_url, xds, served.log


def lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


async def test_a_write_is_one_trace_from_rest_to_push_and_its_logs_carry_its_ids(
    tmp_path: Path,
) -> None:
    """A PUT carrying `traceparent` and `X-Request-Id`, made with a team's token while a node of
    that team is connected:

    - traces: one trace continues the caller's (same trace id, the HTTP span's parent is the
      caller's span): `PUT /api/v1/native/clusters/<name>` -> `config.command` ->
      `snapshot.build` -> `xds.push` (naming the node and type) — the context crossed the config
      actor's mailbox, the snapshot builder's channel and the hub;
    - logs (one JSON object per line): the access line and the config actor's `committed:` line
      carry the request id, the caller's token id and team, and the trace id; the node's
      connect, NACK (with Envoy's message) and disconnect lines carry node, team and protocol.
    """
    async with (
        trio_asyncio.open_loop(),
        otlp_http_collector() as collector,
        serve(tmp_path, {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }) as (base, xds_port, log),
    ):  # fmt: skip
        (admin,) = [e["adminToken"] for e in lines(log) if "adminToken" in e]
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {admin}"}
        ) as api:
            assert (await api.post("/api/v1/teams", json={"name": "obs"})).status_code == 201
            r = await api.post("/api/v1/tokens", json={"name": "obs-pe", "teams": ["obs"],
                                                        "role": "platform-engineer"})  # fmt: skip
            assert r.status_code == 201, r.text
            team_token, team_token_id = r.json()["token"], r.json()["id"]
            for path, body in (
                ("clusters", cluster_body("backend", team="obs")),
                ("route-configs", route_config_body(team="obs")),
                ("listeners", listener_body(port=free_port(), team="obs")),
            ):
                assert (await api.post(f"{N}/{path}", json=body)).status_code == 201
            async with sotw_client("127.0.0.1", xds_port, node_id="team=obs/dp-1") as node:
                await node.send(CLUSTER_TYPE)
                first = await node.recv()
                while not first.resources:  # the listener's snapshot was not yet published
                    await node.ack(first)
                    first = await node.recv()
                await node.ack(first)
                await node.expect_quiet(0.2)
                r = await api.put(
                    f"{N}/clusters/backend",
                    json=cluster_body("backend", team="obs", connectTimeoutSeconds=3),
                    headers={"Authorization": f"Bearer {team_token}", "X-Request-Id": "req-obs-1",
                             "traceparent": f"00-{TRACE}-{PARENT}-01"},
                )  # fmt: skip
                assert r.status_code == 200, r.text
                assert r.headers["x-request-id"] == "req-obs-1"
                pushed = await node.recv()
                await node.nack(pushed, "envoy says no", version=first.version_info)
                await node.expect_quiet(0.2)
            spans = await collector.wait_for(
                lambda ss: any(s.name == "xds.push" and s.trace_id == TRACE for s in ss)
            )
    ours = [s for s in spans if s.trace_id == TRACE]
    http = one(ours, "PUT /api/v1/native/clusters/<name>")
    assert http.parent_id == PARENT and http.service == "flowplane"
    assert http.attributes["http.response.status_code"] == "200"
    command = one(ours, "config.command")
    assert command.parent_id == http.span_id
    assert "backend" in command.attributes["flowplane.command"]
    build = one(ours, "snapshot.build")
    assert build.parent_id == command.span_id
    push = one(ours, "xds.push")
    assert push.parent_id == build.span_id
    assert push.attributes["xds.node"] == "team=obs/dp-1"
    assert push.attributes["xds.type"] == "Cluster" and push.attributes["flowplane.team"] == "obs"

    entries = lines(log)
    mine = [e for e in entries if e.get("request_id") == "req-obs-1"]
    access = [e for e in mine if e["logger"] == "flowplane.access"]
    assert len(access) == 1, mine
    assert access[0] | {"duration_ms": 0} == access[0] | {
        "method": "PUT", "route": "/api/v1/native/clusters/<name>", "status": 200,
        "token_id": team_token_id, "team": "obs", "trace_id": TRACE, "duration_ms": 0,
    }  # fmt: skip
    committed = [e for e in mine if e["message"].startswith("committed: replace cluster backend")]
    assert len(committed) == 1, mine
    assert committed[0]["token_id"] == team_token_id and committed[0]["team"] == "obs"
    assert committed[0]["trace_id"] == TRACE
    xds = [e for e in entries if e.get("node") == "team=obs/dp-1"]
    connect = [e for e in xds if "connected" in e["message"] and "dis" not in e["message"]]
    nack = [e for e in xds if e.get("error_detail")]
    gone = [e for e in xds if "disconnected" in e["message"]]
    assert len(connect) == len(nack) == len(gone) == 1, xds
    for e in (*connect, *nack, *gone):
        assert e["team"] == "obs" and e["protocol"] == "sotw", e
    assert nack[0]["error_detail"] == "envoy says no" and nack[0]["type"] == "Cluster"
    assert nack[0]["level"] == "WARNING"


async def test_tracing_is_off_by_default(tmp_path: Path) -> None:
    """Without OTEL_* variables no tracer runs: log lines carry no trace id even when the caller
    sends a `traceparent` (request ids still work), and the collector running beside the server
    (named by no variable) receives nothing."""
    async with (
        otlp_http_collector() as collector,
        serve(tmp_path, {"OTEL_BSP_SCHEDULE_DELAY": "50"}) as (base, _, log),
    ):
        (admin,) = [e["adminToken"] for e in lines(log) if "adminToken" in e]
        async with httpx.AsyncClient(base_url=base) as api:
            r = await api.post(f"{N}/clusters", json=cluster_body(),
                               headers={"Authorization": f"Bearer {admin}",
                                        "traceparent": f"00-{TRACE}-{PARENT}-01"})  # fmt: skip
            assert r.status_code == 201
            rid = r.headers["x-request-id"]
        await trio.sleep(0.3)  # a span, if any, would be exported within 50 ms
    assert collector.requests == 0
    mine = [e for e in lines(log) if e.get("request_id") == rid]
    assert mine and not any("trace_id" in e for e in mine)
