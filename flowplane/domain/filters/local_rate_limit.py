"""`local_rate_limit`: a token bucket per filter config (Envoy's local_ratelimit filter), shared
by every connection and worker of the Envoy that applies it. The same shape serves as the
per-scope override: a route (virtual host, route config) with an override gets a bucket of its own.

    {"tokenBucket": {"maxTokens": 100, "tokensPerFill": 10, "fillIntervalSeconds": 1},
     "statusCode": 429, "statPrefix": "edge_limit"}
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, Field

from flowplane.domain.common import ApiModel
from flowplane.domain.filters import FilterModel, FilterSpec
from flowplane.domain.http_status import ErrorStatus

# Envoy's TokenBucket counts are uint32 (> 0).
_U32_MAX: Final = 4_294_967_295
# Envoy refuses a fill interval under 50 ms (its fill timer), and keeps milliseconds only. More
# than a day between fills is certainly a mistake (and a bucket that never refills is "maxTokens
# requests per Envoy lifetime", which nobody wants from a rate limit).
MIN_FILL_SECONDS: Final = 0.05
MAX_FILL_SECONDS: Final = 86_400



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


class LocalRateLimitConfig(FilterModel):
    token_bucket: TokenBucket
    # The answer to a limited request (Envoy's default: 429 Too Many Requests).
    status_code: ErrorStatus = 429
    # Envoy's stats: <statPrefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}
    stat_prefix: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    ] = "local_rate_limit"


SPEC = FilterSpec("local_rate_limit", LocalRateLimitConfig, LocalRateLimitConfig)
