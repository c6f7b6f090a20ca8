"""Deleted names in the configuration state (`ConfigState.tombstones`, issue 12): a deletion
is a version of its own, so a re-created name goes on from it; an undone create is no
deletion."""

from __future__ import annotations

from flowplane.domain.resources import Kind
from flowplane.domain.state import ConfigState


def test_undoing_a_create_leaves_no_tombstone() -> None:
    """A create undone (a failed group commit, a replica that must re-plan) leaves the state as
    before it: no deletion is recorded, so the next create of the name is version 1 (it was 3
    when the undo recorded a deletion, seen as both replicas' If-Match "1" being refused)."""
    state = ConfigState()
    body = {"name": "c", "team": "a", "endpoints": [{"host": "h", "port": 1}]}
    plan = state.plan_create(Kind.CLUSTER, body, "native")
    state.apply(plan)
    state.apply(plan.inverse())
    assert state.tombstones == {} and state.get(Kind.CLUSTER, "a/c") is None
    assert state.plan_create(Kind.CLUSTER, body, "native").after.version == 1  # type: ignore[union-attr]
    # a real delete, undone and redone, keeps its tombstone
    state.apply(plan)
    delete = state.plan_delete(Kind.CLUSTER, "c", None, team="a")
    state.apply(delete)
    assert state.tombstones == {(Kind.CLUSTER, "a", "c"): 2}
    state.apply(delete.inverse())
    state.apply(delete)
    assert state.plan_create(Kind.CLUSTER, body, "native").after.version == 3  # type: ignore[union-attr]
