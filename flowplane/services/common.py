"""What every service shares: scope checks and pages of results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from flowplane.domain.auth import Principal
from flowplane.errors import Forbidden

T = TypeVar("T")


def require_scope(caller: Principal, scope: str) -> None:
    """403 unless `caller` holds `scope` (or admin:all). The REST edge checks the same table
    before a request reaches a service; this makes every other edge just as strict."""
    if not caller.has(scope):
        raise Forbidden(f"this token lacks the scope {scope}")


@dataclass(frozen=True, slots=True)
class Window:
    """Which part of a list to return (`?limit=&offset=`)."""

    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One window of a list, with the list's full size (no silent truncation)."""

    items: Sequence[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(cls, items: Sequence[T], window: Window) -> Page[T]:
        end = window.offset + window.limit
        return cls(items[window.offset : end], len(items), window.limit, window.offset)
