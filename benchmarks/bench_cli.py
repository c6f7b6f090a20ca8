"""Declarative `flowplane apply` / `flowplane export` at scale, through the real CLI process
against a real `flowplane serve` (fresh SQLite, persisted writes).

Documents: `--clusters` clusters, a fifth as many route configs (10 routes each, forwarding to
those clusters) and a fifth as many listeners, in one team, one file per resource (the layout
`export --dir` writes). Phases: apply (every document a create), apply again (an empty plan),
export, apply after changing a tenth of the clusters (updates). For each: wall time, the CLI's
CPU, the server's CPU.

    .venv/bin/python benchmarks/bench_cli.py --clusters 500
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.cli.conftest import CLI, start_server


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def documents(n: int) -> list[dict[str, object]]:
    docs: list[dict[str, object]] = [{"kind": "Team", "spec": {"name": "bench"}}]
    for i in range(n):
        docs.append({"kind": "Cluster", "spec": {
            "name": f"c{i}", "team": "bench", "connectTimeoutSeconds": 2,
            "endpoints": [{"host": "127.0.0.1", "port": 10000 + i}]}})  # fmt: skip
    for r in range(n // 5):
        routes = [{"match": {"path": {"type": "prefix", "value": f"/p{k}"}},
                   "action": {"type": "forward", "cluster": f"c{(r * 10 + k) % n}"}}
                  for k in range(10)]  # fmt: skip
        docs.append({"kind": "RouteConfig", "spec": {
            "name": f"r{r}", "team": "bench",
            "virtualHosts": [{"name": "vh", "domains": [f"r{r}.example"], "routes": routes}]}})  # fmt: skip
        docs.append({"kind": "Listener", "spec": {
            "name": f"l{r}", "team": "bench", "address": "127.0.0.1", "port": 20000 + r,
            "filterChains": [{"filters": [
                {"type": "httpConnectionManager", "routeConfigName": f"r{r}"}]}]}})  # fmt: skip
    return docs


def write(docs: list[dict[str, object]], directory: Path) -> None:
    for i, d in enumerate(docs):
        (directory / f"{i:05d}.yaml").write_text(yaml.safe_dump(d))


def phase(name: str, args: list[str], env: dict[str, str], server_pid: int) -> dict[str, object]:
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = proc_cpu(server_pid)
    t0 = time.perf_counter()
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr}")
    cli_cpu = (after_children.ru_utime - before_children.ru_utime) + (
        after_children.ru_stime - before_children.ru_stime
    )
    summary = next((ln for ln in done.stdout.splitlines() if ln.startswith("Plan:")), "")
    return {"phase": name, "wall": wall, "cli_cpu": cli_cpu,
            "server_cpu": proc_cpu(server_pid) - server_before, "plan": summary}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clusters", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        root = Path(tmp)
        server = start_server(root / "server")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPLANE_")}
            env |= {"FLOWPLANE_SERVER": server.url, "FLOWPLANE_TOKEN": server.token,
                    "FLOWPLANE_CONFIG": str(root / "none.yaml")}  # fmt: skip
            docs = documents(args.clusters)
            files = root / "docs"
            files.mkdir()
            write(docs, files)
            pid = server.proc.pid
            rows = [
                phase("apply (all created)", ["apply", "-f", str(files)], env, pid),
                phase("apply again (empty plan)", ["apply", "-f", str(files)], env, pid),
                phase("export", ["export", "--dir", str(root / "out")], env, pid),
            ]
            for d in docs[1 : 1 + args.clusters // 10]:
                d["spec"]["connectTimeoutSeconds"] = 3  # type: ignore[index]
            write(docs, files)
            rows.append(phase("apply (a tenth updated)", ["apply", "-f", str(files)], env, pid))
        finally:
            server.stop()
    print(f"{len(docs)} documents ({args.clusters} clusters, {args.clusters // 5} route configs "
          f"x 10 routes, {args.clusters // 5} listeners); Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| phase | wall | CLI CPU | server CPU | plan |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['phase']} | {r['wall']:.2f} s | {r['cli_cpu']:.2f} s | "
              f"{r['server_cpu']:.2f} s | {r['plan']} |")  # fmt: skip


if __name__ == "__main__":
    main()
