"""flowplane/grpc/compat.py: the third-party internals Flowplane relies on, checked on the
installed versions (issue 9).

"The grpclib attributes read in grpc/ads.py and grpc/server.py, and the trio-asyncio loop patch
in grpc/loop.py, live in one compat module with a test asserting that each attribute still
exists; the patch is installed when a server starts (not at import) and checks the installed
trio-asyncio version, refusing with a clear message on a version it was not written for."

A dependency upgrade that drops or renames an internal fails here, naming it, instead of in a
production stream. The grpclib internals are read on real objects: a grpclib server on loopback
with a real client stream.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import importlib
import os
import re
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality, Handler
from grpclib.protocol import H2Protocol
from grpclib.server import Stream
from trio_asyncio import BaseTrioEventLoop
from trio_asyncio._handles import AsyncHandle

from flowplane.errors import ConfigurationError
from flowplane.grpc import compat
from flowplane.grpc import loop as batched_loop
from flowplane.grpc.hub import Hub
from flowplane.grpc.server import XdsServer

ECHO = "/flowplane.test.Echo/Echo"


@dataclass
class _Seen:
    """Real grpclib objects from one request/response exchange, for inspection."""

    port: int
    missing: list[str]  # compat.INTERNALS of grpclib's objects not found, while all were live
    protocols: list[H2Protocol]
    request: Any
    replies: list[Any]
    open_before_close: list[bool]
    closing_after_close: list[bool]
    fast: list[bool]  # compat.send_message_now's answers: before the headers, then per reply
    windows: list[int]  # the stream's send window after the headers, then after each reply


def _replies(request: Any) -> list[Any]:
    """What the echo handler answers: the request itself (one DATA frame), a 40 KB message (more
    than one 16 KB frame, within the 64 KB window) and a 70 KB one (more than the window)."""
    return [
        request,
        DiscoveryRequest(type_url=request.type_url, resource_names=["x" * 1000] * 40),
        DiscoveryRequest(type_url=request.type_url, resource_names=["y" * 1000] * 70),
    ]


@contextlib.asynccontextmanager
async def _serving(
    handler: Callable[[Stream[Any, Any]], Awaitable[None]],
) -> AsyncIterator[tuple[compat.ConnectionTrackingServer, Channel]]:
    """A ConnectionTrackingServer on loopback with `handler` at ECHO, and a grpclib client
    channel to it with HTTP/2's default 64 KB windows (grpclib's would grant 4 MB: a reply can
    exceed these)."""

    class Service:
        def __mapping__(self) -> dict[str, Handler]:
            return {
                ECHO: Handler(
                    handler, Cardinality.STREAM_STREAM, DiscoveryRequest, DiscoveryRequest
                )
            }

    server = compat.ConnectionTrackingServer([Service()])
    await server.start("127.0.0.1", 0)
    try:
        port = int(compat.bound_sockets(server)[0].getsockname()[1])
        small = Configuration(http2_connection_window_size=65535, http2_stream_window_size=65535)
        channel = Channel("127.0.0.1", port, config=small)
        try:
            yield server, channel
        finally:
            channel.close()
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let the transports finish closing


async def _echo_exchange() -> _Seen:
    """On the asyncio side: serve one echo stream that reads its request through `compat`,
    then close the server's connections through `compat` while the client still holds one."""
    streams: list[Stream[Any, Any]] = []
    requests: list[Any] = []
    fast: list[bool] = []
    windows: list[int] = []
    h2s: list[tuple[Any, Any]] = []
    buffers: list[Any] = []

    async def echo(stream: Stream[Any, Any]) -> None:
        streams.append(stream)
        buffers.append(stream._stream.buffer)  # grpclib's own, before deliver_requests
        whole: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        chunks = bytearray()

        def deliver(data: bytes | None) -> None:
            if data is None:
                whole.set_result(bytes(chunks))
            else:
                chunks.extend(data)

        compat.deliver_requests(stream, deliver)
        raw = await whole  # the client ends its side after its one message
        (length,) = struct.unpack(">I", raw[1:5])
        body = raw[5 : 5 + length]
        assert len(raw) == 5 + length
        requests.append(compat.request_type(stream).FromString(body))
        request = requests[-1]
        # before the response headers: the fast path refuses (grpclib sends them first)
        fast.append(compat.send_message_now(stream, request.SerializeToString()))
        await stream.send_initial_metadata()
        h2c = stream._stream._h2_connection
        h2s.append((h2c, h2c.streams[stream._stream.id]))
        windows.append(h2c.local_flow_control_window(stream._stream.id))
        for reply in _replies(request):
            ok = compat.send_message_now(stream, reply.SerializeToString())
            fast.append(ok)
            windows.append(h2c.local_flow_control_window(stream._stream.id))
            if not ok:
                await stream.send_message(reply)  # grpclib waits for the client's window update

    async with _serving(echo) as (server, channel):
        port = int(compat.bound_sockets(server)[0].getsockname()[1])
        sent = DiscoveryRequest(type_url="type.example/T", version_info="v1")
        async with channel.request(
            ECHO, Cardinality.STREAM_STREAM, DiscoveryRequest, DiscoveryRequest
        ) as call:
            await call.send_message(sent, end=True)
            replies = [await call.recv_message() for _ in _replies(sent)]
            await call.recv_trailing_metadata()
        protocols = list(server.protocols)
        assert streams, "the handler never ran"
        assert protocols, "the server recorded no connection"
        missing = _missing_on_grpclib(server, streams[0], protocols[0], buffers[0], *h2s[0])
        open_before = [not p.connection.is_closing() for p in protocols]
        server.close_connections()
        await asyncio.sleep(0)
        closing_after = [p.connection.is_closing() for p in protocols]
    return _Seen(port, missing, protocols, requests[0], replies, open_before, closing_after,
                 fast, windows)  # fmt: skip


