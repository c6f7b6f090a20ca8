"""The change feed: what other replicas sharing the PostgreSQL database committed, applied here
(README "Replicas").

Every state-changing write appends a `change_log` row in its own transaction and notifies
`flowplane_changes` (storage/postgres.py). The feed holds a dedicated connection that LISTENs;
a notification only wakes it: it then reads the log after the position this replica's memory
reflects (`repo.fence`), re-reads the rows those changes touched, applies them to memory (the
configuration, API definitions, teams, tokens, signing keys) and publishes the resource changes
to the snapshot builder. That work runs as a `MemoryTxn` inside the config actor, so it never
interleaves with a local write; when a write finds that another replica committed first
(`StaleState`), the actor re-plans it inside `exclusive`, which catches up while holding the
change-log lock.

A lost notification can delay a change, never lose it: after its connection drops the feed
reconnects, LISTENs again and then reads the log from its position (so a change committed while
it was away is read, and one committed after the LISTEN is both notified and read: re-reading
rows is idempotent). Rows this replica wrote itself are skipped (memory already has them).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import trio

from flowplane.actors.config import (
    Change,
    ConfigActor,
    MemoryTxn,
    PlanContext,
    change_of,
    resource_of,
)
from flowplane.actors.platform import load_apis
from flowplane.auth.keys import load_auth
from flowplane.domain.resources import Kind
from flowplane.domain.state import ConfigState, Plan
from flowplane.errors import FlowplaneError
from flowplane.observability import metrics
from flowplane.storage.base import Repository
from flowplane.storage.pg_session import Session
from flowplane.storage.postgres import PostgresRepository

log = logging.getLogger(__name__)

CHANGE_LOG_KEEP = timedelta(days=7)
"""How long change-log rows are kept (pruned by the elected leader): a running replica reads
them within moments; one that starts reads the whole state instead."""


class ChangeFeed:
    def __init__(
        self,
        repo: PostgresRepository,
        actor: ConfigActor,
        *,
        check_every: float = 5.0,
        reconnect_delay: float = 0.5,
    ) -> None:
        self.repo = repo
        self.actor = actor
        self.check_every = check_every  # how often the LISTEN connection is checked when idle
        self.reconnect_delay = reconnect_delay
        self._wake = trio.Event()
        self.applied = 0  # changes from other replicas applied (diagnostics and tests)
        self.next_session = trio.Event()  # set when the next LISTEN connection is up
        self.session_pid: int | None = None  # the LISTEN connection's backend (tests kill it)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """LISTEN, catch up, and apply every notified change, until cancelled; reconnects (and
        catches up) whenever the connection drops. started() once the first LISTEN is up."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._apply_loop)
            started = False
            delay = self.reconnect_delay
            while True:
                session: Session | None = None
                try:
                    session = await Session.open(self.repo)
                    await session.listen(self._notified)
                    self.session_pid = session.conn.get_server_pid()
                    up, self.next_session = self.next_session, trio.Event()
                    up.set()
                    self._notified()  # read what was committed while nobody listened
                    if not started:
                        started = True
                        task_status.started()
                    delay = self.reconnect_delay
                    await session.alive(self.check_every)
                except FlowplaneError as err:
                    log.warning("change feed: connection to PostgreSQL lost: %s", err.message)
                except Exception:  # a bug: supervision rule (log, count, keep serving)
                    metrics.ACTOR_FAILURES.labels("change-feed").inc()
                    log.exception("change feed: unexpected failure; reconnecting")
                finally:
                    self.session_pid = None
                    if session is not None:
                        with trio.CancelScope(shield=True):
                            await session.aclose()
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _notified(self, position: int = 0) -> None:
        fence = self.repo.fence
        if position and fence is not None and position <= fence:
            return  # memory already reflects it (this replica's own write, or read already)
        self._wake.set()

    async def _apply_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.actor.submit(CatchUp(self))
            except FlowplaneError as err:  # storage down (a bug is the actor's to count)
                log.warning("change feed: could not read the change log: %s", err.message)
                await trio.sleep(self.reconnect_delay)  # then try again
                self._wake.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the database's change-log lock and catch up under it: inside, memory is the
        database's state and no other replica can commit until the write inside does (the
        config actor's second plan of a command that found itself stale)."""
        async with self.repo.exclusive():
            await self.catch_up()
            yield

    async def catch_up(self) -> None:
        """Apply every change after `repo.fence` that another replica committed. Only from
        inside the config actor (a `CatchUp`, or `exclusive` when a write found itself stale)."""
        repo, state, auth = self.repo, self.actor.state, self.actor.auth
        position = repo.fence or 0
        while True:
            rows = await repo.changes_after(position)
            if not rows:
                return
            keys: dict[tuple[str, str], None] = {}  # ordered set
            tables: set[str] = set()
            for pos, origin, entries in rows:
                position = pos
                if origin == repo.replica_id:
                    continue  # this replica's own write: memory has it
                for entry in entries:
                    if entry[0] == "resource":
                        keys[(entry[1], entry[2])] = None
                    else:
                        tables.add(entry[0])
            # Everything is read first; memory is then changed with no I/O in between, and
            # announced: a failed read changes nothing (the next try reads it all again).
            found = (
                {(r.kind, r.key): r for r in await repo.load_resources(list(keys))} if keys else {}
            )
            fresh = ConfigState()
            if "apis" in tables:
                await load_apis(repo, fresh)
            fresh_auth = (
                await load_auth(repo) if tables & {"teams", "tokens", "signing_keys"} else None
            )
            changes: list[Change] = []
            for kind_name, key in keys:
                kind = Kind(kind_name)
                before = state.get(kind, key)
                row = found.get((kind_name, key))
                after = resource_of(row) if row is not None else None
                if before is None and after is None:
                    continue
                if (
                    before is not None
                    and after is not None
                    and (before.version, before.updated_at, before.spec)
                    == (after.version, after.updated_at, after.spec)
                ):
                    continue  # already here (read while loading, or applied before)
                plan = Plan(kind, key, before, after)
                state.apply(plan)
                changes.append(change_of(plan))
            if "apis" in tables:
                state.apis.clear()
                state.apis.update(fresh.apis)
            if fresh_auth is not None:
                auth.keys.clear()
                auth.keys.update(fresh_auth.keys)
                auth.teams.clear()
                auth.teams.update(fresh_auth.teams)
                state.team_quotas.clear()
                state.team_quotas.update({n: t.quotas for n, t in auth.teams.items()})
                auth.tokens.clear()
                auth.tokens.update(fresh_auth.tokens)
                for listener in auth.token_listeners:
                    listener()
            repo.fence = position
            self.applied += len(changes)
            await self.actor.announce(tuple(changes))


class CatchUp(MemoryTxn):
    """Apply other replicas' changes (the feed was notified, or has reconnected)."""

    def __init__(self, feed: ChangeFeed) -> None:
        super().__init__()
        self.feed = feed

    async def run(self, ctx: PlanContext, repo: Repository) -> None:
        await self.feed.catch_up()


async def keep_change_log(
    repo: PostgresRepository, *, keep: timedelta = CHANGE_LOG_KEEP, every: float = 3600.0
) -> None:
    """Change-log retention (a leader job): delete rows older than `keep`, now and every
    `every` seconds. Runs until cancelled."""
    while True:
        try:
            deleted = await repo.prune_changes(datetime.now(UTC) - keep)
        except FlowplaneError as err:
            metrics.ACTOR_FAILURES.labels("change-log-retention").inc()
            log.warning("could not prune the change log: %s", err.message)
        else:
            if deleted:
                log.info("deleted %d change-log rows older than %s", deleted, keep)
        await trio.sleep(every)
