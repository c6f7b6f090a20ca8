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
from flowplane.settings import Settings
from flowplane.storage import open_repository


async def create_token(
    settings: Settings, name: str, role: str | None, scopes: list[str], teams: list[str]
) -> str:
    async with trio_asyncio.open_loop():  # the PostgreSQL driver runs on asyncio
        return await _create(settings, name, role, scopes, teams)


async def _create(
    settings: Settings, name: str, role: str | None, scopes: list[str], teams: list[str]
) -> str:
    repo = await open_repository(settings.database_url)
    try:
        await repo.migrate()
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
