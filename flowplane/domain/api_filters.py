"""The Platform filter vocabulary (api.md "Platform API", "OpenAPI import"): the `filters` of an
API definition (API, route and isolated-listener level) and the payloads of the OpenAPI
extensions `x-flowplane-ratelimit`, `x-flowplane-jwt-auth`, `x-flowplane-cors`.

    {"rateLimit": {"requests": 100, "interval": "1m",
                   "keyBy": "route" | "client_ip" | "header:x-api-key"},
     "jwtAuth": {"issuer": "https://issuer.example", "audiences": ["pets"],
                 "jwksUri": "https://issuer.example/.well-known/jwks.json", "required": true},
     "cors": {"origins": ["https://app.example"], "methods": ["GET"], "headers": ["x-a"],
              "exposeHeaders": [], "allowCredentials": false, "maxAgeSeconds": 600}}

`flowplane.platform` turns them into Native filter configs and per-scope overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from flowplane.domain.cluster import HttpMethod
from flowplane.domain.common import ApiModel, NestedProblems
from flowplane.domain.filters import cors as cors_filter
from flowplane.domain.filters import header_mutation, jwt_authn
from flowplane.errors import FieldProblem

INTERVALS: Final = {"1s": 1, "1m": 60, "1h": 3600}
_U32_MAX: Final = 4_294_967_295


def _problem(field: str, message: str) -> NestedProblems:
    return NestedProblems([FieldProblem(field, message)])


@dataclass(frozen=True, slots=True)
class KeyBy:
    """What a rate limit counts by: the route (one bucket), the client IP or a header's value
    (one bucket per distinct value)."""

    kind: Literal["route", "client_ip", "header"]
    header: str | None = None


def parse_key_by(value: str) -> KeyBy:
    """`"route"`, `"client_ip"` or `"header:<name>"` (any case; kept lower-case, as HTTP/2
    carries it). ValueError otherwise."""
    if value in ("route", "client_ip"):
        return KeyBy(value)  # type: ignore[arg-type]  # narrowed by the test above
    prefix, sep, name = value.partition(":")
    if prefix == "header" and sep:
        try:
            TypeAdapter(header_mutation.HeaderName).validate_python(name.lower())
        except ValidationError:
            raise ValueError(f"{name!r} is not an HTTP header name") from None
        return KeyBy("header", name.lower())
    raise ValueError('must be "route", "client_ip" or "header:<name>"')


def _key_by(value: str) -> str:
    parse_key_by(value)
    return value


class RateLimit(ApiModel):
    """`requests` per `interval`, counted per route, or per client IP / header value within it."""

    requests: Annotated[int, Field(ge=1, le=_U32_MAX)]
    interval: Literal["1s", "1m", "1h"]
    key_by: Annotated[str, AfterValidator(_key_by)] = "route"

    @property
    def interval_seconds(self) -> int:
        return INTERVALS[self.interval]

    @property
    def key(self) -> KeyBy:
        return parse_key_by(self.key_by)


class JwtAuth(ApiModel):
    """A JWT from `issuer`, checked with the keys at `jwksUri` (fetched through a generated
    cluster). `required: false` lets requests without a token through (a bad token still fails)."""

    issuer: Annotated[str, Field(min_length=1, max_length=1024)]
    audiences: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=1024)]], Field(max_length=100)]
        | None
    ) = None
    jwks_uri: jwt_authn.Uri
    required: bool = True


def _origin(value: str) -> str:
    if value == "*":
        return value
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or f"{parts.scheme}://{parts.netloc}" != value
    ):
        raise ValueError('an origin is "*" or scheme://host[:port] (e.g. "https://app.example")')
    return value


def distinct(value: list[str] | None) -> list[str] | None:
    """No item twice (ignoring case); the problem names the repeat (`methods[2]`)."""
    seen: set[str] = set()
    for i, item in enumerate(value or ()):
        if item.lower() in seen:
            raise _problem(f"[{i}]", f"{item} is listed twice")
        seen.add(item.lower())
    return value


class Cors(ApiModel):
    """The CORS policy: browsers on `origins` may call the API (`*`: any origin)."""

    origins: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_origin)]],
        Field(min_length=1, max_length=100),
    ]
    methods: (
        Annotated[list[HttpMethod], Field(min_length=1, max_length=9), AfterValidator(distinct)]
        | None
    ) = None
    headers: (
        Annotated[
            list[cors_filter.HeaderName],
            Field(min_length=1, max_length=100),
            AfterValidator(distinct),
        ]
        | None
    ) = None
    expose_headers: (
        Annotated[list[cors_filter.HeaderName], Field(max_length=100), AfterValidator(distinct)]
        | None
    ) = None
    allow_credentials: bool = False
    max_age_seconds: Annotated[int, Field(ge=0, le=cors_filter.MAX_AGE_LIMIT)] | None = None

    @model_validator(mode="after")
    def _credentials(self) -> Cors:
        if self.allow_credentials and "*" in self.origins:
            i = self.origins.index("*")
            raise _problem(
                f"origins[{i}]",
                '"*" (any origin) cannot be combined with allowCredentials: true (any web site '
                "could make credentialed requests); list the origins",
            )
        return self


FilterKey = Literal["rateLimit", "jwtAuth", "cors"]
FILTER_KEYS: Final[tuple[FilterKey, ...]] = ("rateLimit", "jwtAuth", "cors")
FilterValue = RateLimit | JwtAuth | Cors


class Filters(ApiModel):
    """The Platform filters of one scope. A key given as `null` means "none here" (it overrides
    an outer scope's); a key left out inherits."""

    rate_limit: RateLimit | None = None
    jwt_auth: JwtAuth | None = None
    cors: Cors | None = None

    def given(self) -> dict[FilterKey, FilterValue | None]:
        """The keys this scope states, explicit nulls included, by their JSON names."""
        fields = {"rateLimit": "rate_limit", "jwtAuth": "jwt_auth", "cors": "cors"}
        return {
            key: getattr(self, fields[key])
            for key in FILTER_KEYS
            if fields[key] in self.model_fields_set
        }