def _missing(instances: dict[str, object]) -> list[str]:
    """`owner.attr` for each attribute of compat.INTERNALS[owner] that `instances[owner]` lacks."""
    for owner, obj in instances.items():
        assert isinstance(obj, _resolve(owner)), owner
    return [
        f"{owner}.{attr}"
        for owner, obj in instances.items()
        for attr in compat.INTERNALS[owner]
        if not hasattr(obj, attr)
    ]


GRPCLIB_OWNERS = {owner for owner in compat.INTERNALS if owner.startswith(("grpclib.", "h2."))}


def _missing_on_grpclib(
    server: object, stream: object, protocol: H2Protocol, buffer: object, h2c: object, h2s: object
) -> list[str]:
    instances = {
        "grpclib.protocol.Buffer": buffer,
        "h2.connection.H2Connection": h2c,
        "h2.stream.H2Stream": h2s,
        "h2.frame_buffer.FrameBuffer": getattr(h2c, "incoming_buffer", None),
        "h2.stream.H2StreamStateMachine": getattr(h2s, "state_machine", None),
        "h2.windows.WindowManager": getattr(h2s, "_inbound_window_manager", None),
        "grpclib.protocol.EventsProcessor": getattr(protocol, "processor", None),
        "grpclib.server.Stream": stream,
        "grpclib.protocol.Stream": getattr(stream, "_stream", None),
        "grpclib.server.Server": server,
        "grpclib.protocol.H2Protocol": protocol,
        "grpclib.protocol.Connection": getattr(protocol, "connection", None),
        "grpclib.config.Configuration": Configuration(),
    }
    # a new grpclib entry in the table needs an instance here: fail on it rather than skip it
    assert set(instances) == GRPCLIB_OWNERS
    return _missing(instances)


def _resolve(owner: str) -> type:
    module, _, name = owner.rpartition(".")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


async def test_every_internal_relied_on_still_exists() -> None:
    """Each attribute listed in compat.INTERNALS, on a real instance of its owner."""
    with trio.fail_after(10):
        async with trio_asyncio.open_loop() as loop:
            seen = await trio_asyncio.aio_as_trio(_echo_exchange)()
            instances: dict[str, object] = {
                "trio_asyncio.TrioEventLoop": loop,
                "trio_asyncio._handles.AsyncHandle": AsyncHandle(
                    trio.lowlevel.checkpoint, (), loop
                ),
                "asyncio.Handle": asyncio.Handle(print, (), loop),
                "asyncio.TimerHandle": asyncio.TimerHandle(0.0, print, (), loop),
            }
            assert set(instances) | GRPCLIB_OWNERS == set(compat.INTERNALS)
            missing = seen.missing + _missing(instances)
    versions = {d: metadata.version(d) for d in ("grpclib", "trio-asyncio", "h2")}
    assert not missing, (
        f"gone from the installed {versions}: {missing}. flowplane/grpc/compat.py was written "
        f"against grpclib {compat.GRPCLIB_VERSION}, h2 {compat.H2_VERSION} and trio-asyncio "
        f"{compat.TRIO_ASYNCIO_VERSION}"
    )


