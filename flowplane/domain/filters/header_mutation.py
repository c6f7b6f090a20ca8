"""`header_mutation`: add and remove request and response headers (Envoy's header_mutation
filter). The same shape serves as the per-scope override (Envoy's HeaderMutationPerRoute)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from flowplane.domain.common import ApiModel
from flowplane.domain.filters import FilterModel, FilterSpec

# An HTTP header field name (RFC 9110 token), lower case as HTTP/2 carries it; pseudo-headers
# (":path") cannot be mutated by this filter.
_TOKEN = r"^[a-z0-9!#$%&'*+.^_`|~-]+$"
_PROTECTED = {"host"}  # Envoy refuses to remove it (removing it would break routing)


def _header_name(name: str) -> str:
    if not re.fullmatch(_TOKEN, name):
        raise ValueError(
            "must be a lower-case HTTP header name (letters, digits and !#$%&'*+.^_`|~-); "
            "pseudo-headers like :path cannot be mutated"
        )
    return name


HeaderName = Annotated[
    str,
    Field(min_length=1, max_length=256, json_schema_extra={"pattern": _TOKEN}),
    AfterValidator(_header_name),
]


def _removable(name: str) -> str:
    if name in _PROTECTED:
        raise ValueError(f"the {name} header cannot be removed")
    return name


class HeaderToAdd(ApiModel):
    name: HeaderName
    value: Annotated[str, Field(max_length=16384)]
    # false (default): replace any existing value; true: add another value after existing ones
    append: bool = False


class HeaderMutationConfig(FilterModel):
    request_headers_to_add: Annotated[list[HeaderToAdd], Field(max_length=100)] = Field(
        default_factory=list
    )
    request_headers_to_remove: Annotated[
        list[Annotated[HeaderName, AfterValidator(_removable)]], Field(max_length=100)
    ] = Field(default_factory=list)
    response_headers_to_add: Annotated[list[HeaderToAdd], Field(max_length=100)] = Field(
        default_factory=list
    )
    response_headers_to_remove: Annotated[
        list[Annotated[HeaderName, AfterValidator(_removable)]], Field(max_length=100)
    ] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> HeaderMutationConfig:
        if not (
            self.request_headers_to_add or self.request_headers_to_remove
            or self.response_headers_to_add or self.response_headers_to_remove
        ):  # fmt: skip
            raise ValueError("give at least one header to add or remove")
        return self


SPEC = FilterSpec("header_mutation", HeaderMutationConfig, HeaderMutationConfig)
