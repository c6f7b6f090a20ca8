"""Plots for results/xds-workers.md from the JSON that bench_xds.py and soak_xds.py wrote.

    .venv/bin/python benchmarks/plot_xds_workers.py DIR     (session 6: results/xds-workers/s6)
        DIR/{sotw,delta}-w{0,1,2}.json (bench_xds.py --json), DIR/soak.json (soak_xds.py --json)
        -> benchmarks/results/xds-workers-latency.png (CDFs), xds-workers-rss.png (the soak's
           RSS, and p50/p99 write -> received per change)

matplotlib is a dev dependency only (pyproject.toml, extra `dev`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).resolve().parent / "results"


def latency(src: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for mode, style in (("sotw", "-"), ("delta", "--")):
        for w in (0, 1, 2):
            f = src / f"{mode}-w{w}.json"
            if not f.exists():
                continue
            push = json.loads(f.read_text())["push"]
            cdf = push.get("cdf_ms")
            if not cdf:
                # older runs: only the percentiles printed
                qs = [0, 50, 90, 99, 100]
                cdf_x = [0, push["p50_ms"], push["p90_ms"], push["p99_ms"], push["max_ms"]]
            else:
                qs, cdf_x = list(range(101)), cdf
            label = f"{mode}, " + ("in-process" if w == 0 else f"{w} worker{'s' * (w > 1)}")
            ax.plot([x / 1000 for x in cdf_x], qs, style, label=label)
    runs = [json.loads(f.read_text()) for f in sorted(src.glob("*-w[012].json"))]
    if runs:
        ax.set_title(f"{runs[0]['date']}, {runs[0]['machine'].split(',')[0]}; load generators "
                     "on the same cores", fontsize=10)  # fmt: skip
    ax.set_xlabel("write -> received (s), N = 10,000 nodes, one cluster changed")
    ax.set_ylabel("percent of node x change samples")
    ax.legend()
    _save(fig, [ax], "xds-workers-latency.png")


def _save(fig: Any, axes: list[Any], name: str) -> None:
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / name, dpi=100)


def rss(src: Path) -> None:
    f = src / "soak.json"
    if not f.exists():
        return
    soak = json.loads(f.read_text())
    t = [s[0] for s in soak["rss_kb"]]
    mb = [s[1] / 1024 for s in soak["rss_kb"]]
    fig, (ax, lat) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    ax.plot(t, mb, marker="o" if len(t) <= 60 else None)
    ax.set_ylabel("server RSS, core + workers (MB)")
    ax.set_title(f"soak: {soak['nodes']:,} nodes, {soak['xds_workers']} xDS workers, one change "
                 f"every {soak['every_s']:g} s; RSS growth {soak['rss_growth'] * 100:.1f} %")  # fmt: skip
    ax.set_ylim(0, max(mb) * 1.15)
    changes = soak.get("changes", [])
    ct = [c["t"] for c in changes]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        lat.plot(ct, [c[key] for c in changes], label=f"{label} write -> received, per change")
    lat.set_xlabel("seconds into the soak")
    lat.set_ylabel("ms")
    lat.legend()
    _save(fig, [ax, lat], "xds-workers-rss.png")


if __name__ == "__main__":
    src = Path(sys.argv[1])
    latency(src)
    rss(src)
