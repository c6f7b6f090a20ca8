"""The background flush of auth activity (flowplane/services/startup.py), in virtual time.

Rules under test:
- "Token reloads from the database at most [once per RELOAD_EVERY_SECONDS] (a flood of unknown
  ids costs one)", and a token another process wrote is known after the reload.
- "Failed authentications arriving within [FAILURE_FLUSH_SECONDS] ... are written in one
  transaction, as one audit row per (source, reason) with a count" (issue 11, item 13: "10,000
  bad-token requests -> 10,000 rows. Aggregate authentication failures (per source and reason
  per interval)").
- Audit retention: `keep_audit` deletes rows older than FLOWPLANE_AUDIT_KEEP_DAYS at start and
  then every AUDIT_PRUNE_EVERY_SECONDS.
- Tokens' last use is written "every `interval` seconds", and only what changed since the last
  flush (`take_last_used` / `mark_flushed`).
- Supervision: "A failed flush ... is logged with what it was writing and counted in
  `flowplane_actor_failures_total{actor="auth-flush"}`; the loop keeps running and the rows wait
  for the next round (last use) or are dropped after being logged (failed authentications)."

The config actor, its SQLite repository and the `Authenticator` are the real ones. SQLite runs in
worker threads, and trio's `autojump_clock` jumps virtual time whenever every task is blocked —
waiting on a thread included — so it would move time forward by an amount that depends on how
fast the disk is. These tests therefore use `mock_clock` (time stands still) and move it by hand:
`Rig.advance` jumps one step, then lets every task that became due run to completion, database
calls included, before the next step. Virtual times are exact; nothing sleeps for real.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import REGISTRY
from trio.testing import MockClock

from flowplane.actors.auth import CreateToken, EnsureSigningKey, ReloadTokens
from flowplane.actors.config import ConfigActor, Txn, load_state
from flowplane.auth.authenticator import MAX_FAILURE_KEYS, OVERFLOW_REASON, Authenticator
from flowplane.auth.keys import AuthState, load_auth
from flowplane.domain.auth import TokenRecord
from flowplane.errors import Unauthorized
from flowplane.services.recovery import create_token
from flowplane.services.startup import (
    AUDIT_PRUNE_EVERY_SECONDS,
    FAILURE_FLUSH_SECONDS,
    RELOAD_EVERY_SECONDS,
    flush_auth_activity,
    keep_audit,
)
from flowplane.settings import Settings, load_settings
from flowplane.storage import open_repository
from flowplane.storage.base import AuditQuery, AuditRow, Repository, UpdateRow, Write

pytestmark = pytest.mark.timeout(30)  # real seconds: virtual time cannot time out a hang here

STEP = 1 / 64  # virtual seconds per step: a power of two, so sums of steps are exact
CLIENT = "192.0.2.7"


class SpyRepo:
    """The real repository, recording the virtual time and content of every committed
    transaction and counting calls in flight (a spy, not a mock). `repo` can be swapped, as
    when the database comes back after an outage."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.committed: list[tuple[float, list[Write]]] = []
        self.in_flight = 0
        self._idle = trio.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.repo, name)
        return self._tracked(attr) if inspect.iscoroutinefunction(attr) else attr

    def _tracked(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def tracked(*args: Any, **kwargs: Any) -> Any:
            self.in_flight += 1
            try:
                return await call(*args, **kwargs)
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()
                    self._idle = trio.Event()

        return tracked

    async def write(self, writes: list[Write]) -> None:
        await self._tracked(self.repo.write)(writes)
        self.committed.append((trio.current_time(), list(writes)))

    async def settle(self) -> None:
        """Return once every task is blocked and no database call is running."""
        while True:
            await trio.testing.wait_all_tasks_blocked()
            if not self.in_flight:
                return
            await self._idle.wait()


class RecordingActor(ConfigActor):
    """The real config actor, noting the virtual time at which each command was submitted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.submitted: list[tuple[float, Txn]] = []

    async def submit(self, cmd: Txn) -> Any:
        self.submitted.append((trio.current_time(), cmd))
        return await super().submit(cmd)


@dataclass
class Rig:
    clock: MockClock
    repo: SpyRepo
    actor: RecordingActor
    authenticator: Authenticator
    settings: Settings
    t0: float = field(init=False)

    def __post_init__(self) -> None:
        self.t0 = trio.current_time()

    def now(self) -> float:
        """Virtual seconds since the flush loops started."""
        return trio.current_time() - self.t0

    async def advance(self, seconds: float, step: float = STEP) -> None:
        """Move virtual time by `seconds`, one `step` at a time, letting everything that falls
        due at each step finish (database calls included)."""
        await self.repo.settle()
        for _ in range(round(seconds / step)):
            self.clock.jump(step)
            await self.repo.settle()

    async def advance_to(self, t: float, step: float = STEP) -> None:
        await self.advance(t - self.now(), step)

    def reloads(self) -> list[float]:
        """When `ReloadTokens` was submitted, in virtual seconds since the start."""
        return [t - self.t0 for t, cmd in self.actor.submitted if isinstance(cmd, ReloadTokens)]

    def failure_batches(self) -> list[tuple[float, list[AuditRow]]]:
        """Committed transactions of failed-authentication audit rows: (time, rows)."""
        return [
            (t - self.t0, [w for w in writes if isinstance(w, AuditRow)])
            for t, writes in self.repo.committed
            if any(isinstance(w, AuditRow) and w.action == "authentication_failed" for w in writes)
        ]

    def last_use_writes(self) -> list[tuple[float, dict[str, Any]]]:
        """Committed last-use transactions: (time, token id -> last_used_at written)."""
        return [
            (t - self.t0, {w.key: w.values["last_used_at"] for w in writes})
            for t, writes in self.repo.committed
            if writes and all(isinstance(w, UpdateRow) and w.table == "tokens" for w in writes)
        ]

    def authenticate(self, token: str | None, client: str = f"{CLIENT}:40000") -> Any:
        header = f"Bearer {token}" if token is not None else None
        return self.authenticator.authenticate(header, client)

    async def stored_last_use(self, token_id: str) -> datetime | None:
        rows = {r["id"]: r for r in await self.repo.repo.load_rows("tokens")}
        return TokenRecord.from_row(rows[token_id]).last_used_at


@asynccontextmanager
async def open_rig(
    tmp_path: Path, clock: MockClock, *, interval: float = 3600.0
) -> AsyncIterator[Rig]:
    """A config actor on a fresh SQLite file (with a signing key), an `Authenticator` over its
    auth state, and `flush_auth_activity` running with `interval`."""
    url = f"sqlite:///{tmp_path}/flowplane.db"
    spy = SpyRepo(await open_repository(url))
    try:
        await spy.repo.migrate()
        actor = RecordingActor(spy, await load_state(spy.repo), await load_auth(spy.repo))
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await actor.submit(EnsureSigningKey())
            authenticator = Authenticator(actor.auth)
            nursery.start_soon(lambda: flush_auth_activity(actor, authenticator, interval=interval))
            await spy.settle()
            yield Rig(clock, spy, actor, authenticator, load_settings(database_url=url))
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await spy.repo.aclose()


async def known_token(rig: Rig, name: str = "ci") -> tuple[str, str]:
    """(token id, token string) of a token the server knows."""
    record, token = await rig.actor.submit(CreateToken({"name": name, "role": "admin"}))
    await rig.repo.settle()
    return record.id, token


def signed_but_unknown(auth: AuthState) -> str:
    """A token signed with the server's key whose id is in no database."""
    now = datetime.now(UTC)
    return auth.sign(
        TokenRecord(
            id=str(uuid.uuid4()), name="ghost", role="admin", scopes=frozenset(),
            teams=frozenset(), status="active", expires_at=None, created_by=None,
            created_at=now, updated_at=now, version=1,
        )
    )  # fmt: skip


def flush_failures() -> float:
    labels = {"actor": "auth-flush"}
    return REGISTRY.get_sample_value("flowplane_actor_failures_total", labels) or 0.0


def flush_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The flush's warnings. (Its INFO summaries, "refused N authentications ...", are captured
    too when an earlier test left the flowplane logger at INFO: not what these tests check.)"""
    return [
        r.getMessage() for r in caplog.records
        if r.name == "flowplane.services.startup" and r.levelno >= logging.WARNING
    ]  # fmt: skip


# -- token reload throttle -----------------------------------------------------------------------


async def test_a_flood_of_unknown_tokens_reloads_at_most_once_per_period(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with open_rig(tmp_path, mock_clock) as rig:
        ghost = signed_but_unknown(rig.actor.auth)
        requests = 0
        while rig.now() < 3.5 * RELOAD_EVERY_SECONDS:  # one request per step
            with pytest.raises(Unauthorized, match="unknown token"):
                rig.authenticate(ghost)
            requests += 1
            await rig.advance(STEP)
        reloads = rig.reloads()
        assert requests == round(3.5 * RELOAD_EVERY_SECONDS / STEP)
        # The first request reloads at once; the rest of the flood costs one reload per period.
        assert reloads == pytest.approx([i * RELOAD_EVERY_SECONDS for i in range(4)], abs=STEP)
        assert all(b - a >= RELOAD_EVERY_SECONDS for a, b in itertools.pairwise(reloads))

        await rig.advance(3 * RELOAD_EVERY_SECONDS)  # the flood is over: at most one more
        assert len(rig.reloads()) == 5


async def test_a_token_another_process_wrote_is_known_after_the_next_reload(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    """`flowplane token create` (flowplane.services.recovery) writes straight to the database (its own repository and config
    actor on the same file). The server does not know the token until its first use asks for a
    reload; a retry after the reload passes. A reload within the period of the last one waits
    for the period to end."""
    async with open_rig(tmp_path, mock_clock) as rig:
        cli = await create_token(rig.settings, "from-cli", "platform-engineer", [], [])
        with pytest.raises(Unauthorized, match="unknown token"):
            rig.authenticate(cli)
        await rig.advance(0)  # let the reload run, without moving time
        assert rig.reloads() == [0.0]
        assert rig.authenticate(cli).name == "from-cli"

        later = await create_token(rig.settings, "later", "platform-engineer", [], [])
        with pytest.raises(Unauthorized, match="unknown token"):
            rig.authenticate(later)
        await rig.advance(RELOAD_EVERY_SECONDS - STEP)  # still within the period
        with pytest.raises(Unauthorized, match="unknown token"):
            rig.authenticate(later)
        assert rig.reloads() == [0.0]
        await rig.advance(STEP)
        assert rig.reloads() == [0.0, pytest.approx(RELOAD_EVERY_SECONDS)]
        assert rig.authenticate(later).name == "later"


# -- failed authentications ----------------------------------------------------------------------


def failure_reasons(rig: Rig, tokens: list[str | None]) -> Counter[str]:
    """Authenticate each of `tokens` (all must fail); how often each reason was given."""
    reasons: Counter[str] = Counter()
    for token in tokens:
        with pytest.raises(Unauthorized) as err:
            rig.authenticate(token)
        reasons[err.value.message] += 1
    return reasons


async def test_failures_within_the_flush_window_are_aggregated_into_one_transaction(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with open_rig(tmp_path, mock_clock) as rig:
        ghost = signed_but_unknown(rig.actor.auth)
        burst = [None, "not-a-jwt", ghost, "a.b.c", None, "x"]  # one per step, within the window
        reasons: Counter[str] = Counter()
        for token in burst:
            reasons += failure_reasons(rig, [token])
            await rig.advance(STEP)
        assert len(burst) * STEP < FAILURE_FLUSH_SECONDS
        assert len(reasons) < len(burst)  # some reasons repeat: they share a row
        await rig.advance_to(2 * FAILURE_FLUSH_SECONDS)
        late = rig.now()
        failure_reasons(rig, ["late"])  # a second burst, after the first was written
        await rig.advance(2 * FAILURE_FLUSH_SECONDS)

        # Each batch is written at the first step at or after the end of its window.
        batches = rig.failure_batches()
        assert [len(rows) for _, rows in batches] == [len(reasons), 1]
        for (t, _), start in zip(batches, [0.0, late], strict=True):
            assert 0 <= t - (start + FAILURE_FLUSH_SECONDS) < STEP
        first = batches[0][1]
        assert {r.after["reason"]: r.after["count"] for r in first} == reasons
        rows, total = await rig.repo.repo.query_audit(AuditQuery(resource_type="auth"))
        assert total == len(reasons) + 1
        assert {r.action for r in rows} == {"authentication_failed"}
        assert {r.client_address for r in rows} == {CLIENT}  # the source, without the port


async def test_a_flood_of_bad_tokens_is_one_row_per_source_and_reason(
    tmp_path: Path, mock_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 bad-token requests (each from a new connection, so a new port) from one address,
    plus a few from a second address with another reason: one row per (source, reason), and
    one INFO line each (issue 17 item 5: refused tokens are logged, but never per request)."""
    caplog.set_level(logging.INFO, logger="flowplane.services.startup")
    async with open_rig(tmp_path, mock_clock) as rig:
        for i in range(10_000):
            with pytest.raises(Unauthorized):
                rig.authenticate("nope", f"{CLIENT}:{1024 + i}")
        for i in range(3):
            with pytest.raises(Unauthorized):
                rig.authenticate(None, f"[2001:db8::1]:{5000 + i}")
        await rig.advance(2 * FAILURE_FLUSH_SECONDS, step=1 / 8)
        rows, total = await rig.repo.repo.query_audit(AuditQuery(resource_type="auth"))
        assert total == 2
        counts = {(r.client_address, r.after["count"]) for r in rows}
        assert counts == {(CLIENT, 10_000), ("2001:db8::1", 3)}
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert sorted(m.split(":")[0] for m in refused) == sorted(
            [
                f"refused 10000 authentication(s) from {CLIENT}",
                "refused 3 authentication(s) from 2001",
            ]
        )
        for r in rows:
            assert r.after["firstAt"] <= r.after["lastAt"]
            assert r.time.isoformat() == r.after["firstAt"]


