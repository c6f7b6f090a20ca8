"""Issue 15, metrics: real events move the documented series by the expected amounts.

The plane is real (SQLite file, config and snapshot actors, the xDS server on loopback gRPC, the
REST app with its fast path); xDS traffic comes from the repository's gRPC test client. The
registry is process-wide, so every assertion compares a scrape of `/metrics` before and after.
Series are read from the text exposition, parsed as Prometheus would.
"""

from __future__ import annotations

from collections.abc import Mapping

import trio

from flowplane.settings import Settings
from flowplane.testing.adsclient import sotw_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import Plane, run_plane
from flowplane.xds.types import CLUSTER_TYPE
from tests.helpers import plane_settings
from tests.observability.helpers import Sample, parse, total, value

N = "/api/v1/native"
ITEM = "/api/v1/native/clusters/<name>"
LIST = "/api/v1/native/clusters"


async def scrape(plane: Plane) -> dict[Sample, float]:
    r = await plane.api.get("/metrics")
    assert r.status_code == 200
    return parse(r.text)


async def until(plane: Plane, name: str, labels: dict[str, str], want: float) -> None:
    """Scrape until the sample reaches `want` (the xDS side runs on its own tasks), 5 s at most."""
    with trio.fail_after(5):
        while value(await scrape(plane), name, **labels) != want:  # noqa: ASYNC110 -- polls /metrics
            await trio.sleep(0.01)


def moved(before: Mapping[Sample, float], after: Mapping[Sample, float], name: str,
          **labels: str) -> float:  # fmt: skip
    return value(after, name, **labels) - value(before, name, **labels)


async def test_rest_requests_by_method_route_template_and_status(xds_settings: Settings) -> None:
    """Requests are counted under the route template the router matched (the fast path's GET
    and Quart's 404 for a missing name share `/api/v1/native/clusters/<name>`), never the raw
    path; each is timed in the latency histogram; refused credentials count by reason."""
    async with run_plane(xds_settings) as plane:
        api = plane.api
        before = await scrape(plane)
        assert (await api.post(f"{N}/clusters", json=cluster_body("backend"))).status_code == 201
        for _ in range(3):
            assert (await api.get(f"{N}/clusters/backend")).status_code == 200  # fast path
        assert (await api.get(f"{N}/clusters/nope")).status_code == 404  # Quart
        assert (await api.get("/no/such/path")).status_code == 404
        r = await api.get(f"{N}/clusters", headers={"Authorization": "Bearer not-a-jwt"})
        assert r.status_code == 401
        r = await api.get(f"{N}/clusters", headers={"Authorization": ""})
        assert r.status_code == 401
        after = await scrape(plane)

    req = "flowplane_http_requests_total"
    assert moved(before, after, req, method="POST", route=LIST, status="201") == 1
    assert moved(before, after, req, method="GET", route=ITEM, status="200") == 3
    assert moved(before, after, req, method="GET", route=ITEM, status="404") == 1
    assert moved(before, after, req, method="GET", route="unmatched", status="404") == 1
    assert moved(before, after, req, method="GET", route=LIST, status="401") == 2
    assert not any(n == req and ("route", f"{N}/clusters/backend") in ls for n, ls in after)
    hist = "flowplane_http_request_duration_seconds_count"
    assert moved(before, after, hist, method="GET", route=ITEM) == 4
    assert moved(before, after, "flowplane_http_request_duration_seconds_bucket",
                 method="GET", route=ITEM, le="+Inf") == 4  # fmt: skip
    fail = "flowplane_auth_failures_total"
    assert moved(before, after, fail, edge="rest", reason="malformed") == 1
    assert moved(before, after, fail, edge="rest", reason="missing") == 1


