"""The core <-> worker wire format (flowplane/grpc/frames.py), sans-I/O."""

from __future__ import annotations

import pytest

from flowplane.domain.resources import Kind, Ref
from flowplane.grpc.frames import FrameBuffer, FrameError, apply_frame, frame, snapshot_frame
from flowplane.grpc.proto import flowplane_workers_pb2 as pb
from flowplane.xds.scope_index import IndexEntry, ScopeIndex
from flowplane.xds.snapshot import Resource, Snapshot, TypeSnapshot
from flowplane.xds.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE


def _res(name: str, payload: bytes) -> Resource:
    return Resource.from_any_bytes(name, payload)


def _snap(serial: int, clusters: dict[str, bytes], index: ScopeIndex | None = None,
          listeners: dict[str, bytes] | None = None) -> Snapshot:  # fmt: skip
    types = {CLUSTER_TYPE: TypeSnapshot(CLUSTER_TYPE, {n: _res(n, b) for n, b in clusters.items()})}
    if listeners is not None:
        types[LISTENER_TYPE] = TypeSnapshot(
            LISTENER_TYPE, {n: _res(n, b) for n, b in listeners.items()}
        )
    return Snapshot(types, serial, index=index)


def _index(team: str | None) -> ScopeIndex:
    r_ref, c_ref = Ref(Kind.ROUTE_CONFIG, "r"), Ref(Kind.CLUSTER, "c")
    return ScopeIndex(
        {
            Kind.LISTENER: {"l": IndexEntry(team, frozenset({r_ref}), frozenset({r_ref, c_ref}),
                                            ((LISTENER_TYPE, "l"),))},
            Kind.ROUTE_CONFIG: {"r": IndexEntry(team, frozenset({c_ref}), frozenset({c_ref}),
                                                ((ROUTE_TYPE, "r"),))},
            Kind.CLUSTER: {"c": IndexEntry(None, frozenset(), frozenset(), ((CLUSTER_TYPE, "c"),))},
        },
        {team: frozenset({"l"})},
    )


def _same(a: Snapshot, b: Snapshot) -> None:
    assert a.serial == b.serial
    assert a.versions() == b.versions()
    for url, ts in a.types.items():
        assert dict(ts.resources) == dict(b.get(url).resources)
    for kind in Kind:
        assert dict(a.index.of_kind(kind)) == dict(b.index.of_kind(kind))
    assert a.index.team_listeners("t") == b.index.team_listeners("t")
    assert a.index.team_listeners(None) == b.index.team_listeners(None)


def test_a_full_frame_rebuilds_the_snapshot_and_its_index() -> None:
    """DESIGN.md §5: the snapshot crosses the process boundary as bytes, unchanged."""
    snap = _snap(3, {"a": b"A", "b": b"B"}, _index("t"), listeners={"l": b"L"})
    msg = pb.SnapshotFrame.FromString(snapshot_frame(None, snap).SerializeToString())
    assert msg.full
    _same(snap, apply_frame(None, msg))


def test_a_change_frame_carries_only_what_changed_and_keeps_unchanged_types() -> None:
    """One changed cluster: the frame holds that one resource; the listener type, unchanged,
    keeps its identity on the worker (its streams skip it in O(1))."""
    listeners = {"l": b"L"}
    old = _snap(1, {"a": b"A", "b": b"B"}, _index("t"), listeners=listeners)
    new = Snapshot({CLUSTER_TYPE: TypeSnapshot(CLUSTER_TYPE, {"a": _res("a", b"A2"),
                                                              "b": old.resources(CLUSTER_TYPE)["b"]}),
                    LISTENER_TYPE: old.get(LISTENER_TYPE)}, 2, index=old.index)  # fmt: skip
    msg = snapshot_frame(old, new)
    assert not msg.full and msg.base_serial == 1
    assert [(t.type_url, [r.name for r in t.upserted], list(t.removed)) for t in msg.types] == [
        (CLUSTER_TYPE, ["a"], [])
    ]
    assert not msg.index_upserted and not msg.index_removed
    worker_old = apply_frame(None, snapshot_frame(None, old))
    worker_new = apply_frame(worker_old, msg)
    _same(new, worker_new)
    assert worker_new.get(LISTENER_TYPE) is worker_old.get(LISTENER_TYPE)
    assert worker_new.index is worker_old.index


def test_removals_and_index_changes_are_carried() -> None:
    old = _snap(1, {"a": b"A", "b": b"B"}, _index("t"))
    new = _snap(2, {"a": b"A"}, _index("u"))
    worker = apply_frame(apply_frame(None, snapshot_frame(None, old)), snapshot_frame(old, new))
    _same(new, worker)
    assert worker.index.team_listeners("u") == frozenset({"l"})
    assert worker.index.team_listeners("t") == frozenset()


def test_a_frame_on_the_wrong_base_is_refused() -> None:
    """A worker applies a change only on the snapshot it was computed from (else: out of step,
    the connection is re-established and starts with a full frame)."""
    a, b, c = _snap(1, {"a": b"1"}), _snap(2, {"a": b"2"}), _snap(3, {"a": b"3"})
    with pytest.raises(FrameError):
        apply_frame(apply_frame(None, snapshot_frame(None, a)), snapshot_frame(b, c))
    with pytest.raises(FrameError):
        apply_frame(None, snapshot_frame(a, b))


def test_frame_buffer_splits_and_joins_frames() -> None:
    msgs = [pb.Hello(slot=i, pid=100 + i) for i in range(3)]
    data = b"".join(frame(m) for m in msgs)
    buf = FrameBuffer()
    got = []
    for i in range(0, len(data), 3):  # arbitrary cuts, including inside the length prefix
        got += buf.feed(data[i : i + 3])
    assert [pb.Hello.FromString(g) for g in got] == msgs


def test_frame_buffer_refuses_an_absurd_length() -> None:
    with pytest.raises(FrameError):
        FrameBuffer().feed(b"\xff\xff\xff\xff")
