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

# Envoy's TokenBucket counts are uint32 (> 0).
_U32_MAX: Final = 4_294_967_295
# Envoy refuses a fill interval under 50 ms (its fill timer), and keeps milliseconds only. More
# than a day between fills is certainly a mistake (and a bucket that never refills is "maxTokens
# requests per Envoy lifetime", which nobody wants from a rate limit).
MIN_FILL_SECONDS: Final = 0.05
MAX_FILL_SECONDS: Final = 86_400

# The 4xx/5xx codes Envoy's HttpStatus enum defines (it refuses any other).
RATE_LIMIT_STATUSES: Final = frozenset({
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417,
    421, 422, 423, 424, 426, 428, 429, 431,
    500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
})  # fmt: skip


def _defined_status(code: int) -> int:
    if code not in RATE_LIMIT_STATUSES:
        raise ValueError(
            "must be a 4xx or 5xx status Envoy knows: "
            + ", ".join(str(c) for c in sorted(RATE_LIMIT_STATUSES))
        )
    return code


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
    status_code: Annotated[int, Field(ge=400, le=599), AfterValidator(_defined_status)] = 429
    # Envoy's stats: <statPrefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}
    stat_prefix: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    ] = "local_rate_limit"


SPEC = FilterSpec("local_rate_limit", LocalRateLimitConfig, LocalRateLimitConfig)
