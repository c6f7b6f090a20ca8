"""`local_rate_limit` -> envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, both as
the HCM filter's config and as a per-scope override (Envoy takes the same message per route; a
per-route config has its own token bucket)."""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2, token_bucket_pb2
from google.protobuf import duration_pb2

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.local_rate_limit import LocalRateLimitConfig
from flowplane.xds.types import u32

TYPE = "local_rate_limit"

# Envoy enables and enforces the filter for a runtime fraction of requests that defaults to 0%
# when unset; Flowplane always wants 100%. The runtime keys only name the knobs (an operator
# could turn them down with Envoy's runtime); nothing sets them.
ENABLED_KEY: Final = "local_rate_limit_enabled"
ENFORCED_KEY: Final = "local_rate_limit_enforced"


def _all(runtime_key: str) -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
        runtime_key=runtime_key,
    )


def _local_rate_limit(c: LocalRateLimitConfig) -> lrl_pb2.LocalRateLimit:
    bucket = c.token_bucket
    fill = duration_pb2.Duration()
    fill.FromMilliseconds(round(bucket.fill_interval_seconds * 1000))  # whole ms (validated)
    return lrl_pb2.LocalRateLimit(
        stat_prefix=c.stat_prefix,
        status=http_status_pb2.HttpStatus(code=c.status_code),
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=bucket.max_tokens,
            tokens_per_fill=u32(bucket.tokens_per_fill),
            fill_interval=fill,
        ),
        filter_enabled=_all(ENABLED_KEY),
        filter_enforced=_all(ENFORCED_KEY),
    )


def config_to_proto(config: FilterModel) -> lrl_pb2.LocalRateLimit:
    assert isinstance(config, LocalRateLimitConfig)
    return _local_rate_limit(config)


def override_to_proto(override: FilterModel) -> lrl_pb2.LocalRateLimit:
    assert isinstance(override, LocalRateLimitConfig)
    return _local_rate_limit(override)
