"""xDS soak: N simulated Envoys held for a while, one change every few seconds (issue 14).

Starts `flowplane serve` (own process, fresh SQLite, `--xds-workers`), creates `--clusters`
clusters, connects `--nodes` simulated Envoys (`xds_load.py`, `--generators` processes), then for
`--seconds` makes one change every `--every` seconds (PUT of one cluster) and waits until every
node has received it. Samples the server's RSS (core + workers) after every change. Prints one
JSON object: per change the p50/p99 write->received and how many nodes missed it, the RSS
samples, the RSS growth from the first sample after the warm-up (`--warmup` changes) to the
last, every error the generators saw, and whether every node ended at the last version.

    .venv/bin/python benchmarks/soak_xds.py --nodes 10000 --generators 2 --seconds 3600
    .venv/bin/python benchmarks/soak_xds.py --nodes 500 --seconds 120     # tests/e2e's version

Exit status 0 when the soak held (no errors, nothing missed, RSS growth < `--max-growth`), 1 if
not, 2 if it could not run. Everything it starts is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_xds import (
    HEADERS,
    JWT,
    ROOT,
    Gen,
    change_and_wait,
    cluster_body,
    free_port,
    http,
    latencies,
    machine,
    merge,
    pct,
    proc_cpu,
    proc_rss_kb,
    server_env,
    stop_pid,
    wait_ready,
)


def soak(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    api_port, xds_port = free_port(), free_port()
    env = server_env(f"{tmp}/soak.db", api_port, xds_port, args.xds_workers)
    base = f"http://127.0.0.1:{api_port}"
    log_path = Path(tmp) / "server.log"
    out: dict[str, Any] = {"nodes": args.nodes, "xds_workers": args.xds_workers,
                           "every_s": args.every, "seconds": args.seconds,
                           "mode": "delta" if args.delta else "sotw",
                           "generator_framing": "h2" if args.generator_h2_only else "raw"}  # fmt: skip
    with log_path.open("w") as log:
        server = subprocess.Popen([sys.executable, "-m", "flowplane.cli.main", "serve"], env=env,
                                  cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        gens: list[Gen] = []
        try:
            wait_ready(base, server, log_path)
            for _ in range(50):
                m = JWT.search(log_path.read_text(errors="replace"))
                if m:
                    HEADERS["Authorization"] = f"Bearer {m.group(1)}"
                    break
                time.sleep(0.1)
            for k in range(args.clusters):
                st, body = http("POST", base + "/api/v1/native/clusters", cluster_body(f"c{k}"))
                if st != 201:
                    raise RuntimeError(f"POST cluster c{k}: {st} {body[:300]!r}")
            k = args.generators
            for g in range(k):
                first = g * args.nodes // k
                gens.append(Gen(args, xds_port, first, (g + 1) * args.nodes // k - first,
                                max(1, args.concurrency // k)))  # fmt: skip
            for g in gens:
                g.recv()
                g.send("connect")
            conn = [g.recv() for g in gens]
            out["connect"] = {"missing": sum(c["missing"] for c in conn),
                              "errors": merge(c["errors"] for c in conn)}  # fmt: skip
            t0 = time.monotonic()
            samples: list[tuple[float, int]] = [(0.0, proc_rss_kb(server.pid))]
            changes: list[dict[str, Any]] = []
            last: list[dict[str, Any]] = conn
            j = 0
            while time.monotonic() - t0 < args.seconds:
                t_next = t0 + j * args.every
                time.sleep(max(0.0, t_next - time.monotonic()))
                name = f"c{j % args.clusters}"
                t_write, _, last = change_and_wait(base, gens, name, 20000 + j % 10000 + 1,
                                                   args.every * 3)  # fmt: skip
                lat = latencies(last)
                changes.append({"t": t_write - t0, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                                "missing": args.nodes - len(lat),
                                "versions": len(merge(r["versions"] for r in last))})  # fmt: skip
                samples.append((time.monotonic() - t0, proc_rss_kb(server.pid)))
                j += 1
            warm = min(args.warmup, len(samples) - 1)
            out["changes"] = changes
            out["rss_kb"] = samples
            out["rss_growth"] = samples[-1][1] / samples[warm][1] - 1 if samples[warm][1] else 0.0
            out["errors"] = merge(r["errors"] for r in last)
            out["missing"] = sum(c["missing"] for c in changes)
            out["open_at_end"] = sum(r["open"] for r in last)
            out["all_at_last_version"] = (
                out["missing"] == 0 and all(c["versions"] == 1 for c in changes)
                and out["open_at_end"] == args.nodes
            )  # fmt: skip
            out["server_cpu_s"] = proc_cpu(server.pid)
        finally:
            for g in gens:
                g.stop()
            out["server_stop_s"] = stop_pid(server, 60)
    text = log_path.read_text(errors="replace")
    out["server_log_problems"] = [
        ln for ln in text.splitlines()
        if re.search(r"WARNING|ERROR|CRITICAL|Traceback", ln)
        # the warning server_env's FLOWPLANE_XDS_AUTH=none asks for (the generators send no token)
        and "FLOWPLANE_XDS_AUTH=none" not in ln
    ][:20]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--generators", type=int, default=1)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--xds-workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between changes")
    ap.add_argument("--warmup", type=int, default=1, help="changes before the RSS baseline")
    ap.add_argument("--max-growth", type=float, default=0.05)
    ap.add_argument("--delta", action="store_true")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--generator-h2-only", action="store_true",
                    help="as bench_xds.py: the generators frame everything with h2")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    # what Gen reads from the arguments of bench_xds
    args.connect_timeout, args.parser, args.max_seconds = 300, "upb", args.seconds + 600
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = soak(args, tmp)
        except RuntimeError as err:
            print(f"soak_xds: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    out["date"] = time.strftime("%Y-%m-%d %H:%M")
    out["machine"] = machine()
    held = (not out["errors"] and out["all_at_last_version"]
            and out["rss_growth"] < args.max_growth)  # fmt: skip
    out["held"] = held
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    raise SystemExit(0 if held else 1)


if __name__ == "__main__":
    main()
