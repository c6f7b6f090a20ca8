"""Per-node scoping of what the xDS server sends (api.md "Data planes"; sans-I/O).

A node's `Scope` comes from its node metadata (and the `team=<team>/...` id convention, and the
identity the edge authenticated): `scope_from_node`. `scoped(snapshot, scope)` is the `Snapshot`
such a node is served: its listeners (the team's, plus shared ones iff `include_default`, or an
explicit allowlist) and exactly the route configurations and clusters those listeners reference,
transitively. CDS and RDS are scoped too, so one team's changes — or Envoy rejections of them —
never change the versions another team's data planes see.

Scoping never decodes protobufs: the `SnapshotBuilder` attaches a `ScopeIndex` to every snapshot
it publishes (per domain resource: team, direct and transitive references, and the xDS resources
it produced), maintained incrementally and copied on write like the snapshot itself. The index
lives in `flowplane.xds.scope_index` (a snapshot holds one, so it cannot live here: this module
imports `snapshot.py`); its names are re-exported here, where scoping's callers look for them.

Views are memoised on the snapshot, one per scope (bounded by estimated bytes, like every memo:
an allowlist scope carries up to `MAX_ALLOWLIST` names), so every stream with the same scope
shares one view and therefore one set of pre-built response bodies (the `TypeSnapshot.memo`
cache). A view's
`TypeSnapshot`s are reused from the previous view of the same scope when their content is equal,
so a stream sees an unchanged type as the very same object and skips it in O(1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from flowplane.domain.naming import resolve
from flowplane.domain.resources import Kind, Ref
from flowplane.errors import BadRequest, Forbidden
from flowplane.xds.scope_index import EMPTY_INDEX, IndexEntry, IndexUpdate, ScopeIndex
from flowplane.xds.snapshot import Snapshot, TypeSnapshot

__all__ = [
    "EMPTY_INDEX",
    "MAX_ALLOWLIST",
    "IndexEntry",
    "IndexUpdate",
    "Scope",
    "ScopeIndex",
    "ScopeKind",
    "release",
    "retain",
    "scope_from_node",
    "scoped",
]

ScopeKind = Literal["all", "team", "allowlist"]

MAX_ALLOWLIST: Final = 1000
"""Listener names one node may allowlist (its metadata is client input, rule 17)."""

_TEAM_IN_ID: Final = re.compile(r"^team=([^/]+)/")
_KINDS: Final[frozenset[str]] = frozenset({"all", "team", "allowlist"})
_LAST_VIEWS_LIMIT: Final = 4096
_LAST_VIEWS_BYTES: Final = 32 * 1024 * 1024
_ITEM_BYTES: Final = 64


# -- scopes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What one node may see. Immutable and hashable: it keys the per-snapshot view memo.

    - "all": everything (legacy, unauthenticated nodes without a team); team None.
    - "team": `team`'s listeners, plus shared (team-less) ones iff `include_default`.
    - "allowlist": the listeners named in `allowlist` that exist and — if `team` is known — that
      belong to `team` or are shared.

    Use the constructors (`everything`, `for_team`, `for_allowlist`): they normalise fields that
    do not apply, so equal scopes compare (and share views) equal. Raises ValueError for an
    inconsistent combination.
    """

    kind: ScopeKind
    team: str | None = None
    include_default: bool = False
    allowlist: frozenset[str] = field(default_factory=frozenset)
    # Scopes are looked up once per stream per publication: hash once, not per lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_hash", hash((self.kind, self.team, self.include_default, self.allowlist))
        )
        if self.kind not in _KINDS:
            raise ValueError(f"unknown scope kind {self.kind!r}")
        if self.kind == "all" and (self.team is not None or self.allowlist):
            raise ValueError("scope 'all' has neither a team nor an allowlist")
        if self.kind == "team" and (self.team is None or self.allowlist):
            raise ValueError("scope 'team' needs a team and has no allowlist")
        if self.kind == "allowlist" and not self.allowlist:
            raise ValueError("scope 'allowlist' needs at least one listener name")

    @classmethod
    def everything(cls) -> Scope:
        return _ALL

    @classmethod
    def for_team(cls, team: str, *, include_default: bool = False) -> Scope:
        return cls("team", team, include_default)

    @classmethod
    def for_allowlist(cls, names: Iterable[str], *, team: str | None = None) -> Scope:
        # include_default does not apply: named shared listeners are always eligible.
        return cls("allowlist", team, False, frozenset(names))


