"""CPU cost per REST request of the observability layer, in-process (no sockets).

The end-to-end benchmarks (`bench_rest.py`, `bench_xds.py`) measure throughput and latency, which
a shared machine distorts; this one measures the server's own CPU time per request
(`time.process_time`, all threads), which other processes barely move. It calls the real ASGI
app (`flowplane.app.make_app`, real core on a SQLite file) directly, in rounds that alternate:

- `without layer`: the read fast path and Quart as before this layer existed (no request ids,
  REST metrics, access log or spans; the fast path's two `set_route`/`set_caller` calls remain),
- `tracing off`: the app as served, tracing off (the default),
- `tracing on`: the app as served, 100 % sampling, spans batched by the SDK's
  BatchSpanProcessor into an exporter that drops them (what leaves the process is not counted;
  the OTLP encoding and POST happen on the SDK's export thread, measured end to end by
  `bench_rest.py` against `otlp_sink.py`).

    .venv/bin/python benchmarks/bench_observability.py [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from flowplane.api.fastpath import FastReads
from flowplane.app import make_app, open_core, quart_app
from flowplane.observability import tracing
from flowplane.settings import load_settings
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import admin_token


class Drop(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def call(app: Any, method: str, path: str, token: str, body: bytes = b"") -> int:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
        "headers": [(b"host", b"flowplane"), (b"authorization", f"Bearer {token}".encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await trio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(app: Any, token: str, kind: str, n: int) -> float:
    """CPU microseconds per request."""
    c0 = time.process_time()
    if kind == "get":
        for _ in range(n):
            assert await call(app, "GET", "/api/v1/native/clusters/bench", token) == 200
    else:
        for i in range(n // 2):
            body = f'{{"name":"w{i}","endpoints":[{{"host":"127.0.0.1","port":80}}]}}'.encode()
            assert await call(app, "POST", "/api/v1/native/clusters", token, body) == 201
            assert await call(app, "DELETE", f"/api/v1/native/clusters/w{i}", token) == 204
    return (time.process_time() - c0) / n * 1e6


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(database_url=f"sqlite:///{tmp}/b.db", api_address="127.0.0.1:0",
                                 default_gateway=False, rate_limit_per_minute=10_000_000)  # fmt: skip
        on = load_settings(database_url=f"sqlite:///{tmp}/b.db",
                           otel_exporter_otlp_endpoint="http://127.0.0.1:9")  # fmt: skip
        async with open_core(settings) as core:
            token = admin_token(core)
            served = make_app(core)
            without = FastReads(quart_app(core), core.services.resources, core.authenticator)  # type: ignore[arg-type]
            assert await call(served, "POST", "/api/v1/native/clusters", token,
                              json.dumps(cluster_body("bench")).encode()) == 201  # fmt: skip
            drop = Drop()
            results: dict[tuple[str, str], list[float]] = {}
            for kind, n in (("get", args.requests), ("write", args.writes)):
                for _ in range(args.rounds):
                    for label, app in (("without layer", without), ("tracing off", served),
                                       ("tracing on", served)):  # fmt: skip
                        if label == "tracing on":
                            tracing.configure_tracing(on, exporter=drop)
                        await measure(app, token, kind, max(n // 10, 2))  # warm up
                        results.setdefault((kind, label), []).append(
                            await measure(app, token, kind, n)
                        )
                        tracing.shutdown_tracing()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()}, Python {platform.python_version()}, "
          f"{args.rounds} rounds, GET x{args.requests}, POST+DELETE x{args.writes}; "
          f"spans exported (dropped): {drop.spans}")  # fmt: skip
    for (kind, label), values in results.items():
        print(f"{kind:5s} {label:14s} median {statistics.median(values):7.1f} us CPU/request  "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    trio.run(main, ap.parse_args())