async def test_the_grpclib_accessors_work_on_a_real_stream() -> None:
    """The functions behind those internals do what the edge relies on: read the raw request
    bytes and decode them with the registered type, report the bound port, close connections."""
    with trio.fail_after(10):
        async with trio_asyncio.open_loop():
            seen = await trio_asyncio.aio_as_trio(_echo_exchange)()
    assert seen.port > 0
    assert seen.request == DiscoveryRequest(type_url="type.example/T", version_info="v1")
    assert seen.replies == _replies(seen.request)  # the echo went back over the same stream
    assert seen.open_before_close == [True] * len(seen.protocols)
    assert seen.closing_after_close == [True] * len(seen.protocols)


async def test_send_message_now_writes_what_h2_would_or_nothing() -> None:
    """`compat.send_message_now` sends a message at once only when grpclib could without waiting
    (headers sent, the whole message within the flow-control window), in frames of at most the
    peer's frame size, decrementing the window by what it sent; otherwise it writes nothing and
    the caller's `send_message` waits for the window as grpclib does. The client (grpclib's, on
    h2) decodes every message."""
    with trio.fail_after(10):
        async with trio_asyncio.open_loop():
            seen = await trio_asyncio.aio_as_trio(_echo_exchange)()
    assert seen.fast == [False, True, True, False]  # before headers; 1 frame; 3 frames; > window
    sizes = [len(r.SerializeToString()) + 5 for r in _replies(seen.request)]
    assert sizes[1] > 16384 and sizes[1] < seen.windows[0] < sizes[1] + sizes[2]
    assert seen.windows[1] == seen.windows[0] - sizes[0]
    assert seen.windows[2] == seen.windows[1] - sizes[1]
    assert seen.replies == _replies(seen.request)


ROUNDS = 6


async def _streaming_exchange() -> tuple[int, dict[str, int], list[Any]]:
    """A client sends ROUNDS requests on one stream, each after the reply to the one before (20
    KB each, so its 64 KB window makes it send WINDOW_UPDATEs), then a last one; the server
    delivers them (`deliver_requests`) and replies. Returns the chunks `receive_now` handled,
    the flow-control state and counters h2 and grpclib hold when the last request arrives, and
    the requests the server decoded."""
    got: asyncio.Queue[Any] = asyncio.Queue()
    state: dict[str, int] = {}
    seen: list[Any] = []

    async def serve(stream: Stream[Any, Any]) -> None:
        chunks = bytearray()

        def deliver(data: bytes | None) -> None:
            chunks.extend(data or b"")
            while len(chunks) >= 5:
                (length,) = struct.unpack(">I", chunks[1:5])
                if len(chunks) < 5 + length:
                    return
                got.put_nowait(DiscoveryRequest.FromString(bytes(chunks[5 : 5 + length])))
                del chunks[: 5 + length]

        compat.deliver_requests(stream, deliver)
        for i in range(ROUNDS + 1):
            request = await got.get()
            seen.append(request)
            if i == ROUNDS:
                h2c = stream._stream._h2_connection
                h2s = h2c.streams[stream._stream.id]
                state.update(
                    conn_in=h2c._inbound_flow_control_window_manager.current_window_size,
                    stream_in=h2s._inbound_window_manager.current_window_size,
                    conn_out=h2c.outbound_flow_control_window,
                    stream_out=h2s.outbound_flow_control_window,
                    conn_received=stream._stream.connection.data_received,
                    stream_received=stream._stream.data_received,
                    content_length=h2s._actual_content_length,
                )
            await stream.send_message(
                DiscoveryRequest(version_info=str(i), resource_names=["z" * 1000] * 20)
            )

    async with _serving(serve) as (server, channel):
        async with channel.request(
            ECHO, Cardinality.STREAM_STREAM, DiscoveryRequest, DiscoveryRequest
        ) as call:
            for i in range(ROUNDS + 1):
                await call.send_message(
                    DiscoveryRequest(version_info=str(i), response_nonce=f"n{i}"),
                    end=i == ROUNDS,
                )
                reply = await call.recv_message()
                assert reply.version_info == str(i)
            await call.recv_trailing_metadata()
        handled = sum(p.received_now for p in server.protocols)
    return handled, state, seen


