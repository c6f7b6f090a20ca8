"""The snapshot builder actor: committed config changes in, published snapshots out.

It consumes the config actor's `ConfigChange` events, coalesces a burst (every change that
arrives within `debounce_seconds` of the first goes into one build), lets the sans-I/O
`SnapshotBuilder` re-encode only what changed, and publishes the result through `publish` (the
xDS edge's hub, which wakes the stream actors). The first snapshot is built from the whole stored
state at start-up.

Supervision: a batch the builder refuses (a `FlowplaneError`, which means a bug, since the config
actor validates with the same rules) or that raises anything else is logged with its serial and
the resources it touched, and counted (`flowplane_snapshot_failures_total`, and for unexpected
exceptions `flowplane_actor_failures_total{actor="snapshot"}`); the builder is left unchanged, the
previous snapshot stays published (xds rule 16) and the actor keeps serving. The batch's changes
are then published one at a time, so only the failing change is left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from flowplane.actors.config import ConfigChange
from flowplane.domain.state import ConfigState
from flowplane.errors import FlowplaneError
from flowplane.observability import metrics, tracing
from flowplane.observability.xds import published
from flowplane.xds.builder import Change, SnapshotBuilder
from flowplane.xds.snapshot import Snapshot

Publish = Callable[[Snapshot], None]

log = logging.getLogger(__name__)


class SnapshotActor:
    def __init__(
        self, builder: SnapshotBuilder, publish: Publish, debounce_seconds: float = 0.005
    ) -> None:
        self.builder = builder
        self.publish = publish
        self.current: Snapshot | None = None  # the last snapshot published
        self.debounce_seconds = debounce_seconds
        self.last_serial = 0
        self._progress = trio.Event()
        self._origins: list[tracing.Origin] = []  # the writes of the batch being built

    def build_initial(self, state: ConfigState) -> None:
        """Build and publish the first snapshot from everything stored (raises if inconsistent)."""
        changes: list[Change] = [(r.kind, r.key, r.xds_model) for r in state.all()]
        self._publish(changes)
        self.last_serial = state.serial

    def _publish(self, changes: list[Change]) -> None:
        # in the trace of the batch's writes (the first one's; linked to the others)
        with tracing.resumed(self._origins, "snapshot.build", {"flowplane.changes": len(changes)}
                             ) as origin:  # fmt: skip
            t0 = time.perf_counter()
            snap = self.builder.apply(changes)
            metrics.SNAPSHOT_BUILD_SECONDS.observe(time.perf_counter() - t0)
            if snap is not self.current:
                self.current = snap
                published(snap, origin)  # before the streams wake: they look its origin up
                self.publish(snap)
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
                origins = [first.origin]
                # Coalesce a burst: whatever else arrives in the debounce window joins this build.
                with trio.move_on_after(self.debounce_seconds):
                    async for more in changes:
                        batch.extend(more.changes)
                        serial = more.serial
                        origins.append(more.origin)
                self._origins = origins
                self._build(batch, serial)
                self._origins = []
                self.last_serial = serial
                self._progress.set()
                self._progress = trio.Event()

    def _build(self, batch: list[Change], serial: int) -> None:
        """Publish `batch`; if the builder refuses it, publish its changes one at a time, in
        commit order, skipping only those that fail — so one bad change does not keep the good
        ones of the same window from ever being served (they would not come again)."""
        try:
            self._publish(batch)
            return
        except Exception as err:
            self._failed(err, serial, batch)
        if len(batch) == 1:
            return
        for change in batch:
            try:
                self._publish([change])
            except Exception as err:
                self._failed(err, serial, [change])

    def _failed(self, err: Exception, serial: int, batch: list[Change]) -> None:
        metrics.SNAPSHOT_FAILURES.inc()
        if isinstance(err, FlowplaneError):
            # The config actor validates every change against the same rules, so this means a
            # bug; the builder is unchanged and the previous snapshot stays published (rule 16).
            log.error(
                "snapshot not published (serial %s, %s): %s", serial, _touched(batch), err.message
            )
            return
        metrics.ACTOR_FAILURES.labels("snapshot").inc()
        log.error("snapshot not published (serial %s, %s)", serial, _touched(batch), exc_info=err)

    async def caught_up(self, serial: int) -> None:
        """Wait until every config change up to `serial` is reflected in the published
        snapshot (tests and tools use it instead of sleeping)."""
        while self.last_serial < serial:
            await self._progress.wait()


def _touched(batch: list[Change], most: int = 10) -> str:
    names = [f"{kind.label} {name!r}" for kind, name, _ in batch[:most]]
    more = f" and {len(batch) - most} more" if len(batch) > most else ""
    return ", ".join(names) + more