_ALL: Final = Scope("all")


def scope_from_node(
    node_id: str | None,
    metadata: Mapping[str, Any],
    *,
    identity_team: str | None = None,
    auth_required: bool = False,
) -> Scope:
    """The scope of a node, from its metadata (Envoy's `node.metadata` Struct as a dict).

    Keys read: `team` (str), `scope` ("team" | "allowlist" | "all"), `include_default` (bool),
    `listener_allowlist` (list of listener names). The team comes from metadata, else from a
    node id of the form `team=<team>/...`, else from `identity_team` (the team the edge
    authenticated: client certificate or token). The scope's `team` is the node's team wherever
    it is shown (`StreamInfo.team`, `GET /api/v1/nodes`): this function alone decides it.

    A non-empty `listener_allowlist` beats the team (scope "allowlist"). Without any team the
    node sees everything — unless `auth_required`.

    Raises `BadRequest` for malformed metadata (wrong types, an unknown `scope`, scope
    "allowlist" without names, more than `MAX_ALLOWLIST` names) and `Forbidden` if the node
    claims a team its identity does not grant, if no team is known while `auth_required`, or if a
    node with a team asks for scope "all".
    """
    claimed = _team(metadata.get("team"))
    if claimed is None and node_id:
        m = _TEAM_IN_ID.match(node_id)
        claimed = m.group(1) if m else None
    if identity_team is not None and claimed is not None and claimed != identity_team:
        raise Forbidden(f"node claims team {claimed!r} but its identity grants {identity_team!r}")
    team = claimed if claimed is not None else identity_team
    if team is None and auth_required:
        raise Forbidden("node has no team (metadata, node id or identity) and auth is required")

    kind = metadata.get("scope")
    if kind is not None and kind not in _KINDS:
        raise BadRequest(f"node metadata scope must be one of team, allowlist, all; got {kind!r}")
    allowlist = _allowlist(metadata.get("listener_allowlist"))
    if allowlist or kind == "allowlist":
        if not allowlist:
            raise BadRequest("node metadata scope 'allowlist' needs a non-empty listener_allowlist")
        # Named as references are: inside the node's team (`edge` is the team's `<team>/edge`),
        # `shared/<name>` a shared one (flowplane.domain.naming); the scope holds the keys.
        return Scope.for_allowlist((resolve(team, name) for name in allowlist), team=team)
    if team is None:
        return _ALL  # legacy mode: an unauthenticated node without a team sees everything
    if kind == "all":
        raise Forbidden(f"a node of team {team!r} cannot have scope 'all'")
    return Scope.for_team(team, include_default=_flag(metadata.get("include_default")))


def _team(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"node metadata team must be a non-empty string; got {value!r}")
    return value


