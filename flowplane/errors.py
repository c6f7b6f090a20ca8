"""One error tree for the whole of Flowplane.

Every error knows its REST status and error kind (api.md "Conventions") and its gRPC status, so the
edges translate it without guessing. Inner layers raise these; nothing else crosses a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field-level problem: `field` is a dotted/indexed path such as `routes[2].match.path`."""

    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class FlowplaneError(Exception):
    """Base of every error Flowplane raises on purpose."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "internal"
    grpc_status: ClassVar[int] = 13  # INTERNAL

    def __init__(
        self,
        message: str,
        details: list[FieldProblem] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details or [])
        self.headers = dict(headers or {})

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.kind,
            "message": self.message,
            "details": [d.to_json() for d in self.details],
        }


class BadRequest(FlowplaneError):
    status, kind, grpc_status = 400, "bad_request", 3  # INVALID_ARGUMENT


class Unauthorized(FlowplaneError):
    status, kind, grpc_status = 401, "unauthorized", 16  # UNAUTHENTICATED


class Forbidden(FlowplaneError):
    status, kind, grpc_status = 403, "forbidden", 7  # PERMISSION_DENIED


class QuotaExceeded(FlowplaneError):
    status, kind, grpc_status = 403, "quota_exceeded", 8  # RESOURCE_EXHAUSTED


class NotFound(FlowplaneError):
    status, kind, grpc_status = 404, "not_found", 5


class MethodNotAllowed(FlowplaneError):
    status, kind, grpc_status = 405, "bad_request", 12  # UNIMPLEMENTED


class Conflict(FlowplaneError):
    status, kind, grpc_status = 409, "conflict", 6  # ALREADY_EXISTS


class PreconditionFailed(FlowplaneError):
    status, kind, grpc_status = 412, "precondition_failed", 9  # FAILED_PRECONDITION


class PayloadTooLarge(FlowplaneError):
    status, kind, grpc_status = 413, "payload_too_large", 8


class HeaderTooLarge(FlowplaneError):
    status, kind, grpc_status = 431, "bad_request", 8


class UnsupportedMediaType(FlowplaneError):
    status, kind, grpc_status = 415, "unsupported_media_type", 3


class RateLimited(FlowplaneError):
    status, kind, grpc_status = 429, "rate_limited", 8


class Unavailable(FlowplaneError):
    status, kind, grpc_status = 503, "unavailable", 14


class Internal(FlowplaneError):
    status, kind, grpc_status = 500, "internal", 13


class StorageError(Unavailable):
    """The database could not be reached or refused the operation; nothing was changed."""


class ConfigurationError(FlowplaneError):
    """Bad settings at start-up (not an HTTP error: the process refuses to start)."""
