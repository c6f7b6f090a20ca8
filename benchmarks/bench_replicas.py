"""Two replicas on one PostgreSQL database (issue 13): change-feed lag and write throughput.

Two real cores (each with its own connection pool, LISTEN connection and config actor) run in
this process on a fresh schema of the PostgreSQL server at 127.0.0.1:5432 (database `test`,
dropped afterwards); requests go through each replica's real ASGI app.

- lag: a cluster created through A's REST API, until B's config actor publishes it (commit on
  A, NOTIFY, B reads the change log and the row, applies it): p50 / p99 / max over `--writes`
  sequential writes.
- throughput: `--writes` creates split over A and B, `--concurrency` in flight per replica
  (different names, so no conflicts but every write serialised by the change-log lock and
  re-planned when the other replica committed first), and the same on A alone.

    .venv/bin/python benchmarks/bench_replicas.py [--writes 300] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import trio
import trio_asyncio

from flowplane.actors.config import ConfigChange
from flowplane.app import Core, make_app, open_core
from flowplane.settings import load_settings
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import admin_token
from flowplane.testing.postgres import drop_schema

PG = "postgresql://postgres@127.0.0.1:5432/test"
N = "/api/v1/native"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def run(writes: int, concurrency: int) -> None:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        database_url=f"{PG}?schema={schema}", api_address="127.0.0.1:0", default_gateway=False,
        snapshot_debounce_seconds=0.001, rate_limit_per_minute=10_000_000,
    )  # fmt: skip
    async with trio_asyncio.open_loop() as loop:
        try:
            async with AsyncExitStack() as stack:
                cores: list[Core] = []
                apis: list[httpx.AsyncClient] = []
                for _ in range(2):
                    core = await stack.enter_async_context(open_core(settings))
                    cores.append(core)
                    apis.append(await stack.enter_async_context(httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=make_app(core)),
                        base_url="http://bench", headers={"Authorization": f"Bearer {admin_token(core)}"},
                    )))  # fmt: skip
                await measure(cores, apis, writes, concurrency)
        finally:
            await drop_schema(loop, PG, schema)


async def measure(
    cores: list[Core], apis: list[httpx.AsyncClient], writes: int, concurrency: int
) -> None:
    a, b = apis
    send, seen = trio.open_memory_channel[ConfigChange](10_000)
    cores[1].actor.subscribe(send)
    lags = []
    for i in range(writes):
        r = await a.post(f"{N}/clusters", json=cluster_body(f"lag{i}"))
        assert r.status_code == 201, r.text
        committed = time.perf_counter()
        async for change in seen:
            if any(k == f"lag{i}" for _, k, _ in change.changes):
                break
        lags.append((time.perf_counter() - committed) * 1000)
    print(f"lag A->B over {writes} writes (ms after A answered 201): p50 {pct(lags, 0.5):.2f},"
          f" p99 {pct(lags, 0.99):.2f}, max {max(lags):.2f}")  # fmt: skip

    async def load(clients: list[httpx.AsyncClient], tag: str) -> float:
        names = iter(range(writes))

        async def worker(c: httpx.AsyncClient) -> None:
            for i in names:
                r = await c.post(f"{N}/clusters", json=cluster_body(f"{tag}{i}"))
                assert r.status_code == 201, r.text

        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for c in clients:
                for _ in range(concurrency):
                    nursery.start_soon(worker, c)
        return writes / (time.perf_counter() - t)

    one = await load([a], "one")
    two = await load([a, b], "two")
    print(f"writes/s, {concurrency} in flight per replica: A alone {one:.0f}; A and B {two:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
               platform.processor())  # fmt: skip
    print(f"commit {commit}, Python {platform.python_version()}, {cpu}")
    trio.run(run, args.writes, args.concurrency)


if __name__ == "__main__":
    main()
