"""Issue 15: a listener's `tracing` block makes a real Envoy deliver spans, one per request.

Two listeners' worth of proof, one per provider Flowplane accepts (flowplane/domain/listener.py,
`tracing: {provider, collectorCluster, samplePercent}`):

- `opentelemetry`: Envoy exports OTLP over gRPC to the collector cluster (HTTP/2); the collector
  is written in the test with the published OTLP protobuf definitions (opentelemetry-proto)
  and served by grpclib (`tests/observability/collectors.py`);
- `zipkin`: Envoy posts Zipkin v2 JSON to `/api/v2/spans` on the collector cluster; the collector
  is a small HTTP server in the test.

Each request has its own path, which Envoy records on its span (`http.url`), so "one span per
request" is checked request by request, with the route that served it (the route's name and
upstream cluster) and the status code Envoy answered. (The requests carry no `x-request-id`:
Envoy reads its trace decision from that header when a trusted, loopback client sets it, and an
id that is not one of its UUIDs makes the request untraceable.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from flowplane.settings import Settings
from flowplane.testing.envoy import EnvoyProcess, run_envoy
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import Plane, run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import run_upstream
from flowplane.xds.bootstrap import ads_bootstrap
from tests.helpers import N, ok
from tests.observability.collectors import (
    Collector,
    Span,
    otlp_grpc_collector,
    zipkin_collector,
)

pytestmark = pytest.mark.e2e

COLLECTORS: dict[str, Callable[[], AbstractAsyncContextManager[Collector]]] = {
    "opentelemetry": otlp_grpc_collector,
    "zipkin": zipkin_collector,
}
REQUESTS = (("/api/one", 200), ("/api/two", 200), ("/", 200), ("/missing/x", 404), ("/api/3", 200))


def routes() -> dict[str, object]:
    """`/api` -> cluster api (route "api"), `/missing` -> a direct 404 (route "gone"), else ->
    cluster backend (route "all"). Envoy's spans do not name the route, but they name the
    upstream cluster: one per forwarding route tells which route served a request."""
    fwd = {"type": "forward", "cluster": "backend"}
    api = {"type": "forward", "cluster": "api"}
    return {"name": "routes", "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [
        {"name": "api", "match": {"path": {"type": "prefix", "value": "/api"}}, "action": api},
        {"name": "gone", "match": {"path": {"type": "prefix", "value": "/missing"}},
         "action": {"type": "directResponse", "status": 404, "body": "gone"}},
        {"name": "all", "match": {"path": {"type": "prefix", "value": "/"}}, "action": fwd},
    ]}]}  # fmt: skip


@asynccontextmanager
async def traced_edge(
    plane: Plane, tmp_path: Path, provider: str, collector: Collector, upstream_port: int
) -> AsyncIterator[tuple[EnvoyProcess, int]]:
    """backend, the collector cluster, routes and a listener tracing every request to it; a
    real Envoy serving them."""
    port = free_port()
    ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend", upstream_port)))
    ok(await plane.api.post(f"{N}/clusters", json=cluster_body("api", upstream_port)))
    ok(await plane.api.post(f"{N}/clusters", json=cluster_body(
        "collector", collector.port, http2=provider == "opentelemetry")))  # fmt: skip
    ok(await plane.api.post(f"{N}/route-configs", json=routes()))
    ok(await plane.api.post(f"{N}/listeners", json={
        "name": "edge", "address": "127.0.0.1", "port": port, "filterChains": [{"filters": [{
            "type": "httpConnectionManager", "routeConfigName": "routes",
            "tracing": {"provider": provider, "collectorCluster": "collector",
                        "samplePercent": 100},
        }]}],
    }))  # fmt: skip
    await plane.settled()
    async with run_envoy(ads_bootstrap("tracer", "127.0.0.1", plane.xds_port),
                         tmp_dir=tmp_path) as envoy:  # fmt: skip
        await envoy.wait_ready()
        assert all(v == 0 for v in (await envoy.rejected_counts()).values())
        yield envoy, port


def by_path(spans: list[Span]) -> dict[str, list[Span]]:
    """Spans by the path of the request they record (`http.url` is the full URL)."""
    out: dict[str, list[Span]] = {}
    for s in spans:
        url = s.attributes.get("http.url")
        if url is not None:
            out.setdefault("/" + url.split("://", 1)[-1].partition("/")[2], []).append(s)
    return out


@pytest.mark.parametrize("provider", ["opentelemetry", "zipkin"])
async def test_envoy_sends_one_span_per_request_with_route_and_status(
    provider: str, xds_settings: Settings, tmp_path: Path
) -> None:
    async with (
        run_plane(xds_settings) as plane,
        COLLECTORS[provider]() as collector,
        run_upstream("one") as upstream,
        traced_edge(plane, tmp_path, provider, collector, upstream.port) as (envoy, port),
    ):
        for path, want in REQUESTS:
            status, _, _ = await envoy.request(port, path)
            assert status == want, (path, status)
        sent = {path for path, _ in REQUESTS}
        # Envoy flushes every 5 s, or at once when 5 spans are buffered (min_flush_spans)
        await collector.wait_for(lambda ss: sent <= set(by_path(ss)), 20)
        await trio.sleep(0.5)  # a second span for a request, if any, would come with the first
        spans = list(collector.spans)
    got = by_path(spans)
    assert set(got) == sent, got
    for path, status in REQUESTS:
        (span,) = got[path]  # one span per request
        attrs = span.attributes
        assert attrs["http.status_code"] == str(status), (path, attrs)
        assert attrs["http.url"] == f"http://127.0.0.1:{port}{path}", (path, attrs)
        assert attrs["http.method"] == "GET" and attrs["node_id"] == "tracer", (path, attrs)
        # the route that served it, by its upstream cluster (none for the direct response)
        cluster = "api" if path.startswith("/api") else None if status == 404 else "backend"
        assert attrs.get("upstream_cluster", "-") in ((cluster,) if cluster else ("-",)), (
            f"{path} {sorted(attrs.items())}"
        )
    # each an ingress (server) span: OTLP's SPAN_KIND_SERVER is 2
    assert {s.kind for s in spans} == {"2" if provider == "opentelemetry" else "SERVER"}, spans
