"""`local_rate_limit`: validation, translation, `envoy --mode validate`, and real Envoy traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.type.v3 import percent_pb2

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
MINIMAL = {"tokenBucket": {"maxTokens": 2, "fillIntervalSeconds": 3600}}
FULL = {
    "tokenBucket": {"maxTokens": 100, "tokensPerFill": 10, "fillIntervalSeconds": 0.25},
    "statusCode": 503,
    "statPrefix": "edge.limit",
}


def _filter(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "local_rate_limit", "config": config}]


def _listener_config(listener: dict[str, Any]) -> lrl_pb2.LocalRateLimit:
    return filter_config(listener, LRL, lrl_pb2.LocalRateLimit)


def _full_percent(p: Any, key: str) -> None:
    assert p.runtime_key == key
    assert (p.default_value.numerator, p.default_value.denominator) == (
        100, percent_pb2.FractionalPercent.HUNDRED,
    )  # fmt: skip


def test_translation_with_defaults() -> None:
    cfg = _listener_config(edge_listener(_filter(MINIMAL)))
    assert cfg.stat_prefix == "local_rate_limit"
    assert cfg.status.code == 429
    assert cfg.token_bucket.max_tokens == 2
    assert cfg.token_bucket.tokens_per_fill.value == 1
    assert cfg.token_bucket.fill_interval.ToMilliseconds() == 3_600_000
    # unset, Envoy would enable and enforce the filter for 0% of requests
    _full_percent(cfg.filter_enabled, "local_rate_limit_enabled")
    _full_percent(cfg.filter_enforced, "local_rate_limit_enforced")


def test_translation_of_every_field() -> None:
    cfg = _listener_config(edge_listener(_filter(FULL)))
    assert cfg.stat_prefix == "edge.limit"
    assert cfg.status.code == 503
    assert cfg.token_bucket.max_tokens == 100
    assert cfg.token_bucket.tokens_per_fill.value == 10
    assert (cfg.token_bucket.fill_interval.seconds, cfg.token_bucket.fill_interval.nanos) == (
        0, 250_000_000,
    )  # fmt: skip
    assert _listener_config(edge_listener(_filter(FULL))) == cfg  # deterministic


def test_overrides_at_every_scope_become_local_rate_limits() -> None:
    own = {"tokenBucket": {"maxTokens": 7, "fillIntervalSeconds": 1}, "statPrefix": "route"}
    _, rc = translated(
        edge_listener(_filter(MINIMAL)),
        routes_body(
            route_filters={"local_rate_limit": own},
            vhost_filters={"local_rate_limit": FULL},
            rc_filters={"local_rate_limit": {"disabled": True}},
        ),
    )
    assert rc is not None
    route = override_of(rc.virtual_hosts[0].routes[0], LRL, lrl_pb2.LocalRateLimit)
    assert (route.stat_prefix, route.token_bucket.max_tokens, route.status.code) == (
        "route", 7, 429,
    )  # fmt: skip
    _full_percent(route.filter_enabled, "local_rate_limit_enabled")
    _full_percent(route.filter_enforced, "local_rate_limit_enforced")
    assert override_of(rc.virtual_hosts[0], LRL, lrl_pb2.LocalRateLimit).status.code == 503
    assert override_of(rc, LRL, rc_pb2.FilterConfig).disabled


def _bucket(**fields: Any) -> dict[str, Any]:
    return {"tokenBucket": {**MINIMAL["tokenBucket"], **fields}}


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (None, "", "needs a config"),
        ({}, ".tokenBucket", "required"),
        ({"tokenBucket": {"fillIntervalSeconds": 1}}, ".tokenBucket.maxTokens", "required"),
        ({"tokenBucket": {"maxTokens": 1}}, ".tokenBucket.fillIntervalSeconds", "required"),
        (_bucket(maxTokens=0), ".tokenBucket.maxTokens", "greater than or equal to 1"),
        (_bucket(maxTokens=2**32), ".tokenBucket.maxTokens", "less than or equal to"),
        (_bucket(maxTokens="2"), ".tokenBucket.maxTokens", "valid integer"),
        (_bucket(maxTokens=2.5), ".tokenBucket.maxTokens", "valid integer"),
        (_bucket(tokensPerFill=0), ".tokenBucket.tokensPerFill", "greater than or equal to 1"),
        (_bucket(fillIntervalSeconds=0.01), ".tokenBucket.fillIntervalSeconds",
         "greater than or equal to 0.05"),
        (_bucket(fillIntervalSeconds=0), ".tokenBucket.fillIntervalSeconds",
         "greater than or equal to 0.05"),
        (_bucket(fillIntervalSeconds=86_401), ".tokenBucket.fillIntervalSeconds",
         "less than or equal to 86400"),
        (_bucket(fillIntervalSeconds=0.0505), ".tokenBucket.fillIntervalSeconds",
         "whole number of milliseconds"),
        (_bucket(fillIntervalSeconds="1"), ".tokenBucket.fillIntervalSeconds", "valid number"),
        (_bucket(bogus=1), ".tokenBucket.bogus", "unknown field"),
        ({**MINIMAL, "statusCode": 200}, ".statusCode", "greater than or equal to 400"),
        ({**MINIMAL, "statusCode": 600}, ".statusCode", "less than or equal to 599"),
        ({**MINIMAL, "statusCode": 430}, ".statusCode", "status Envoy knows"),
        ({**MINIMAL, "statusCode": "429"}, ".statusCode", "valid integer"),
        ({**MINIMAL, "statPrefix": ""}, ".statPrefix", "at least 1"),
        ({**MINIMAL, "statPrefix": "a b"}, ".statPrefix", "pattern"),
        ({**MINIMAL, "statPrefix": "a..b"}, ".statPrefix", "pattern"),
        ({**MINIMAL, "bogus": 1}, ".bogus", "unknown field"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_field_by_field(
    config: dict[str, Any] | None, field: str, message: str
) -> None:
    assert_config_refused("local_rate_limit", config, field, message)


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({}, ".tokenBucket", "required"),
        (_bucket(maxTokens=0), ".tokenBucket.maxTokens", "greater than or equal to 1"),
        ({**MINIMAL, "statusCode": 430}, ".statusCode", "status Envoy knows"),
        ({"disabled": False}, ".disabled", "unknown field"),
    ],
)
def test_bad_overrides_are_refused_field_by_field(
    override: dict[str, Any], field: str, message: str
) -> None:
    got = problems(Kind.ROUTE_CONFIG, routes_body(route_filters={"local_rate_limit": override}))
    where = f"virtualHosts[0].routes[0].filters.local_rate_limit{field}"
    assert where in got, got
    assert message in got[where]


@pytest.mark.e2e
async def test_envoy_validates_config_and_overrides(tmp_path: Path) -> None:
    smallest = {"tokenBucket": {"maxTokens": 1, "fillIntervalSeconds": 0.05}}
    routes = routes_body(
        route_filters={"local_rate_limit": smallest},
        vhost_filters={"local_rate_limit": {"disabled": True}},
        rc_filters={"local_rate_limit": FULL},
    )
    with trio.fail_after(30):
        await envoy_validates(tmp_path, edge_listener(_filter(FULL)), routes)
        big = {
            "tokenBucket": {
                "maxTokens": 2**32 - 1, "tokensPerFill": 2**32 - 1, "fillIntervalSeconds": 86_400,
            },
            "statusCode": 511,
        }  # fmt: skip
        await envoy_validates(tmp_path, edge_listener(_filter(big)), routes_body())


@pytest.mark.e2e
async def test_requests_are_limited_in_real_traffic(xds_settings: Settings, tmp_path: Path) -> None:
    own = {
        "tokenBucket": {"maxTokens": 1, "fillIntervalSeconds": 3600},
        "statusCode": 503,
        "statPrefix": "own",
    }
    routes = routes_body(
        extra_routes=[
            {
                "name": "free",
                "match": {"path": {"type": "prefix", "value": "/free"}},
                "action": {"type": "forward", "cluster": "backend"},
                "filters": {"local_rate_limit": {"disabled": True}},
            },
            {
                "name": "own",
                "match": {"path": {"type": "prefix", "value": "/own"}},
                "action": {"type": "forward", "cluster": "backend"},
                "filters": {"local_rate_limit": own},
            },
        ]
    )
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("one") as up,
            serving(plane, tmp_path, up.port, _filter(MINIMAL), routes) as (envoy, port),
        ):
            # disabled on /free: never limited, and it takes nothing from the listener's bucket
            for _ in range(5):
                assert (await envoy.request(port, "/free"))[0] == 200
            # /own has a bucket of its own (1 token) and its own status code
            assert (await envoy.request(port, "/own"))[0] == 200
            status, _, _ = await envoy.request(port, "/own")
            assert status == 503
            # the listener's bucket (2 tokens, refilled hourly) is untouched by both routes
            assert [(await envoy.request(port, "/x"))[0] for _ in range(3)] == [200, 200, 429]
            status, headers, _ = await envoy.request(port, "/y")
            assert status == 429
            assert "x-upstream" not in headers  # answered by Envoy, not the upstream
            assert len(up.requests) == 5 + 1 + 2
            stats = await envoy.stats()
            assert stats["local_rate_limit.http_local_rate_limit.rate_limited"] == 2
            assert stats["own.http_local_rate_limit.rate_limited"] == 1


@pytest.mark.e2e
async def test_status_code_is_honoured_at_the_listener(
    xds_settings: Settings, tmp_path: Path
) -> None:
    config = {"tokenBucket": {"maxTokens": 1, "fillIntervalSeconds": 3600}, "statusCode": 503}
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("one") as up,
            serving(plane, tmp_path, up.port, _filter(config)) as (envoy, port),
        ):
            assert [(await envoy.request(port, "/"))[0] for _ in range(2)] == [200, 503]
