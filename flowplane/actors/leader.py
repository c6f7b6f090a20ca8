"""Leader election for singleton jobs (README "Replicas"): of the replicas sharing a PostgreSQL
database, the one holding the session-level advisory lock `LEADER_LOCK` on a dedicated
connection runs the jobs (audit retention, change-log retention). The server releases the lock
when that connection ends (process killed, network cut, pg_terminate_backend): the leader notices
(`Session.alive`), cancels its jobs, and every replica tries to take the lock again every
`retry` seconds, so another one takes over. With SQLite (one process) the jobs simply run.

A job is an async callable that runs until cancelled; an exception it raises is logged and
counted (`flowplane_actor_failures_total{actor="leader"}`) and leadership is given up and sought
again, so a broken job cannot keep the others from running elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from flowplane.errors import FlowplaneError
from flowplane.observability import metrics
from flowplane.storage.pg_session import Session
from flowplane.storage.postgres import PostgresRepository

log = logging.getLogger(__name__)

LEADER_LOCK = 727276
Job = Callable[[], Awaitable[None]]


class Leader:
    def __init__(
        self,
        repo: PostgresRepository,
        jobs: Sequence[Job],
        *,
        retry: float = 5.0,
        check_every: float = 2.0,
    ) -> None:
        self.repo = repo
        self.jobs = list(jobs)
        self.retry = retry
        self.check_every = check_every
        self.leading = False
        self.terms = 0  # how many times this replica became the leader
        self.elected = trio.Event()  # set when this replica next becomes the leader
        self.session_pid: int | None = None  # the lock's backend while leading (tests kill it)

    async def run(self) -> None:
        """Seek leadership, lead while the lock's connection lives; until cancelled."""
        while True:
            session: Session | None = None
            try:
                session = await Session.open(self.repo)
                if await session.try_lock(LEADER_LOCK):
                    await self._lead(session)
            except FlowplaneError as err:
                log.warning("leader election: %s", err.message)
            except Exception:
                metrics.ACTOR_FAILURES.labels("leader").inc()
                log.exception("a singleton job failed; giving up leadership")
            finally:
                if self.leading:
                    log.info("no longer the leader (singleton jobs stopped)")
                self.leading = False
                self.session_pid = None
                if session is not None:
                    with trio.CancelScope(shield=True):
                        await session.aclose()  # releases the lock, if held
            await trio.sleep(self.retry)

    async def _lead(self, session: Session) -> None:
        self.leading = True
        self.terms += 1
        self.session_pid = session.conn.get_server_pid()
        log.info("elected leader: running the singleton jobs")
        elected, self.elected = self.elected, trio.Event()
        elected.set()
        async with trio.open_nursery() as nursery:
            for job in self.jobs:
                nursery.start_soon(job)
            try:
                await session.alive(self.check_every)
            except FlowplaneError as err:  # the lock went with the connection
                log.warning("leader: lock connection lost: %s", err.message)
            nursery.cancel_scope.cancel()
