"""`local_rate_limit`: the listener without a bucket (`"tokenBucket": null`) and buckets per
client (`keyBy`): validation, translation, `envoy --mode validate`, and real Envoy traffic.

The rules quoted from the module's contract: "Each distinct value gets a bucket of tokenBucket's
size; requests without a value (the header is absent) share one more such bucket", "A per-scope
override always has a bucket", "keyBy needs a tokenBucket"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2

from flowplane.domain.resources import Kind
from flowplane.settings import Settings
from flowplane.testing.plane import run_plane
from flowplane.testing.upstream import run_upstream
from tests.filters.helpers import (
    assert_config_refused,
    edge_listener,
    envoy_validates,
    filter_config,
    override_of,
    problems,
    routes_body,
    serving,
    translated,
)

LRL = "envoy.filters.http.local_ratelimit"
BUCKET = {"maxTokens": 1, "fillIntervalSeconds": 3600}
NO_BUCKET = {"tokenBucket": None}
BY_HEADER = {"tokenBucket": BUCKET, "keyBy": {"header": "x-client"}, "statPrefix": "by_header"}
BY_IP = {"tokenBucket": BUCKET, "keyBy": {"clientIp": True, "maxKeys": 50}, "statPrefix": "by_ip"}


def _filter(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "local_rate_limit", "config": config}]


def test_listener_without_a_bucket_has_no_token_bucket() -> None:
    cfg = filter_config(edge_listener(_filter(NO_BUCKET)), LRL, lrl_pb2.LocalRateLimit)
    assert not cfg.HasField("token_bucket")
    assert not cfg.descriptors and not cfg.rate_limits
    assert cfg.filter_enabled.default_value.numerator == 100  # still on: overrides apply


def test_key_by_header_becomes_a_wildcard_descriptor_of_the_configs_own_rate_limits() -> None:
    _, rc = translated(edge_listener(_filter(NO_BUCKET)),
                       routes_body(route_filters={"local_rate_limit": BY_HEADER}))  # fmt: skip
    assert rc is not None
    cfg = override_of(rc.virtual_hosts[0].routes[0], LRL, lrl_pb2.LocalRateLimit)
    [limit] = cfg.rate_limits
    [action] = limit.actions
    assert action.WhichOneof("action_specifier") == "request_headers"
    assert (action.request_headers.header_name, action.request_headers.descriptor_key) == (
        "x-client", "x-client",
    )  # fmt: skip
    assert not action.request_headers.skip_if_absent  # absent: no descriptor, the default bucket
    [descriptor] = cfg.descriptors
    assert [(e.key, e.value) for e in descriptor.entries] == [("x-client", "")]  # "" = wildcard
    assert descriptor.token_bucket == cfg.token_bucket  # each key's bucket is tokenBucket's size
    assert descriptor.token_bucket.max_tokens == 1
    assert descriptor.token_bucket.fill_interval.seconds == 3600
    assert cfg.max_dynamic_descriptors.value == 10_000  # the default maxKeys
    # a keyed request takes from its key's bucket only, not also from the keyless one
    assert cfg.HasField("always_consume_default_token_bucket")
    assert cfg.always_consume_default_token_bucket.value is False


def test_key_by_client_ip_uses_the_remote_address_action() -> None:
    cfg = filter_config(edge_listener(_filter(BY_IP)), LRL, lrl_pb2.LocalRateLimit)
    [limit] = cfg.rate_limits
    assert limit.actions[0].WhichOneof("action_specifier") == "remote_address"
    assert [(e.key, e.value) for e in cfg.descriptors[0].entries] == [("remote_address", "")]
    assert cfg.max_dynamic_descriptors.value == 50
    assert cfg.stat_prefix == "by_ip"


def test_without_key_by_nothing_keyed_is_set() -> None:
    cfg = filter_config(
        edge_listener(_filter({"tokenBucket": BUCKET})), LRL, lrl_pb2.LocalRateLimit
    )
    assert not cfg.rate_limits and not cfg.descriptors
    assert not cfg.HasField("max_dynamic_descriptors")
    assert not cfg.HasField("always_consume_default_token_bucket")


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"keyBy": {"header": "x-a"}}, ".tokenBucket", "required"),
        ({"tokenBucket": None, "keyBy": {"header": "x-a"}}, ".tokenBucket", "keyBy needs a tokenBucket"),
        ({"tokenBucket": BUCKET, "keyBy": {}}, ".keyBy", "exactly one of: clientIp, header"),
        ({"tokenBucket": BUCKET, "keyBy": {"clientIp": True, "header": "x-a"}}, ".keyBy",
         "exactly one of"),
        ({"tokenBucket": BUCKET, "keyBy": {"clientIp": False}}, ".keyBy.clientIp", "True"),
        ({"tokenBucket": BUCKET, "keyBy": {"clientIp": "yes"}}, ".keyBy.clientIp", "True"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": ""}}, ".keyBy.header", "at least 1"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": "X-Client"}}, ".keyBy.header", "lower-case"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": ":path"}}, ".keyBy.header", "lower-case"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": "x a"}}, ".keyBy.header", "lower-case"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": "x-a", "maxKeys": 0}}, ".keyBy.maxKeys",
         "greater than or equal to 1"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": "x-a", "maxKeys": 1_000_001}},
         ".keyBy.maxKeys", "less than or equal to 1000000"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": "x-a", "maxKeys": "5"}}, ".keyBy.maxKeys",
         "valid integer"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": "x-a", "bogus": 1}}, ".keyBy.bogus",
         "unknown field"),
        ({"tokenBucket": BUCKET, "keyBy": "client_ip"}, ".keyBy", "valid dictionary"),
    ],
)  # fmt: skip
def test_bad_keyed_configs_are_refused_field_by_field(
    config: dict[str, Any], field: str, message: str
) -> None:
    assert_config_refused("local_rate_limit", config, field, message)


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        (NO_BUCKET, ".tokenBucket", "a per-scope override needs a token bucket"),
        ({"tokenBucket": None, "keyBy": {"header": "x-a"}}, ".tokenBucket", "needs a"),
        ({"tokenBucket": BUCKET, "keyBy": {"header": "x-a", "maxKeys": 0}}, ".keyBy.maxKeys",
         "greater than or equal to 1"),
    ],
)  # fmt: skip
def test_bad_keyed_overrides_are_refused_field_by_field(
    override: dict[str, Any], field: str, message: str
) -> None:
    got = problems(Kind.ROUTE_CONFIG, routes_body(route_filters={"local_rate_limit": override}))
    where = f"virtualHosts[0].routes[0].filters.local_rate_limit{field}"
    assert where in got, got
    assert message in got[where]


@pytest.mark.e2e
async def test_envoy_validates_keyed_buckets_and_a_listener_without_one(tmp_path: Path) -> None:
    routes = routes_body(
        route_filters={"local_rate_limit": BY_HEADER},
        vhost_filters={"local_rate_limit": BY_IP},
    )
    with trio.fail_after(30):
        await envoy_validates(tmp_path, edge_listener(_filter(NO_BUCKET)), routes)
        await envoy_validates(tmp_path, edge_listener(_filter(BY_IP)), routes_body())


async def _get(port: int, path: str, *, source: str = "127.0.0.1", **headers: str) -> int:
    """One request to Envoy on 127.0.0.1:`port` from the local address `source` (any 127/8
    address is the loopback interface on Linux, so a second client IP needs no setup)."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=5) as client:
        resp = await client.get(f"http://127.0.0.1:{port}{path}", headers=headers)
    return resp.status_code


