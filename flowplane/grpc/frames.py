"""The core <-> xDS worker wire format (proto/flowplane_workers.proto), sans-I/O.

- Framing: a 4-byte big-endian length, then one serialized message (`frame`, `FrameBuffer`).
- Snapshots cross the boundary as encoded resource bytes (DESIGN.md §5: "keep the snapshot a
  plain immutable value of bytes"): `snapshot_frame(old, new)` carries only what changed from
  `old` (the resources of changed types, the changed `ScopeIndex` entries), `apply_frame` rebuilds
  the very same `Snapshot` on the worker. Unchanged `TypeSnapshot`s keep their identity on the
  worker, so its stream machines skip them in O(1) as in-process.
- Node status: `stream_status(info)` on the worker, `RemoteStream.from_proto` on the core (it
  satisfies `flowplane.services.dataplanes.NodeStream`, so `/api/v1/nodes` lists it unchanged).

Nothing here does I/O; the core's side (`flowplane.grpc.pool`, trio) and the worker's
(`flowplane.grpc.worker`, asyncio) both use it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from google.protobuf.message import Message

from flowplane.domain.resources import Kind, Ref
from flowplane.grpc.hub import StreamInfo
from flowplane.grpc.proto import flowplane_workers_pb2 as pb
from flowplane.xds.scope_index import IndexEntry, ScopeIndex
from flowplane.xds.snapshot import Resource, Snapshot, TypeSnapshot
from flowplane.xds.sotw import Rejection, TypeStatus

__all__ = [
    "MAX_FRAME_BYTES",
    "FrameBuffer",
    "FrameError",
    "RemoteStream",
    "apply_frame",
    "frame",
    "snapshot_frame",
    "stream_status",
]

MAX_FRAME_BYTES: Final = 1 << 30
"""Largest frame either side accepts (a full snapshot of a very large config is tens of MB)."""
_HEADER: Final = struct.Struct(">I")


class FrameError(Exception):
    """A frame that cannot be read or applied: the connection is out of step and is closed."""


def frame(message: Message) -> bytes:
    """`message` serialized with its 4-byte big-endian length prefix."""
    body: bytes = message.SerializeToString()
    return _HEADER.pack(len(body)) + body


class FrameBuffer:
    """Bytes in, whole frame bodies out (`feed` returns every frame completed by `data`)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buf)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
            end = _HEADER.size + length
            if len(self._buf) < end:
                break
            out.append(bytes(self._buf[_HEADER.size : end]))
            del self._buf[:end]
        return out


# -- snapshots ----------------------------------------------------------------------------------


def _ref_pb(ref: Ref) -> pb.Ref:
    return pb.Ref(kind=ref.kind.value, name=ref.name)


def _ref(msg: pb.Ref) -> Ref:
    try:
        return Ref(Kind(msg.kind), msg.name)
    except ValueError:
        raise FrameError(f"unknown resource kind {msg.kind!r}") from None


def _entry_pb(ref: Ref, e: IndexEntry) -> pb.IndexEntry:
    return pb.IndexEntry(
        ref=_ref_pb(ref),
        has_team=e.team is not None,
        team=e.team or "",
        refs=[_ref_pb(r) for r in sorted(e.refs, key=str)],
        needs=[_ref_pb(r) for r in sorted(e.needs, key=str)],
        outputs=[pb.Output(type_url=t, name=n) for t, n in e.outputs],
    )


def _changed_types(old: Snapshot | None, new: Snapshot) -> Iterable[pb.TypeChange]:
    for url, ts in new.types.items():
        before = old.types.get(url) if old is not None else None
        if before is ts:
            continue  # the builder reuses an unchanged TypeSnapshot: nothing to send
        prev: Mapping[str, Resource] = before.resources if before is not None else {}
        change = pb.TypeChange(type_url=url)
        for name, res in ts.resources.items():
            if prev.get(name) != res:
                change.upserted.append(pb.Resource(name=name, version=res.version,
                                                   any_bytes=res.any_bytes))  # fmt: skip
        change.removed.extend(n for n in prev if n not in ts.resources)
        if before is None or change.upserted or change.removed:
            yield change
    if old is not None:
        for url, before in old.types.items():
            if url not in new.types:
                yield pb.TypeChange(type_url=url, removed=list(before.resources))


def snapshot_frame(old: Snapshot | None, new: Snapshot) -> pb.SnapshotFrame:
    """The frame that turns `old` (None: nothing) into `new` on a worker: the resources of
    changed types and the changed index entries, as bytes. Cost follows the change: types and
    index kinds the builder did not touch are skipped by identity."""
    out = pb.SnapshotFrame(serial=new.serial, base_serial=0 if old is None else old.serial,
                           full=old is None, types=list(_changed_types(old, new)))  # fmt: skip
    for kind in Kind:
        now = new.index.of_kind(kind)
        before = old.index.of_kind(kind) if old is not None else {}
        if now is before:
            continue
        for name, e in now.items():
            if before.get(name) != e:
                out.index_upserted.append(_entry_pb(Ref(kind, name), e))
        out.index_removed.extend(_ref_pb(Ref(kind, n)) for n in before if n not in now)
    return out


