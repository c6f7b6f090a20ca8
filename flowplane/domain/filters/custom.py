"""`custom`: any Envoy HTTP filter, given as `{typeUrl, config}` where `config` is the filter's
protobuf JSON (api.md "Filters"). The type must be a message of an Envoy HTTP filter package
(`envoy.extensions.filters.http.*`) known to xds-protos, and `config` must parse as it
(protobuf's JSON mapping, unknown fields refused), so nothing unparseable is stored. The same
shape is the per-scope override (e.g. the filter's `...PerRoute` message).

Not checked here: Envoy's own constraints on field values (protoc-gen-validate rules such as
"required" or "greater than 0"), and whether the message is one Envoy registers as an HTTP filter
(config) or per-route config (override); Envoy checks those when it loads the config. Clusters
named inside a custom config are not tracked as references.
"""

from __future__ import annotations

from typing import Annotated, Any

from google.protobuf.message import Message
from pydantic import AfterValidator, Field, PrivateAttr, model_validator

from flowplane.domain.common import NestedProblems
from flowplane.domain.filters import FilterModel, FilterSpec
from flowplane.domain.proto_types import (
    HTTP_FILTER_PACKAGE,
    TYPE_URL_PREFIX,
    ProtoError,
    full_name_of,
    message_class,
    parse_json,
)
from flowplane.errors import FieldProblem

_ROUTER = "envoy.extensions.filters.http.router.v3.Router"


def _http_filter_type(type_url: str) -> str:
    name = full_name_of(type_url)
    if not name.startswith(HTTP_FILTER_PACKAGE):
        raise ValueError(
            f"must be an Envoy HTTP filter type ({TYPE_URL_PREFIX}{HTTP_FILTER_PACKAGE}...)"
        )
    if name == _ROUTER:
        raise ValueError("the router is appended automatically (use the router type)")
    message_class(type_url)  # raises if unknown
    return type_url


class CustomConfig(FilterModel):
    type_url: Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_http_filter_type)]
    config: dict[str, Any] = Field(default_factory=dict)
    _message: Message | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _parses(self) -> CustomConfig:
        try:
            self._message = parse_json(message_class(self.type_url), self.config)
        except ProtoError as err:
            raise NestedProblems([FieldProblem("config", str(err))]) from None
        return self

    def message(self) -> Message:
        """The parsed message (parsed when the model was validated)."""
        assert self._message is not None
        return self._message


SPEC = FilterSpec("custom", CustomConfig, CustomConfig)