def _flag(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    # Hand-written bootstraps sometimes quote YAML booleans.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"node metadata include_default must be a boolean; got {value!r}")


def _allowlist(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    items: list[object]
    if isinstance(value, str):
        items = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise BadRequest("node metadata listener_allowlist must be a list of listener names")
    if len(items) > MAX_ALLOWLIST:
        raise BadRequest(f"node metadata listener_allowlist names more than {MAX_ALLOWLIST}")
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not item:
            raise BadRequest(f"listener_allowlist entries must be non-empty strings; got {item!r}")
        names.add(item)
    return frozenset(names)


# -- views ------------------------------------------------------------------------------------

# Scope -> the last view built for it: lets the next view reuse equal TypeSnapshots (so streams
# see unchanged types as the same object). Bounded by entries and estimated bytes (a scope holds
# its allowlist); eviction, oldest first, only costs that reuse.
_last_views: dict[Scope, tuple[Snapshot, int]] = {}
_last_views_bytes = 0
# Scope -> streams using it (`retain`/`release`): a scope's last view is dropped with its last
# stream, so what clients asked for is released with their streams (issue 11, item 11).
_streams: dict[Scope, int] = {}


def retain(scope: Scope) -> None:
    """A stream now serves `scope` (call `release` when it ends)."""
    _streams[scope] = _streams.get(scope, 0) + 1


def release(scope: Scope) -> None:
    """A stream serving `scope` ended; with the last one, the scope's cached view is dropped."""
    global _last_views_bytes
    left = _streams.get(scope, 0) - 1
    if left > 0:
        _streams[scope] = left
        return
    _streams.pop(scope, None)
    old = _last_views.pop(scope, None)
    if old is not None:
        _last_views_bytes -= old[1]


def view_cost(scope: Scope, view: Snapshot) -> int:
    """Estimated bytes a memoised view and its scope key hold (the resources are shared)."""
    items = len(scope.allowlist) + sum(len(ts) for ts in view.types.values())
    return 256 + _ITEM_BYTES * items


def scoped(snapshot: Snapshot, scope: Scope) -> Snapshot:
    """The part of `snapshot` a node with `scope` is served; `snapshot` itself for "all".

    Contains the scope's listeners and exactly the xDS resources they need (route configs,
    clusters and whatever else those domain resources produced, e.g. endpoints), as the same
    `Resource` objects (nothing is re-encoded); per-type versions are content versions over what
    is included. Resources the snapshot's index does not know are never included. Memoised on
    `snapshot` per scope: equal scopes get the same view object.
    """
    if scope.kind == "all":
        return snapshot
    # Keyed by the Scope itself (it equals nothing but Scopes): the cheapest lookup per stream.
    return snapshot.memo(
        scope, lambda: _view(snapshot, scope), cost=lambda view: view_cost(scope, view)
    )


def _roots(index: ScopeIndex, scope: Scope) -> Iterable[str]:
    if scope.kind == "team":
        own = index.team_listeners(scope.team)
        return own | index.team_listeners(None) if scope.include_default else own
    listeners = index.listeners
    eligible = (scope.team, None)
    return [
        name
        for name in scope.allowlist
        if (e := listeners.get(name)) is not None and (scope.team is None or e.team in eligible)
    ]


def _view(snapshot: Snapshot, scope: Scope) -> Snapshot:
    index = snapshot.index
    refs: set[Ref] = set()
    listeners = index.listeners
    for name in _roots(index, scope):
        refs.add(Ref(Kind.LISTENER, name))
        refs |= listeners[name].needs
    by_url: dict[str, list[str]] = {}
    for ref in refs:
        e = index.get(ref)
        if e is not None:
            for url, name in e.outputs:
                by_url.setdefault(url, []).append(name)

    last = _last_views.get(scope)
    previous = last[0] if last is not None else None
    types: dict[str, TypeSnapshot] = {}
    for url, names in by_url.items():
        base = snapshot.get(url)
        included = {n: r for n in names if (r := base.get(n)) is not None}
        if not included:
            continue
        ts = base if len(included) == len(base) else TypeSnapshot(url, included)
        before = previous.types.get(url) if previous is not None else None
        types[url] = before if before is not None and before == ts else ts
    view = Snapshot(types, snapshot.serial, index=index)
    _remember(scope, view)
    return view


def _remember(scope: Scope, view: Snapshot) -> None:
    global _last_views_bytes
    old = _last_views.pop(scope, None)
    if old is not None:
        _last_views_bytes -= old[1]
    cost = view_cost(scope, view)
    while _last_views and (
        len(_last_views) >= _LAST_VIEWS_LIMIT or _last_views_bytes + cost > _LAST_VIEWS_BYTES
    ):
        _last_views_bytes -= _last_views.pop(next(iter(_last_views)))[1]
    _last_views[scope] = (view, cost)
    _last_views_bytes += cost