@pytest.mark.e2e
async def test_each_client_gets_its_own_bucket_in_real_traffic(
    xds_settings: Settings, tmp_path: Path
) -> None:
    routes = routes_body(
        extra_routes=[
            {
                "name": "by-header",
                "match": {"path": {"type": "prefix", "value": "/by-header"}},
                "action": {"type": "forward", "cluster": "backend"},
                "filters": {"local_rate_limit": BY_HEADER},
            },
            {
                "name": "by-ip",
                "match": {"path": {"type": "prefix", "value": "/by-ip"}},
                "action": {"type": "forward", "cluster": "backend"},
                "filters": {"local_rate_limit": BY_IP},
            },
        ]
    )
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("one") as up,
            serving(plane, tmp_path, up.port, _filter(NO_BUCKET), routes) as (envoy, port),
        ):
            # the listener has no bucket: the catch-all route is never limited
            assert [await _get(port, "/free") for _ in range(4)] == [200] * 4
            # one token per header value: a and b each get theirs, then are limited separately
            assert await _get(port, "/by-header", **{"x-client": "a"}) == 200
            assert await _get(port, "/by-header", **{"x-client": "a"}) == 429
            assert await _get(port, "/by-header", **{"x-client": "b"}) == 200
            assert await _get(port, "/by-header", **{"x-client": "b"}) == 429
            # requests without the header share one more bucket
            assert [await _get(port, "/by-header") for _ in range(2)] == [200, 429]
            # one token per client IP address: 127.0.0.1 and 127.0.0.2 are limited separately
            assert await _get(port, "/by-ip") == 200
            assert await _get(port, "/by-ip") == 429
            assert await _get(port, "/by-ip", source="127.0.0.2") == 200
            assert await _get(port, "/by-ip", source="127.0.0.2") == 429
            # a header does not make another client out of the same address
            assert await _get(port, "/by-ip", **{"x-client": "c"}) == 429
            assert len(up.requests) == 4 + 3 + 2
            stats = await envoy.stats()
            assert stats["by_header.http_local_rate_limit.rate_limited"] == 3
            assert stats["by_ip.http_local_rate_limit.rate_limited"] == 3
            assert all(v == 0 for v in (await envoy.rejected_counts()).values())
