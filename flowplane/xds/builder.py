"""Incremental, pure snapshot building: domain changes in, a consistent `Snapshot` out.

`SnapshotBuilder.apply` translates and encodes only the domain resources that changed (DESIGN.md
§2: a change to one cluster re-encodes one cluster), keeps every other resource's cached
`Resource`, checks the result's consistency (xds rule 16, DESIGN.md §6.4) and only then commits
it. Published snapshots are never mutated: each type's map is copied on write, and types that did
not change are shared with the previous snapshot.

Each published snapshot carries a `ScopeIndex` (team, references and produced xDS resources per
domain resource) for per-node scoping (`flowplane.xds.scope`), updated incrementally alongside.

No I/O: the actor in `flowplane/actors/` feeds it changes and publishes what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from google.protobuf.message import Message
from pydantic import BaseModel

from flowplane.domain.resources import Kind, Ref
from flowplane.domain.resources import references as domain_references
from flowplane.errors import Conflict, FieldProblem
from flowplane.xds.scope_index import IndexUpdate
from flowplane.xds.snapshot import Resource, Snapshot, TypeSnapshot

__all__ = ["Change", "References", "SnapshotBuilder", "Translate"]

Translate = Callable[[Kind, BaseModel], list[tuple[str, str, Message]]]
"""(kind, model) -> [(type URL, resource name, message)]: the xDS resources one domain resource
becomes (e.g. a cluster -> a Cluster, maybe also its ClusterLoadAssignment)."""

References = Callable[[Kind, BaseModel], set[Ref]]
"""(kind, model) -> every domain resource the model names (which must exist)."""

Change = tuple[Kind, str, BaseModel | None]
"""(kind, name, model); a model of None means the resource was deleted."""

_Key = tuple[Kind, str]
_Output = tuple[tuple[str, Resource], ...]  # (type URL, resource) per xDS resource produced


class SnapshotBuilder:
    """Holds the current snapshot and the per-domain-resource caches that make rebuilds cheap.

    Not thread-safe; owned by one task (the snapshot builder actor).
    """

    def __init__(self, translate: Translate, references: References = domain_references) -> None:
        self._translate: Final = translate
        self._references: Final = references
        self._snapshot = Snapshot.empty()
        self._outputs: dict[_Key, _Output] = {}
        self._refs: dict[_Key, frozenset[Ref]] = {}
        self._referrers: dict[Ref, set[_Key]] = {}  # reverse of _refs, for deletions
        self._owner: dict[tuple[str, str], _Key] = {}  # (type URL, name) -> producing resource
        self.encoded = 0
        """How many xDS resources were encoded so far (a metric; tests measure increments)."""

    @property
    def snapshot(self) -> Snapshot:
        """The current (last successfully applied) snapshot; empty, serial 0, initially."""
        return self._snapshot

    def apply(self, changes: Iterable[Change]) -> Snapshot:
        """Apply domain changes as one unit and return the snapshot to publish.

        Later changes to the same (kind, name) win; deleting an unknown resource is a no-op. Only
        the changed resources are translated and encoded. If the content comes out equal to the
        current snapshot's, the current snapshot itself is returned (same serial, nothing to push)
        — unless the scoping index changed (e.g. a resource moved to another team), which
        publishes a snapshot with the same `TypeSnapshot`s and the new index.

        Raises `Conflict` (listing every dangling reference) if the result would name a route
        configuration or cluster that does not exist, or if two resources would produce the same
        xDS resource (xds rule 16). Any exception — from the check or from `translate` — leaves the
        builder unchanged: the previous snapshot stays current.
        """
        pending: dict[_Key, BaseModel | None] = {}
        for kind, name, model in changes:
            pending[(kind, name)] = model
        pending = {k: m for k, m in pending.items() if m is not None or k in self._refs}
        if not pending:
            return self._snapshot

        new_outputs: dict[_Key, _Output] = {}
        new_refs: dict[_Key, frozenset[Ref]] = {}
        for key, model in pending.items():
            if model is None:
                new_outputs[key] = ()
                continue
            new_outputs[key] = self._encode(key, model)
            new_refs[key] = frozenset(self._references(key[0], model))

        problems = self._dangling(pending, new_refs) + self._collisions(new_outputs)
        if problems:
            raise Conflict(
                "the change would leave the xDS configuration inconsistent: "
                + "; ".join(p.message for p in problems),
                problems,
            )
        return self._commit(pending, new_outputs, new_refs)

    # -- steps ------------------------------------------------------------------------------

    def _encode(self, key: _Key, model: BaseModel) -> _Output:
        old = {(url, res.name): res for url, res in self._outputs.get(key, ())}
        out: list[tuple[str, Resource]] = []
        for type_url, name, message in self._translate(key[0], model):
            res = Resource.encode(type_url, name, message)
            self.encoded += 1
            prev = old.get((type_url, name))
            # Equal content: keep the old object, so unchanged resources stay identical (`is`).
            out.append((type_url, prev if prev is not None and prev == res else res))
        return tuple(out)

    def _exists(self, ref: Ref, pending: dict[_Key, BaseModel | None]) -> bool:
        key = (ref.kind, ref.name)
        if key in pending:
            return pending[key] is not None
        return key in self._refs

    def _dangling(
        self, pending: dict[_Key, BaseModel | None], new_refs: dict[_Key, frozenset[Ref]]
    ) -> list[FieldProblem]:
        """xds rule 16 / DESIGN §6.4: every name a listener or route config uses must exist.

        Checked incrementally: the references of changed resources, and the referrers of deleted
        ones (through the reverse index), so the cost follows the change, not the config size.
        """
        problems: list[FieldProblem] = []
        for key, refs in new_refs.items():
            for ref in sorted(refs, key=str):
                if not self._exists(ref, pending):
                    problems.append(_problem(key, ref))
        for key, model in pending.items():
            if model is not None:
                continue
            target = Ref(*key)
            for referrer in sorted(self._referrers.get(target, ()), key=_key_str):
                if referrer not in pending:  # changed referrers were checked above
                    problems.append(_problem(referrer, target))
        return problems

    def _collisions(self, new_outputs: dict[_Key, _Output]) -> list[FieldProblem]:
        """Two domain resources must never produce the same (type URL, name)."""
        released = {(url, r.name) for key in new_outputs for url, r in self._outputs.get(key, ())}
        claimed: dict[tuple[str, str], _Key] = {}
        problems: list[FieldProblem] = []
        for key, outputs in new_outputs.items():
            for url, res in outputs:
                slot = (url, res.name)
                other = claimed.get(slot)
                if other is None and slot not in released:
                    other = self._owner.get(slot)
                if other is not None and other != key:
                    problems.append(
                        FieldProblem(
                            _key_str(key),
                            f"{_key_str(key)} and {_key_str(other)} both produce "
                            f"{url.rpartition('.')[2]} {res.name!r}",
                        )
                    )
                claimed[slot] = key
        return problems

    def _commit(
        self,
        pending: dict[_Key, BaseModel | None],
        new_outputs: dict[_Key, _Output],
        new_refs: dict[_Key, frozenset[Ref]],
    ) -> Snapshot:
        # Per type URL: name -> new Resource, or None where the resource goes away.
        delta: dict[str, dict[str, Resource | None]] = {}
        for key, outputs in new_outputs.items():
            for url, res in self._outputs.get(key, ()):
                delta.setdefault(url, {})[res.name] = None
            for url, res in outputs:
                delta.setdefault(url, {})[res.name] = res

        old_types = self._snapshot.types
        types = dict(old_types)
        for url, changes in delta.items():
            current = old_types[url].resources if url in old_types else {}
            effective = {n: r for n, r in changes.items() if current.get(n) is not r}
            if not effective:
                continue
            resources = dict(current)  # copy on write: the published map is never touched
            for name, new in effective.items():
                if new is None:
                    resources.pop(name, None)
                else:
                    resources[name] = new
            if resources:
                types[url] = TypeSnapshot(url, resources)
            else:
                types.pop(url, None)

        # Computed before the bookkeeping, from the previous reverse index (see `updated`).
        updates: dict[Ref, IndexUpdate | None] = {}
        for key, outputs in new_outputs.items():
            model = pending[key]
            updates[Ref(*key)] = (
                None
                if model is None
                else (_team_of(model), new_refs[key], tuple((u, r.name) for u, r in outputs))
            )
        index = self._snapshot.index.updated(updates, self._referrers_of)

        # Bookkeeping: nothing below can fail.
        for key, outputs in new_outputs.items():
            for url, res in self._outputs.pop(key, ()):
                if self._owner.get((url, res.name)) == key:
                    del self._owner[(url, res.name)]
            for ref in self._refs.pop(key, ()):
                referrers = self._referrers.get(ref)
                if referrers is not None:
                    referrers.discard(key)
                    if not referrers:
                        del self._referrers[ref]
            if pending[key] is None:
                continue
            self._outputs[key] = outputs
            for url, res in outputs:
                self._owner[(url, res.name)] = key
            refs = new_refs[key]
            self._refs[key] = refs
            for ref in refs:
                self._referrers.setdefault(ref, set()).add(key)

        if (
            index is self._snapshot.index
            and types.keys() == old_types.keys()
            and all(types[u] is old_types[u] for u in types)
        ):
            return self._snapshot  # equal content: nothing new to publish
        self._snapshot = Snapshot(types, self._snapshot.serial + 1, index=index)
        return self._snapshot

    def _referrers_of(self, ref: Ref) -> list[Ref]:
        return [Ref(*key) for key in self._referrers.get(ref, ())]


def _team_of(model: BaseModel) -> str | None:
    team = getattr(model, "team", None)
    return team if isinstance(team, str) else None


def _key_str(key: _Key) -> str:
    return str(Ref(*key))


def _problem(referrer: _Key, missing: Ref) -> FieldProblem:
    return FieldProblem(
        _key_str(referrer), f"{_key_str(referrer)} names {missing}, which does not exist"
    )