async def test_failures_from_too_many_sources_are_counted_in_one_overflow_row(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with open_rig(tmp_path, mock_clock) as rig:
        extra = 7
        for i in range(MAX_FAILURE_KEYS + extra):
            with pytest.raises(Unauthorized):
                rig.authenticate(None, f"198.51.{i // 250}.{i % 250}:1")
        assert len(rig.authenticator._failures) == MAX_FAILURE_KEYS + 1  # bounded memory
        await rig.advance(2 * FAILURE_FLUSH_SECONDS, step=1 / 8)
        ((_, rows),) = rig.failure_batches()
        assert len(rows) == MAX_FAILURE_KEYS + 1
        overflow = [r for r in rows if r.after["reason"] == OVERFLOW_REASON]
        assert [r.after["count"] for r in overflow] == [extra]
        assert sum(r.after["count"] for r in rows) == MAX_FAILURE_KEYS + extra


async def test_a_failed_write_of_failures_is_counted_logged_and_dropped(
    tmp_path: Path, mock_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_rig(tmp_path, mock_clock) as rig:
        before = flush_failures()
        await rig.repo.repo.aclose()  # a real fault: the database is gone
        for token in (None, "not-a-jwt", None):
            with pytest.raises(Unauthorized):
                rig.authenticate(token)
        await rig.advance(2 * FAILURE_FLUSH_SECONDS)
        assert flush_failures() == before + 1
        assert flush_reports(caplog) == ["could not record 3 failed authentications"]

        rig.repo.repo = await open_repository(rig.settings.database_url)  # the database is back
        with pytest.raises(Unauthorized):
            rig.authenticate(None)
        await rig.advance(2 * FAILURE_FLUSH_SECONDS)  # the loop kept running
        # Only the new failure: the two that could not be written were dropped (they are logged).
        assert [len(rows) for _, rows in rig.failure_batches()] == [1]
        assert flush_failures() == before + 1


# -- tokens' last use ----------------------------------------------------------------------------


async def test_last_use_is_written_every_interval_and_only_when_it_changed(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with open_rig(tmp_path, mock_clock, interval=10.0) as rig:
        tid, token = await known_token(rig)
        await rig.advance_to(1, step=0.5)
        rig.authenticate(token)
        first = rig.authenticator.last_used_at(tid)
        await rig.advance_to(25, step=0.5)  # flushes at 10 and (nothing changed) 20
        rig.authenticate(token)
        await rig.advance(1, step=0.5)
        rig.authenticate(token)  # two uses in one interval: the later one is written
        second = rig.authenticator.last_used_at(tid)
        await rig.advance_to(45, step=0.5)  # flushes at 30 and (nothing changed) 40

        assert first is not None and second is not None and second > first
        assert rig.last_use_writes() == [(10.0, {tid: first}), (30.0, {tid: second})]
        assert await rig.stored_last_use(tid) == second


async def test_a_failed_last_use_flush_is_counted_and_retried_next_round(
    tmp_path: Path, mock_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_rig(tmp_path, mock_clock, interval=10.0) as rig:
        tid, token = await known_token(rig)
        before = flush_failures()
        rig.authenticate(token)
        used = rig.authenticator.last_used_at(tid)
        await rig.repo.repo.aclose()  # a real fault: the database is gone
        await rig.advance_to(15, step=0.5)
        assert flush_failures() == before + 1
        assert flush_reports(caplog) == ["could not record token last use"]
        assert rig.last_use_writes() == []
        assert rig.authenticator.take_last_used() == {tid: used}  # still waiting

        rig.repo.repo = await open_repository(rig.settings.database_url)  # the database is back
        await rig.advance_to(25, step=0.5)
        assert rig.last_use_writes() == [(20.0, {tid: used})]
        assert await rig.stored_last_use(tid) == used
        assert flush_failures() == before + 1


# -- audit retention -----------------------------------------------------------------------------


def aged(days: float, name: str) -> AuditRow:
    when = datetime.now(UTC) - timedelta(days=days)
    return AuditRow(when, None, "n", "create", "cluster", name, None, None, None, None)


async def test_keep_audit_deletes_expired_rows_at_start_and_every_period(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    spy = SpyRepo(await open_repository(f"sqlite:///{tmp_path}/flowplane.db"))
    try:
        await spy.repo.migrate()
        await spy.repo.write([aged(120, "old"), aged(91, "expired"), aged(1, "recent")])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: keep_audit(spy, 90, every=AUDIT_PRUNE_EVERY_SECONDS))
            await spy.settle()
            rows, _ = await spy.repo.query_audit(AuditQuery())
            assert [r.resource_name for r in rows] == ["recent"]
            await spy.repo.write([aged(95, "expired-later")])
            mock_clock.jump(AUDIT_PRUNE_EVERY_SECONDS - 1)
            await spy.settle()
            assert (await spy.repo.query_audit(AuditQuery()))[1] == 2  # not yet
            mock_clock.jump(1)
            await spy.settle()
            rows, _ = await spy.repo.query_audit(AuditQuery())
            assert [r.resource_name for r in rows] == ["recent"]
            nursery.cancel_scope.cancel()
    finally:
        await spy.repo.aclose()


async def test_a_failed_prune_is_counted_logged_and_retried(
    tmp_path: Path, mock_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/flowplane.db"
    spy = SpyRepo(await open_repository(url))
    labels = {"actor": "audit-retention"}
    before = REGISTRY.get_sample_value("flowplane_actor_failures_total", labels) or 0.0
    try:
        await spy.repo.migrate()
        await spy.repo.write([aged(100, "expired")])
        await spy.repo.aclose()  # a real fault: the database is gone
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: keep_audit(spy, 90, every=60.0))
            await spy.settle()
            after = REGISTRY.get_sample_value("flowplane_actor_failures_total", labels)
            assert after == before + 1
            assert any("could not delete audit rows" in r.getMessage() for r in caplog.records)
            spy.repo = await open_repository(url)  # the database is back
            mock_clock.jump(60.0)
            await spy.settle()
            assert (await spy.repo.query_audit(AuditQuery()))[1] == 0
            nursery.cancel_scope.cancel()
    finally:
        await spy.repo.aclose()
