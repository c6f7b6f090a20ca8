"""`local_rate_limit`: a token bucket per filter config (Envoy's local_ratelimit filter), shared
by every connection and worker of the Envoy that applies it. The same shape serves as the
per-scope override: a route (virtual host, route config) with an override gets a bucket of its own.

    {"tokenBucket": {"maxTokens": 100, "tokensPerFill": 10, "fillIntervalSeconds": 1},
     "statusCode": 429, "statPrefix": "edge_limit",
     "keyBy": {"header": "x-api-key", "maxKeys": 10000}}

`keyBy` (optional) makes the bucket per client: `{"clientIp": true}` (the downstream address
Envoy trusts: the connection's peer, or the X-Forwarded-For entry the HTTP connection manager
is configured to trust) or `{"header": "<name>"}` (the header's value). Each distinct value gets
a bucket of `tokenBucket`'s size; requests without a value (the header is absent) share one more
such bucket. Envoy keeps the buckets of at most `maxKeys` values (default 10,000), dropping the
least recently used (a value seen again after that starts with a full bucket). This is Envoy's
local rate limit with `rate_limits` inside the filter's own config (so it works per scope) and a
descriptor whose value is left empty: a wildcard that gives each value its own bucket.

`"tokenBucket": null` (the listener's filter only; the field is never optional): no bucket at
the listener, so nothing is limited there and only the scopes with an override are — Envoy's
pattern for "rate limits per virtual host or route". A per-scope override always has a bucket
(Envoy refuses one without).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, model_validator

from flowplane.domain.common import ApiModel, NestedProblems
from flowplane.domain.filters import FilterModel, FilterSpec
from flowplane.domain.filters.header_mutation import HeaderName
from flowplane.domain.http_status import ErrorStatus
from flowplane.errors import FieldProblem

# Envoy's TokenBucket counts are uint32 (> 0).
_U32_MAX: Final = 4_294_967_295
# Envoy refuses a fill interval under 50 ms (its fill timer), and keeps milliseconds only. More
# than a day between fills is certainly a mistake (and a bucket that never refills is "maxTokens
# requests per Envoy lifetime", which nobody wants from a rate limit).
MIN_FILL_SECONDS: Final = 0.05
MAX_FILL_SECONDS: Final = 86_400
# Envoy's own default (20) is meant for tests; a few hundred bytes per key make 10,000 cheap.
# A million keys is the most one Envoy should hold per scope.
DEFAULT_MAX_KEYS: Final = 10_000
MAX_KEYS_LIMIT: Final = 1_000_000


def _whole_ms(seconds: float) -> float:
    if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
        raise ValueError("must be a whole number of milliseconds (Envoy keeps milliseconds only)")
    return seconds


class TokenBucket(ApiModel):
    max_tokens: Annotated[int, Field(ge=1, le=_U32_MAX)]
    tokens_per_fill: Annotated[int, Field(ge=1, le=_U32_MAX)] = 1
    fill_interval_seconds: Annotated[
        float, Field(ge=MIN_FILL_SECONDS, le=MAX_FILL_SECONDS), AfterValidator(_whole_ms)
    ]


class KeyBy(ApiModel):
    """Exactly one of `clientIp: true` and `header`; `maxKeys` bounds the buckets kept."""

    client_ip: Literal[True] | None = None
    header: HeaderName | None = None
    max_keys: Annotated[int, Field(ge=1, le=MAX_KEYS_LIMIT)] = DEFAULT_MAX_KEYS

    @model_validator(mode="after")
    def _one(self) -> KeyBy:
        if (self.client_ip is None) == (self.header is None):
            raise ValueError("keyBy needs exactly one of: clientIp, header")
        return self


class LocalRateLimitConfig(FilterModel):
    # Required, but null at the listener: no listener-wide bucket (see the module docstring).
    token_bucket: TokenBucket | None
    # The answer to a limited request (Envoy's default: 429 Too Many Requests).
    status_code: ErrorStatus = 429
    # Envoy's stats: <statPrefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}
    stat_prefix: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    ] = "local_rate_limit"
    key_by: KeyBy | None = None

    @model_validator(mode="after")
    def _bucket_for_keys(self) -> LocalRateLimitConfig:
        if self.key_by is not None and self.token_bucket is None:
            raise NestedProblems(
                [FieldProblem("tokenBucket", "keyBy needs a tokenBucket (each key's bucket)")]
            )
        return self


class LocalRateLimitOverride(LocalRateLimitConfig):
    """The per-scope override: the same shape, always with a bucket of its own."""

    @model_validator(mode="after")
    def _bucket(self) -> LocalRateLimitOverride:
        if self.token_bucket is None:
            raise NestedProblems([
                FieldProblem(
                    "tokenBucket",
                    "a per-scope override needs a token bucket (Envoy refuses one without; "
                    'to stop limiting here, give {"disabled": true})',
                )
            ])  # fmt: skip
        return self


SPEC = FilterSpec("local_rate_limit", LocalRateLimitConfig, LocalRateLimitOverride)