async def test_request_id_is_echoed_or_generated_and_a_bad_one_refused(
    xds_settings: Settings,
) -> None:
    """A caller's X-Request-Id comes back as it was sent; without one the server makes one (32
    hex digits, new per request); one with control characters or spaces is refused with the
    JSON error body (it would be written into every log line of the request)."""
    async with run_plane(xds_settings) as plane:
        r = await plane.api.get("/healthz", headers={"X-Request-Id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        ids = {(await plane.api.get(f"{N}/clusters")).headers["x-request-id"] for _ in range(2)}
        assert len(ids) == 2 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
        r = await plane.api.get("/healthz", headers={"X-Request-Id": "a b"})
        assert r.status_code == 400
        assert r.json()["error"] == "bad_request" and "X-Request-Id" in r.json()["message"]


async def test_config_snapshot_xds_and_storage_series_follow_real_events(
    xds_settings: Settings,
) -> None:
    """One write reaches a connected node: the change is counted by kind/action/source/team,
    the command is timed, the snapshot built and measured, the response sent, ACKed (timed
    sent -> ACK) and pushed (timed write -> sent); a NACK is counted by type and team; the
    stream is counted open by protocol and team while connected and as ended when closed;
    storage calls are timed per operation."""
    async with run_plane(xds_settings) as plane:
        api = plane.api
        before = await scrape(plane)
        assert (await api.post("/api/v1/teams", json={"name": "obs"})).status_code == 201
        body = cluster_body("backend", team="obs")
        assert (await api.post(f"{N}/clusters", json=body)).status_code == 201
        # a team's node is served the clusters its team's listeners reach
        r = await api.post(f"{N}/route-configs", json=route_config_body(team="obs"))
        assert r.status_code == 201
        r = await api.post(f"{N}/listeners", json=listener_body(port=10999, team="obs"))
        assert r.status_code == 201
        await plane.settled()
        async with sotw_client("127.0.0.1", plane.xds_port, node_id="team=obs/dp-1") as c:
            await c.send(CLUSTER_TYPE)
            first = await c.recv()
            await c.ack(first)
            await until(
                plane,
                "flowplane_xds_acks_total",
                {"type": "Cluster", "team": "obs"},
                value(before, "flowplane_xds_acks_total", type="Cluster", team="obs") + 1,
            )
            during = await scrape(plane)
            r = await api.put(f"{N}/clusters/backend", json={**body, "connectTimeoutSeconds": 3})
            assert r.status_code == 200
            pushed = await c.recv()
            await c.nack(pushed, "rejected on purpose", version=first.version_info)
            await c.expect_quiet(0.2)
        await until(plane, "flowplane_xds_streams", {"protocol": "sotw", "team": "obs"}, 0)
        after = await scrape(plane)

    changes = "flowplane_config_changes_total"
    assert moved(before, after, changes, kind="cluster", action="create", source="native",
                 team="obs") == 1  # fmt: skip
    assert moved(before, after, changes, kind="cluster", action="update", source="native",
                 team="obs") == 1  # fmt: skip
    # three creates and an update are Commands; the team is another kind of Txn
    assert moved(before, after, "flowplane_config_command_seconds_count", command="Command") == 4
    assert total(after, "flowplane_config_command_seconds_count") >= 3
    assert ("flowplane_config_mailbox_depth", frozenset()) in after
    assert moved(before, after, "flowplane_snapshot_build_seconds_count") >= 2
    assert moved(before, after, "flowplane_snapshots_published_total") >= 2
    assert value(after, "flowplane_snapshot_resources", type="Cluster") == 1
    assert value(after, "flowplane_snapshot_bytes", type="Cluster") > 0

    assert value(during, "flowplane_xds_streams", protocol="sotw", team="obs") == 1
    assert value(after, "flowplane_xds_streams", protocol="sotw", team="obs") == 0
    assert moved(before, after, "flowplane_xds_stream_ends_total", protocol="sotw", team="obs",
                 reason="closed") == 1  # fmt: skip
    assert moved(before, after, "flowplane_xds_responses_total", protocol="sotw", type="Cluster",
                 team="obs") == 2  # fmt: skip
    assert moved(before, after, "flowplane_xds_acks_total", type="Cluster", team="obs") == 1
    assert moved(before, after, "flowplane_xds_nacks_total", type="Cluster", team="obs") == 1
    assert moved(before, after, "flowplane_xds_ack_seconds_count", type="Cluster") >= 1
    # the initial response is not a push (the stream connected after the write); the update is
    assert moved(before, after, "flowplane_xds_push_seconds_count", type="Cluster") == 1
    assert moved(before, during, "flowplane_xds_push_seconds_count", type="Cluster") == 0

    assert moved(before, after, "flowplane_storage_operation_seconds_count", operation="write") >= 3


async def test_storage_errors_are_counted_by_operation_and_class(xds_settings: Settings) -> None:
    """A real fault (the database closed under the server): the failed write is counted in
    flowplane_storage_errors_total with its operation and error class, and answered 503."""
    async with run_plane(xds_settings) as plane:
        before = await scrape(plane)
        await plane.core.repo.aclose()
        r = await plane.api.post(f"{N}/clusters", json=cluster_body("backend"))
        assert r.status_code == 503, r.text
        after = await scrape(plane)
    moved_errors = {
        dict(ls)["error"]: v - before.get((n, ls), 0.0)
        for (n, ls), v in after.items()
        if n == "flowplane_storage_errors_total" and ("operation", "write") in ls
    }
    assert sum(moved_errors.values()) == 1, moved_errors


async def test_xds_refusals_count_as_auth_failures_and_refused_streams(db_url: str) -> None:
    """With FLOWPLANE_XDS_AUTH=token a stream without a token is refused: counted in
    flowplane_auth_failures_total{edge="xds"} by reason and as a refused stream end."""
    async with run_plane(plane_settings(db_url, xds_auth="token")) as plane:
        before = await scrape(plane)
        async with sotw_client("127.0.0.1", plane.xds_port, node_id="dp") as c:
            await c.send(CLUSTER_TYPE)
            await c.wait_end()
        after = await scrape(plane)
    assert moved(before, after, "flowplane_auth_failures_total", edge="xds", reason="missing") == 1
    assert moved(before, after, "flowplane_xds_stream_ends_total", protocol="sotw", team="-",
                 reason="refused") == 1  # fmt: skip
