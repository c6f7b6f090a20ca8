"""An xDS worker process: serves ADS streams on the shared xDS port, fed snapshots by the core.

    python -m flowplane.grpc.worker --control PATH --slot N     (started by the core's pool)

The core (`flowplane.grpc.pool`) keeps the config actor, REST and the snapshot builder; each
worker holds a share of the xDS streams (the kernel spreads connections over the workers'
listening sockets: SO_REUSEPORT) and runs the very same stream actors as the in-process server
(`flowplane.grpc.ads`, the sans-I/O machines of `flowplane.xds`). It runs plain asyncio: it
serves only xDS, so the trio bridge the core needs for everything else would be pure cost on the
hot path (DESIGN.md §5; measured in benchmarks/results/xds-workers.md).

Protocol with the core (proto/flowplane_workers.proto, one Unix socket, length-prefixed frames):
the worker says Hello; the core answers WorkerConfig, the token states and a full snapshot; the
worker binds the xDS port and says Ready; then snapshots (as changes), token states and auth
replies come in, node status (the streams that changed), counters and NACK reports go out every
`status_interval_seconds`. When the core's socket closes (the core stopped or died) or a
Shutdown arrives, the worker closes its listening socket and every stream and exits: its Envoys
reconnect to the port, i.e. to the next core's workers (versions are content hashes, so they are
sent nothing they already have).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from flowplane.errors import Unauthorized
from flowplane.grpc import compat
from flowplane.grpc.ads import AdsService, BytesPassthroughCodec, _peer, authorization
from flowplane.grpc.frames import FrameBuffer, FrameError, apply_frame, frame, stream_status
from flowplane.grpc.hub import Hub, StreamInfo, StreamState
from flowplane.grpc.proto import flowplane_workers_pb2 as pb
from flowplane.grpc.server import keepalive_config
from flowplane.observability import metrics
from flowplane.observability.logging import configure_logging
from flowplane.settings import Settings
from flowplane.tls import xds_server_context
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.sotw import NameLimits, Rejection

log = logging.getLogger("flowplane.worker")

_REPORTED = (metrics.XDS_STREAMS, metrics.XDS_RESPONSES, metrics.XDS_NACKS,
             metrics.XDS_STREAM_CRASHES)  # fmt: skip
"""The metrics a worker reports to the core (which adds them to its own: `/metrics`)."""


class WorkerHub(Hub):
    """The hub of a worker: remembers which streams changed since the last status report."""

    def __init__(self, first_stream_id: int) -> None:
        super().__init__()
        self._ids = itertools.count(max(1, first_stream_id))
        self.dirty: dict[int, StreamInfo] = {}
        self.removed: set[int] = set()
        self.reported: set[int] = set()  # streams the core has had a whole status of

    def changed(self, info: StreamInfo) -> None:
        self.dirty[info.stream_id] = info

    def register(
        self, protocol: str, address: str, state: StreamState, wake: Callable[[], None]
    ) -> StreamInfo:
        info = super().register(protocol, address, state, wake)
        self.dirty[info.stream_id] = info
        return info

    def unregister(self, info: StreamInfo) -> None:
        super().unregister(info)
        self.dirty.pop(info.stream_id, None)
        self.removed.add(info.stream_id)

    def take_status(self, serial: int) -> pb.NodeStatus | None:
        """The streams that changed (and ended) since the last call; None if none did.

        A stream the core has not seen yet (or one with a rejection, or without a node yet) is
        sent whole; the others only as members of (type, version sent, version acknowledged)
        groups: after a push, 10,000 streams make a handful of groups, not 10,000 messages.
        """
        if not self.dirty and not self.removed:
            return None
        out = pb.NodeStatus(serial=serial, removed=sorted(self.removed))
        groups: dict[tuple[str, str | None, str | None], list[int]] = {}
        for sid, info in self.dirty.items():
            versions = info.state.versions()
            if (sid not in self.reported or not info.accepted
                    or any(rejected for *_, rejected in versions)):
                out.upserted.append(stream_status(info))
                if info.accepted:
                    self.reported.add(sid)
                continue
            for url, sent, acked, _ in versions:
                groups.setdefault((url, sent, acked), []).append(sid)
        for (url, sent, acked), ids in groups.items():
            out.groups.add(type_url=url, version_sent=sent or "", version_acked=acked or "",
                           stream_ids=ids)  # fmt: skip
        self.dirty.clear()
        self.reported -= self.removed
        self.removed.clear()
        return out


class Control:
    """The worker's end of the core's Unix socket: frames out, replies to auth requests in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buf = FrameBuffer()
        self._pending: list[bytes] = []
        self._ids = itertools.count(1)
        self.auth_waiters: dict[int, asyncio.Future[pb.AuthReply]] = {}

    def send(self, msg: pb.WorkerToCore) -> None:
        self.writer.write(frame(msg))

    async def recv(self) -> pb.CoreToWorker | None:
        """The next message from the core; None when the core closed the socket."""
        while not self._pending:
            data = await self.reader.read(1 << 20)
            if not data:
                return None
            self._pending.extend(self._buf.feed(data))
        msg = pb.CoreToWorker()
        msg.ParseFromString(self._pending.pop(0))
        return msg

    async def authenticate(self, header: str | None, peer: str) -> pb.AuthReply:
        rid = next(self._ids)
        fut: asyncio.Future[pb.AuthReply] = asyncio.get_running_loop().create_future()
        self.auth_waiters[rid] = fut
        try:
            self.send(pb.WorkerToCore(auth=pb.AuthRequest(
                request_id=rid, authorization=header or "", peer=peer)))  # fmt: skip
            return await fut
        finally:
            self.auth_waiters.pop(rid, None)


