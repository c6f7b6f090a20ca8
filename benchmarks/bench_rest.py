"""REST throughput: GET of one cluster, and POST+DELETE of clusters, at concurrency 10.

Starts `flowplane serve` as its own process on a fresh SQLite file (persisted writes,
synchronous=FULL), then drives it from this process with a minimal keep-alive HTTP/1.1 client on
asyncio (one connection per concurrent worker) so the client costs little CPU. Prints requests/s,
latency percentiles, and the CPU seconds both sides used (a saturated client would show here).

    .venv/bin/python benchmarks/bench_rest.py [--seconds 10] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flowplane.testing.factories import cluster_body
from flowplane.testing.ports import free_port


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Conn:
    """Keep-alive HTTP/1.1; reconnects when the server closes the connection (hypercorn closes
    after keep_alive_max_requests, 1000 by default)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.w: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> int:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{self.auth}"
            f"Content-Length: {len(body)}\r\n"
        )
        if body:
            head += "Content-Type: application/json\r\n"
        self.w.write(head.encode() + b"\r\n" + body)
        status_line = await self.r.readline()
        length, close = 0, not status_line
        while status_line:
            line = await self.r.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.lower() == "content-length":
                length = int(v)
            elif k.lower() == "connection" and v.strip().lower() == "close":
                close = True
        if length:
            await self.r.readexactly(length)
        if close:
            self.w.close()
            self.w = None
            if not status_line:  # closed before answering: send it again on a new connection
                return await self.request(method, path, body)
        return int(status_line.split()[1])

    def close(self) -> None:
        if self.w is not None:
            self.w.close()


async def run_phase(
    port: int, seconds: float, concurrency: int, kind: str, token: str
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal errors
        conn = Conn(port, token)
        n = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if kind == "get":
                ok = await conn.request("GET", "/api/v1/native/clusters/bench") == 200
                latencies.append(time.perf_counter() - t0)
            else:
                name = f"w{i}-{n}"
                n += 1
                body = json.dumps(cluster_body(name)).encode()
                ok = await conn.request("POST", "/api/v1/native/clusters", body) == 201
                latencies.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ok = ok and await conn.request("DELETE", f"/api/v1/native/clusters/{name}") == 204
                latencies.append(time.perf_counter() - t0)
            errors += not ok
        conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return errors, latencies


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=10)
    args = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLOWPLANE_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
               "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{port}", "FLOWPLANE_LOG_LEVEL": "WARNING",
               "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{free_port()}",
               # the per-token rate limit (default 6,000/min) would otherwise answer 429
               "FLOWPLANE_RATE_LIMIT_PER_MINUTE": "10000000"}  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "flowplane.cli.main", "serve"], env=env,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            token = ""
            assert server.stderr is not None
            for line in server.stderr:  # the first start prints the admin token in a banner
                if line.startswith(" ey"):
                    token = line.strip()
                    break
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            req = urllib.request.Request(
                base + "/api/v1/native/clusters", json.dumps(cluster_body("bench")).encode(),
                {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )  # fmt: skip
            urllib.request.urlopen(req)
            print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} {platform.machine()} "
                  f"{os.cpu_count()} cores, Python {platform.python_version()}, "
                  f"concurrency {args.concurrency}, {args.seconds:.0f}s per phase")  # fmt: skip
            for kind, label in (("get", "GET one cluster"), ("write", "POST+DELETE (writes)")):
                s0, c0 = proc_cpu(server.pid), resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                errors, lat = asyncio.run(
                    run_phase(port, args.seconds, args.concurrency, kind, token)
                )
                wall = time.perf_counter() - t0
                s1, c1 = proc_cpu(server.pid), resource.getrusage(resource.RUSAGE_SELF)
                client_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
                print(f"{label:24s} {len(lat) / wall:8.0f} req/s  p50 {pct(lat, .5):6.2f} ms  "
                      f"p99 {pct(lat, .99):6.2f} ms  errors {errors}  "
                      f"server CPU {(s1 - s0) / wall:4.0%}  client CPU {client_cpu / wall:4.0%}")  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


if __name__ == "__main__":
    main()
