"""Micro-benchmark: the cost of checking a translated resource against Envoy's declared rules
(`flowplane.xds.constraints.violations`, run by the config actor before storing) next to the
cost of translating it, per resource, with the rule tables already cached.

    .venv/bin/python benchmarks/bench_constraints.py [--repeat N]

Uses the shapes of `bench_snapshot.py` (a cluster with one endpoint, a route config of 50
routes, a listener with one HCM) plus a listener whose HCM has typed filters (a packed Any
per filter, each unpacked and checked). The snapshot builder does not run the check.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_snapshot import cluster, listener, route_config

from flowplane.domain.resources import Kind, parse_spec
from flowplane.xds.constraints import violations
from flowplane.xds.translate import translate_resource


def per_call(fn: Callable[[], Any], repeat: int) -> float:
    """Median of 5 runs of `repeat` calls, in microseconds per call."""
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        runs.append((time.perf_counter() - start) / repeat * 1e6)
    return statistics.median(runs)


def filtered_listener() -> Any:
    hcm = {
        "type": "httpConnectionManager",
        "routeConfigName": "r0",
        "httpFilters": [
            {"type": "cors"},
            {"type": "local_rate_limit", "config": {"statPrefix": "rl", "tokenBucket": {
                "maxTokens": 10, "tokensPerFill": 10, "fillIntervalSeconds": 1}}},
            {"type": "header_mutation", "config": {"requestHeadersToAdd": [
                {"name": "x-a", "value": "1"}]}},
        ],
    }  # fmt: skip
    body = {"name": "lf", "address": "0.0.0.0", "port": 10000, "filterChains": [{"filters": [hcm]}]}
    return parse_spec(Kind.LISTENER, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=500)
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.node()}")
    cases = [
        ("cluster (1 endpoint)", Kind.CLUSTER, cluster(1)),
        ("route config (50 routes)", Kind.ROUTE_CONFIG, route_config(1)),
        ("listener (1 HCM, router only)", Kind.LISTENER, listener(1)),
        ("listener (HCM + 3 typed filters)", Kind.LISTENER, filtered_listener()),
    ]
    print(f"  {'resource':<34} {'translate us':>13} {'check us':>10} {'first check us':>15}")
    for label, kind, model in cases:
        [(_, _, msg)] = translate_resource(kind, model)
        start = time.perf_counter()
        assert violations(msg) == []  # the first call of a type builds its rule tables
        first = (time.perf_counter() - start) * 1e6
        t = per_call(lambda k=kind, m=model: translate_resource(k, m), args.repeat)
        c = per_call(lambda m=msg: violations(m), args.repeat)
        print(f"  {label:<34} {t:13.1f} {c:10.1f} {first:15.0f}")


if __name__ == "__main__":
    main()
