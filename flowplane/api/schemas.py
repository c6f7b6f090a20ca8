"""Response models, used for the generated OpenAPI document (responses are built from stored
JSON, so these describe rather than produce them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

from flowplane.domain.common import NAME_RE
from flowplane.domain.resources import Kind


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class FieldProblemOut(_Out):
    field: str
    message: str


class ErrorOut(_Out):
    error: Literal[
        "bad_request", "unauthorized", "forbidden", "not_found", "conflict",
        "precondition_failed", "quota_exceeded", "rate_limited", "payload_too_large",
        "unsupported_media_type", "unavailable", "internal",
    ]  # fmt: skip
    message: str
    details: list[FieldProblemOut] = Field(default_factory=list)


class HealthOut(_Out):
    status: str
    checks: dict[str, Any] = Field(default_factory=dict)


class ListQuery(_Out):
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    team: str | None = None


class TeamQuery(_Out):
    """`?team=` on a `.../{name}` path: which team's resource of that name (`shared` for a
    shared one); needed only when the caller can see the name in several teams."""

    team: str | None = Field(None, pattern=NAME_RE.pattern, max_length=253)


class OwnerOut(_Out):
    """What made a resource on the Platform path (absent for Native-made resources)."""

    kind: Literal["api"]
    id: str


def out_model(kind: Kind) -> type[BaseModel]:
    """The stored resource as returned: the client's fields plus server-managed metadata."""
    base = kind.model
    fields: dict[str, Any] = {
        "version": (int, ...),
        "source": (Literal["native", "platform"], ...),
        "created_at": (datetime, ...),
        "updated_at": (datetime, ...),
        "owner": (OwnerOut | None, None),
    }
    return create_model(f"{base.__name__}Resource", __base__=base, **fields)


def page_model(kind: Kind, item: type[BaseModel]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "items": (list[item], ...),  # type: ignore[valid-type]
        "total": (int, ...),
        "limit": (int, ...),
        "offset": (int, ...),
    }
    return create_model(f"{kind.model.__name__}Page", __base__=_Out, **fields)
