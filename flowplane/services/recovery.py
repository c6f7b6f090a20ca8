"""Recovery: make a token straight in the database (`flowplane token create`, for a locked-out
installation), through a config actor of its own so the write is the same transaction (token +
audit row) as through the API. A running server picks the new token up on its first use."""

from __future__ import annotations

import trio
import trio_asyncio

from flowplane.actors.auth import CreateToken, EnsureSigningKey
from flowplane.actors.config import ConfigActor, load_state
from flowplane.auth.keys import load_auth
from flowplane.domain.auth import SYSTEM
from flowplane.errors import ConfigurationError, FlowplaneError, StorageError
from flowplane.settings import Settings
from flowplane.storage import open_repository
from flowplane.storage.sqlite import sqlite_path

_WHERE = (
    "`flowplane token create` writes into an existing Flowplane database: run it where the "
    "server runs, or give the server's database with --database-url / FLOWPLANE_DATABASE_URL"
)


async def create_token(
    settings: Settings, name: str, role: str | None, scopes: list[str], teams: list[str]
) -> str:
    url = settings.database_url
    if url.startswith("sqlite:") and not await trio.Path(sqlite_path(url)).exists():
        # Opening it would create an empty database, and the token would be one no server knows.
        raise ConfigurationError(f"there is no database at {sqlite_path(url)}; {_WHERE}")
    try:
        async with trio_asyncio.open_loop():  # the PostgreSQL driver runs on asyncio
            return await _create(settings, name, role, scopes, teams)
    except BaseExceptionGroup as group:
        # The loop's nursery wraps what `_create` raised: answer with the error itself.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, FlowplaneError):
            raise leaf from None
        raise


async def _create(
    settings: Settings, name: str, role: str | None, scopes: list[str], teams: list[str]
) -> str:
    url = settings.database_url
    repo = await open_repository(url)
    try:
        try:
            await repo.load_rows("signing_keys")
        except StorageError:
            raise ConfigurationError(f"{url} is not a Flowplane database; {_WHERE}") from None
        await repo.migrate()  # a Flowplane database of an older release: bring it up to date
        actor = ConfigActor(repo, await load_state(repo), await load_auth(repo))
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await actor.submit(EnsureSigningKey())
            body: dict[str, object] = {"name": name}
            if role:
                body["role"] = role
            if scopes:
                body["scopes"] = scopes
            if teams:
                body["teams"] = teams
            _, token = await actor.submit(CreateToken(body, SYSTEM))
            nursery.cancel_scope.cancel()
    finally:
        await repo.aclose()
    return str(token)
