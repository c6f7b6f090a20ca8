"""`local_rate_limit` -> envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, both as
the HCM filter's config and as a per-scope override (Envoy takes the same message per route; a
per-route config has its own token bucket).

`keyBy` -> the config's own `rate_limits` (one action: `remote_address`, or `request_headers`),
which make a descriptor per request, and one descriptor whose entry value is empty: Envoy's
wildcard, a bucket per distinct value (`max_dynamic_descriptors` of them, least recently used
dropped first). `always_consume_default_token_bucket: false`, so a request with a value takes
from its value's bucket only; the `token_bucket` is then the bucket of requests without one.
The `rate_limits` of the config itself (not the route's) are what make this work per scope,
inside `typed_per_filter_config`."""

from __future__ import annotations

from typing import Final

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2, token_bucket_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.local_rate_limit import KeyBy, LocalRateLimitConfig, TokenBucket
from flowplane.xds.types import u32

TYPE = "local_rate_limit"

# Envoy enables and enforces the filter for a runtime fraction of requests that defaults to 0%
# when unset; Flowplane always wants 100%. The runtime keys only name the knobs (an operator
# could turn them down with Envoy's runtime); nothing sets them.
ENABLED_KEY: Final = "local_rate_limit_enabled"
ENFORCED_KEY: Final = "local_rate_limit_enforced"
# The descriptor entry key Envoy's `remote_address` action produces (fixed by Envoy).
REMOTE_ADDRESS_KEY: Final = "remote_address"


def _all(runtime_key: str) -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
        runtime_key=runtime_key,
    )


def _token_bucket(bucket: TokenBucket) -> token_bucket_pb2.TokenBucket:
    fill = duration_pb2.Duration()
    fill.FromMilliseconds(round(bucket.fill_interval_seconds * 1000))  # whole ms (validated)
    return token_bucket_pb2.TokenBucket(
        max_tokens=bucket.max_tokens,
        tokens_per_fill=u32(bucket.tokens_per_fill),
        fill_interval=fill,
    )


def _keyed(out: lrl_pb2.LocalRateLimit, key_by: KeyBy, bucket: TokenBucket) -> None:
    action = rc_pb2.RateLimit.Action()
    if key_by.header is not None:
        key = key_by.header
        action.request_headers.CopyFrom(
            rc_pb2.RateLimit.Action.RequestHeaders(header_name=key, descriptor_key=key)
        )
    else:
        key = REMOTE_ADDRESS_KEY
        action.remote_address.SetInParent()
    out.rate_limits.append(rc_pb2.RateLimit(actions=[action]))
    out.descriptors.append(
        ratelimit_pb2.LocalRateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value="")],  # wildcard
            token_bucket=_token_bucket(bucket),
        )
    )
    out.max_dynamic_descriptors.CopyFrom(u32(key_by.max_keys))
    out.always_consume_default_token_bucket.CopyFrom(wrappers_pb2.BoolValue(value=False))


def _local_rate_limit(c: LocalRateLimitConfig) -> lrl_pb2.LocalRateLimit:
    out = lrl_pb2.LocalRateLimit(
        stat_prefix=c.stat_prefix,
        status=http_status_pb2.HttpStatus(code=c.status_code),
        filter_enabled=_all(ENABLED_KEY),
        filter_enforced=_all(ENFORCED_KEY),
    )
    if c.token_bucket is not None:  # None: no bucket at the listener (overrides bring theirs)
        out.token_bucket.CopyFrom(_token_bucket(c.token_bucket))
        if c.key_by is not None:
            _keyed(out, c.key_by, c.token_bucket)
    return out


def config_to_proto(config: FilterModel) -> lrl_pb2.LocalRateLimit:
    assert isinstance(config, LocalRateLimitConfig)
    return _local_rate_limit(config)


def override_to_proto(override: FilterModel) -> lrl_pb2.LocalRateLimit:
    assert isinstance(override, LocalRateLimitConfig)
    return _local_rate_limit(override)
