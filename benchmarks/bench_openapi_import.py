"""Time of one OpenAPI import (`flowplane.platform.openapi.import_openapi`, in-process, no I/O).

Imports each real document of tests/platform/data/openapi `--runs` times and prints the median
and the fastest run; the largest (the Box Platform API: 1.7 MB, 296 operations) is the figure
to watch. Also times the worst case the limits allow for one shape of hostile document (a 3.1
document whose validation is cut off by `max_validation_steps`).

    .venv/bin/python benchmarks/bench_openapi_import.py [--runs 7]

`--rest` times the whole `POST /api/v1/platform/import/openapi` for the largest document instead:
it starts `flowplane serve` as its own process (a fresh SQLite file, the default gateway on)
and, per run, times a dry run (no API yet), the first import (the API created and materialised
in one transaction), a re-import of the same document (nothing changes) and a delete (untimed),
then the pure importer on the same document in this process (the share of the REST time that is
the import itself).

    .venv/bin/python benchmarks/bench_openapi_import.py --rest [--runs 7]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowplane.errors import PayloadTooLarge
from flowplane.platform.openapi import import_openapi
from flowplane.testing.ports import free_port

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


def _machine() -> str:
    """The CPU model and core count (/proc/cpuinfo), the commit and the Python version."""
    models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("model name")]  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=DATA).stdout.strip()  # fmt: skip
    return (f"{models[0] if models else platform.machine()}, {len(models) or os.cpu_count()} cores, "
            f"commit {commit}, Python {platform.python_version()}")  # fmt: skip


@contextlib.contextmanager
def _server() -> Iterator[tuple[str, str]]:
    """`flowplane serve` on free ports and a fresh database: (base URL, admin token)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLOWPLANE_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
               "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{port}", "FLOWPLANE_LOG_LEVEL": "WARNING",
               "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{free_port()}",
               "FLOWPLANE_DEFAULT_GATEWAY": "true",
               "FLOWPLANE_DEFAULT_GATEWAY_ADDRESS": f"127.0.0.1:{free_port()}"}  # fmt: skip
        server = subprocess.Popen([sys.executable, "-m", "flowplane.cli.main", "serve"], env=env,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert server.stderr is not None
            token = ""
            for line in server.stderr:  # the first start prints the admin token in a banner
                if line.startswith(" ey"):
                    token = line.strip()
                    break
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            yield base, token
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


def _call(base: str, token: str, method: str, path: str, body: bytes | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(base + path, body, headers, method=method)
    with urllib.request.urlopen(req, timeout=120) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def rest(runs: int) -> None:
    body = gzip.decompress((DATA / "box-openapi.json.gz").read_bytes())
    imp = "/api/v1/platform/import/openapi?domain=api.box.com"
    times: dict[str, list[float]] = {"dry run (no API yet)": [], "first import": [],
                                     "re-import (unchanged)": [],
                                     "importer alone": []}  # fmt: skip
    print(f"# {time.strftime('%Y-%m-%d')} {_machine()}")
    with _server() as (base, token):
        routes = 0
        for _ in range(runs):
            for label, path in zip(list(times)[:3], (imp + "&dryRun=true", imp, imp), strict=True):
                t0 = time.perf_counter()
                out = _call(base, token, "POST", path, body)
                times[label].append(time.perf_counter() - t0)
            assert out["changes"] == [], "a re-import of the same document changes nothing"
            routes = len(out["api"]["routes"])
            _call(base, token, "DELETE", f"/api/v1/platform/apis/{out['api']['id']}")
            # the same document through the pure importer, in this process, in the same run (a
            # shared machine's load changes from run to run: this is the row to compare with)
            times["importer alone"] += _timed(body, "application/json", 1)
        print(f"POST /import/openapi, box-openapi.json ({len(body) / 1e6:.2f} MB, {routes} routes),"
              f" median of {runs}")  # fmt: skip
        for label, values in times.items():
            print(f"{label:24s} median {statistics.median(values) * 1000:8.1f} ms"
                  f"  min {min(values) * 1000:8.1f} ms  max {max(values) * 1000:8.1f} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rest", action="store_true", help="through `flowplane serve` over REST")
    args = ap.parse_args()
    runs = args.runs
    if args.rest:
        rest(runs)
        return
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
