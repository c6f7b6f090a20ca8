"""The snapshot builder actor: committed config changes in, published snapshots out.

It consumes the config actor's `ConfigChange` events, coalesces a burst (every change that
arrives within `debounce_seconds` of the first goes into one build), lets the sans-I/O
`SnapshotBuilder` re-encode only what changed, and publishes the result to the hub, which wakes
the stream actors. The first snapshot is built from the whole stored state at start-up.
"""

from __future__ import annotations

import logging
import time

import trio

from flowplane.actors.config import ConfigChange
from flowplane.domain.state import ConfigState
from flowplane.errors import FlowplaneError
from flowplane.grpc.hub import Hub
from flowplane.observability import metrics
from flowplane.xds.builder import Change, SnapshotBuilder

log = logging.getLogger(__name__)


class SnapshotActor:
    def __init__(self, builder: SnapshotBuilder, hub: Hub, debounce_seconds: float = 0.005):
        self.builder = builder
        self.hub = hub
        self.debounce_seconds = debounce_seconds
        self.last_serial = 0
        self._progress = trio.Event()

    def build_initial(self, state: ConfigState) -> None:
        """Build and publish the first snapshot from everything stored (raises if inconsistent)."""
        changes: list[Change] = [(r.kind, r.name, r.model) for r in state.all()]
        self._publish(changes)
        self.last_serial = state.serial

    def _publish(self, changes: list[Change]) -> None:
        t0 = time.perf_counter()
        snap = self.builder.apply(changes)
        metrics.SNAPSHOT_BUILD_SECONDS.observe(time.perf_counter() - t0)
        if snap is not self.hub.snapshot:
            self.hub.publish(snap)
            metrics.SNAPSHOTS.inc()

    async def run(
        self,
        changes: trio.MemoryReceiveChannel[ConfigChange],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        async with changes:
            while True:
                try:
                    first = await changes.receive()
                except trio.EndOfChannel:
                    return
                batch = list(first.changes)
                serial = first.serial
                # Coalesce a burst: whatever else arrives in the debounce window joins this build.
                with trio.move_on_after(self.debounce_seconds):
                    async for more in changes:
                        batch.extend(more.changes)
                        serial = more.serial
                try:
                    self._publish(batch)
                except FlowplaneError as err:
                    # The config actor validates every change against the same rules, so this
                    # means a bug; the previous snapshot stays published (xds rule 16).
                    metrics.SNAPSHOT_FAILURES.inc()
                    log.error("snapshot not published (serial %s): %s", serial, err.message)
                self.last_serial = serial
                self._progress.set()
                self._progress = trio.Event()

    async def caught_up(self, serial: int) -> None:
        """Wait until every config change up to `serial` is reflected in the published
        snapshot (tests and tools use it instead of sleeping)."""
        while self.last_serial < serial:
            await self._progress.wait()
