"""Immutable, content-versioned snapshots of encoded xDS resources (DESIGN.md §2, §5, §6.4).

A `Snapshot` is a plain value of bytes: per type URL a `TypeSnapshot` mapping resource names to
`Resource`s, each holding its serialized `google.protobuf.Any` (encoded once, deterministically).
Versions are content hashes, so the same content gives the same versions after a restart and on
every replica (xds rule 8), and a rebuild with equal content changes nothing.

Nothing here is ever mutated after construction. The only mutable part is a bounded memo on each
`TypeSnapshot` (pre-assembled response bodies, name selections); it is derived data, never part
of equality, and it lives and dies with the `TypeSnapshot` it describes. Memos are bounded by
(estimated) bytes, not only entries (issue 11, item 11): an unchanged `TypeSnapshot` lives on
in every later snapshot, so what its memo holds must not grow with what clients ask for. Name
sets are never memo keys themselves, only their `names_digest`, so a closed stream's names are
not kept alive by a cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeVar

from google.protobuf.message import Message

from flowplane.xds.scope_index import EMPTY_INDEX, ScopeIndex
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from flowplane.xds.wire import encode_any

__all__ = [
    "FULL_STATE_TYPES",
    "ORDER",
    "Resource",
    "Snapshot",
    "TypeSnapshot",
    "content_version",
    "names_digest",
    "order_key",
    "selection_cost",
]

# xds rule 14, make before break: clusters, then their endpoints, then listeners, then the route
# configurations listeners name. ADS responses of one push go out in this order.
ORDER: Final[tuple[str, ...]] = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)

# xds rule 10: SotW LDS and CDS responses carry the full state (absence = deletion); RDS and EDS
# responses carry only the requested names.
FULL_STATE_TYPES: Final[frozenset[str]] = frozenset({CLUSTER_TYPE, LISTENER_TYPE})

_RANK: Final[dict[str, int]] = {t: i for i, t in enumerate(ORDER)}
_VERSION_HEX: Final = 16
_MEMO_LIMIT: Final = 1024
_SNAPSHOT_MEMO_LIMIT: Final = 4096
MEMO_BYTES: Final = 32 * 1024 * 1024
"""Estimated bytes one `TypeSnapshot`'s or `Snapshot`'s memo may hold."""
_ENTRY_OVERHEAD: Final = 128  # a memo slot, its key and a small value
_ITEM_BYTES: Final = 64  # one entry of a memoised mapping (dict slot + references)

T = TypeVar("T")


def order_key(type_url: str) -> tuple[int, str]:
    """Sort key placing the types of `ORDER` first, in that order, then any other type by URL."""
    return (_RANK.get(type_url, len(ORDER)), type_url)


def content_version(pairs: Iterable[tuple[str, str]]) -> str:
    """The version of a set of resources: a hash over its (name, version) pairs.

    `pairs` must already be sorted by name (callers iterate name-sorted mappings). Equal content
    gives an equal version anywhere, any time (xds rule 8).
    """
    h = hashlib.sha256()
    for name, version in pairs:
        h.update(name.encode())
        h.update(b"\x00")
        h.update(version.encode())
        h.update(b"\n")
    return h.hexdigest()[:_VERSION_HEX]


def names_digest(names: Iterable[str]) -> bytes:
    """A 16-byte digest of a set of names (order-insensitive): what shared caches are keyed by
    instead of the set itself, so that they hold 16 bytes per entry, not the names."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(names):
        h.update(name.encode())
        h.update(b"\x00")
    return h.digest()


def selection_cost(value: tuple[Mapping[str, object], str]) -> int:
    """Estimated bytes of a memoised (name -> resource selection, version) pair."""
    return _ENTRY_OVERHEAD + _ITEM_BYTES * len(value[0])


def _default_cost(value: object) -> int:
    if isinstance(value, bytes | str):
        return _ENTRY_OVERHEAD + len(value)
    return _ENTRY_OVERHEAD


