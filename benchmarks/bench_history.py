"""The cost of keeping history on the write path: one resource write committed to SQLite (WAL,
synchronous=FULL) as the config actor commits it — the row and its audit row, with and without
its history row — interleaved in blocks so both see the same machine load. Prints wall time and
this process's CPU time per write.

    .venv/bin/python benchmarks/bench_history.py [--writes 400] [--blocks 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flowplane.auth.audit import audit_row, history_row
from flowplane.domain.auth import SYSTEM
from flowplane.storage.base import ResourceRow, Upsert, Write
from flowplane.storage.sqlite import SqliteRepository
from flowplane.testing.factories import cluster_body


def writes(i: int, with_history: bool) -> list[Write]:
    name = f"c{i % 500}"
    spec = cluster_body(name, port=1000 + i % 1000, connectTimeoutSeconds=2)
    now = datetime.now(UTC)
    out: list[Write] = [
        Upsert(ResourceRow("cluster", name, None, i + 1, "native", spec, now, now)),
        audit_row(SYSTEM, "update", "cluster", name, None, spec, spec),
    ]
    if with_history:
        out.append(history_row(SYSTEM, "update", "cluster", None, name, i + 1, spec))
    return out


async def main(n: int, blocks: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = await SqliteRepository.open(f"sqlite:///{tmp}/bench.db")
        await repo.migrate()
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        i = 0
        for block in range(blocks):
            for with_history in (block % 2 == 0, block % 2 == 1):
                w0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n):
                    await repo.write(writes(i, with_history))
                    i += 1
                w1, c1 = time.perf_counter(), time.process_time()
                results[with_history].append(((w1 - w0) / n * 1e6, (c1 - c0) / n * 1e6))
        await repo.aclose()
    for with_history, runs in results.items():
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        print(
            f"{'with' if with_history else 'without':7} history: wall per write median"
            f" {statistics.median(wall):7.0f} us (min {min(wall):.0f}, max {max(wall):.0f});"
            f" CPU per write median {statistics.median(cpu):5.0f} us"
            f" ({blocks} blocks of {n})"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=400)
    ap.add_argument("--blocks", type=int, default=10)
    args = ap.parse_args()
    trio.run(main, args.writes, args.blocks)
