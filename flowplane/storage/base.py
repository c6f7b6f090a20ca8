"""The repository protocol every storage backend implements, and the rows it deals in.

Backends know SQL, not the domain: a row's `spec` is opaque JSON. Writes come in batches that
commit in one transaction or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources as importlib_resources
from typing import Any, Protocol

from flowplane.domain.naming import xds_name
from flowplane.errors import StorageError


@dataclass(frozen=True, slots=True)
class ResourceRow:
    kind: str
    name: str
    team: str | None
    version: int
    source: str
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    owner: str | None = None  # the id of the Platform API that made it
    schema_version: int = 1  # the shape of `spec` (flowplane.domain.schema)

    @property
    def key(self) -> str:
        """The row's primary key within its kind: the resource's xDS name (`<team>/<name>`, or
        the bare name of a shared one)."""
        return xds_name(self.team, self.name)


@dataclass(frozen=True, slots=True)
class Upsert:
    row: ResourceRow


@dataclass(frozen=True, slots=True)
class Delete:
    kind: str
    key: str  # the resource's xDS name, as `ResourceRow.key`


@dataclass(frozen=True, slots=True)
class Row:
    """A row of one of the small tables (teams, tokens, signing_keys): upserted by primary key.
    `values` maps column -> JSON-able value (dicts/lists are stored as JSON text)."""

    table: str
    key: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpdateRow:
    """Set some columns of an existing row of one of the small tables (no-op if it is gone)."""

    table: str
    key: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteRow:
    table: str
    key: str


@dataclass(frozen=True, slots=True)
class AuditRow:
    time: datetime
    actor_id: str | None
    actor_name: str | None
    action: str
    resource_type: str
    resource_name: str | None
    team: str | None
    before: Any
    after: Any
    client_address: str | None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    resource_type: str | None = None
    team: str | None = None
    actor: str | None = None  # token id or name
    since: datetime | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One version of a resource or API definition (api.md "History and rollback"). `kind` is
    a Native kind or "api"; `name` the resource's name or the API's id; `spec` None for the
    version that deleted it. Written in the transaction of the change it records."""

    kind: str
    team: str | None
    name: str
    version: int
    action: str  # create | update | delete | rollback
    actor_id: str | None
    actor_name: str | None
    at: datetime
    schema_version: int
    spec: dict[str, Any] | None
    source: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryKey:
    """Which resource's history: (kind, team, name); team None = shared."""

    kind: str
    team: str | None
    name: str


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A current document as the start-up upgrade sees it: a resource's or an API's `spec`."""

    table: str  # "resources" or "apis"
    kind: str  # a Native kind or "api"
    team: str | None
    name: str  # the resource's name, or the API's id
    schema_version: int
    spec: dict[str, Any]
    generated: dict[str, Any] | None = None  # an API's: what it made, in Native shapes

    @property
    def label(self) -> str:
        what = "API" if self.kind == "api" else self.kind.replace("_", " ")
        return f"{what} {self.name!r}" + ("" if self.team is None else f" of team {self.team!r}")


@dataclass(frozen=True, slots=True)
class DocumentUpgrade:
    """What the start-up upgrade changed (or, checking, would change) in one document."""

    before: StoredDocument
    spec: dict[str, Any]
    schema_version: int
    generated: dict[str, Any] | None = None  # an API's, when it changed too


UpgradeDocument = Callable[[StoredDocument], DocumentUpgrade | None]
"""Called for each stored document inside the upgrade transaction: the upgrade to write, None to
leave it as it is, or raise to abandon the whole upgrade (nothing written)."""

Write = Upsert | Delete | Row | UpdateRow | DeleteRow | AuditRow | HistoryRow

TABLES = {"teams": "name", "tokens": "id", "signing_keys": "kid", "apis": "id"}
""" The small tables and their primary keys. """


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


class WriteOutcomeUnknown(StorageError):
    """The connection was lost while a transaction was committing and the database could not be
    asked whether it committed. `write_id` is the transaction's id in `write_log`:
    `Repository.write_outcome(write_id)` tells the outcome once the database answers."""

    def __init__(self, message: str, write_id: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})
        self.write_id = write_id


class StaleState(StorageError):
    """Another replica committed a change this replica has not applied yet, so a write planned
    against this replica's memory might break a rule the database state no longer satisfies
    (README "Replicas"). Nothing was written; the config actor catches up from the change log
    and plans the command again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class Repository(Protocol):
    """Storage as the config actor sees it. Every method raises `StorageError` on driver failure."""

    url: str

    async def migrate(self) -> list[str]:
        """Apply pending migrations in order, each in its own transaction; return their names."""
        ...

    async def load_all(self) -> list[ResourceRow]:
        """Every stored resource (start-up rebuilds the in-memory state from this)."""
        ...

    async def write(self, writes: Sequence[Write]) -> None:
        """Apply `writes` in one transaction, recorded under a fresh id in `write_log`. Returns
        only if it committed (even when the connection failed after COMMIT). Raises
        `StorageError` if it did not commit, and `WriteOutcomeUnknown` if that cannot be known
        yet (then the caller must not assume either outcome: see `write_outcome`)."""
        ...

    async def write_outcome(self, write_id: str) -> bool | None:
        """Whether the write `write_id` committed (True), did not and never will (False), or
        cannot be known yet (None: the database does not answer). Never raises StorageError."""
        ...

    async def load_rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one of `TABLES`, as column -> value (JSON columns decoded)."""
        ...

    async def query_audit(self, q: AuditQuery) -> tuple[list[AuditRow], int]:
        """Audit rows matching `q`, newest first, and the total count matching."""
        ...

    async def prune_audit(self, before: datetime) -> int:
        """Delete the audit rows older than `before` (retention); return how many were deleted.
        A naive `before` is taken as UTC."""
        ...

    async def history(
        self, key: HistoryKey, limit: int, offset: int
    ) -> tuple[list[HistoryRow], int]:
        """The versions of `key`, newest first, and how many there are."""
        ...

    async def history_versions(self, key: HistoryKey, upto: int, count: int) -> list[HistoryRow]:
        """At most `count` versions of `key` numbered `upto` or lower, newest first (the version
        asked for and the one before it, for a diff)."""
        ...

    async def history_heads(self) -> list[tuple[str, str | None, str, int]]:
        """(kind, team, name, newest version) of every resource and API history knows, deleted
        ones included (start-up: a re-created name continues its numbering)."""
        ...

    async def prune_history(self, keep: int) -> int:
        """Delete all but the newest `keep` versions of each resource; return how many."""
        ...

    async def upgrade_documents(
        self, upgrade: UpgradeDocument, *, commit: bool
    ) -> list[DocumentUpgrade]:
        """Read every current document (resources and APIs) and write what `upgrade` returns
        for each, all in ONE transaction: either every document is upgraded or none is (a
        failure, or a process killed midway, leaves the old documents). `commit` False checks
        only: the transaction is rolled back and the list says what would have changed."""
        ...

    async def ping(self) -> None:
        """Raise `StorageError` unless the database answers."""
        ...

    async def aclose(self) -> None: ...


def load_migrations(dialect: str) -> list[Migration]:
    """The numbered `NNNN_name.sql` files shipped for `dialect`, in order."""
    folder = importlib_resources.files("flowplane.storage") / "migrations" / dialect
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            out.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    out.sort(key=lambda m: m.version)
    if len({m.version for m in out}) != len(out):
        raise RuntimeError(f"two {dialect} migrations share a number")
    return out
