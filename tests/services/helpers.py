"""Callers for the service tests. A service takes its caller as a value (`Principal`), so a
scope or team rule can be checked with a principal built on the spot; where the rule depends on
a token's identity (who created which token), `token_caller` makes a real token through the
token service and authenticates it the way every edge does."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from flowplane.app import Core
from flowplane.domain.auth import SCOPES, SYSTEM, Principal
from flowplane.errors import FlowplaneError, Forbidden
from flowplane.services.security import IssuedToken


def caller(*scopes: str, teams: Iterable[str] = (), name: str = "caller") -> Principal:
    """A caller holding exactly `scopes`, bound to `teams` (none: every team)."""
    return Principal(f"id-{name}", name, frozenset(scopes), frozenset(teams))


def all_but(scope: str, teams: Iterable[str] = ()) -> Principal:
    """A caller holding every scope except `scope` (and admin:all, which implies it)."""
    return caller(*(SCOPES - {scope, "admin:all"}), teams=teams, name="all-but")


ADMIN = caller("admin:all", name="admin")


async def token_caller(core: Core, **body: Any) -> tuple[Principal, IssuedToken]:
    """A real token (made by the system) and the principal its bearer authenticates as."""
    issued = await core.services.tokens.create(SYSTEM, {"name": "caller", **body})
    return authenticate(core, issued.token), issued


def authenticate(core: Core, token: str) -> Principal:
    return core.authenticator.authenticate(f"Bearer {token}", None, record=False)


async def run(out: object) -> object:
    """The answer of a service call, whether the operation is synchronous (reads from memory)
    or a coroutine (writes through the config actor)."""
    return await out if inspect.isawaitable(out) else out


def assert_scope_refused(err: FlowplaneError, scope: str) -> None:
    """The refusal is the scope check (403 naming the scope), not some later rule."""
    assert isinstance(err, Forbidden), err
    assert scope in err.message, err.message