async def test_receive_now_leaves_h2_and_grpclib_as_h2_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`compat.receive_now` takes a stream's steady-state frames (DATA, WINDOW_UPDATE) past h2:
    the same exchange, with it and with every chunk given to h2, ends in the same flow-control
    windows, counters and decoded requests; and it did take some (the client's end of stream,
    HEADERS and SETTINGS go to h2)."""
    with trio.fail_after(10):
        async with trio_asyncio.open_loop():
            fast = await trio_asyncio.aio_as_trio(_streaming_exchange)()
    monkeypatch.setattr(compat, "receive_now", lambda protocol, data: False)
    with trio.fail_after(10):
        async with trio_asyncio.open_loop():
            slow = await trio_asyncio.aio_as_trio(_streaming_exchange)()
    assert fast[0] >= ROUNDS - 1 and slow[0] == 0
    assert fast[1] == slow[1]
    assert fast[1]["conn_out"] < 65535  # the client did send window updates (and data)
    assert (
        fast[2]
        == slow[2]
        == [
            DiscoveryRequest(version_info=str(i), response_nonce=f"n{i}") for i in range(ROUNDS + 1)
        ]
    )


def test_keepalive_configuration_sets_the_private_fields() -> None:
    cfg = compat.keepalive_configuration(
        time=12.0, timeout=3.0, max_pings_without_data=0, min_sent_ping_interval_without_data=6.0
    )
    assert cfg._keepalive_time == 12.0
    assert cfg._keepalive_timeout == 3.0
    assert cfg._http2_max_pings_without_data == 0
    assert cfg._http2_min_sent_ping_interval_without_data == 6.0


# The patch in flowplane/grpc/loop.py copies these two methods of trio-asyncio 0.16.0. A new
# version refuses to install anyway; this says whether the copy must be redone when the pinned
# version (and compat.TRIO_ASYNCIO_VERSION) is moved.
UPSTREAM_FINGERPRINTS = {
    "_main_loop_one": "30e5acc46164378b",
    "call_soon": "dee79154232f6e2e",
}


def _upstream_method_source(name: str) -> str:
    """The source of BaseTrioEventLoop.`name` as trio-asyncio ships it (read from its file, so a
    patched class does not matter)."""
    path = BaseTrioEventLoop.__init__.__code__.co_filename  # __init__ is never patched
    with open(path, encoding="utf-8") as f:
        source = f.read()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == BaseTrioEventLoop.__name__:
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == name:
                    segment = ast.get_source_segment(source, item)
                    assert segment is not None
                    return segment
    raise AssertionError(f"BaseTrioEventLoop.{name} not found in {path}")


@pytest.mark.parametrize("name", sorted(UPSTREAM_FINGERPRINTS))
def test_the_copied_trio_asyncio_methods_are_unchanged_upstream(name: str) -> None:
    digest = hashlib.sha256(_upstream_method_source(name).encode()).hexdigest()[:16]
    assert digest == UPSTREAM_FINGERPRINTS[name], (
        f"trio-asyncio {metadata.version('trio-asyncio')} changed BaseTrioEventLoop.{name}: "
        f"redo the copy in flowplane/grpc/loop.py from it, then record {digest} here"
    )


@pytest.fixture
def unpatched(monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    """Stand-ins for the two methods (restored after the test), so that what `install` does
    is visible whether or not an earlier test of this process installed the patch."""

    async def main_loop_one(self: Any, no_wait: bool = False) -> None:
        raise AssertionError("stand-in")

    def call_soon(self: Any, callback: Any, *args: Any, **context: Any) -> Any:
        raise AssertionError("stand-in")

    monkeypatch.setattr(BaseTrioEventLoop, "_main_loop_one", main_loop_one)
    monkeypatch.setattr(BaseTrioEventLoop, "call_soon", call_soon)
    return main_loop_one, call_soon


@pytest.mark.parametrize("found", ["0.17.0", "0.15.1", None])
def test_install_refuses_another_trio_asyncio_version(
    monkeypatch: pytest.MonkeyPatch, unpatched: tuple[object, object], found: str | None
) -> None:
    """A version other than the one the patch was copied from is refused, naming both versions,
    and nothing is patched. (A wrong installed version cannot be caused for real here: the
    version lookup is replaced.)"""
    monkeypatch.setattr(compat, "installed_version", lambda dist: found)
    named = re.escape(found or "(not installed)")
    with pytest.raises(
        ConfigurationError,
        match=rf"trio-asyncio {named} is installed.*written for trio-asyncio 0\.16\.0",
    ):
        compat.install_batched_loop()
    assert (BaseTrioEventLoop._main_loop_one, BaseTrioEventLoop.call_soon) == unpatched
    assert not compat.batched_loop_installed()


async def test_a_server_refuses_to_start_on_another_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check runs where the patch is installed: XdsServer.start, before binding."""
    monkeypatch.setattr(compat, "installed_version", lambda dist: "0.17.0")
    with trio.fail_after(10):
        async with trio_asyncio.open_loop() as loop:
            server = XdsServer(Hub(), loop)
            with pytest.raises(ConfigurationError, match=r"trio-asyncio 0\.17\.0 is installed"):
                await server.start("127.0.0.1", 0)
    assert server._server is None  # nothing was bound