def _apply_index(base: ScopeIndex, msg: pb.SnapshotFrame) -> ScopeIndex:
    if not msg.index_upserted and not msg.index_removed and not msg.full:
        return base
    kinds: dict[Kind, dict[str, IndexEntry]] = {
        k: ({} if msg.full else dict(base.of_kind(k))) for k in Kind
    }
    for r in msg.index_removed:
        ref = _ref(r)
        kinds[ref.kind].pop(ref.name, None)
    for e in msg.index_upserted:
        ref = _ref(e.ref)
        kinds[ref.kind][ref.name] = IndexEntry(
            e.team if e.has_team else None,
            frozenset(_ref(r) for r in e.refs),
            frozenset(_ref(r) for r in e.needs),
            tuple((o.type_url, o.name) for o in e.outputs),
        )
    teams: dict[str | None, set[str]] = {}
    for name, entry in kinds[Kind.LISTENER].items():
        teams.setdefault(entry.team, set()).add(name)
    return ScopeIndex({k: m for k, m in kinds.items() if m},
                      {t: frozenset(n) for t, n in teams.items()})  # fmt: skip


def apply_frame(base: Snapshot | None, msg: pb.SnapshotFrame) -> Snapshot:
    """The snapshot `msg` describes, built on `base` (the worker's current snapshot).

    Raises FrameError if `msg` is a change from a snapshot other than `base` (the sender and
    this worker are out of step: the connection must be re-established, which starts with a full
    frame). `base` is not modified; unchanged types are shared with it.
    """
    if not msg.full and (base is None or base.serial != msg.base_serial):
        have = None if base is None else base.serial
        raise FrameError(f"frame based on snapshot {msg.base_serial}, but this worker has {have}")
    types: dict[str, TypeSnapshot] = {} if msg.full or base is None else dict(base.types)
    for change in msg.types:
        before = types.get(change.type_url)
        resources: dict[str, Resource] = dict(before.resources) if before is not None else {}
        for name in change.removed:
            resources.pop(name, None)
        for r in change.upserted:
            resources[r.name] = Resource(r.name, r.version, r.any_bytes)
        # A type the core dropped arrives as "every name removed" and stays here as an empty
        # TypeSnapshot: the same content (`Snapshot.get` reads an absent type as empty).
        types[change.type_url] = TypeSnapshot(change.type_url, resources)
    index = _apply_index(base.index if base is not None and not msg.full else _EMPTY, msg)
    return Snapshot(types, msg.serial, index=index)


_EMPTY: Final = ScopeIndex({}, {})


# -- node status --------------------------------------------------------------------------------


def _ts(when: datetime) -> float:
    return when.timestamp()


def stream_status(info: StreamInfo) -> pb.StreamStatus:
    """What `/api/v1/nodes` shows of one worker stream, for the core."""
    out = pb.StreamStatus(
        stream_id=info.stream_id,
        protocol=info.protocol,
        address=info.address,
        connected_since=_ts(info.connected_since),
        node_id=info.node_id or "",
        has_node_id=info.node_id is not None,
        accepted=info.accepted,
        has_team=info.team is not None,
        team=info.team or "",
    )
    for url, st in info.state.status().items():
        t = out.types.add(type_url=url, version_sent=st.version_sent or "",
                          version_acked=st.version_acked or "")  # fmt: skip
        rej = st.last_rejection
        if rej is not None:
            when = info.rejection_time(url)
            t.last_rejection.CopyFrom(pb.Rejection(
                version=rej.version or "", message=rej.message,
                resource_names=list(rej.resource_names), time=_ts(when) if when else 0.0,
            ))  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class _Status:
    types: dict[str, TypeStatus]  # updated in place by the worker's grouped status reports

    def status(self) -> Mapping[str, TypeStatus]:
        return self.types


@dataclass(frozen=True, slots=True)
class RemoteStream:
    """A stream held by a worker, as its last status report described it (read-only)."""

    stream_id: int
    protocol: str
    address: str
    connected_since: datetime
    state: _Status
    node_id: str | None
    accepted: bool
    team: str | None
    worker: int
    rejected_at: Mapping[str, datetime] = field(default_factory=dict)

    def rejection_time(self, type_url: str) -> datetime | None:
        return self.rejected_at.get(type_url)

    @classmethod
    def from_proto(cls, msg: pb.StreamStatus, worker: int) -> RemoteStream:
        node_id = msg.node_id if msg.has_node_id else None
        types: dict[str, TypeStatus] = {}
        times: dict[str, datetime] = {}
        for t in msg.types:
            rej = None
            if t.HasField("last_rejection"):
                r = t.last_rejection
                rej = Rejection(t.type_url, r.version or None, "", r.message,
                                tuple(r.resource_names), node_id)  # fmt: skip
                if r.time:
                    times[t.type_url] = datetime.fromtimestamp(r.time, UTC)
            types[t.type_url] = TypeStatus(t.version_sent or None, None,
                                           t.version_acked or None, rej)  # fmt: skip
        return cls(
            msg.stream_id, msg.protocol, msg.address,
            datetime.fromtimestamp(msg.connected_since, UTC), _Status(types), node_id,
            msg.accepted, msg.team if msg.has_team else None, worker, times,
        )  # fmt: skip
