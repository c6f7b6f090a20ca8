"""The index of a snapshot's domain resources that per-node scoping reads (sans-I/O).

Scoping (`flowplane.xds.scope`) never decodes protobufs: the `SnapshotBuilder` attaches a
`ScopeIndex` to every snapshot it publishes — per domain resource its team, its direct and
transitive references, and the xDS resources it produced — maintained incrementally and copied
on write like the snapshot itself.

It lives apart from `scope.py` so that imports inside `xds/` flow one way (DESIGN.md §3):
`snapshot.py` holds an index, `scope.py` reads snapshots, and this module needs neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from flowplane.domain.resources import Kind, Ref

__all__ = ["EMPTY_INDEX", "IndexEntry", "IndexUpdate", "ScopeIndex"]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What scoping needs to know about one domain resource.

    `refs` are the resources it names directly, `needs` everything it needs transitively
    (a listener: its route configs and clusters, including the clusters of those route configs;
    a route config: its clusters; a cluster: nothing). `outputs` are the xDS resources it
    produced, as (type URL, resource name).
    """

    team: str | None
    refs: frozenset[Ref]
    needs: frozenset[Ref]
    outputs: tuple[tuple[str, str], ...]

    @property
    def route_configs(self) -> frozenset[str]:
        """Names of the route configurations this resource needs (transitively)."""
        return frozenset(r.name for r in self.needs if r.kind is Kind.ROUTE_CONFIG)

    @property
    def clusters(self) -> frozenset[str]:
        """Names of the clusters this resource needs (transitively)."""
        return frozenset(r.name for r in self.needs if r.kind is Kind.CLUSTER)


IndexUpdate = tuple[str | None, frozenset[Ref], tuple[tuple[str, str], ...]]
"""(team, direct references, outputs) of a changed domain resource; see `ScopeIndex.updated`."""

_NO_NAMES: Final[frozenset[str]] = frozenset()


class ScopeIndex:
    """Immutable index of a snapshot's domain resources: per kind, name -> `IndexEntry`; and per
    team (None = shared), the names of its listeners.

    Updated by `updated`, which copies on write only the per-kind maps and team sets that change
    and shares the rest with the previous index.
    """

    __slots__ = ("_kinds", "_team_listeners")

    def __init__(
        self,
        kinds: Mapping[Kind, Mapping[str, IndexEntry]],
        team_listeners: Mapping[str | None, frozenset[str]],
    ) -> None:
        self._kinds: Final = MappingProxyType(dict(kinds))
        self._team_listeners: Final = MappingProxyType(dict(team_listeners))

    def of_kind(self, kind: Kind) -> Mapping[str, IndexEntry]:
        """name -> entry for `kind` (read-only)."""
        return self._kinds.get(kind, _NO_ENTRIES)

    @property
    def listeners(self) -> Mapping[str, IndexEntry]:
        return self.of_kind(Kind.LISTENER)

    @property
    def route_configs(self) -> Mapping[str, IndexEntry]:
        return self.of_kind(Kind.ROUTE_CONFIG)

    @property
    def clusters(self) -> Mapping[str, IndexEntry]:
        return self.of_kind(Kind.CLUSTER)

    def get(self, ref: Ref) -> IndexEntry | None:
        return self.of_kind(ref.kind).get(ref.name)

    def team_listeners(self, team: str | None) -> frozenset[str]:
        """Names of `team`'s listeners (`None`: the shared, team-less ones)."""
        return self._team_listeners.get(team, _NO_NAMES)

    def __len__(self) -> int:
        return sum(len(m) for m in self._kinds.values())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k.value}={len(m)}" for k, m in self._kinds.items())
        return f"ScopeIndex({sizes})"

    def updated(
        self,
        changes: Mapping[Ref, IndexUpdate | None],
        referrers: Callable[[Ref], Iterable[Ref]],
    ) -> ScopeIndex:
        """The index after `changes` (None = deleted); `self` if no entry changes.

        `referrers(ref)` must give the resources that named `ref` before the change (the
        builder's reverse index). The change must leave no dangling references (the builder has
        checked that). Cost follows the change: transitive `needs` are recomputed only for
        resources whose references changed and for the resources that (transitively) name them.
        """
        # Seeds: resources whose own references change, appear or go away. Only their ancestors'
        # `needs` can change (an endpoint change to a cluster recomputes nothing).
        seeds: list[Ref] = []
        for ref, upd in changes.items():
            old = self.get(ref)
            if old is None or upd is None or old.refs != upd[1]:
                seeds.append(ref)
        dirty: set[Ref] = set(changes)
        stack = list(seeds)
        seen = set(seeds)
        while stack:
            for parent in referrers(stack.pop()):
                if parent not in seen:
                    seen.add(parent)
                    dirty.add(parent)
                    stack.append(parent)

        new: dict[Ref, IndexEntry | None] = {}

        def entry(ref: Ref) -> IndexEntry | None:
            if ref not in dirty:
                return self.get(ref)
            if ref in new:
                return new[ref]
            if ref in changes:
                upd = changes[ref]
                if upd is None:
                    new[ref] = None
                    return None
                team, refs, outputs = upd
            else:
                old = self.get(ref)
                if old is None:  # a referrer deleted by this very change
                    new[ref] = None
                    return None
                team, refs, outputs = old.team, old.refs, old.outputs
            new[ref] = IndexEntry(team, refs, refs, outputs)  # provisional: breaks cycles
            needs = set(refs)
            for child in refs:
                found = entry(child)
                if found is not None:
                    needs |= found.needs
            result = IndexEntry(team, refs, frozenset(needs), outputs)
            new[ref] = result
            return result

        for ref in dirty:
            entry(ref)

        kinds: dict[Kind, dict[str, IndexEntry]] = {}
        team_delta: dict[str | None, dict[str, bool]] = {}  # team -> name -> present
        for ref, e in new.items():
            old = self.get(ref)
            if e == old:
                continue
            m = kinds.get(ref.kind)
            if m is None:
                m = kinds[ref.kind] = dict(self.of_kind(ref.kind))  # copy on write
            if e is None:
                m.pop(ref.name, None)
            else:
                m[ref.name] = e
            if ref.kind is Kind.LISTENER:
                old_team = old.team if old is not None else None
                if old is not None and (e is None or e.team != old_team):
                    team_delta.setdefault(old_team, {})[ref.name] = False
                if e is not None and (old is None or e.team != old_team):
                    team_delta.setdefault(e.team, {})[ref.name] = True
        if not kinds:
            return self

        all_kinds: dict[Kind, Mapping[str, IndexEntry]] = dict(self._kinds)
        for kind, m in kinds.items():
            if m:
                all_kinds[kind] = MappingProxyType(m)
            else:
                all_kinds.pop(kind, None)
        teams: dict[str | None, frozenset[str]] = dict(self._team_listeners)
        for team, names in team_delta.items():
            members = set(teams.get(team, _NO_NAMES))
            for name, present in names.items():
                if present:
                    members.add(name)
                else:
                    members.discard(name)
            if members:
                teams[team] = frozenset(members)
            else:
                teams.pop(team, None)
        return ScopeIndex(all_kinds, teams)


_NO_ENTRIES: Final[Mapping[str, IndexEntry]] = MappingProxyType({})
EMPTY_INDEX: Final = ScopeIndex({}, {})
"""The index of a snapshot with no known domain resources (scoped views of it are empty)."""
