"""The core's side of the xDS workers (`flowplane serve --xds-workers N`, N >= 1): trio.

`WorkerPool` reserves the xDS port (a bound, never listening SO_REUSEPORT socket: it fixes the
port, port 0 included, and takes no connections), listens on a private Unix socket, starts N
worker processes (`python -m flowplane.grpc.worker`) and supervises them: a worker that exits
while the pool runs is restarted (backoff 0.1 s doubling to 5 s, reset after a minute up).

Per worker connection (proto/flowplane_workers.proto): WorkerConfig, the token states and a full
snapshot, then every published snapshot as a change from the one the worker holds — encoded once
per change and sent to every worker in step (`_frame`), coalesced to the latest when a worker is
behind (xds rule 17, at the worker level). Inbound: node status (merged into the directory that
`/api/v1/nodes` reads: `connected()`), counters (added to this process's metrics, so `/metrics`
is the sum), NACK reports (logged rate-limited per node, like in-process) and authentication
requests (answered with `token_identity`, the in-process rule; refusals are audited here).

The pool plugs into the in-process hub: `Hub.observers` calls `publish`, `Hub.sources` lists the
workers' streams, and the token listeners call `tokens_changed` (a revoked token's streams end).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from flowplane.auth.authenticator import Authenticator
from flowplane.errors import FlowplaneError
from flowplane.grpc.ads import token_identity
from flowplane.grpc.frames import FrameBuffer, RemoteStream, frame, snapshot_frame
from flowplane.grpc.nacklog import NackLog
from flowplane.grpc.proto import flowplane_workers_pb2 as pb
from flowplane.observability import metrics
from flowplane.settings import Settings
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.sotw import Rejection, TypeStatus

log = logging.getLogger("flowplane.workers")

_STREAM_ID_STRIDE = 1 << 32
"""Each worker incarnation numbers its streams from its own multiple of this (unique ids)."""
_METRICS: dict[str, Any] = {
    "flowplane_xds_streams": metrics.XDS_STREAMS,
    "flowplane_xds_responses_total": metrics.XDS_RESPONSES,
    "flowplane_xds_nacks_total": metrics.XDS_NACKS,
    "flowplane_xds_stream_crashes_total": metrics.XDS_STREAM_CRASHES,
}
_GAUGES = frozenset({"flowplane_xds_streams"})


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) TCP socket with SO_REUSEPORT on host:port: holds the port for
    the workers, who bind it with SO_REUSEPORT too. Raises OSError if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Link:
    """One connected worker: what it was sent, its streams and counters."""

    def __init__(self, slot: int, stream: trio.SocketStream) -> None:
        self.slot = slot
        self.stream = stream
        self.send_lock = trio.Lock()
        self.sent: Snapshot | None = None
        self.tokens_sent = -1
        self.ready = False
        self.serial = 0  # the snapshot the worker reported serving
        self.streams: dict[int, RemoteStream] = {}
        self.counters: dict[tuple[str, tuple[str, ...]], float] = {}

    async def send(self, data: bytes) -> None:
        """Send a frame; a worker that went away is noticed by the reader (end of stream), so
        a failed send is dropped here rather than raised into the link's nursery."""
        async with self.send_lock:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(data)


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        workers: int,
        *,
        authenticator: Authenticator | None = None,
        status_interval: float = 0.5,
        command: Callable[[str, int], list[str]] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.settings = settings
        self.workers = workers
        self.authenticator = authenticator
        self.status_interval = status_interval
        self._command = command or _worker_command
        self.current = Snapshot.empty()
        self._changed = trio.Event()
        self._tokens_version = 0
        self._links: dict[int, _Link] = {}
        self._procs: dict[int, trio.Process] = {}
        self._incarnations = 0
        self._frame_memo: tuple[int, int, bytes] | None = None
        self._stopping = False
        self._stopped = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._reserved: socket.socket | None = None
        self.port: int | None = None
        self.restarts = 0
        self.nacks = NackLog(log)
        self._gauges_set: set[tuple[str, tuple[str, ...]]] = set()

    # -- what the rest of the core calls (sync, from trio) ----------------------------------------

    def publish(self, snapshot: Snapshot) -> None:
        """A new snapshot: every worker is sent the change (the hub calls this)."""
        self.current = snapshot
        self._wake()

    def tokens_changed(self) -> None:
        """A token changed (revoked, expired, created): every worker gets the token states."""
        self._tokens_version += 1
        self._wake()

    def _wake(self) -> None:
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    def connected(self) -> list[RemoteStream]:
        """Every stream the workers reported (the nodes API's `NodeDirectory`)."""
        return [s for link in list(self._links.values()) for s in link.streams.values()]

    def pids(self) -> dict[int, int]:
        """slot -> pid of the running worker processes."""
        return {slot: p.pid for slot, p in self._procs.items() if p.returncode is None}

    def ready_workers(self) -> int:
        return sum(1 for link in self._links.values() if link.ready)

    # -- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Reserve the port, start the workers; started() with the port once every worker
        serves. Returns after `stop`; if cancelled instead, kills the workers.
        """
        host, port = self.settings.xds_host_port
        self._reserved = reserve_port(host, port)
        self.port = int(self._reserved.getsockname()[1])
        tmp = tempfile.mkdtemp(prefix="flowplane-xds-")
        path = str(Path(tmp) / "control.sock")
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await listener.bind(path)
            listener.listen(max(16, self.workers * 2))
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._accept, trio.SocketListener(listener))
                for slot in range(self.workers):
                    nursery.start_soon(self._supervise, slot, path)
                with trio.fail_after(60):
                    while self.ready_workers() < self.workers:
                        await self._changed_or(0.05)
                log.info("xDS workers ready: %d on port %d", self.workers, self.port)
                task_status.started(self.port)
                await self._stopped.wait()  # `stop` told the workers to go, and they went
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._kill_all()
            listener.close()
            self._reserved.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
                os.rmdir(tmp)

    async def _changed_or(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self._changed.wait()

    async def stop(self, grace: float) -> None:
        """Tell every worker to stop (closing its streams within `grace`), wait for them."""
        self._stopping = True
        msg = frame(pb.CoreToWorker(shutdown=pb.Shutdown(grace_seconds=grace)))
        for link in list(self._links.values()):
            await link.send(msg)
        with trio.move_on_after(grace + 1):
            for proc in list(self._procs.values()):
                await proc.wait()
        await self._kill_all()
        self._stopped.set()

    async def _kill_all(self) -> None:
        self._stopping = True
        for proc in list(self._procs.values()):
            if proc.returncode is None:
                with contextlib.suppress(OSError):
                    proc.kill()
                await proc.wait()

    async def _supervise(self, slot: int, path: str) -> None:
        backoff = 0.1
        while not self._stopping:
            started = trio.current_time()
            proc = await trio.lowlevel.open_process(self._command(path, slot))
            self._procs[slot] = proc
            try:
                code = await proc.wait()
            finally:
                if proc.returncode is None:
                    with trio.CancelScope(shield=True):
                        proc.kill()
                        await proc.wait()
            self._drop(slot)
            if self._stopping:
                return
            self.restarts += 1
            log.warning("xDS worker %d (pid %d) exited with status %s; restarting it",
                        slot, proc.pid, code)  # fmt: skip
            backoff = 0.1 if trio.current_time() - started > 60 else min(backoff * 2, 5.0)
            await trio.sleep(backoff)

    def _drop(self, slot: int) -> None:
        """A worker is gone: its streams leave the directory, its gauges the metrics."""
        link = self._links.pop(slot, None)
        if link is None:
            return
        for sid in link.streams:
            rs = link.streams[sid]
            self.nacks.close(rs.node_id or rs.address)
        link.streams.clear()
        self._recount_gauges()

    async def _accept(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                assert self._nursery is not None
                self._nursery.start_soon(self._serve_link, stream)

    async def _serve_link(self, stream: trio.SocketStream) -> None:
        buf = FrameBuffer()
        link: _Link | None = None
        try:
            async with stream, trio.open_nursery() as nursery:
                while True:
                    try:
                        data = await stream.receive_some(1 << 20)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""  # the worker died: as an end of stream
                    if not data:
                        break
                    for body in buf.feed(data):
                        msg = pb.WorkerToCore()
                        msg.ParseFromString(body)
                        if link is None:
                            if not msg.HasField("hello"):
                                log.error("xDS worker connection without Hello; closed")
                                return
                            link = await self._hello(msg.hello, stream)
                            nursery.start_soon(self._feed, link)
                        else:
                            await self._inbound(link, msg)
                nursery.cancel_scope.cancel()
        finally:
            if link is not None and self._links.get(link.slot) is link:
                self._drop(link.slot)

    async def _hello(self, hello: pb.Hello, stream: trio.SocketStream) -> _Link:
        link = _Link(hello.slot, stream)
        old = self._links.get(hello.slot)
        if old is not None:
            self._drop(hello.slot)
        self._links[hello.slot] = link
        self._incarnations += 1
        s = self.settings
        host, _ = s.xds_host_port
        cfg = pb.WorkerConfig(
            slot=hello.slot, host=host, port=self.port or 0, auth=s.xds_auth,
            keepalive_seconds=s.xds_keepalive_seconds,
            keepalive_timeout_seconds=s.xds_keepalive_timeout_seconds,
            max_names_per_request=s.xds_max_names_per_request,
            max_names_per_stream=s.xds_max_names_per_stream,
            tls_cert=s.xds_tls_cert or "", tls_key=s.xds_tls_key or "",
            tls_client_ca=s.xds_tls_client_ca or "",
            first_stream_id=self._incarnations * _STREAM_ID_STRIDE + 1,
            status_interval_seconds=self.status_interval,
            log_format=s.log_format, log_level=s.log_level,
        )  # fmt: skip
        log.info("xDS worker %d connected (pid %d)", hello.slot, hello.pid)
        await link.send(frame(pb.CoreToWorker(config=cfg)))
        return link

    def _token_states(self) -> bytes:
        out = pb.TokenStates()
        auth = self.authenticator.auth if self.authenticator is not None else None
        now = datetime.now(UTC)
        for tok in (auth.tokens.values() if auth is not None else ()):
            expires = tok.expires_at.timestamp() if tok.expires_at else 0.0
            out.tokens.add(id=tok.id, active=tok.status == "active" and tok.active_at(now),
                           expires_at=expires)  # fmt: skip
        return frame(pb.CoreToWorker(tokens=out))

    def _frame(self, old: Snapshot | None, new: Snapshot) -> bytes:
        """The encoded change old -> new, memoised: every worker in step shares one encoding."""
        key = (-1 if old is None else old.serial, new.serial)
        memo = self._frame_memo
        if memo is not None and memo[:2] == key:
            return memo[2]
        data = frame(pb.CoreToWorker(snapshot=snapshot_frame(old, new)))
        self._frame_memo = (*key, data)
        return data

    async def _feed(self, link: _Link) -> None:
        """Send `link` the token states and snapshots as they change (latest only)."""
        while True:
            changed = self._changed
            if link.tokens_sent != self._tokens_version:
                link.tokens_sent = self._tokens_version
                await link.send(self._token_states())
            current = self.current
            if link.sent is not current:
                await link.send(self._frame(link.sent, current))
                link.sent = current
            if changed is self._changed:
                await changed.wait()

    async def _inbound(self, link: _Link, msg: pb.WorkerToCore) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "nodes":
            st = msg.nodes
            link.serial = st.serial
            if st.full:
                link.streams.clear()
            for sid in st.removed:
                gone = link.streams.pop(sid, None)
                if gone is not None:
                    self.nacks.close(gone.node_id or gone.address)
            for s in st.upserted:
                link.streams[s.stream_id] = RemoteStream.from_proto(s, link.slot)
            for g in st.groups:
                # one shared, immutable TypeStatus for every stream of the group
                ts = TypeStatus(g.version_sent or None, None, g.version_acked or None, None)
                for sid in g.stream_ids:
                    known = link.streams.get(sid)
                    if known is not None:
                        known.state.types[g.type_url] = ts
        elif kind == "ready":
            link.ready = True
            link.serial = msg.ready.serial
            self._wake()
        elif kind == "auth":
            await link.send(frame(pb.CoreToWorker(auth=self._authenticate(msg.auth))))
        elif kind == "counters":
            self._count(link, msg.counters)
        elif kind == "nack":
            n = msg.nack
            self.nacks.nack(n.node, Rejection(n.type_url, n.version or None, "", n.message,
                                              tuple(n.resource_names), n.node))  # fmt: skip

    def _authenticate(self, req: pb.AuthRequest) -> pb.AuthReply:
        if self.authenticator is None:
            return pb.AuthReply(request_id=req.request_id, ok=False, grpc_status=13,
                                message="token authentication is not configured")  # fmt: skip
        try:
            team, required, token_id = token_identity(
                self.authenticator, req.authorization or None, req.peer
            )
        except FlowplaneError as err:
            log.warning("xDS stream from %s refused: %s", req.peer, err)
            return pb.AuthReply(request_id=req.request_id, ok=False,
                                grpc_status=err.grpc_status, message=err.message)  # fmt: skip
        return pb.AuthReply(request_id=req.request_id, ok=True, has_team=team is not None,
                            team=team or "", team_required=required,
                            token_id=token_id or "")  # fmt: skip

    def _count(self, link: _Link, counters: pb.Counters) -> None:
        gauges_changed = False
        for s in counters.samples:
            metric = _METRICS.get(s.name)
            if metric is None:
                continue
            labels = tuple(s.labels)
            key = (s.name, labels)
            before = link.counters.get(key, 0.0)
            link.counters[key] = s.value
            if s.name in _GAUGES:
                gauges_changed |= before != s.value
            elif s.value > before and math.isfinite(s.value):
                _child(metric, labels).inc(s.value - before)
        if gauges_changed:
            self._recount_gauges()

    def _recount_gauges(self) -> None:
        totals: dict[tuple[str, tuple[str, ...]], float] = {}
        for link in self._links.values():
            for key, value in link.counters.items():
                if key[0] in _GAUGES:
                    totals[key] = totals.get(key, 0.0) + value
        for (name, labels), value in totals.items():
            _child(_METRICS[name], labels).set(value)
        for key in self._gauges_set - totals.keys():  # label sets no live worker reports
            _child(_METRICS[key[0]], key[1]).set(0)
        self._gauges_set = set(totals)


def _child(metric: Any, labels: tuple[str, ...]) -> Any:
    if not labels:
        return metric
    return metric.labels(**dict(label.split("=", 1) for label in labels))


def _worker_command(path: str, slot: int) -> list[str]:
    return [sys.executable, "-m", "flowplane.grpc.worker", "--control", path, "--slot", str(slot)]


def default_workers() -> int:
    """`--xds-workers` when not given: the number of CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


__all__ = ["WorkerPool", "default_workers", "reserve_port"]
