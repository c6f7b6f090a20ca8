"""The Platform filter vocabulary as OpenAPI extensions (api.md "OpenAPI import").

The payloads are the same at every level: an `x-flowplane-*` extension of an OpenAPI document
is the `filters` entry of an API definition (flowplane.domain.api_filters, validated by the same
models here, so a problem gets its JSON pointer in the document):

    x-flowplane-ratelimit  -> filters.rateLimit  {requests, interval: "1s"|"1m"|"1h", keyBy?}
    x-flowplane-jwt-auth   -> filters.jwtAuth    {issuer, audiences?, jwksUri, required?}
    x-flowplane-cors       -> filters.cors       {origins, methods?, headers?, exposeHeaders?,
                                                  allowCredentials?, maxAgeSeconds?}

The importer copies the document's JSON unchanged into the definition: a field the author left
out stays out (its default is the definition's business).
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import ValidationError

from flowplane.domain.api_filters import Cors, JwtAuth, RateLimit
from flowplane.domain.common import ApiModel, problems_from

EXTENSIONS: Final[dict[str, tuple[str, type[ApiModel]]]] = {
    "x-flowplane-ratelimit": ("rateLimit", RateLimit),
    "x-flowplane-jwt-auth": ("jwtAuth", JwtAuth),
    "x-flowplane-cors": ("cors", Cors),
}
"""Extension key -> (the `filters` key it becomes, the model of its payload)."""

PREFIX: Final = "x-flowplane-"

_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def payload_problems(model: type[ApiModel], value: Any) -> list[tuple[list[str | int], str]]:
    """The problems of `value` as a `model` payload: (the path inside the payload, message)."""
    try:
        model.model_validate(value)
    except ValidationError as err:
        return [(_parts(p.field), p.message) for p in problems_from(err)]
    return []


def _parts(field: str) -> list[str | int]:
    """A domain field path (`origins[0]`, `(body)`) as JSON pointer parts (`origins`, 0)."""
    if field == "(body)":
        return []
    return [key if key else int(index) for key, index in _PART.findall(field)]
