"""Property: any valid cluster a client creates comes back from GET exactly as sent."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

names = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True)
ipv4 = st.ip_addresses(v=4).map(str)
hostnames = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True)
seconds = st.one_of(
    st.integers(1, 3600), st.floats(0.001, 3600, allow_nan=False, allow_infinity=False)
)
counts = st.integers(0, 4_294_967_295)
endpoint = st.fixed_dictionaries(
    {"host": st.one_of(ipv4, hostnames), "port": st.integers(1, 65535)},
    optional={"weight": st.integers(1, 128)},
)
thresholds = st.fixed_dictionaries(
    {},
    optional={
        k: counts for k in ("maxConnections", "maxPendingRequests", "maxRequests", "maxRetries")
    },
)
health_check = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("http"), "path": st.from_regex(r"/[a-z0-9/]{0,20}", fullmatch=True)},
        optional={
            "host": hostnames,
            "method": st.sampled_from(["GET", "HEAD", "POST"]),
            "intervalSeconds": seconds,
            "timeoutSeconds": seconds,
            "healthyThreshold": st.integers(1, 1000),
            "unhealthyThreshold": st.integers(1, 1000),
            "expectedStatuses": st.lists(st.integers(100, 599), max_size=3),
        },
    ),
    st.fixed_dictionaries({"type": st.just("tcp")}, optional={"intervalSeconds": seconds}),
)
policies = st.one_of(
    st.fixed_dictionaries({"lbPolicy": st.sampled_from(["ROUND_ROBIN", "RANDOM"])}),
    st.fixed_dictionaries(
        {"lbPolicy": st.just("LEAST_REQUEST")},
        optional={
            "leastRequest": st.fixed_dictionaries({}, optional={"choiceCount": st.integers(2, 100)})
        },
    ),
    st.fixed_dictionaries(
        {"lbPolicy": st.just("MAGLEV")},
        optional={
            "maglev": st.fixed_dictionaries({"tableSize": st.sampled_from([65537, 131, 7919])})
        },
    ),
    st.just({}),
)


@st.composite
def clusters(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": draw(names),
        "endpoints": draw(
            st.lists(endpoint, min_size=1, max_size=4, unique_by=lambda e: (e["host"], e["port"]))
        ),
    }
    body.update(draw(policies))
    optional = {
        "team": names,
        "connectTimeoutSeconds": seconds,
        "dnsLookupFamily": st.sampled_from(["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"]),
        "healthChecks": st.lists(health_check, max_size=2),
        "circuitBreakers": st.fixed_dictionaries(
            {}, optional={"default": thresholds, "high": thresholds}
        ),
        "outlierDetection": st.fixed_dictionaries(
            {},
            optional={
                "consecutive5xx": counts,
                "intervalSeconds": seconds,
                "baseEjectionTimeSeconds": seconds,
                "maxEjectionPercent": st.integers(0, 100),
                "minHosts": counts,
            },
        ),
        "tls": st.fixed_dictionaries(
            {},
            optional={
                "enabled": st.booleans(),
                "sni": hostnames,
                "caCertFile": st.just("/etc/ca.pem"),
            },
        ),
        "http2": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


async def test_create_get_round_trips_any_valid_cluster(client: httpx.AsyncClient) -> None:
    """One core and client for all examples: Hypothesis drives examples from a worker thread,
    each example runs on the test's trio loop through `trio.from_thread.run`."""

    async def check(body: dict[str, Any]) -> None:
        r = await client.post("/api/v1/native/clusters", json=body)
        assert r.status_code == 201, r.text
        try:
            got = (await client.get(f"/api/v1/native/clusters/{body['name']}")).json()
            meta = {"version", "source", "createdAt", "updatedAt", "team"}
            assert {k: v for k, v in got.items() if k not in meta or k in body} == body
            for key in body:  # JSON types survive too (an int stays an int)
                assert type(got[key]) is type(body[key])
        finally:
            r = await client.delete(f"/api/v1/native/clusters/{body['name']}")
            assert r.status_code == 204

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=clusters())
    def property_(body: dict[str, Any]) -> None:
        trio.from_thread.run(check, body)

    await trio.to_thread.run_sync(property_)
