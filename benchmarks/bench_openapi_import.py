"""Time of one OpenAPI import (`flowplane.platform.openapi.import_openapi`, in-process, no I/O).

Imports each real document of tests/platform/data/openapi `--runs` times and prints the median
and the fastest run; the largest (the Box Platform API: 1.7 MB, 296 operations) is the figure
to watch. Also times the worst case the limits allow for one shape of hostile document (a 3.1
document whose validation is cut off by `max_validation_steps`).

    .venv/bin/python benchmarks/bench_openapi_import.py [--runs 7]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowplane.errors import PayloadTooLarge
from flowplane.platform.openapi import import_openapi

DATA = Path(__file__).resolve().parent.parent / "tests" / "platform" / "data" / "openapi"
DOCUMENTS = [
    ("petstore.yaml", "application/yaml"),
    ("museum-api.yaml", "application/yaml"),
    ("box-openapi.json.gz", "application/json"),  # the largest
]


def _import(body: bytes, content_type: str) -> None:
    import_openapi(body, content_type, name=None, team=None, domain=None,
                   listener_isolation=False, port=None)  # fmt: skip


def _timed(body: bytes, content_type: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with contextlib.suppress(PayloadTooLarge):  # the hostile case's expected answer
            _import(body, content_type)
        times.append(time.perf_counter() - t0)
    return times


def _hostile() -> bytes:
    """8,000 query parameters in a 3.1 document: ~1 ms of validation each, cut off at the
    default step budget (413)."""
    params = [{"name": f"q{i}", "in": "query", "schema": {}} for i in range(8_000)]
    return json.dumps({
        "openapi": "3.1.0", "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://api.example.com"}],
        "paths": {"/a": {"get": {"parameters": params, "responses": {"200": {"description": "x"}}}}},
    }).encode()  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, median of {runs} runs")  # fmt: skip
    cases = []
    for name, content_type in DOCUMENTS:
        raw = (DATA / name).read_bytes()
        body = gzip.decompress(raw) if name.endswith(".gz") else raw
        cases.append((name.removesuffix(".gz"), body, content_type))
    cases.append(("hostile: 3.1, 8000 parameters (413)", _hostile(), "application/json"))
    for label, body, content_type in cases:
        times = _timed(body, content_type, runs)
        print(f"{label:40s} {len(body) / 1e6:5.2f} MB  median {statistics.median(times) * 1000:8.1f} ms"
              f"  min {min(times) * 1000:8.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
