"""SQLite backend: the embedded default.

One connection, used from worker threads under a lock, so the event loop never blocks on disk.
WAL journal with `synchronous=FULL`: a commit that returned is on disk, so an acknowledged change
survives a crash or power loss.

Every call has a deadline (`time_limit`, FLOWPLANE_STORAGE_TIMEOUT_SECONDS): past it the caller
is answered and the thread left to finish (see `_run` for what that means for a write). A
connection that found itself read-only is reopened before the next write and by `ping`, so a
fixed permission takes effect without a restart. Each write records its id in `write_log`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import trio

from flowplane.errors import ConfigurationError, StorageError
from flowplane.storage.base import (
    AuditQuery,
    AuditRow,
    DocumentUpgrade,
    HistoryKey,
    HistoryRow,
    ResourceRow,
    UpgradeDocument,
    Write,
    WriteOutcomeUnknown,
    load_migrations,
)
from flowplane.storage.sql import (
    DOCUMENTS_SELECT,
    HISTORY_HEADS,
    RESOURCE_SELECT,
    WRITE_LOG_LOOKUP,
    audit_from,
    audit_prune,
    audit_queries,
    decode_record,
    document_from,
    document_update,
    history_from,
    history_prune,
    history_queries,
    history_versions_query,
    qmark,
    resource_from,
    split_statements,
    table_select,
    write_log_statements,
    write_statements,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def sqlite_path(url: str) -> str:
    """`sqlite:///./x.db` -> `./x.db`, `sqlite:////abs/x.db` -> `/abs/x.db`, `sqlite:///:memory:`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigurationError(
            f"not a SQLite URL: {url!r} (expected sqlite:///relative/path.db or sqlite:////abs.db)"
        )
    return url[len(prefix) :]


def check_location(url: str) -> None:
    """Start-up check (`flowplane serve`, `db migrate`): the database file of `url` can be created
    and written where it is, and so can SQLite's WAL files beside it (`-wal`, `-shm`), so that the
    directory must be writable too. The directory is created if missing.

    Raises `ConfigurationError` naming the directory, its owner and mode, and the uid/gid this
    process runs as -- the usual case is a host directory mounted into a container whose user
    does not own it (README "Docker"); without this check SQLite says only "unable to open
    database file".
    """
    path = sqlite_path(url)
    if path == ":memory:":
        return
    file = Path(path).expanduser()
    directory = file.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".flowplane-write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
        if file.exists():
            with file.open("r+b"):
                pass
    except OSError as err:
        try:
            st = directory.stat()
            owner = f"owned by uid {st.st_uid} gid {st.st_gid}, mode {st.st_mode & 0o7777:o}"
        except OSError:
            owner = "its owner unknown"
        uid, gid = os.getuid(), os.getgid()
        raise ConfigurationError(
            f"cannot write the database {file} ({err.strerror}): this process runs as uid {uid} "
            f"gid {gid}; the directory {directory} is {owner}. Make the directory writable for "
            f"uid {uid} (e.g. `chown {uid}:{gid} <host dir>`), or run as the directory's owner "
            f"(`docker run --user <uid>:<gid>`)"
        ) from None


# Errors after which this connection cannot write even once the cause is fixed (a file that was
# read-only when it was opened stays read-only for the connection's life): reopen before the next
# call. Primary result codes (the low byte of the extended code).
_REOPEN_ON = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN})


