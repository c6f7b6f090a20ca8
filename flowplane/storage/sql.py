"""SQL shared by the backends: the statements for each write, the audit query, and decoding of
result rows. Only the placeholder style differs (`?` for SQLite, `$n` for PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flowplane.errors import StorageError
from flowplane.storage.base import (
    TABLES,
    AuditQuery,
    AuditRow,
    Delete,
    DeleteRow,
    ResourceRow,
    Row,
    UpdateRow,
    Upsert,
    Write,
)

Placeholder = Callable[[int], str]  # 1-based parameter index -> placeholder text
Statement = tuple[str, tuple[Any, ...]]

JSON_COLUMNS = frozenset({"quotas", "scopes", "teams", "spec", "generated"})
RESOURCE_SELECT = (
    "SELECT kind, name, team, version, source, spec, created_at, updated_at, owner"
    " FROM resources ORDER BY kind, xds_name"
)
AUDIT_COLUMNS = (
    "time, actor_id, actor_name, action, resource_type, resource_name, team, before, after,"
    " client_address"
)


def qmark(_: int) -> str:
    return "?"


def dollar(i: int) -> str:
    return f"${i}"


def _marks(p: Placeholder, n: int, start: int = 1) -> str:
    return ", ".join(p(i) for i in range(start, start + n))


def _encode(column: str, value: Any) -> Any:
    if column in JSON_COLUMNS or isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def write_statements(
    writes: Sequence[Write], p: Placeholder, *, cas: bool = False
) -> list[Statement]:
    """One statement per write, to run in order inside one transaction. With `cas`, a resource
    upsert is a compare-and-swap: it inserts a new row, or updates the stored one only if the
    stored version is the one before the new version (an update of version N writes N + 1), so
    it changes no row when another writer got there first (the caller checks the count)."""
    out: list[Statement] = []
    for w in writes:
        if isinstance(w, Upsert):
            r = w.row
            out.append(
                (
                    "INSERT INTO resources (kind, xds_name, name, team, version, source, spec,"
                    f" created_at, updated_at, owner) VALUES ({_marks(p, 10)})"
                    " ON CONFLICT (kind, xds_name) DO"
                    " UPDATE SET version = excluded.version,"
                    " source = excluded.source, spec = excluded.spec,"
                    " updated_at = excluded.updated_at, owner = excluded.owner"
                    + (" WHERE resources.version = excluded.version - 1" if cas else ""),
                    (
                        r.kind,
                        r.key,
                        r.name,
                        r.team,
                        r.version,
                        r.source,
                        json.dumps(r.spec, separators=(",", ":")),
                        r.created_at.isoformat(),
                        r.updated_at.isoformat(),
                        r.owner,
                    ),
                )
            )
        elif isinstance(w, Delete):
            out.append(
                (
                    f"DELETE FROM resources WHERE kind = {p(1)} AND xds_name = {p(2)}",
                    (w.kind, w.key),
                )
            )
        elif isinstance(w, Row):
            if w.table not in TABLES:
                raise StorageError(f"unknown table {w.table!r}")
            key = TABLES[w.table]
            cols = [key, *w.values]
            updates = ", ".join(f"{c} = excluded.{c}" for c in w.values)
            out.append(
                (
                    f"INSERT INTO {w.table} ({', '.join(cols)}) VALUES ({_marks(p, len(cols))})"
                    f" ON CONFLICT ({key}) DO UPDATE SET {updates}",
                    (w.key, *(_encode(c, v) for c, v in w.values.items())),
                )
            )
        elif isinstance(w, UpdateRow):
            if w.table not in TABLES:
                raise StorageError(f"unknown table {w.table!r}")
            sets = ", ".join(f"{c} = {p(i)}" for i, c in enumerate(w.values, start=1))
            out.append(
                (
                    f"UPDATE {w.table} SET {sets} WHERE {TABLES[w.table]} = {p(len(w.values) + 1)}",
                    (*(_encode(c, v) for c, v in w.values.items()), w.key),
                )
            )
        elif isinstance(w, DeleteRow):
            out.append((f"DELETE FROM {w.table} WHERE {TABLES[w.table]} = {p(1)}", (w.key,)))
        elif isinstance(w, AuditRow):
            out.append(
                (
                    f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({_marks(p, 10)})",
                    (
                        w.time.isoformat(),
                        w.actor_id,
                        w.actor_name,
                        w.action,
                        w.resource_type,
                        w.resource_name,
                        w.team,
                        None if w.before is None else json.dumps(w.before),
                        None if w.after is None else json.dumps(w.after),
                        w.client_address,
                    ),
                )
            )
    return out


def change_entries(writes: Sequence[Write]) -> list[list[str]]:
    """What a write batch touched, for the change log (PostgreSQL 0006): `["resource", kind,
    xds_name]` per resource, `[table, key]` per row of a small table; audit rows change no state
    and are left out (a batch of audit rows only has no entries, and no change-log row)."""
    out: list[list[str]] = []
    for w in writes:
        if isinstance(w, Upsert):
            out.append(["resource", w.row.kind, w.row.key])
        elif isinstance(w, Delete):
            out.append(["resource", w.kind, w.key])
        elif isinstance(w, Row | UpdateRow | DeleteRow):
            out.append([w.table, w.key])
    return out


WRITE_LOG_KEEP = timedelta(days=1)


def write_log_statements(write_id: str, p: Placeholder) -> list[Statement]:
    """Record `write_id` in the transaction being committed (and prune day-old ids: an outcome
    is looked up seconds after its commit, never a day later)."""
    now = datetime.now(UTC)
    return [
        (
            f"DELETE FROM write_log WHERE committed_at < {p(1)}",
            ((now - WRITE_LOG_KEEP).isoformat(),),
        ),
        (
            f"INSERT INTO write_log (id, committed_at) VALUES ({p(1)}, {p(2)})",
            (write_id, now.isoformat()),
        ),
    ]


WRITE_LOG_LOOKUP = "SELECT count(*) FROM write_log WHERE id = {}"


def audit_queries(q: AuditQuery, p: Placeholder) -> tuple[str, str, list[Any], list[Any]]:
    """(count SQL, select SQL, filter params, filter params + limit + offset)."""
    where: list[str] = []
    params: list[Any] = []

    def add(cond: Callable[[], str], *values: Any) -> None:
        params.extend(values)
        where.append(cond())

    if q.resource_type:
        add(lambda: f"resource_type = {p(len(params))}", q.resource_type)
    if q.team:
        add(lambda: f"team = {p(len(params))}", q.team)
    if q.actor:
        add(lambda: f"(actor_id = {p(len(params) - 1)} OR actor_name = {p(len(params))})",
            q.actor, q.actor)  # fmt: skip
    if q.since:
        # Audit times are stored as UTC ISO text and compared as text: compare in UTC too, or
        # a `since` with another offset would select by wall-clock digits, not by instant.
        # (A naive `since` is taken as UTC.)
        since = q.since.astimezone(UTC) if q.since.tzinfo is not None else q.since
        add(lambda: f"time >= {p(len(params))}", since.isoformat())
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    n = len(params)
    select = (
        f"SELECT id, {AUDIT_COLUMNS} FROM audit{clause}"
        f" ORDER BY id DESC LIMIT {p(n + 1)} OFFSET {p(n + 2)}"
    )
    return f"SELECT count(*) FROM audit{clause}", select, params, [*params, q.limit, q.offset]


def audit_prune(before: datetime, p: Placeholder) -> tuple[str, list[Any]]:
    """(SQL, params) deleting the audit rows older than `before` (compared in UTC, as
    `audit_queries` compares `since`: times are stored as UTC ISO text)."""
    when = before.astimezone(UTC) if before.tzinfo is not None else before
    return f"DELETE FROM audit WHERE time < {p(1)}", [when.isoformat()]


def resource_from(r: Sequence[Any]) -> ResourceRow:
    return ResourceRow(
        kind=r[0], name=r[1], team=r[2], version=r[3], source=r[4], spec=json.loads(r[5]),
        created_at=datetime.fromisoformat(r[6]), updated_at=datetime.fromisoformat(r[7]),
        owner=r[8],
    )  # fmt: skip


def audit_from(r: Sequence[Any]) -> AuditRow:
    return AuditRow(
        id=r[0], time=datetime.fromisoformat(r[1]), actor_id=r[2], actor_name=r[3],
        action=r[4], resource_type=r[5], resource_name=r[6], team=r[7],
        before=None if r[8] is None else json.loads(r[8]),
        after=None if r[9] is None else json.loads(r[9]),
        client_address=r[10],
    )  # fmt: skip


def table_select(table: str) -> str:
    if table not in TABLES:
        raise StorageError(f"unknown table {table!r}")
    return f"SELECT * FROM {table} ORDER BY {TABLES[table]}"


def decode_record(names: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    return {
        n: (json.loads(v) if n in JSON_COLUMNS and v is not None else v)
        for n, v in zip(names, values, strict=True)
    }


def split_statements(sql: str) -> list[str]:
    """A migration file's statements (`;`-separated, `--` comment lines dropped)."""
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
