"""xDS push benchmark: N simulated Envoys on SotW ADS, one REST change -> time until all have it.

Starts `flowplane serve` as its own process (fresh SQLite file, no default gateway), creates
`--clusters` clusters so each CDS response is realistic, probes one stream, then starts
`--generators` load-generator processes (`xds_load.py`, each holding nodes/generators streams, one
HTTP/2 connection per node) and tells them to connect. Then `--changes` times: PUT one cluster
with a new endpoint port, recording t_write (CLOCK_MONOTONIC, just before the PUT), and wait until
every node has received a response with a new version (write->received latency per node), or
`--timeout`. Reports connect time, latency percentiles over nodes x changes, server CPU per push
(/proc/<pid>/stat), server RSS before/after connecting (-> per stream), client CPU per generator,
listen-queue overflows, and anything the server logged.

    .venv/bin/python benchmarks/bench_xds.py --nodes 1000 --changes 20
    .venv/bin/python benchmarks/bench_xds.py --nodes 10000 --generators 2 --changes 20

All traffic goes to 127.0.0.1. Every wait is bounded; the server and generators are stopped by
pid at the end (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flowplane.testing.factories import cluster_body  # noqa: E402
from flowplane.testing.ports import free_port  # noqa: E402

LOAD = str(Path(__file__).resolve().parent / "xds_load.py")


def proc_cpu(pid: int) -> float:
    return sum(proc_cpu_split(pid))


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants (the server's xDS worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads) and its live descendants."""
    user = system = 0.0
    tck = os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / tck
        system += int(fields[12]) / tck
    return user, system


