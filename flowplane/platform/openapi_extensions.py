"""The Platform filter vocabulary as OpenAPI extensions (api.md "OpenAPI import").

The three payloads are the same at every level: the `x-flowplane-*` extension of an OpenAPI
document and the `filters` entry of an API definition (API, route and listener level):

    x-flowplane-ratelimit  -> filters.rateLimit  {requests, interval: "1s"|"1m"|"1h", keyBy?}
    x-flowplane-jwt-auth   -> filters.jwtAuth    {issuer, audiences?, jwksUri, required?}
    x-flowplane-cors       -> filters.cors       {origins, methods?, headers?, exposeHeaders?,
                                                  allowCredentials?, maxAgeSeconds?}

The importer validates a payload with these models (so every problem gets its JSON pointer in
the document) and copies the document's JSON unchanged into the definition: a field the author
left out stays out (its default is the definition's business). The API definition model
validates the same payloads again; the two copies are kept together here so they can be unified.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from flowplane.domain.cluster import HttpMethod
from flowplane.domain.common import ApiModel, Host
from flowplane.domain.filters.cors import MAX_AGE_LIMIT, HeaderName
from flowplane.domain.filters.jwt_authn import Uri

_HEADER_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}$")  # RFC 9110 field name


def _check_key_by(value: str) -> str:
    if value in ("route", "client_ip"):
        return value
    if value.startswith("header:") and _HEADER_TOKEN.match(value[len("header:") :]):
        return value
    raise ValueError("must be 'route', 'client_ip' or 'header:<header name>'")


class RateLimit(ApiModel):
    """`requests` per `interval`, one bucket per route (`keyBy: route`, the default), per client
    address (`client_ip`) or per distinct value of a request header (`header:<name>`)."""

    requests: Annotated[int, Field(ge=1, le=4_294_967_295)]  # Envoy's token counts are uint32
    interval: Literal["1s", "1m", "1h"]
    key_by: Annotated[str, AfterValidator(_check_key_by)] = "route"


class JwtAuth(ApiModel):
    """Requests carry a JWT from `issuer`, verified with the keys at `jwksUri` (whose host the
    materialiser turns into a platform-owned cluster, TLS for https). `required: false` lets
    requests without a token through (a present but invalid token is still refused)."""

    issuer: Annotated[str, Field(min_length=1, max_length=1024)]
    audiences: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = None
    jwks_uri: Uri
    required: bool = True


_HOST: Final = TypeAdapter(Host)


def is_host(value: str) -> bool:
    """An IP address or a DNS hostname (flowplane.domain.common.Host)."""
    try:
        _HOST.validate_python(value)
    except ValidationError:
        return False
    return True


def _check_origin(value: str) -> str:
    """`*`, or `scheme://host[:port]` as browsers send it; the host may start with `*.`."""
    if value == "*":
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as err:
        raise ValueError(f"is not a valid origin: {err}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not is_host(parts.hostname.removeprefix("*."))
        or f"{parts.scheme}://{parts.netloc}" != value  # no path, query, fragment or userinfo
        or parts.username is not None
    ):
        raise ValueError("must be '*' or an origin such as 'https://app.example.com[:port]'")
    return value


Origin = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_check_origin)]


class Cors(ApiModel):
    """The CORS policy of the API or of one route (Envoy's CORS filter, per scope)."""

    origins: Annotated[list[Origin], Field(min_length=1, max_length=100)]
    methods: list[HttpMethod] | None = None
    headers: list[HeaderName] | None = None
    expose_headers: list[HeaderName] | None = None
    allow_credentials: bool = False
    max_age_seconds: Annotated[int, Field(ge=0, le=MAX_AGE_LIMIT)] | None = None

    @model_validator(mode="after")
    def _credentials(self) -> Cors:
        # The CORS standard forbids `Access-Control-Allow-Origin: *` with credentials.
        if self.allow_credentials and "*" in self.origins:
            raise ValueError("allowCredentials cannot be used with the origin '*'")
        return self


EXTENSIONS: Final[dict[str, tuple[str, type[ApiModel]]]] = {
    "x-flowplane-ratelimit": ("rateLimit", RateLimit),
    "x-flowplane-jwt-auth": ("jwtAuth", JwtAuth),
    "x-flowplane-cors": ("cors", Cors),
}
"""Extension key -> (the `filters` key it becomes, the model of its payload)."""

PREFIX: Final = "x-flowplane-"
