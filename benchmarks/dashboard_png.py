"""Render the Grafana dashboard's queries from a real run, as a PNG (matplotlib).

Starts `flowplane serve` (own process, fresh SQLite) and a real Prometheus (Debian package
`prometheus`) scraping its `/metrics` every second with the alerting rules loaded; drives it for
`--seconds`: two teams, each with a cluster, route config and listener, `--nodes` xDS streams per
team (the repository's gRPC test client; every response ACKed, one node per team NACKing every
third one), REST reads, writes that push to the nodes, and some refused tokens. Then it asks
Prometheus (`/api/v1/query_range`) for every query of deploy/grafana/flowplane.json, exactly as
written, and plots one panel per dashboard panel.

    .venv/bin/python benchmarks/dashboard_png.py --seconds 120 --out docs/dashboard.png

Needs matplotlib (the `dev` extra) and `prometheus` on the PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flowplane.testing.adsclient import AdsStreamEnded, sotw_client  # noqa: E402
from flowplane.testing.factories import cluster_body, listener_body, route_config_body  # noqa: E402
from flowplane.testing.ports import free_port  # noqa: E402
from flowplane.xds.types import CLUSTER_TYPE  # noqa: E402

DASHBOARD = ROOT / "deploy" / "grafana" / "flowplane.json"
RULES = ROOT / "deploy" / "prometheus" / "flowplane-rules.yml"
N = "/api/v1/native"
TEAMS = ("payments", "search")


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds} s")


async def node(port: int, team: str, i: int, nack_every: int, stop: trio.Event) -> None:
    """One data plane: ACK every response (NACK every `nack_every`-th, if set)."""
    async with sotw_client("127.0.0.1", port, node_id=f"team={team}/dp-{i}") as c:
        await c.send(CLUSTER_TYPE)
        seen = 0
        good = ""
        while not stop.is_set():
            try:
                resp = await c.recv(timeout=1)
            except TimeoutError:
                continue
            except AdsStreamEnded:
                return
            seen += 1
            if nack_every and seen % nack_every == 0:
                await c.nack(resp, "dashboard demo: rejected on purpose", version=good)
            else:
                await c.ack(resp)
                good = resp.version_info


async def drive(base: str, xds_port: int, token: str, seconds: float, nodes: int) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=auth, timeout=10) as api:
        for team in TEAMS:
            await api.post("/api/v1/teams", json={"name": team})
            await api.post(f"{N}/clusters", json=cluster_body(f"{team}-api", team=team))
            await api.post(f"{N}/route-configs", json=route_config_body(
                f"{team}-routes", f"{team}-api", team=team))  # fmt: skip
            await api.post(f"{N}/listeners", json=listener_body(
                f"{team}-edge", f"{team}-routes", port=free_port(), team=team))  # fmt: skip
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for team in TEAMS:
                for i in range(nodes):
                    nursery.start_soon(node, xds_port, team, i, 3 if i == 0 else 0, stop)
            end = trio.current_time() + seconds
            tick = 0
            while trio.current_time() < end:
                tick += 1
                await api.get(f"{N}/clusters/{TEAMS[0]}-api")
                await api.get(f"{N}/clusters")
                if tick % 5 == 0:  # a write that is pushed to one team's nodes
                    team = TEAMS[(tick // 5) % 2]
                    await api.put(f"{N}/clusters/{team}-api", json=cluster_body(
                        f"{team}-api", team=team, connectTimeoutSeconds=1 + tick % 7))  # fmt: skip
                if tick % 7 == 0:
                    await api.get(f"{N}/clusters", headers={"Authorization": "Bearer nope"})
                if tick % 11 == 0:
                    await api.get(f"{N}/clusters/missing")
                await trio.sleep(0.2)
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 5


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def plot(prom: str, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = json.loads(DASHBOARD.read_text())["panels"]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.4 * rows))
    for ax, panel in zip(axes.flat, panels, strict=False):
        for target in panel["targets"]:
            for series in query_range(prom, target["expr"], start, end):
                points = [(float(t) - start, float(v)) for t, v in series["values"]
                          if v not in ("NaN", "+Inf", "-Inf")]  # fmt: skip
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, label=legend(target["legendFormat"], series["metric"])[:40])
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("seconds into the run", fontsize=8)
        ax.set_ylabel(panel["fieldConfig"]["defaults"]["unit"], fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data (nothing happened)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="grey")  # fmt: skip
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Flowplane dashboard (deploy/grafana/flowplane.json), queried from Prometheus "
                 f"after a {end - start:.0f} s run", fontsize=12)  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--nodes", type=int, default=10, help="xDS streams per team")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = ap.parse_args()
    api, xds, prom_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLOWPLANE_DATABASE_URL": f"sqlite:///{tmp}/fp.db",
               "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{api}",
               "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{xds}", "FLOWPLANE_DEFAULT_GATEWAY": "false",
               "FLOWPLANE_LOG_FORMAT": "json"}  # fmt: skip
        log = Path(tmp) / "server.log"
        server = subprocess.Popen([sys.executable, "-m", "flowplane.cli.main", "serve"], env=env,
                                  stderr=log.open("w"), cwd=ROOT)  # fmt: skip
        config = Path(tmp) / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "flowplane",
                                "static_configs": [{"targets": [f"127.0.0.1:{api}"]}]}],
        }))  # fmt: skip
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{api}/readyz")
            wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
            token = next(json.loads(line)["adminToken"] for line in log.read_text().splitlines()
                         if "adminToken" in line)  # fmt: skip
            start = time.time()

            async def run() -> None:
                async with trio_asyncio.open_loop():
                    await drive(f"http://127.0.0.1:{api}", xds, token, args.seconds, args.nodes)

            trio.run(run)
            time.sleep(3)  # the last scrape
            end = time.time()
            plot(f"http://127.0.0.1:{prom_port}", start, end, args.out)
            print(f"wrote {args.out} ({end - start:.0f} s of data)")
        finally:
            for proc in (server, prom):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)


if __name__ == "__main__":
    main()