def proc_rss_kb(pid: int) -> int:
    """VmRSS of a process and its live descendants, summed."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def machine_busy() -> float:
    """CPU seconds all processes on the machine have used (busy time of /proc/stat's cpu line)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v[:3]) + sum(v[5:8])) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def settle(pid: int, max_s: float, window: float = 0.1, idle_cpu: float = 0.015) -> float:
    """Wait until the process is idle (< `idle_cpu` CPU seconds in a `window`), at most `max_s`;
    returns the seconds waited (e.g. until the ACKs of a push have all been processed)."""
    t0 = time.monotonic()
    prev = proc_cpu(pid)
    for _ in range(max(1, int(max_s / window))):
        time.sleep(window)
        cur = proc_cpu(pid)
        if cur - prev < idle_cpu:
            return time.monotonic() - t0 - window
        prev = cur
    return time.monotonic() - t0


def listen_overflows() -> tuple[int, int]:
    """(ListenOverflows, ListenDrops) from /proc/net/netstat (this network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            d = dict(zip(head.split()[1:], map(int, vals.split()[1:]), strict=False))
            return d.get("ListenOverflows", 0), d.get("ListenDrops", 0)
    return 0, 0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


HEADERS = {"Content-Type": "application/json"}
JWT = re.compile(r"^\s*([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\s*$", re.MULTILINE)


def http(method: str, url: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, HEADERS, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Gen:
    """One xds_load.py process and its line protocol."""

    def __init__(self, args: argparse.Namespace, xds_port: int, first: int, count: int,
                 concurrency: int) -> None:  # fmt: skip
        cmd = [sys.executable, LOAD, "--port", str(xds_port), "--first", str(first),
               "--count", str(count), "--concurrency", str(concurrency),
               "--connect-timeout", str(args.connect_timeout), "--parser", args.parser,
               "--max-seconds", str(args.max_seconds)]  # fmt: skip
        if args.delta:
            cmd.append("--delta")
        if args.generator_h2_only:
            cmd.append("--h2-only")
        self.cmd = cmd
        self.count = count
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        # Bounded: every generator command has its own timeout, and EOF ends the read.
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"generator {self.proc.pid} exited (rc={self.proc.poll()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def stop(self) -> dict[str, Any] | None:
        bye = None
        try:
            if self.proc.poll() is None:
                self.send("quit")
                bye = self.recv()
        except (OSError, RuntimeError, ValueError):
            pass
        stop_pid(self.proc, 30)
        return bye


def wait_ready(base: str, server: subprocess.Popen[Any], log_path: Path) -> None:
    for _ in range(600):  # up to ~30 s
        try:
            if http("GET", base + "/readyz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}; see {log_path}")
        time.sleep(0.05)
    raise RuntimeError("server not ready after 30 s")


def stop_pid(proc: subprocess.Popen[Any], grace: float) -> float:
    """SIGTERM this one process, SIGKILL it after `grace` s; returns the seconds it took."""
    t0 = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return time.monotonic() - t0


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return (f"{os.cpu_count()} cores ({model}), {int(mem) / 2**20:.1f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")  # fmt: skip


def server_env(db: str, api_port: int, xds_port: int, xds_workers: int) -> dict[str, str]:
    """The benchmarked server's environment: SQLite file `db`, loopback ports, no gateway."""
    return {**os.environ, "FLOWPLANE_DATABASE_URL": f"sqlite:///{db}",
            "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{api_port}",
            "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{xds_port}",
            "FLOWPLANE_DEFAULT_GATEWAY": "false", "FLOWPLANE_LOG_LEVEL": "WARNING",
            "FLOWPLANE_XDS_WORKERS": str(xds_workers),
            # the generators' streams carry no token: measure the push path as before (the
            # default, token auth, checks a token once per stream, at its start)
            "FLOWPLANE_XDS_AUTH": "none"}  # fmt: skip


def run(args: argparse.Namespace, tmp: str, log_path: Path) -> dict[str, Any]:
    api_port, xds_port = free_port(), free_port()
    env = server_env(f"{tmp}/bench.db", api_port, xds_port, args.xds_workers)
    base = f"http://127.0.0.1:{api_port}"
    out: dict[str, Any] = {"nodes": args.nodes, "changes": args.changes,
                           "generators": args.generators, "clusters": args.clusters,
                           "mode": "delta" if args.delta else "sotw",
                           "xds_workers": args.xds_workers,
                           "generator_framing": "h2" if args.generator_h2_only else "raw"}  # fmt: skip
    log = log_path.open("w")
    prof = ["-m", "cProfile", "-o", args.server_profile] if args.server_profile else []
    server = subprocess.Popen([sys.executable, *prof, "-m", "flowplane.cli.main", "serve"], env=env,
                              cwd=args.server_root, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    gens: list[Gen] = []
    try:
        if args.pin:
            os.sched_setaffinity(server.pid, {0})
        wait_ready(base, server, log_path)
        # A server with REST auth prints its first admin token once, on stderr (our log file).
        for _ in range(50):
            m = JWT.search(log_path.read_text(errors="replace"))
            if m or "admin token" not in log_path.read_text(errors="replace"):
                break
            time.sleep(0.1)
        if m:
            HEADERS["Authorization"] = f"Bearer {m.group(1)}"
        out["rest_auth"] = bool(m)
        t0 = time.monotonic()
        for k in range(args.clusters):
            st, body = http("POST", base + "/api/v1/native/clusters", cluster_body(f"c{k}"))
            if st != 201:
                raise RuntimeError(f"POST cluster c{k}: {st} {body[:300]!r}")
        out["create_clusters_s"] = time.monotonic() - t0
        time.sleep(0.5)  # let the last snapshot publish before nodes connect

        # One stream first: does the server answer this protocol at all?
        probe = Gen(args, xds_port, args.nodes, 1, 1)
        gens.append(probe)
        probe.recv()
        probe.send("connect")
        p = probe.recv()
        probe.stop()
        gens.remove(probe)
        out["probe"] = {"errors": p["errors"], "initial_versions": p["initial_versions"],
                        "s": p["t_all_initial"] - p["t_start"]}  # fmt: skip
        if p["errors"] or p["missing"]:
            raise RuntimeError(f"single-stream probe failed: {p['errors']}")

        rss0, cpu0, ovf0 = proc_rss_kb(server.pid), proc_cpu(server.pid), listen_overflows()
        out["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
        k = args.generators
        conc = max(1, args.concurrency // k)
        for g in range(k):
            first = g * args.nodes // k
            gens.append(Gen(args, xds_port, first, (g + 1) * args.nodes // k - first, conc))
        gen_cpu0 = [g.recv()["cpu"] for g in gens]  # hello: imported and ready
        if args.pin:
            for g in gens:
                os.sched_setaffinity(g.proc.pid, {1})
        busy0, me0 = machine_busy(), self_cpu()
        t_connect = time.monotonic()
        for g in gens:
            g.send("connect")
        conn = [g.recv() for g in gens]
        t_done = max(c["t_all_initial"] for c in conn)
        first_times = sorted(t for c in conn for t in c["first_times"])
        init_versions: collections.Counter[str] = collections.Counter()
        for c in conn:
            init_versions.update(c["initial_versions"])
        settled = settle(server.pid, args.timeout)  # until the initial ACKs are processed
        rss1, cpu1, ovf1 = proc_rss_kb(server.pid), proc_cpu(server.pid), listen_overflows()
        for g in gens:
            g.send("stats")
        gen_cpu1 = [g.recv()["cpu"] for g in gens]
        # CPU that processes other than this benchmark's used meanwhile (a shared machine).
        other_connect = (
            (machine_busy() - busy0)
            - (cpu1 - cpu0)
            - (self_cpu() - me0)
            - sum(b - a for a, b in zip(gen_cpu0, gen_cpu1, strict=True))
        )
        out["connect"] = {
            "all_tcp_s": max(c["t_all_tcp"] for c in conn) - t_connect,
            "all_initial_s": t_done - t_connect,
            "half_initial_s": (first_times[len(first_times) // 2] - t_connect)
            if first_times else None,
            "held": sum(c["open"] for c in conn),
            "server_busy_after_s": settled,
            "missing": sum(c["missing"] for c in conn),
            "initial_versions": dict(init_versions),
            "errors": merge(c["errors"] for c in conn),
            "server_cpu_s": cpu1 - cpu0,
            "client_cpu_s": [b - a for a, b in zip(gen_cpu0, gen_cpu1, strict=True)],
            "other_processes_cpu_s": other_connect,
            "listen_overflows": ovf1[0] - ovf0[0], "listen_drops": ovf1[1] - ovf0[1],
        }  # fmt: skip
        out["server_rss_mb"] = {"before": rss0 / 1024, "after_connect": rss1 / 1024,
                                "per_stream_kb": (rss1 - rss0) / max(1, args.nodes)}  # fmt: skip
        out["client_rss_mb"] = [c["rss_kb"] / 1024 for c in conn]
        print(f"connected: {json.dumps(out['connect'])}", file=sys.stderr)

        # The changes.
        lat_all: list[float] = []
        per_change = []
        last = conn
        client_cpu0 = gen_cpu1
        busy_a, me_a = machine_busy(), self_cpu()
        sys_a = proc_cpu_split(server.pid)[1]
        cpu_a = proc_cpu(server.pid)
        for j in range(args.changes):
            name = f"c{j % args.clusters}"
            cpu_j = proc_cpu(server.pid)
            t_write, t_put, replies = change_and_wait(base, gens, name, 20000 + j + 1, args.timeout)
            lat = latencies(replies)
            versions: collections.Counter[str] = collections.Counter()
            for r in replies:
                versions.update(r["versions"])
            t_all = time.monotonic()
            settled = settle(server.pid, args.timeout)  # the ACK backlog drains
            per_change.append({
                "received": len(lat), "missing": args.nodes - len(lat),
                "server_cpu_s": proc_cpu(server.pid) - cpu_j,
                "busy_after_last_s": settled + t_all - t_write - max(lat, default=0),
                "put_ms": t_put * 1000, "max_ms": max(lat, default=float("nan")) * 1000,
                "p50_ms": pct(lat, 0.5), "versions": len(versions),
                "extra": sum(r["extra"] for r in replies), "open": sum(r["open"] for r in replies),
                "bytes": sum(r["bytes"] for r in replies),
                "resources_per_response": merge(r["resources"] for r in replies),
            })  # fmt: skip
            lat_all += lat
            print(f"change {j + 1}/{args.changes}: {json.dumps(per_change[-1])}", file=sys.stderr)
            last = replies
            if args.gap:
                time.sleep(args.gap)
        cpu_b = proc_cpu(server.pid)
        sys_b = proc_cpu_split(server.pid)[1]
        busy_b, me_b = machine_busy(), self_cpu()
        client_cpu1 = [r["cpu"] for r in last] if args.changes else client_cpu0
        other_push = (
            (busy_b - busy_a)
            - (cpu_b - cpu_a)
            - (me_b - me_a)
            - sum(b - a for a, b in zip(client_cpu0, client_cpu1, strict=True))
        )
        m = max(1, args.changes)
        # Each change: from just before the PUT until the server is idle again (every ACK
        # processed), so the CPU is the whole cost of one push; the idle windows add ~nothing.
        out["push"] = {
            "samples": len(lat_all),
            "missing": sum(c["missing"] for c in per_change),
            "p50_ms": pct(lat_all, 0.5), "p90_ms": pct(lat_all, 0.9),
            "p99_ms": pct(lat_all, 0.99), "max_ms": max(lat_all, default=float("nan")) * 1000,
            "cdf_ms": [pct(lat_all, q / 100) for q in range(101)],  # for plots
            "all_nodes_p50_ms": pct([c["max_ms"] / 1000 for c in per_change], 0.5),
            "put_p50_ms": pct([c["put_ms"] / 1000 for c in per_change], 0.5),
            "busy_after_last_p50_s": pct([c["busy_after_last_s"] for c in per_change], 0.5) / 1000,
            "server_cpu_per_push_s": (cpu_b - cpu_a) / m,
            "server_sys_per_push_s": (sys_b - sys_a) / m,
            "client_cpu_per_push_s": (sum(client_cpu1) - sum(client_cpu0)) / m,
            "other_processes_cpu_per_push_s": other_push / m,
            "distinct_versions_per_change": sorted({c["versions"] for c in per_change}),
            "extra_responses": sum(c["extra"] for c in per_change),
            "bytes_per_push": sum(c["bytes"] for c in per_change) / m,
            "resources_per_response": merge(c["resources_per_response"] for c in per_change),
            "errors": merge(r["errors"] for r in last) if args.changes else {},
            "checks": sum(r["checks"] for r in last) if args.changes else 0,
            "held_at_end": sum(r["open"] for r in last) if args.changes else None,
        }  # fmt: skip
        out["per_change"] = per_change

        # The server's own view: every node connected and ACKed the last version.
        st, body = http("GET", base + "/api/v1/nodes", timeout=120)
        if st == 200:
            items = json.loads(body)["items"]
            acked = collections.Counter(
                (i["resources"].get("Cluster") or {}).get("versionAcknowledged") for i in items
            )
            out["server_view"] = {"streams": len(items), "acked_versions": len(acked),
                                  "most_acked": acked.most_common(1)[0][1] if acked else 0}  # fmt: skip
        out["server_cpu_total_s"] = proc_cpu(server.pid)
        out["server_rss_mb"]["end"] = proc_rss_kb(server.pid) / 1024
        if args.restart_core:
            # Reconnect storm: the core stops (its workers with it), a new one starts on the
            # same database and ports, and every node connects again at once.
            t_stop = time.monotonic()
            out["restart"] = {"stop_s": stop_pid(server, 60)}
            server = subprocess.Popen([sys.executable, "-m", "flowplane.cli.main", "serve"],
                                      env=env, cwd=args.server_root, stdout=log,
                                      stderr=subprocess.STDOUT)  # fmt: skip
            wait_ready(base, server, log_path)
            t_ready = time.monotonic()
            cpu_r0, ovf_r0 = proc_cpu(server.pid), listen_overflows()
            for g in gens:
                g.send("reconnect")
            storm = [g.recv() for g in gens]
            t_all = max(c["t_all_initial"] for c in storm)
            versions: collections.Counter[str] = collections.Counter()
            for c in storm:
                versions.update(c["initial_versions"])
            out["restart"].update({
                "start_s": t_ready - t_stop - out["restart"]["stop_s"],
                "storm_all_configured_s": t_all - t_ready,
                "down_to_all_configured_s": t_all - t_stop,
                "missing": sum(c["missing"] for c in storm),
                "versions": dict(versions),
                "errors": merge(c["errors"] for c in storm),
                "server_cpu_s": proc_cpu(server.pid) - cpu_r0,
                "listen_overflows": listen_overflows()[0] - ovf_r0[0],
                "storm_half_configured_s": sorted(t for c in storm for t in c["first_times"])[
                    args.nodes // 2] - t_ready,
            })  # fmt: skip
            print(f"restart: {json.dumps(out['restart'])}", file=sys.stderr)
        byes = [g.stop() for g in gens]
        out["client_cpu_total_s"] = [b["cpu"] if b else None for b in byes]
        gens.clear()
    finally:
        for g in gens:
            g.stop()
        out["server_stop_s"] = stop_pid(server, 60)
        out["server_rc"] = server.returncode
        log.close()
    return out


def change_and_wait(
    base: str, gens: list[Gen], name: str, port: int, within: float
) -> tuple[float, float, list[dict[str, Any]]]:
    """PUT cluster `name` with endpoint port `port`, then have every generator wait (at most
    `within` s) until each of its nodes received a version other than the one it held at the
    write. Returns (t_write, seconds the PUT took, the generators' replies)."""
    t_write = time.monotonic()
    st, resp = http("PUT", f"{base}/api/v1/native/clusters/{name}", cluster_body(name, port=port))
    t_put = time.monotonic() - t_write
    if st != 200:
        raise RuntimeError(f"PUT {name}: {st} {resp[:300]!r}")
    for g in gens:
        g.send(f"wait {t_write!r} {within}")
    return t_write, t_put, [g.recv() for g in gens]


def latencies(replies: list[dict[str, Any]]) -> list[float]:
    """Every node's write -> received latency (s) in the generators' replies to `wait`."""
    return [x for r in replies for x in r["latencies"] if x is not None]


def merge(dicts: Any) -> dict[str, int]:
    c: collections.Counter[str] = collections.Counter()
    for d in dicts:
        c.update(d)
    return dict(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--generators", type=int, default=1, help="load generator processes")
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="connections being set up at once, over all generators (the server's "
        "listen backlog is grpclib's default 100: 200 overflowed it, SYNs were "
        "dropped and retried after 1 s)",
    )
    ap.add_argument("--timeout", type=float, default=60, help="per change, s")
    ap.add_argument("--connect-timeout", type=float, default=300)
    ap.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="extra pause after each change, once the server is idle again, s",
    )
    ap.add_argument("--delta", action="store_true", help="DeltaAggregatedResources")
    ap.add_argument("--xds-workers", type=int, default=0,
                    help="FLOWPLANE_XDS_WORKERS of the server (0: xDS in the core process); "
                    "server CPU and RSS are then summed over the core and its workers")
    ap.add_argument("--restart-core", action="store_true",
                    help="at the end, restart the server (SIGTERM, start again on the same "
                    "database and ports) and time the reconnect storm of every node")
    ap.add_argument("--parser", choices=("upb", "scan"), default="upb")
    ap.add_argument("--generator-h2-only", action="store_true",
                    help="the generators frame every HTTP/2 frame with h2 (as before "
                    "2026-12-03 session 5), not only the connection set-up: see xds_load.Node")
    ap.add_argument(
        "--pin", action="store_true", help="pin the server to CPU 0 and the generators to CPU 1"
    )
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=3600,
        help="the generators exit by themselves after this long",
    )
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--server-root",
        default=str(ROOT),
        metavar="DIR",
        help="run the server from the `flowplane` package in DIR (e.g. an exported "
        "commit: git archive HEAD flowplane | tar -x -C DIR)",
    )
    ap.add_argument(
        "--server-profile",
        metavar="PATH",
        help="run the server under cProfile and write its stats here (slows it)",
    )
    args = ap.parse_args()  # fmt: skip
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # inherited by the server and the generators
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.nodes + 1000
    if hard < need:
        print(f"warning: open-files limit {hard} < {need} needed by the server", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        try:
            out = run(args, tmp, log_path)
        except RuntimeError as err:
            print(f"bench_xds: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            lines = [ln for ln in text.splitlines() if ln.strip()]
            # What matters is what went wrong, not the first-start token banner.
            lines = [ln for ln in lines if re.search(r"WARNING|ERROR|CRITICAL|Traceback|rror:", ln)]
            if lines:
                print(f"--- server log: {len(lines)} problem lines; first 20 ---", file=sys.stderr)
                print("\n".join(lines[:20]), file=sys.stderr)
    out["server_log_lines"] = len(lines)
    out["server_log_head"] = lines[:10]
    out["date"] = time.strftime("%Y-%m-%d")
    out["machine"] = machine()
    out["nofile_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)
    report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def report(o: dict[str, Any]) -> None:
    c, p, r = o["connect"], o["push"], o["server_rss_mb"]
    print(f"# {o['date']} {o['machine']}")
    print(
        f"{o['mode']}: N={o['nodes']} nodes ({o['generators']} generator process(es), "
        f"{o.get('generator_framing', 'h2')} framing), {o['clusters']} clusters, "
        f"{o['changes']} changes, {o['xds_workers']} xDS worker(s)"
    )
    print(
        f"connect: all TCP+h2 in {c['all_tcp_s']:.2f} s, all initial configs in "
        f"{c['all_initial_s']:.2f} s (half in {c['half_initial_s']:.2f} s), server busy "
        f"{c['server_busy_after_s']:.2f} s longer; held {c['held']}, "
        f"missing {c['missing']}, initial versions {len(c['initial_versions'])}, "
        f"listen overflows {c['listen_overflows']}, errors {c['errors'] or 'none'}"
    )
    print(
        f"connect CPU: server {c['server_cpu_s']:.2f} s, clients "
        f"{', '.join(f'{x:.2f}' for x in c['client_cpu_s'])} s, other processes on the "
        f"machine {c['other_processes_cpu_s']:.2f} s (load average before: "
        f"{' '.join(o['loadavg_before'])})"
    )
    print(
        f"server RSS: {r['before']:.0f} MB before, {r['after_connect']:.0f} MB connected "
        f"-> {r['per_stream_kb']:.1f} KB per stream; {r['end']:.0f} MB at end"
    )
    print(
        f"write->received over {p['samples']} node x change samples (missing {p['missing']}): "
        f"p50 {p['p50_ms']:.0f} ms, p90 {p['p90_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms, "
        f"max {p['max_ms']:.0f} ms; last node per change p50 {p['all_nodes_p50_ms']:.0f} ms; "
        f"PUT itself p50 {p['put_p50_ms']:.0f} ms"
    )
    print(
        f"server still busy (ACKs) after the last node received: p50 "
        f"{p['busy_after_last_p50_s']:.2f} s"
    )
    print(
        f"per push: server CPU {p['server_cpu_per_push_s']:.3f} s "
        f"({p['server_cpu_per_push_s'] / o['nodes'] * 1e6:.0f} us per stream; of it kernel "
        f"{p['server_sys_per_push_s']:.3f} s), "
        f"client CPU {p['client_cpu_per_push_s']:.3f} s (all generators), other processes "
        f"{p['other_processes_cpu_per_push_s']:.3f} s"
    )
    print(
        f"sent per push: {p['bytes_per_push'] / 1e6:.2f} MB to all nodes "
        f"({p['bytes_per_push'] / max(1, o['nodes']):.0f} bytes per node); resources per "
        f"response: {p['resources_per_response']}"
    )
    print(
        f"checks: distinct new versions per change {p['distinct_versions_per_change']}, "
        f"extra responses {p['extra_responses']}, held at end {p['held_at_end']}, "
        f"errors {p['errors'] or 'none'}, parser cross-checks {p['checks']}"
    )
    sv = o.get("server_view")
    if sv:
        print(
            f"server /api/v1/nodes: {sv['streams']} streams, {sv['most_acked']} ACKed the "
            f"same version ({sv['acked_versions']} distinct)"
        )
    rs = o.get("restart")
    if rs:
        print(
            f"core restart: stopped in {rs['stop_s']:.2f} s, ready {rs['start_s']:.2f} s later; "
            f"reconnect storm: all {o['nodes']} configured {rs['storm_all_configured_s']:.2f} s "
            f"after ready ({rs['down_to_all_configured_s']:.2f} s from the stop), missing "
            f"{rs['missing']}, versions {rs['versions']}, errors {rs['errors'] or 'none'}, server "
            f"CPU {rs['server_cpu_s']:.2f} s"
        )
    print(
        f"server stopped in {o['server_stop_s']:.2f} s (rc {o['server_rc']}); "
        f"server log warnings/errors: {o['server_log_lines']}"
    )


if __name__ == "__main__":
    main()
