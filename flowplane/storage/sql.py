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
    DocumentUpgrade,
    HistoryKey,
    HistoryRow,
    ResourceRow,
    Row,
    StoredDocument,
    UpdateRow,
    Upsert,
    Write,
)

Placeholder = Callable[[int], str]  # 1-based parameter index -> placeholder text
Statement = tuple[str, tuple[Any, ...]]

JSON_COLUMNS = frozenset({"quotas", "scopes", "teams", "spec", "generated"})
RESOURCE_SELECT = (
    "SELECT kind, name, team, version, source, spec, created_at, updated_at, owner,"
    " schema_version FROM resources ORDER BY kind, xds_name"
)
HISTORY_COLUMNS = (
    "kind, team, name, version, action, actor_id, actor_name, at, schema_version, source,"
    " owner, spec"
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
                    f" created_at, updated_at, owner, schema_version) VALUES ({_marks(p, 11)})"
                    " ON CONFLICT (kind, xds_name) DO"
                    " UPDATE SET version = excluded.version,"
                    " source = excluded.source, spec = excluded.spec,"
                    " updated_at = excluded.updated_at, owner = excluded.owner,"
                    " schema_version = excluded.schema_version"
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
                        r.schema_version,
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
        elif isinstance(w, HistoryRow):
            out.append(
                (
                    f"INSERT INTO history ({HISTORY_COLUMNS}) VALUES ({_marks(p, 12)})",
                    (
                        w.kind, w.team, w.name, w.version, w.action, w.actor_id, w.actor_name,
                        w.at.isoformat(), w.schema_version, w.source, w.owner,
                        None if w.spec is None else json.dumps(w.spec, separators=(",", ":")),
                    ),
                )
            )  # fmt: skip
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
        owner=r[8], schema_version=r[9],
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


# -- history ----------------------------------------------------------------------------------
# A key's team is compared through COALESCE (null = shared), as the unique index does.


def _key_where(key: HistoryKey, p: Placeholder) -> tuple[str, list[Any]]:
    return (
        f"kind = {p(1)} AND COALESCE(team, '') = {p(2)} AND name = {p(3)}",
        [key.kind, key.team or "", key.name],
    )


def history_queries(
    key: HistoryKey, limit: int, offset: int, p: Placeholder
) -> tuple[str, str, list[Any], list[Any]]:
    """(count SQL, select SQL, count params, select params): a key's versions, newest first."""
    where, params = _key_where(key, p)
    return (
        f"SELECT count(*) FROM history WHERE {where}",
        f"SELECT {HISTORY_COLUMNS} FROM history WHERE {where}"
        f" ORDER BY version DESC LIMIT {p(4)} OFFSET {p(5)}",
        params,
        [*params, limit, offset],
    )


def history_versions_query(
    key: HistoryKey, upto: int, count: int, p: Placeholder
) -> tuple[str, list[Any]]:
    where, params = _key_where(key, p)
    return (
        f"SELECT {HISTORY_COLUMNS} FROM history WHERE {where} AND version <= {p(4)}"
        f" ORDER BY version DESC LIMIT {p(5)}",
        [*params, upto, count],
    )


HISTORY_HEADS = "SELECT kind, team, name, max(version) FROM history GROUP BY kind, team, name"


def history_prune(keep: int, p: Placeholder) -> tuple[str, list[Any]]:
    """(SQL, params) deleting all but the newest `keep` versions of every key (PARTITION BY
    groups null teams together, as the key does)."""
    return (
        "DELETE FROM history WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
        " (PARTITION BY kind, team, name ORDER BY version DESC) AS n FROM history) ranked"
        f" WHERE n > {p(1)})",
        [keep],
    )


def history_from(r: Sequence[Any]) -> HistoryRow:
    return HistoryRow(
        kind=r[0], team=r[1], name=r[2], version=int(r[3]), action=r[4], actor_id=r[5],
        actor_name=r[6], at=datetime.fromisoformat(r[7]), schema_version=int(r[8]),
        source=r[9], owner=r[10], spec=None if r[11] is None else json.loads(r[11]),
    )  # fmt: skip


# -- the start-up upgrade of stored documents -------------------------------------------------

DOCUMENTS_SELECT = (
    "SELECT 'resources', kind, team, name, schema_version, spec, CAST(NULL AS TEXT)"
    " FROM resources"
    " UNION ALL SELECT 'apis', 'api', team, id, schema_version, spec, generated FROM apis"
)


def document_from(r: Sequence[Any]) -> StoredDocument:
    return StoredDocument(
        table=r[0], kind=r[1], team=r[2], name=r[3], schema_version=int(r[4]),
        spec=json.loads(r[5]), generated=None if r[6] is None else json.loads(r[6]),
    )  # fmt: skip


def document_update(u: DocumentUpgrade, p: Placeholder) -> Statement:
    """The UPDATE writing one upgraded document (only if it is still the version read)."""
    spec = json.dumps(u.spec, separators=(",", ":"))
    d = u.before
    if d.table == "apis":
        generated = json.dumps(
            u.generated if u.generated is not None else d.generated, separators=(",", ":")
        )
        return (
            f"UPDATE apis SET spec = {p(1)}, schema_version = {p(2)}, generated = {p(3)}"
            f" WHERE id = {p(4)}",
            (spec, u.schema_version, generated, d.name),
        )
    return (
        f"UPDATE resources SET spec = {p(1)}, schema_version = {p(2)} WHERE kind = {p(3)}"
        f" AND COALESCE(team, '') = {p(4)} AND name = {p(5)}",
        (spec, u.schema_version, d.kind, d.team or "", d.name),
    )