class NackReporter:
    """`NackSink` of a worker: every NACK goes to the core, which logs it rate-limited."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def nack(
        self, node: str, rejection: Rejection, fields: Mapping[str, object] | None = None
    ) -> None:
        # (the core logs the NACK with its own record of the stream's fields)
        self.control.send(pb.WorkerToCore(nack=pb.NackReport(
            node=node, type_url=rejection.type_url, version=rejection.version or "",
            message=rejection.message, resource_names=list(rejection.resource_names),
        )))  # fmt: skip

    def close(self, node: str) -> None:
        pass  # the core's log summarises when the node's stream leaves its directory


class WorkerAds(AdsService):
    """ADS in a worker: token authentication is asked of the core (which holds the tokens and
    audits refusals); revocation and expiry are checked against the token states it sends."""

    def __init__(self, hub: Hub, control: Control, **kwargs: Any) -> None:
        super().__init__(hub, **kwargs)
        self.control = control
        self.tokens: dict[str, tuple[bool, float]] = {}  # id -> (active, expires at or 0)

    async def _identify(self, stream: Stream[Any, Any]) -> tuple[str | None, bool, str | None]:
        if self.auth != "token":
            return self._identity(stream)
        reply = await self.control.authenticate(authorization(stream), _peer(stream))
        if not reply.ok:
            raise GRPCError(Status(reply.grpc_status), reply.message)
        return (reply.team if reply.has_team else None, reply.team_required,
                reply.token_id or None)  # fmt: skip

    def _still_valid(self, token_id: str) -> None:
        # A token the core accepted but whose state has not arrived yet counts as valid: the
        # next token-state frame (sent on every token change) decides.
        active, expires = self.tokens.get(token_id, (True, 0.0))
        if not active or (expires and time.time() >= expires):
            raise Unauthorized("the data-plane token was revoked or has expired")


def _counters() -> pb.Counters:
    out = pb.Counters()
    # only these metrics' own families: REGISTRY.collect() would also run the process, platform
    # and GC collectors (reading /proc) every status interval, to throw their samples away
    for family in (f for m in _REPORTED for f in m.collect()):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.samples.add(name=s.name, labels=[f"{k}={v}" for k, v in sorted(s.labels.items())],
                            value=s.value)  # fmt: skip
    return out


async def run(control_path: str, slot: int) -> int:
    """Serve until the core says Shutdown or goes away; returns the exit status."""
    reader, writer = await asyncio.open_unix_connection(control_path)
    control = Control(reader, writer)
    control.send(pb.WorkerToCore(hello=pb.Hello(slot=slot, pid=os.getpid())))
    first = await control.recv()
    if first is None or not first.HasField("config"):
        log.error("xDS worker %d: the core sent no configuration", slot)
        return 2
    cfg = first.config
    configure_logging(cfg.log_format or "text", cfg.log_level or "INFO")
    # As in the core (flowplane/app.py): thousands of long-lived streams make a large, stable
    # heap; with the default threshold (700 allocations) a push triggers collections that walk
    # it again and again.
    gc.set_threshold(50_000, 20, 20)
    hub = WorkerHub(cfg.first_stream_id)
    hub.bind_loop(asyncio.get_running_loop())
    service = WorkerAds(
        hub, control, auth=cfg.auth, nacks=NackReporter(control),
        limits=NameLimits(cfg.max_names_per_request, cfg.max_names_per_stream),
    )  # fmt: skip
    snapshot: Snapshot | None = None
    # The token states and the first (full) snapshot come before the port is bound, so no
    # stream is ever served an empty configuration.
    while snapshot is None:
        msg = await control.recv()
        if msg is None:
            return 0
        snapshot = _handle(msg, hub, service, control, snapshot)
    hub.publish(snapshot)
    tls = Settings.model_construct(
        xds_tls_cert=cfg.tls_cert or None, xds_tls_key=cfg.tls_key or None,
        xds_tls_client_ca=cfg.tls_client_ca or None,
    )  # fmt: skip
    server = compat.ConnectionTrackingServer(
        [service], codec=BytesPassthroughCodec(),
        config=keepalive_config(cfg.keepalive_seconds, cfg.keepalive_timeout_seconds),
    )  # fmt: skip
    await server.start(cfg.host, cfg.port, reuse_address=True, reuse_port=True,
                       ssl=xds_server_context(tls), backlog=4096)  # fmt: skip
    control.send(pb.WorkerToCore(ready=pb.Ready(port=cfg.port, serial=snapshot.serial)))
    reporter = asyncio.ensure_future(_report(hub, control, cfg.status_interval_seconds or 0.5))
    grace = 0.0
    try:
        while True:
            msg = await control.recv()
            if msg is None:
                break
            if msg.HasField("shutdown"):
                grace = msg.shutdown.grace_seconds
                break
            snapshot = _handle(msg, hub, service, control, snapshot)
    except FrameError as err:
        log.error("xDS worker %d: out of step with the core (%s); exiting", slot, err)
        return 1
    finally:
        reporter.cancel()
        with contextlib.suppress(BaseException):
            await reporter
        # Stop accepting, cancel every stream handler and close the connections at once (their
        # Envoys reconnect to the port: another worker, or the next core's); then give the
        # handlers at most the grace period to finish.
        server.close()
        server.close_connections()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), max(grace, 0.1))
        writer.close()
    return 0


def _handle(
    msg: pb.CoreToWorker, hub: Hub, service: WorkerAds, control: Control, current: Snapshot | None
) -> Snapshot | None:
    """Apply one message from the core; returns the snapshot now served."""
    kind = msg.WhichOneof("msg")
    if kind == "snapshot":
        new = apply_frame(current, msg.snapshot)
        if current is not None:
            hub.publish(new)  # wakes every stream actor (one loop hop per snapshot)
        return new
    if kind == "tokens":
        service.tokens = {t.id: (t.active, t.expires_at) for t in msg.tokens.tokens}
        hub.wake_all()  # a revoked token's streams end at their next wake-up
    elif kind == "auth":
        fut = control.auth_waiters.get(msg.auth.request_id)
        if fut is not None and not fut.done():
            fut.set_result(msg.auth)
    return current


async def _report(hub: WorkerHub, control: Control, interval: float) -> None:
    """Every `interval`: the streams that changed, and the counters, to the core."""
    while True:
        await asyncio.sleep(interval)
        status = hub.take_status(hub.snapshot.serial)
        if status is not None:
            control.send(pb.WorkerToCore(nodes=status))
        control.send(pb.WorkerToCore(counters=_counters()))
        await control.writer.drain()


def main() -> None:
    ap = argparse.ArgumentParser(description="Flowplane xDS worker (started by the core)")
    ap.add_argument("--control", required=True, help="the core's Unix socket")
    ap.add_argument("--slot", type=int, required=True)
    args = ap.parse_args()
    # The core stops its workers (Shutdown, or by pid); a Ctrl-C meant for the core's terminal
    # must not kill them first (their streams end when the core says so).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = asyncio.run(run(args.control, args.slot))
    except KeyboardInterrupt:
        code = 0
    except (ConnectionError, FileNotFoundError) as err:
        print(f"flowplane xDS worker {args.slot}: cannot reach the core: {err}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
