"""Issue 11 item 6, against a real Envoy: for cluster, route and listener bodies with extreme
numbers (tiny and huge durations, ports, weights, percentages, counts), whatever the API would
store (the domain model and `check_resource` accept it) `envoy --mode validate` accepts too; and
what `check_resource` refuses, Envoy refuses as well (the checker is not stricter than Envoy).

Each example runs Envoy once (about a second), so the example count is kept small.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from flowplane.domain.resources import Kind, parse_spec
from flowplane.errors import BadRequest
from flowplane.testing.envoy import EnvoyError
from flowplane.testing.factories import cluster_body, route_config_body
from flowplane.xds.translate import check_resource
from tests.filters.helpers import edge_listener, envoy_validates

pytestmark = pytest.mark.e2e

MAX_SECONDS = 315_576_000_000  # the domain's bound: Duration's maximum, 10,000 years
# Around the edges Envoy cares about: below 1 ns (rounds to 0s), 1 ns, 1 ms (dns refresh),
# 2^32 s (HttpUri.timeout's lt), the Duration maximum.
EDGE_SECONDS = [1e-12, 1e-10, 4e-10, 5e-10, 6e-10, 1e-9, 1.5e-9, 1e-3, 1.0, 2.0**32, MAX_SECONDS]
positive_seconds = st.one_of(
    st.sampled_from(EDGE_SECONDS),
    st.floats(1e-12, MAX_SECONDS, allow_nan=False, allow_infinity=False),
)
seconds_or_zero = st.one_of(st.just(0), positive_seconds)
counts = st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1])
ports = st.sampled_from([1, 80, 65535])
percents = st.sampled_from([0, 1e-9, 0.5, 99.999999, 100])


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    ep: dict[str, Any] = {"host": "127.0.0.1", "port": draw(ports)}
    if draw(st.booleans()):
        ep["weight"] = draw(st.sampled_from([1, 128]))
    body: dict[str, Any] = {"name": "backend", "endpoints": [ep]}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "connectTimeoutSeconds": positive_seconds,
        "healthChecks": st.lists(
            st.fixed_dictionaries(
                {"type": st.just("http"), "path": st.just("/h")},
                optional={
                    "intervalSeconds": positive_seconds,
                    "timeoutSeconds": positive_seconds,
                    "healthyThreshold": st.sampled_from([1, 1000]),
                    "unhealthyThreshold": st.sampled_from([1, 1000]),
                    "expectedStatuses": st.lists(st.sampled_from([100, 200, 599]), max_size=2),
                },
            ),
            max_size=1,
        ),
        "outlierDetection": st.fixed_dictionaries(
            {},
            optional={
                "consecutive5xx": counts,
                "intervalSeconds": positive_seconds,
                "baseEjectionTimeSeconds": positive_seconds,
                "maxEjectionPercent": st.sampled_from([0, 100]),
                "minHosts": counts,
            },
        ),
        "circuitBreakers": st.fixed_dictionaries(
            {}, optional={"default": st.fixed_dictionaries({}, optional={"maxRequests": counts})}
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    policy = draw(st.sampled_from(["ROUND_ROBIN", "RING_HASH", "MAGLEV", "LEAST_REQUEST"]))
    body["lbPolicy"] = policy
    if policy == "RING_HASH":
        lo, hi = sorted(draw(st.lists(st.sampled_from([1, 8_388_608]), min_size=2, max_size=2)))
        body["ringHash"] = {"minimumRingSize": lo, "maximumRingSize": hi}
    elif policy == "MAGLEV":
        body["maglev"] = {"tableSize": draw(st.sampled_from([2, 131, 5_000_011]))}
    elif policy == "LEAST_REQUEST":
        body["leastRequest"] = {"choiceCount": draw(st.sampled_from([2, 100]))}
    return body


@st.composite
def routes(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["forward", "weighted", "directResponse"]))
    action: dict[str, Any]
    if kind == "forward":
        action = {"type": "forward", "cluster": "backend"}
        if draw(st.booleans()):
            action["timeoutSeconds"] = draw(seconds_or_zero)
        if draw(st.booleans()):
            retry: dict[str, Any] = {"attempts": draw(st.sampled_from([0, 10]))}
            if draw(st.booleans()):
                retry["perTryTimeoutSeconds"] = draw(positive_seconds)
            action["retry"] = retry
    elif kind == "weighted":
        weights = draw(st.lists(st.sampled_from([0, 1, 1_000_000]), min_size=2, max_size=2))
        action = {
            "type": "weighted",
            "clusters": [
                {"name": n, "weight": w} for n, w in zip(["backend", "b2"], weights, strict=True)
            ],
        }
        if draw(st.booleans()):
            action["timeoutSeconds"] = draw(seconds_or_zero)
    else:
        action = {"type": "directResponse", "status": draw(st.sampled_from([200, 599]))}
    route = {"name": "r", "match": {"path": {"type": "prefix", "value": "/"}}, "action": action}
    return {"name": "routes", "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [route]}]}


def stored(kind: Kind, body: dict[str, Any]) -> bool | None:
    """None: the domain model refuses `body`; else whether `check_resource` accepts it."""
    try:
        model = parse_spec(kind, body)
    except BadRequest:
        return None
    try:
        check_resource(kind, model)
    except BadRequest:
        return False
    return True


async def envoy_accepts(listener: dict[str, Any], rc: dict[str, Any], *cs: dict[str, Any]) -> bool:
    with tempfile.TemporaryDirectory() as tmp, trio.fail_after(60):
        try:
            await envoy_validates(Path(tmp), listener, rc, *cs)
        except EnvoyError:
            return False
    return True


@settings(
    max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(cluster=clusters(), rc=routes(), port=ports, sample=st.none() | percents)
@example(  # issue 11's report: 1e-10 s is a 0s Duration
    cluster=cluster_body("backend", connectTimeoutSeconds=1e-10),
    rc=route_config_body(cluster="backend"),
    port=80,
    sample=None,
)
def test_what_the_checker_accepts_envoy_accepts(
    cluster: dict[str, Any], rc: dict[str, Any], port: int, sample: float | None
) -> None:
    listener = edge_listener([], port=port)
    if sample is not None:  # a tracing sample percentage, traces sent to `b2`
        hcm = listener["filterChains"][0]["filters"][0]
        hcm["tracing"] = {"provider": "zipkin", "collectorCluster": "b2", "samplePercent": sample}
    verdicts = [
        stored(Kind.CLUSTER, cluster),
        stored(Kind.CLUSTER, cluster_body("b2")),
        stored(Kind.ROUTE_CONFIG, rc),
        stored(Kind.LISTENER, listener),
    ]
    if None in verdicts:
        event("refused by the domain model")
        return  # never reaches the checker or Envoy
    ours = all(verdicts)
    event(f"checker {'accepts' if ours else 'refuses'}")
    envoy = trio.run(envoy_accepts, listener, rc, cluster, cluster_body("b2"))
    assert ours == envoy, (ours, envoy, verdicts, cluster, rc)
