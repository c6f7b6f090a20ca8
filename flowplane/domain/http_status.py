"""The HTTP error statuses Envoy accepts where its config takes an `HttpStatus` (rate limit and
authorization denials, ...): only the codes its `StatusCode` enum defines (`defined_only`), so
anything else is refused here instead of being NACKed by Envoy."""

from __future__ import annotations

from typing import Annotated, Final

from envoy.type.v3 import http_status_pb2
from pydantic import AfterValidator, Field

ERROR_STATUSES: Final = frozenset(
    v.number for v in http_status_pb2.StatusCode.DESCRIPTOR.values if 400 <= v.number <= 599
)


def _error_status(code: int) -> int:
    if code not in ERROR_STATUSES:
        known = ", ".join(map(str, sorted(ERROR_STATUSES)))
        raise ValueError(f"must be an HTTP error status Envoy knows ({known}); {code} is not one")
    return code


ErrorStatus = Annotated[int, Field(ge=400, le=599), AfterValidator(_error_status)]
