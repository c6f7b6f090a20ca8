"""An OTLP/HTTP trace sink for the tracing-on benchmarks: accepts `POST /v1/traces`, decodes
each `ExportTraceServiceRequest` (opentelemetry-proto) to count its spans, answers 200, and
prints the totals when stopped (SIGTERM or Ctrl-C). Threads, standard library HTTP server.

    .venv/bin/python benchmarks/otlp_sink.py --port 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 .venv/bin/python benchmarks/bench_rest.py
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_lock = threading.Lock()
totals = {"requests": 0, "spans": 0, "bytes": 0}
REPLY = ExportTraceServiceResponse().SerializeToString()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        req = ExportTraceServiceRequest.FromString(body)
        spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with _lock:
            totals["requests"] += 1
            totals["spans"] += spans
            totals["bytes"] += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=4318)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    print(f"otlp sink: {totals['requests']} exports, {totals['spans']} spans, "
          f"{totals['bytes']} bytes", file=sys.stderr, flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