async def test_install_is_idempotent(unpatched: tuple[object, object]) -> None:
    compat.install_batched_loop()
    compat.install_batched_loop()
    assert compat.batched_loop_installed()
    # open_loop's class inherits both methods (no override in a subclass hides the patch)
    assert trio_asyncio.TrioEventLoop._main_loop_one is batched_loop.main_loop_one
    assert trio_asyncio.TrioEventLoop.call_soon is batched_loop.call_soon
    order: list[int] = []
    with trio.fail_after(5):
        async with trio_asyncio.open_loop() as loop:
            done = trio.Event()
            for i in range(3 * batched_loop.BATCH):
                loop.call_soon(order.append, i)
            loop.call_soon(done.set)
            await done.wait()
    assert order == list(range(3 * batched_loop.BATCH))


def test_importing_the_grpc_edge_installs_nothing() -> None:
    """In a fresh interpreter: importing every module on the server's path leaves trio-asyncio's
    loop as shipped; a server start (here: the install it performs) is what patches it."""
    script = "\n".join(
        [
            "import flowplane.app, flowplane.testing.plane",
            "import flowplane.grpc.ads, flowplane.grpc.server, flowplane.grpc.loop",
            "from flowplane.grpc import compat",
            "from trio_asyncio import BaseTrioEventLoop as L",
            "print(L._main_loop_one.__qualname__, L.call_soon.__qualname__,",
            "      compat.batched_loop_installed())",
            "compat.install_batched_loop()",
            "print(compat.batched_loop_installed())",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "BaseTrioEventLoop._main_loop_one",
        "BaseTrioEventLoop.call_soon",
        "False",
        "True",
    ]


def test_serve_refuses_another_version_before_touching_the_database(tmp_path: Path) -> None:
    """`flowplane serve` reports the refusal as one line (exit 2), like any start-up error,
    and creates no database: the check runs before the server's nursery opens."""
    script = "\n".join(
        [
            "import sys",
            "from flowplane.grpc import compat",
            "compat.installed_version = lambda dist: '0.17.0'",
            "from flowplane.cli.main import main",
            "sys.exit(main(sys.argv[1:]))",
        ]
    )
    db = tmp_path / "flowplane.db"
    argv = ["serve", "--database-url", f"sqlite:///{db}", "--api-address", "127.0.0.1:0"]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FLOWPLANE_XDS_ADDRESS": "127.0.0.1:0"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("flowplane: trio-asyncio 0.17.0 is installed"), done.stderr
    assert "written for trio-asyncio 0.16.0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists()


def test_handler_sweeps_are_spaced_by_the_number_of_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """grpclib sweeps its set of connection handlers every 10 new connections, O(N^2) over a
    reconnect storm of N: ConnectionTrackingServer sweeps every max(10, N) connections."""
    server = compat.ConnectionTrackingServer([])
    sweeps: list[int] = []

    class Conn:  # stands for an H2Protocol in the server's weak set
        pass

    held: list[Conn] = []
    monkeypatch.setattr(server, "__gc_collect__", lambda: sweeps.append(len(held)))
    for _ in range(1000):
        held.append(Conn())
        server.protocols.add(held[-1])  # type: ignore[arg-type]
        server.__gc_step__()  # as grpclib's _protocol_factory does per connection
    # 10, 20, 40, 80, ...: each sweep waits as many connections as were held at the last one
    assert sweeps == [10, 20, 40, 80, 160, 320, 640]
    held.clear()
    for _ in range(10):
        server.__gc_step__()
    assert len(sweeps) == 7  # the next comes after 640 more, or 10 once they are all gone