class _Call:
    """One storage call shared by the trio side and its worker thread. When the deadline passes,
    the trio side marks the call abandoned; the thread checks the mark before it COMMITs (and
    rolls back instead), so "timed out before COMMIT" means "not applied"."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.abandoned = False
        self.committing = False

    def begin_commit(self) -> None:
        with self.guard:
            if self.abandoned:
                raise _Abandoned
            self.committing = True


class _Abandoned(Exception):
    """The caller gave up (deadline) before this call committed anything."""


class SqliteRepository:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="flowplane-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._reopen = False  # set after an error a new connection may not have
        self._read_only: str | None = None  # why this connection cannot write, if it cannot

    @classmethod
    async def open(cls, url: str, time_limit: float = 5.0) -> SqliteRepository:
        repo = cls(url, time_limit)
        await repo._run(lambda _: repo._connect())
        return repo

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # A lock held by another connection is waited for until the storage deadline at most.
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn, self._reopen = conn, False
        self._read_only = _not_writable(conn, self.path)

    def _reconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._connect()

    async def _run(
        self,
        fn: Callable[[_Call], T],
        *,
        write_id: str | None = None,
        what: str = "read",
        limited: bool = True,
    ) -> T:
        """Run `fn` in a worker thread, holding the connection, within the storage deadline;
        driver errors become StorageError. Past the deadline the caller is answered (503 with
        Retry-After) and the thread is left to finish: a write it had not started to COMMIT
        rolls back ("not applied"); one caught inside COMMIT has an unknown outcome
        (`WriteOutcomeUnknown`, settled later through `write_outcome`)."""
        call = _Call()

        def locked() -> T:
            if not self._lock.acquire(timeout=self.timeout if limited else -1):
                raise _Abandoned
            try:
                with call.guard:
                    if call.abandoned:
                        raise _Abandoned
                if self._reopen or (what == "write" and self._read_only):
                    self._reconnect()
                return fn(call)
            except sqlite3.Error as err:
                code = err.sqlite_errorcode & 0xFF
                if code in _REOPEN_ON:
                    self._reopen = True
                # (A write that failed in COMMIT and was not looked up as committed: rolled back.)
                outcome = ": the write was not applied" if what == "write" else ""
                busy = code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                raise StorageError(
                    f"SQLite error on {self.path}: {err}{outcome}",
                    headers={"Retry-After": "1"} if busy else None,
                ) from err
            finally:
                self._lock.release()

        # The deadline is kept by a waiting thread, in real time: a frozen filesystem or a
        # held lock is a real-time stall whatever clock trio runs on.
        try:
            work = self._threads.submit(locked)
        except RuntimeError:  # shut down by aclose
            raise StorageError("the SQLite repository is closed") from None
        try:
            # (Not `limited`: housekeeping that takes what it takes, waited for without one.)
            wait = self.timeout if limited else None
            return await trio.to_thread.run_sync(work.result, wait, abandon_on_cancel=True)
        except (TimeoutError, _Abandoned):
            pass
        finally:
            with call.guard:
                call.abandoned = True  # too late to stop a call that has finished: no effect
                committing = call.committing
        if work.done() and not isinstance(work.exception(), _Abandoned):
            return work.result()  # it finished just as the deadline passed: its own outcome
        if committing and write_id is not None:
            raise WriteOutcomeUnknown(
                f"the outcome of the write is unknown: SQLite did not finish committing it within"
                f" {self.timeout:g} s ({self.path})",
                write_id,
            )
        outcome = ": the write was not applied" if what == "write" else ""
        raise StorageError(
            f"SQLite did not answer within {self.timeout:g} s ({self.path}){outcome}",
            headers={"Retry-After": "1"},
        )

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError("the SQLite repository is closed")
        return self._conn

    async def migrate(self) -> list[str]:
        migrations = load_migrations("sqlite")

        def apply(call: _Call) -> list[str]:
            c = self.conn
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in c.execute("SELECT version FROM schema_migrations")}
            applied = []
            for m in migrations:
                if m.version in done:
                    continue
                c.execute("BEGIN IMMEDIATE")
                try:
                    # executescript would COMMIT on its own; run statements one by one instead.
                    for stmt in split_statements(m.sql):
                        c.execute(stmt)
                    c.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)",
                        (m.version, m.name, datetime.now(UTC).isoformat()),
                    )
                    call.begin_commit()
                    c.execute("COMMIT")
                except BaseException:
                    _rollback(c)
                    raise
                applied.append(f"{m.version:04d}_{m.name}")
            return applied

        return await self._run(apply, what="write", limited=False)  # takes what it takes

    async def load_all(self) -> list[ResourceRow]:
        return await self._run(
            lambda _: [resource_from(r) for r in self.conn.execute(RESOURCE_SELECT).fetchall()]
        )

    async def write(self, writes: Sequence[Write]) -> None:
        if not writes:
            return  # nothing to commit (and no transaction to record)
        write_id = uuid.uuid4().hex
        statements = [*write_statements(writes, qmark), *write_log_statements(write_id, qmark)]

        def tx(call: _Call) -> None:
            c = self.conn
            if self._read_only:
                raise StorageError(self._read_only)  # reopened just now, still read-only
            c.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    c.execute(sql, params)
                call.begin_commit()
                c.execute("COMMIT")
            except BaseException:
                # A failed COMMIT either left the transaction open (roll it back) or ended it;
                # SQLite ends it by rolling back, but look the write up rather than assume.
                if not c.in_transaction:
                    outcome = _committed(c, write_id)
                    if outcome:
                        log.info("write %s committed although COMMIT reported an error", write_id)
                        return
                    if outcome is None:
                        raise WriteOutcomeUnknown(
                            "the outcome of the write is unknown: COMMIT failed and the database"
                            f" could not be read back ({self.path})",
                            write_id,
                        ) from None
                _rollback(c)
                raise

        await self._run(tx, write_id=write_id, what="write")

    async def write_outcome(self, write_id: str) -> bool | None:
        try:
            return await self._run(lambda _: _committed(self.conn, write_id))
        except StorageError:
            return None

    async def load_rows(self, table: str) -> list[dict[str, Any]]:
        select = table_select(table)

        def load(_: _Call) -> list[dict[str, Any]]:
            cur = self.conn.execute(select)
            names = [d[0] for d in cur.description]
            return [decode_record(names, r) for r in cur.fetchall()]

        return await self._run(load)

    async def query_audit(self, q: AuditQuery) -> tuple[list[AuditRow], int]:
        count_sql, select_sql, params, page_params = audit_queries(q, qmark)

        def query(_: _Call) -> tuple[list[AuditRow], int]:
            total = self.conn.execute(count_sql, params).fetchone()[0]
            rows = self.conn.execute(select_sql, page_params).fetchall()
            return [audit_from(r) for r in rows], int(total)

        return await self._run(query)

    async def prune_audit(self, before: datetime) -> int:
        return await self._prune(*audit_prune(before, qmark))

    async def _prune(self, sql: str, params: Sequence[Any]) -> int:
        """One DELETE of housekeeping in its own transaction; how many rows it deleted."""

        def prune(call: _Call) -> int:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                deleted = c.execute(sql, params).rowcount
                call.begin_commit()
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
            return int(deleted)

        # Housekeeping, not a caller's write: a large first prune may take longer than the
        # deadline, and nobody waits for it.
        return await self._run(prune, what="write", limited=False)

    async def history(
        self, key: HistoryKey, limit: int, offset: int
    ) -> tuple[list[HistoryRow], int]:
        count_sql, select_sql, params, page_params = history_queries(key, limit, offset, qmark)

        def query(_: _Call) -> tuple[list[HistoryRow], int]:
            total = self.conn.execute(count_sql, params).fetchone()[0]
            rows = self.conn.execute(select_sql, page_params).fetchall()
            return [history_from(r) for r in rows], int(total)

        return await self._run(query)

    async def history_versions(self, key: HistoryKey, upto: int, count: int) -> list[HistoryRow]:
        sql, params = history_versions_query(key, upto, count, qmark)
        return await self._run(
            lambda _: [history_from(r) for r in self.conn.execute(sql, params).fetchall()]
        )

    async def history_heads(self) -> list[tuple[str, str | None, str, int]]:
        return await self._run(
            lambda _: [(r[0], r[1], r[2], int(r[3]))
                       for r in self.conn.execute(HISTORY_HEADS).fetchall()]
        )  # fmt: skip

    async def prune_history(self, keep: int) -> int:
        return await self._prune(*history_prune(keep, qmark))

    async def upgrade_documents(
        self, upgrade: UpgradeDocument, *, commit: bool
    ) -> list[DocumentUpgrade]:
        def tx(call: _Call) -> list[DocumentUpgrade]:
            c = self.conn
            # A check takes no write lock (a running server keeps writing); an upgrade takes it
            # before reading, so nothing changes between the read and the writes.
            c.execute("BEGIN IMMEDIATE" if commit else "BEGIN")
            try:
                done = []
                for row in c.execute(DOCUMENTS_SELECT).fetchall():
                    change = upgrade(document_from(row))  # may raise: nothing is written
                    if change is not None:
                        c.execute(*document_update(change, qmark))
                        done.append(change)
                if not commit or not done:
                    _rollback(c)
                    return done
                call.begin_commit()
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
            return done

        # Start-up work, not a caller's write: it takes what it takes.
        return await self._run(tx, what="write" if commit else "read", limited=False)

    async def ping(self) -> None:
        """The database answers and this connection can write (a read-only file is reopened
        here too, so readiness follows a fixed permission without a restart)."""

        def ping(_: _Call) -> None:
            self.conn.execute("SELECT 1").fetchone()
            if self._read_only:
                self._reconnect()
                if self._read_only:
                    raise StorageError(self._read_only)

        await self._run(ping)

    async def aclose(self) -> None:
        def close(_: _Call) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        if self._closed:
            return
        self._closed = True
        try:
            await self._run(close)
        finally:
            self._threads.shutdown(wait=False)


def _not_writable(c: sqlite3.Connection, path: str) -> str | None:
    """Why `c` cannot write (None if it can). SQLite opens a file it may not write read-only
    without saying so, and BEGIN IMMEDIATE still succeeds: only a change to a page fails. So
    change one (the header's user_version, to its own value) and roll back."""
    try:
        c.execute("BEGIN IMMEDIATE")
        try:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            c.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            _rollback(c)
    except sqlite3.Error as err:
        if err.sqlite_errorcode & 0xFF in _REOPEN_ON:
            return f"SQLite error on {path}: {err}"
    return None


def _rollback(c: sqlite3.Connection) -> None:
    """Roll back the open transaction, if there still is one. SQLite rolls back on its own after
    some errors (a full disk, an I/O error): a ROLLBACK then fails with "no transaction is
    active", and that second error must not replace the first, which is the cause."""
    if not c.in_transaction:
        return
    try:
        c.execute("ROLLBACK")
    except sqlite3.Error as err:
        log.warning("SQLite ROLLBACK failed after an error: %s", err)


def _committed(c: sqlite3.Connection, write_id: str) -> bool | None:
    """Whether `write_id` is in the write log (None: the database cannot be read)."""
    try:
        return bool(c.execute(WRITE_LOG_LOOKUP.format("?"), (write_id,)).fetchone()[0])
    except sqlite3.Error:
        return None
