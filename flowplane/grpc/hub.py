"""The hub: where the snapshot builder (trio side) meets the stream actors (asyncio side).

`publish()` stores the new snapshot and makes one hop onto the asyncio loop
(`loop.call_soon`) to wake every stream actor (DESIGN.md §1: one hop per snapshot, not per
message). The hub also keeps the registry of connected streams for `GET /api/v1/nodes`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from flowplane.xds.scope import Scope
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.sotw import Rejection, TypeStatus

log = logging.getLogger(__name__)


class StreamState(Protocol):
    node_id: str | None

    def status(self) -> dict[str, TypeStatus]: ...
    def versions(self) -> list[tuple[str, str | None, str | None, bool]]: ...


@dataclass
class StreamInfo:
    """One connected xDS stream, as `GET /api/v1/nodes` shows it."""

    stream_id: int
    protocol: str  # "sotw" | "delta"
    address: str
    connected_since: datetime
    state: StreamState
    node_metadata: dict[str, Any] = field(default_factory=dict)
    scope: Scope | None = None  # fixed from the first request for the life of the stream
    # type URL -> (the rejection object, when it was first seen): one record per type, since
    # the state machines keep the last rejection per type (xds rule 5: record the time).
    rejected_at: dict[str, tuple[Rejection, datetime]] = field(default_factory=dict)

    @property
    def node_id(self) -> str | None:
        return self.state.node_id

    @property
    def accepted(self) -> bool:
        """A node: its first request was accepted and fixed the stream's scope."""
        return self.scope is not None

    @property
    def team(self) -> str | None:
        """The node's team: the one `scope_from_node` decided when the scope was fixed (node
        metadata, node id or the authenticated identity — certificate or data-plane token).
        None before the first request and for a node without a team. Every reader of a node's
        team (`GET /api/v1/nodes`) uses this, so what is listed is what xDS serves."""
        return None if self.scope is None else self.scope.team

    def note_rejection(self, rejection: Rejection) -> bool:
        """Record when `rejection` (the last of its type) was first seen; True if it is new."""
        seen = self.rejected_at.get(rejection.type_url)
        if seen is not None and seen[0] is rejection:
            return False
        self.rejected_at[rejection.type_url] = (rejection, datetime.now(UTC))
        return True

    def rejection_time(self, type_url: str) -> datetime | None:
        seen = self.rejected_at.get(type_url)
        return None if seen is None else seen[1]


class Hub:
    def __init__(self) -> None:
        self.snapshot = Snapshot.empty()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakers: dict[int, Callable[[], None]] = {}
        self.streams: dict[int, StreamInfo] = {}
        self._ids = itertools.count(1)
        self.published = 0
        # With xDS workers (flowplane.grpc.pool) the streams live in other processes: the pool
        # is told every snapshot (`observers`) and lists the workers' streams (`sources`).
        self.observers: list[Callable[[Snapshot], None]] = []
        self.sources: list[Callable[[], Iterable[Any]]] = []

    def connected(self) -> list[Any]:
        """Every registered stream, here and in the workers (the nodes API's `NodeDirectory`:
        `StreamInfo`s and `flowplane.grpc.frames.RemoteStream`s)."""
        out: list[Any] = list(self.streams.values())
        for source in self.sources:
            out.extend(source())
        return out

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, snapshot: Snapshot) -> None:
        """Make `snapshot` current and wake every stream actor (callable from trio or asyncio)."""
        self.snapshot = snapshot
        self.published += 1
        for observer in self.observers:
            observer(snapshot)
        if self._loop is not None and self._wakers:
            self._loop.call_soon(self._wake_all)

    def wake_all(self) -> None:
        """Wake every stream actor (e.g. after a token change, so revoked streams end)."""
        if self._loop is not None and self._wakers:
            self._loop.call_soon(self._wake_all)

    def _wake_all(self) -> None:
        for poke in list(self._wakers.values()):
            try:
                poke()
            except Exception:  # a bug in one stream's actor must not stop the push to the others
                log.exception("xDS stream wake-up failed")

    def changed(self, info: StreamInfo) -> None:
        """`info`'s status (versions sent or acknowledged, a rejection) may have changed.

        Nothing to do in-process (`/api/v1/nodes` reads the streams directly); an xDS worker's
        hub collects them for its next status report to the core."""

    def register(
        self, protocol: str, address: str, state: StreamState, wake: Callable[[], None]
    ) -> StreamInfo:
        """Register a stream; `wake` is called (on the loop) whenever it may owe responses."""
        sid = next(self._ids)
        info = StreamInfo(sid, protocol, address, datetime.now(UTC), state)
        self.streams[sid] = info
        self._wakers[sid] = wake
        return info

    def unregister(self, info: StreamInfo) -> None:
        self.streams.pop(info.stream_id, None)
        self._wakers.pop(info.stream_id, None)
