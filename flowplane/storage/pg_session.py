"""A dedicated PostgreSQL connection whose session state matters: the change feed's `LISTEN`, and
the leader's session-level advisory lock. Both last exactly as long as the connection, so the
connection is not taken from the pool (the pool would reset it), and its loss is reported:
`alive` returns (raising `StorageError`) when the server ends it (pg_terminate_backend, restart)
or it stops answering, which tells the feed to resynchronise and the leader that it no longer
leads (the server released the lock with the session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import trio

from flowplane.storage.postgres import CHANNEL, PostgresRepository


class Session:
    def __init__(self, repo: PostgresRepository, conn: asyncpg.Connection) -> None:
        self.repo = repo
        self.conn = conn
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.add_termination_listener(self._terminated)

    def _terminated(self, _conn: asyncpg.Connection) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    @classmethod
    async def open(cls, repo: PostgresRepository) -> Session:
        """Connect (within the storage deadline); raises `StorageError`."""

        async def connect() -> Session:
            settings = {"application_name": repo.application_name}
            if repo.schema:
                settings["search_path"] = repo.schema  # advisory lock keys name the schema
            conn = await asyncpg.connect(repo.dsn, timeout=repo.timeout, server_settings=settings)
            return cls(repo, conn)

        return await repo._run(connect)

    async def listen(self, wake: Callable[[int], None]) -> None:
        """`LISTEN flowplane_changes`; `wake(position)` is called on the trio side for every
        notification."""
        token = trio.lowlevel.current_trio_token()

        def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:  # asyncio
            token.run_sync_soon(wake, int(payload))

        async def add() -> None:
            await self.conn.add_listener(CHANNEL, notified)

        await self.repo._run(add)

    async def try_lock(self, key: int) -> bool:
        """Take the session-level advisory lock (`key`, this schema) if nobody holds it
        (advisory locks are per database; the schema keeps deployments that share one apart)."""

        async def take() -> bool:
            return bool(
                await self.conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))", key
                )
            )

        return await self.repo._run(take)

    async def alive(self, every: float) -> None:
        """Wait while the connection lives: return by raising `StorageError` once the server
        ended it, or a `SELECT 1` every `every` seconds did not answer within the deadline."""
        timeout = self.repo.timeout

        async def watch() -> None:
            while not self._lost.done():
                try:
                    await asyncio.wait_for(asyncio.shield(self._lost), every)
                except TimeoutError:
                    await asyncio.wait_for(self.conn.fetchval("SELECT 1"), timeout)
            raise ConnectionError("the server closed the connection")

        await self.repo._run(watch, limited=False)

    async def aclose(self) -> None:
        """Close the connection (the server then releases its LISTEN and locks)."""

        async def close() -> None:
            self.conn.terminate()  # no I/O: the socket is closed, the server ends the session

        await self.repo._run(close)