class _Memo:
    """A dict bounded by entries and by the estimated bytes of its values; past either bound
    the oldest entries are dropped (no bookkeeping on a hit: it is the hot path)."""

    __slots__ = ("_bytes", "_costs", "_entries", "_max_bytes", "_max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._entries: dict[Hashable, object] = {}
        self._costs: dict[Hashable, int] = {}
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    def get(self, key: Hashable, make: Callable[[], T], cost: Callable[[T], int] | None) -> T:
        try:
            return self._entries[key]  # type: ignore[return-value]
        except KeyError:
            pass
        value = make()
        size = cost(value) if cost is not None else _default_cost(value)
        while self._entries and (
            len(self._entries) >= self._max_entries or self._bytes + size > self._max_bytes
        ):
            oldest = next(iter(self._entries))
            del self._entries[oldest]
            self._bytes -= self._costs.pop(oldest)
        self._entries[key] = value
        self._costs[key] = size
        self._bytes += size
        return value

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclass(frozen=True, slots=True)
class Resource:
    """One encoded xDS resource.

    `any_bytes` is the serialized `google.protobuf.Any` (type_url + value); `version` is the first
    16 hex digits of its sha256, so it changes exactly when the encoded content changes.
    """

    name: str
    version: str
    any_bytes: bytes

    @classmethod
    def from_any_bytes(cls, name: str, any_bytes: bytes) -> Resource:
        """The resource for already serialized `Any` bytes (the version is derived from them)."""
        return cls(name, hashlib.sha256(any_bytes).hexdigest()[:_VERSION_HEX], any_bytes)

    @classmethod
    def encode(cls, type_url: str, name: str, message: Message) -> Resource:
        """Encode `message` once, deterministically, as an `Any` of `type_url`.

        Raises ValueError if `type_url` does not name `message`'s type (a translator bug).
        """
        if type_url.rpartition("/")[2] != message.DESCRIPTOR.full_name:
            raise ValueError(
                f"type URL {type_url!r} does not match message {message.DESCRIPTOR.full_name}"
            )
        value = message.SerializeToString(deterministic=True)
        return cls.from_any_bytes(name, encode_any(type_url, value))


class TypeSnapshot:
    """All resources of one type URL at one moment, sorted by name, with their set version.

    `version` = `content_version` over the sorted (name, resource version) pairs, computed once
    at construction. The mapping is read-only; the instance is immutable apart from `memo`.
    """

    __slots__ = ("_memo", "_resources", "_version", "type_url")

    def __init__(self, type_url: str, resources: Mapping[str, Resource]) -> None:
        for name, res in resources.items():
            if name != res.name:
                raise ValueError(f"resource {res.name!r} is filed under the name {name!r}")
        ordered = dict(sorted(resources.items()))
        self.type_url: Final = type_url
        self._resources: Final = MappingProxyType(ordered)
        self._version: Final = content_version((n, r.version) for n, r in ordered.items())
        self._memo = _Memo(_MEMO_LIMIT, MEMO_BYTES)

    @property
    def resources(self) -> Mapping[str, Resource]:
        """name -> Resource, iterating in name order (read-only)."""
        return self._resources

    @property
    def version(self) -> str:
        return self._version

    def __len__(self) -> int:
        return len(self._resources)

    def __iter__(self) -> Iterator[str]:
        return iter(self._resources)

    def __contains__(self, name: object) -> bool:
        return name in self._resources

    def get(self, name: str) -> Resource | None:
        return self._resources.get(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TypeSnapshot):
            return NotImplemented
        return (self.type_url, self._version) == (other.type_url, other._version)

    def __hash__(self) -> int:
        return hash((self.type_url, self._version))

    def __repr__(self) -> str:
        return f"TypeSnapshot({self.type_url!r}, {len(self)} resources, version={self._version})"

    def memo(
        self, key: Hashable, make: Callable[[], T], *, cost: Callable[[T], int] | None = None
    ) -> T:
        """`make()` computed once per `key` for this (immutable) content, then reused.

        Derived data only (e.g. a response body shared by every stream owed the same content).
        `cost` estimates a value's bytes (default: the length of bytes or str, else a small
        constant). Bounded: past `_MEMO_LIMIT` entries or `MEMO_BYTES` estimated bytes the
        oldest entries are dropped, and recomputed on demand. Keys must be small (a name set is
        keyed by its `names_digest`).
        """
        return self._memo.get(key, make, cost)

    @property
    def memo_bytes(self) -> int:
        """Estimated bytes the memo holds (for tests and diagnostics)."""
        return self._memo.bytes


_EMPTY: dict[str, TypeSnapshot] = {}


def _empty(type_url: str) -> TypeSnapshot:
    # One shared empty TypeSnapshot per known type URL, so "no resources" has a stable identity.
    # Unknown type URLs (whatever a client asks for) get a fresh one: this map must not grow.
    ts = _EMPTY.get(type_url)
    if ts is None:
        ts = TypeSnapshot(type_url, {})
        if type_url in _RANK:
            _EMPTY[type_url] = ts
    return ts


class Snapshot:
    """Everything Flowplane serves at one moment: type URL -> `TypeSnapshot`, plus a serial.

    `serial` counts publications by one builder (diagnostics only: replicas compare versions,
    never serials). Types absent from `types` read as empty. `index` describes the domain
    resources behind the xDS resources (teams, references), for per-node scoping
    (`flowplane.xds.scope`); a snapshot built without one has `EMPTY_INDEX`.
    """

    __slots__ = ("_index", "_memo", "_types", "serial")

    def __init__(
        self,
        types: Mapping[str, TypeSnapshot],
        serial: int,
        *,
        index: ScopeIndex | None = None,
    ) -> None:
        for url, ts in types.items():
            if url != ts.type_url:
                raise ValueError(f"type snapshot for {ts.type_url!r} is filed under {url!r}")
        self._types: Final = MappingProxyType(dict(types))
        self.serial: Final = serial
        self._index: Final = EMPTY_INDEX if index is None else index
        self._memo = _Memo(_SNAPSHOT_MEMO_LIMIT, MEMO_BYTES)

    @property
    def index(self) -> ScopeIndex:
        """The scoping index the builder attached (`EMPTY_INDEX` if none was)."""
        return self._index

    def memo(
        self, key: Hashable, make: Callable[[], T], *, cost: Callable[[T], int] | None = None
    ) -> T:
        """`make()` computed once per `key` for this (immutable) snapshot, then reused.

        Derived data only (e.g. the scoped view every stream of one scope shares). Bounded like
        `TypeSnapshot.memo`: past `_SNAPSHOT_MEMO_LIMIT` entries or `MEMO_BYTES` estimated bytes
        (`cost`) the oldest entries are dropped.
        """
        return self._memo.get(key, make, cost)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls({}, 0)

    @property
    def types(self) -> Mapping[str, TypeSnapshot]:
        return self._types

    def get(self, type_url: str) -> TypeSnapshot:
        """The resources of `type_url` (an empty `TypeSnapshot` if there are none)."""
        ts = self._types.get(type_url)
        return ts if ts is not None else _empty(type_url)

    def version(self, type_url: str) -> str:
        return self.get(type_url).version

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        return self.get(type_url).resources

    def versions(self) -> dict[str, str]:
        """type URL -> type version, in `ORDER` (for logs, metrics and `/api/v1/nodes`)."""
        return {url: self._types[url].version for url in sorted(self._types, key=order_key)}

    def __repr__(self) -> str:
        return f"Snapshot(serial={self.serial}, {self.versions()})"
