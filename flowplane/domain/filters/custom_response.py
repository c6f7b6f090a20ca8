"""`custom_response`: replace upstream responses by status code with a local response (Envoy's
custom_response filter with LocalResponsePolicy actions). The first rule whose codes match the
response's status wins. The same shape is the per-scope override (Envoy reads a CustomResponse
per route / virtual host / route config too, and uses the most specific one that matches)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from flowplane.domain.common import ApiModel
from flowplane.domain.filters import FilterModel, FilterSpec

# Final response statuses only (1xx are interim); LocalResponsePolicy's own range is 200-599.
Status = Annotated[int, Field(ge=200, le=599)]
_HEADER_VALUE = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"  # no control characters but tab


class StatusRange(ApiModel):
    start: Status
    end: Status

    @model_validator(mode="after")
    def _ordered(self) -> StatusRange:
        if self.start > self.end:
            raise ValueError("start must not be greater than end")
        return self


class LocalResponse(ApiModel):
    """What to answer instead: a new `status` (default: the upstream's), a `body` (replaces the
    upstream's) and its `contentType` (default text/plain)."""

    status: Status | None = None
    body: Annotated[str, Field(max_length=65536)] | None = None
    content_type: Annotated[
        str, Field(min_length=1, max_length=256, pattern=_HEADER_VALUE)
    ] | None = None  # fmt: skip

    @model_validator(mode="after")
    def _something(self) -> LocalResponse:
        if self.status is None and self.body is None:
            raise ValueError("give a status or a body (or both)")
        if self.content_type is not None and self.body is None:
            raise ValueError("contentType needs a body")
        return self


class ResponseRule(ApiModel):
    status_codes: Annotated[list[Status], Field(min_length=1, max_length=100)] | None = None
    status_range: StatusRange | None = None
    response: LocalResponse

    @model_validator(mode="after")
    def _one_match(self) -> ResponseRule:
        if (self.status_codes is None) == (self.status_range is None):
            raise ValueError("give exactly one of statusCodes and statusRange")
        return self

    def codes(self) -> list[int]:
        """The matched status codes, sorted and without duplicates."""
        if self.status_range is not None:
            return list(range(self.status_range.start, self.status_range.end + 1))
        return sorted(set(self.status_codes or ()))


class CustomResponseConfig(FilterModel):
    rules: Annotated[list[ResponseRule], Field(min_length=1, max_length=100)]


SPEC = FilterSpec("custom_response", CustomResponseConfig, CustomResponseConfig)
