"""Cost of per-team names on the write path: `xds_model` (a resource's model with its name and
every reference resolved, flowplane.domain.naming) for a team's cluster, route config and
listener, beside the parse of the same body (which every write already pays).

    .venv/bin/python benchmarks/bench_naming.py [--n 20000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flowplane.domain.naming import xds_model
from flowplane.domain.resources import Kind, parse_spec
from flowplane.testing.factories import cluster_body, listener_body

ROUTES = {"name": "routes", "team": "a", "virtualHosts": [
    {"name": f"v{v}", "domains": [f"h{v}.example"], "routes": [
        {"match": {"path": {"type": "prefix", "value": f"/p{r}"}},
         "action": {"type": "forward", "cluster": "backend" if r % 2 else "shared/common"}}
        for r in range(10)]} for v in range(5)]}  # fmt: skip
BODIES: dict[str, tuple[Kind, dict[str, Any]]] = {
    "cluster": (Kind.CLUSTER, cluster_body(team="a")),
    "route config (5 vhosts x 10 routes)": (Kind.ROUTE_CONFIG, ROUTES),
    "listener (HCM, RDS)": (Kind.LISTENER, listener_body(team="a")),
}


def per_call_us(fn: Any, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    n = ap.parse_args().n
    print(f"python {platform.python_version()} on {platform.machine()}, best of 5 x {n}")
    print(f"{'resource':40} {'parse (us)':>12} {'xds_model (us)':>15}")
    for label, (kind, body) in BODIES.items():
        model = parse_spec(kind, body)
        parse = per_call_us(lambda k=kind, b=body: parse_spec(k, b), max(n // 10, 100))
        walk = per_call_us(lambda m=model: xds_model(m, "a"), n)
        print(f"{label:40} {parse:12.1f} {walk:15.1f}")


if __name__ == "__main__":
    main()
