"""xDS load generator: N simulated Envoys, one HTTP/2 connection and one ADS stream each.

Speaks raw gRPC over HTTP/2 on asyncio, framed by itself (see `Node`; `--h2-only`: through the
`h2` library), not grpcio (it cancels bursts of >1000 pending streams and costs more CPU;
../shared/reference/real-clients.md "Synthetic clients"). Per node it opens a
connection like Envoy does, sends the initial wildcard CDS request with node
{id: "load-<i>", cluster: "load"}, ACKs every response (version_info + response_nonce, and the node
on every request, which is Envoy's default `set_node_on_first_message_only: false`), and records
(CLOCK_MONOTONIC receive time, version) per node. Only version_info (1), type_url (4),
nonce (5) and the number of resources (2) are read: by default with the upb protobuf parse (measured ~5x cheaper than a
pure-Python field scanner, since upb leaves the `Any` resources as bytes), or with the scanner
(`--parser scan`). `--self-check` verifies both and the hand-encoded requests against the real
protobuf classes; at run time the other parser re-reads the first response of each generator
(and node 0's first response after each change) and any disagreement is counted as an error.

Meant to be driven by `bench_xds.py`, one or several processes (each holding a slice of the
nodes), over stdin/stdout lines. `time.monotonic()` is CLOCK_MONOTONIC, system-wide on Linux,
so the driver's write times and these receive times are comparable.

Commands (stdin, one per line) -> replies (stdout, one JSON object per line):
    connect                 open all connections (at most --concurrency setting up at once),
                            reply when every node holds its first response (or --connect-timeout):
                            {"event": "connected", "t_start", "t_all_tcp", "t_all_initial",
                             "initial_versions": {version: count}, "missing": n, ...stats}
    wait <t_write> <secs>   reply when every node has received, at or after t_write, a version
                            different from the one it held at t_write (or after secs):
                            {"event": "waited", "latencies": [s | null per node],
                             "versions": {new version: count}, "extra": responses beyond
                             the first new one, ...stats}
    reconnect               drop every connection and its history, then as `connect`
    stats                   {"event": "stats", ...stats}
    quit                    close every connection; {"event": "bye", ...stats}; exit
stats = {"cpu": user+sys CPU seconds of this process, "rss_kb", "open": live streams,
         "responses": total, "errors": {message: count}}.

`--delta` speaks DeltaAggregatedResources instead (the request/response codecs are in place and
self-checked; the label of a delta response is its system_version_info, else its resources'
name@version list).

    .venv/bin/python benchmarks/xds_load.py --self-check
    .venv/bin/python benchmarks/xds_load.py --port P --first 0 --count 1000   # then type commands
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_PATH = ADS + "StreamAggregatedResources"
DELTA_PATH = ADS + "DeltaAggregatedResources"

# --------------------------------------------------------------------------------------------
# Protobuf: just enough to write two request messages and read three fields of the responses.


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, data: bytes) -> bytes:
    """A length-delimited field (wire type 2); empty values are omitted, as proto3 does."""
    if not data:
        return b""
    return varint((number << 3) | 2) + varint(len(data)) + data


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def scan(buf: bytes, wanted: frozenset[int]) -> dict[int, list[bytes]]:
    """Top-level length-delimited fields of a serialized message whose numbers are in `wanted`
    (values are slices of `buf`); every other field is skipped by its wire type."""
    out: dict[int, list[bytes]] = {}
    i, end = 0, len(buf)
    while i < end:
        key = buf[i]
        if key < 0x80:
            i += 1
        else:
            key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            n = buf[i]
            if n < 0x80:
                i += 1
            else:
                n, i = _read_varint(buf, i)
            if number in wanted:
                out.setdefault(number, []).append(buf[i : i + n])
            i += n
        elif wire == 0:
            _, i = _read_varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire} at offset {i}")
    if i != end:
        raise ValueError("truncated message")
    return out


Parsed = tuple[str, str, bytes, int]
"""What a codec reads of a response: (version label, type_url, nonce, number of resources)."""


def node_bytes(node_id: str, cluster: str) -> bytes:
    """envoy.config.core.v3.Node{id=1, cluster=2}."""
    return field(1, node_id.encode()) + field(2, cluster.encode())


class SotwCodec:
    """DiscoveryRequest{version_info=1, node=2, resource_names=3, type_url=4, response_nonce=5};
    DiscoveryResponse{version_info=1, resources=2, type_url=4, nonce=5}."""

    path = SOTW_PATH
    _WANT = frozenset((1, 2, 4, 5))

    def __init__(
        self, node: bytes, type_url: str, node_every_request: bool = True, parser: str = "upb"
    ) -> None:
        self.node = field(2, node)
        self.type_url = field(4, type_url.encode())
        self.ack_node = self.node if node_every_request else b""
        self.parse = self.parse_upb if parser == "upb" else self.parse_scan
        self.other = self.parse_scan if parser == "upb" else self.parse_upb

    def initial(self) -> bytes:
        return self.node + self.type_url  # wildcard: no resource_names

    @staticmethod
    def parse_upb(msg: bytes) -> Parsed:
        r = _pb().DiscoveryResponse.FromString(msg)
        return r.version_info, r.type_url, r.nonce.encode(), len(r.resources)

    def parse_scan(self, msg: bytes) -> Parsed:
        """(version label, type_url, nonce, number of resources) of one response."""
        f = scan(msg, self._WANT)
        return (
            bytes(f[1][-1]).decode() if 1 in f else "",
            bytes(f[4][-1]).decode() if 4 in f else "",
            bytes(f[5][-1]) if 5 in f else b"",
            len(f.get(2, ())),
        )

    def ack(self, version: str, nonce: bytes) -> bytes:
        return field(1, version.encode()) + self.ack_node + self.type_url + field(5, nonce)


class DeltaCodec:
    """DeltaDiscoveryRequest{node=1, type_url=2, response_nonce=6} (wildcard: no subscribe
    names); DeltaDiscoveryResponse{system_version_info=1, resources=2, type_url=4, nonce=5,
    removed_resources=6}, Resource{version=1, name=3}."""

    path = DELTA_PATH
    _WANT = frozenset((1, 2, 4, 5, 6))
    _RES = frozenset((1, 3))

    def __init__(
        self, node: bytes, type_url: str, node_every_request: bool = True, parser: str = "upb"
    ) -> None:
        self.node = field(1, node)
        self.type_url = field(2, type_url.encode())
        self.ack_node = self.node if node_every_request else b""
        self.parse = self.parse_upb if parser == "upb" else self.parse_scan
        self.other = self.parse_scan if parser == "upb" else self.parse_upb

    def initial(self) -> bytes:
        return self.node + self.type_url

    @staticmethod
    def parse_upb(msg: bytes) -> Parsed:
        r = _pb().DeltaDiscoveryResponse.FromString(msg)
        label = r.system_version_info or ",".join(
            [f"{x.name}@{x.version}" for x in r.resources]
            + ["-" + name for name in r.removed_resources]
        )
        return label, r.type_url, r.nonce.encode(), len(r.resources)

    def parse_scan(self, msg: bytes) -> Parsed:
        f = scan(msg, self._WANT)
        label = bytes(f[1][-1]).decode() if 1 in f else ""
        if not label:
            parts = []
            for res in f.get(2, ()):
                r = scan(res, self._RES)
                parts.append(
                    (bytes(r[3][-1]).decode() if 3 in r else "")
                    + "@"
                    + (bytes(r[1][-1]).decode() if 1 in r else "")
                )
            parts += ["-" + bytes(x).decode() for x in f.get(6, ())]
            label = ",".join(parts)
        return (
            label,
            bytes(f[4][-1]).decode() if 4 in f else "",
            bytes(f[5][-1]) if 5 in f else b"",
            len(f.get(2, ())),
        )

    def ack(self, version: str, nonce: bytes) -> bytes:
        return self.ack_node + self.type_url + field(6, nonce)


_PB = None


def _pb():  # type: ignore[no-untyped-def]
    global _PB
    if _PB is None:
        from envoy.service.discovery.v3 import discovery_pb2

        _PB = discovery_pb2
    return _PB


def grpc_frame(msg: bytes) -> bytes:
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


# --------------------------------------------------------------------------------------------
# One simulated node: an asyncio Protocol around an h2 client connection with one stream.


class Node(asyncio.Protocol):
    """One simulated Envoy: one HTTP/2 connection, one ADS stream (stream 1).

    By default the connection is framed here ("raw"), as an HTTP/2 client with one stream
    needs: the client preface, SETTINGS (Envoy's large receive windows, no push), the request
    HEADERS (one HPACK block, the same for every connection since each starts with an empty
    dynamic table, encoded once per process) and the initial request; then the server's DATA
    frames go into the gRPC message buffer, SETTINGS are applied and acknowledged, PINGs
    answered, WINDOW_UPDATEs grow the send windows, the receive windows are replenished once
    half consumed (as h2 does), response headers and trailers are HPACK-decoded (per-connection
    decoder), RST_STREAM and GOAWAY end the node. `--h2-only` does all of it through h2
    instead, as before. Envoy's HTTP/2 codec is C++: through h2 (events, state machines, frame
    objects) the generators used more CPU per push than the server, and about 1.4 ms per new
    connection, which in a reconnect storm is as much as the server's own cost
    (benchmarks/results/xds-workers.md)."""

    __slots__ = (
        "buf", "codec", "conn", "consumed", "first", "gen", "hblock", "hdecoder", "hend", "idx",
        "inbuf", "max_frame", "open", "pending_out", "raw", "send_conn", "send_initial",
        "send_stream", "transport",
    )  # fmt: skip

    def __init__(self, gen: Generator, idx: int) -> None:
        self.gen, self.idx = gen, idx
        node = node_bytes(f"load-{idx}", "load")
        self.codec = gen.codec_cls(node, gen.type_url, gen.node_every_request, gen.args.parser)
        self.raw = not gen.args.h2_only
        self.conn = None if self.raw else h2.connection.H2Connection(config=gen.h2_config)
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.first: asyncio.Future[None] = gen.loop.create_future()
        self.pending_out = b""  # request bytes waiting for outbound flow-control window
        # raw framing: bytes not yet a whole frame, a header block being assembled, the HPACK
        # decoder (made on the first HEADERS), DATA bytes received and not yet given back by a
        # WINDOW_UPDATE, the server's windows for our DATA (RFC 9113 §6.9: 65,535 until its
        # SETTINGS and WINDOW_UPDATEs say otherwise) and its largest frame
        self.inbuf = bytearray()
        self.hblock = bytearray()
        self.hdecoder: hpack.Decoder | None = None
        self.hend = False
        self.consumed = 0
        self.send_conn = self.send_stream = self.send_initial = 65535
        self.max_frame = 16384

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        gen = self.gen
        self.open = True
        gen.open += 1
        if self.raw:
            transport.write(gen.raw_preamble)
            self._send(self.codec.initial())
        else:
            conn = self.conn
            assert conn is not None
            conn.initiate_connection()
            # Envoy's defaults for gRPC clusters: large stream and connection windows.
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: gen.window,
                                  h2.settings.SettingCodes.ENABLE_PUSH: 0})  # fmt: skip
            conn.increment_flow_control_window(gen.window - 65535)
            conn.send_headers(1, gen.headers)
            self._send(self.codec.initial())
            transport.write(conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.raw:
            self._frames(data, now)
        else:
            self._h2(data, now)

    def _frames(self, data: bytes, now: float) -> None:
        buf = self.inbuf
        buf += data
        off, n = 0, len(buf)
        while n - off >= 9 and self.open:
            length = int.from_bytes(buf[off : off + 3], "big")
            kind, flags = buf[off + 3], buf[off + 4]
            sid = int.from_bytes(buf[off + 5 : off + 9], "big") & 0x7FFFFFFF
            end = off + 9 + length
            if end > n:
                break
            body = bytes(buf[off + 9 : end])
            off = end
            if kind == 0:  # DATA
                self.consumed += length
                if sid != 1:
                    continue
                if flags & 0x08:  # PADDED
                    body = body[1 : len(body) - body[0]]
                self.buf += body
                self._messages(now)
                if flags & 0x01 and self.open:  # END_STREAM without trailers
                    self._fail("stream ended by the server without trailers")
            elif kind == 8:  # WINDOW_UPDATE
                inc = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
                if sid == 0:
                    self.send_conn += inc
                elif sid == 1:
                    self.send_stream += inc
                self._flush_pending()
            elif kind == 4:  # SETTINGS
                if flags & 0x01:  # the server's ACK of ours
                    continue
                for i in range(0, length - length % 6, 6):
                    ident = int.from_bytes(body[i : i + 2], "big")
                    value = int.from_bytes(body[i + 2 : i + 6], "big")
                    if ident == 0x4:  # INITIAL_WINDOW_SIZE: applies to the open stream too
                        self.send_stream += value - self.send_initial
                        self.send_initial = value
                    elif ident == 0x5:  # MAX_FRAME_SIZE
                        self.max_frame = value
                self._write(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00")  # SETTINGS ACK
                self._flush_pending()
            elif kind == 6:  # PING
                if not flags & 0x01:
                    self._write(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + body[:8])
            elif kind in (1, 9):  # HEADERS, CONTINUATION
                if kind == 1:
                    self.hend = bool(flags & 0x01)
                    if flags & 0x08:  # PADDED
                        body = body[1 : len(body) - body[0]]
                    if flags & 0x20:  # PRIORITY
                        body = body[5:]
                self.hblock += body
                if flags & 0x04:  # END_HEADERS
                    self._headers(bytes(self.hblock))
                    self.hblock.clear()
            elif kind == 3:  # RST_STREAM
                self._fail(f"stream reset (error code {int.from_bytes(body[:4], 'big')})")
            elif kind == 7:  # GOAWAY
                self._fail(f"GOAWAY (error code {int.from_bytes(body[4:8], 'big')})")
        del buf[:off]
        if self.consumed >= self.gen.window // 2 and self.open:
            inc = self.consumed.to_bytes(4, "big")
            self.consumed = 0
            self._write(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + inc
                        + b"\x00\x00\x04\x08\x00\x00\x00\x00\x01" + inc)  # fmt: skip

    def _headers(self, block: bytes) -> None:
        if self.hdecoder is None:
            self.hdecoder = hpack.Decoder()
        try:
            hdrs = dict(self.hdecoder.decode(block, raw=True))
        except hpack.HPACKError as err:
            self._fail(f"HPACK error: {err}")
            return
        if b":status" in hdrs and hdrs[b":status"] != b"200":
            self._fail(f"HTTP status {hdrs[b':status'].decode()}")
        elif b"grpc-status" in hdrs:  # trailers, or a trailers-only response: the call ended
            self._grpc_end(hdrs)
        elif self.hend:
            self._fail("stream ended by the server without a gRPC status")

    def _write(self, data: bytes) -> None:
        if self.transport is not None and self.open:
            self.transport.write(data)

    def _flush_pending(self) -> None:
        if self.pending_out:
            out, self.pending_out = self.pending_out, b""
            self._send_raw(out)

    def _h2(self, data: bytes, now: float) -> None:
        conn = self.conn
        assert conn is not None
        try:
            events = conn.receive_data(data)
        except Exception as err:  # a protocol error: h2 has queued a GOAWAY for us
            self._fail(f"h2 error: {type(err).__name__}: {err}")
            return
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                self.buf += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                self._messages(now)
            elif isinstance(ev, h2.events.WindowUpdated):
                self._flush_pending()
            elif isinstance(ev, h2.events.ResponseReceived):
                hdrs = dict(ev.headers)
                if hdrs.get(b":status") != b"200":
                    self._fail(f"HTTP status {hdrs.get(b':status', b'?').decode()}")
                elif b"grpc-status" in hdrs:  # trailers-only response: the call failed at once
                    self._grpc_end(hdrs)
            elif isinstance(ev, h2.events.TrailersReceived):
                self._grpc_end(dict(ev.headers))
            elif isinstance(ev, h2.events.StreamReset):
                self._fail(f"stream reset (error code {ev.error_code})")
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._fail(f"GOAWAY (error code {ev.error_code})")
        out = conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open and not self.gen.closing:
            self._fail(f"connection lost: {exc!r}" if exc else "connection closed by server")
        self._closed()

    # -- internals
    def _messages(self, now: float) -> None:
        buf = self.buf
        while len(buf) >= 5:
            n = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + n:
                return
            if buf[0]:
                self._fail("compressed gRPC message")
                return
            msg = bytes(buf[5 : 5 + n])
            del buf[: 5 + n]
            try:
                parsed = self.codec.parse(msg)
            except (ValueError, IndexError) as err:
                self._fail(f"unparseable response: {err}")
                return
            self.gen.on_response(self, now, parsed, msg)
            version, _, nonce, _ = parsed
            self._send(self.codec.ack(version, nonce))

    def _send(self, msg: bytes) -> None:
        self._send_raw(grpc_frame(msg))

    def _send_raw(self, data: bytes) -> None:
        if self.pending_out:
            self.pending_out += data
            return
        if self.raw:
            n = min(len(data), self.send_conn, self.send_stream, self.max_frame)
            if n > 0:
                self._write(n.to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01" + data[:n])
                self.send_conn -= n
                self.send_stream -= n
            if n < len(data):  # the rest goes out on WINDOW_UPDATE (or a larger frame size)
                self.pending_out = data[max(n, 0) :]
            return
        conn = self.conn
        assert conn is not None
        room = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
        if len(data) <= room:
            conn.send_data(1, data)
        else:  # respect the server's window; the rest goes out on WINDOW_UPDATE
            if room > 0:
                conn.send_data(1, data[:room])
            self.pending_out = data[room:]

    def _grpc_end(self, hdrs: dict[bytes, bytes]) -> None:
        status = hdrs.get(b"grpc-status", b"?").decode()
        message = hdrs.get(b"grpc-message", b"").decode()
        self._fail(f"grpc-status {status} {message}".strip())

    def _fail(self, why: str) -> None:
        self.gen.errors[why] += 1
        if not self.first.done():
            self.first.set_result(None)
        if self.transport is not None:
            self.transport.close()
        self._closed()

    def _closed(self) -> None:
        if self.open:
            self.open = False
            self.gen.open -= 1
        if not self.first.done():
            self.first.set_result(None)


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.loop = asyncio.get_running_loop()
        self.args = args
        self.host, self.port = args.host, args.port
        self.codec_cls: Callable[..., SotwCodec | DeltaCodec] = (
            DeltaCodec if args.delta else SotwCodec
        )
        self.type_url = args.type_url
        self.node_every_request = not args.node_first_only
        self.window = args.window
        self.h2_config = h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_inbound_headers=False, validate_outbound_headers=False,
            normalize_inbound_headers=False, normalize_outbound_headers=False,
        )  # fmt: skip
        self.headers = [
            (b":method", b"POST"), (b":scheme", b"http"),
            (b":path", self.codec_cls.path.encode()),
            (b":authority", f"{self.host}:{self.port}".encode()),
            (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        ]  # fmt: skip
        # Raw framing (Node): what every connection sends first. The request's HPACK block is
        # the same for every connection (each starts with an empty dynamic table).
        block = hpack.Encoder().encode(self.headers)
        window = self.window.to_bytes(4, "big")
        self.raw_preamble = b"".join((
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x0c\x04\x00\x00\x00\x00\x00",  # SETTINGS, 2 settings, stream 0
            b"\x00\x04" + window + b"\x00\x02\x00\x00\x00\x00",  # INITIAL_WINDOW_SIZE, ENABLE_PUSH 0
            b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + (self.window - 65535).to_bytes(4, "big"),
            len(block).to_bytes(3, "big") + b"\x01\x04\x00\x00\x00\x01" + block,  # HEADERS
        ))  # fmt: skip
        self.first_idx = args.first
        self.count = args.count
        self.nodes: list[Node | None] = [None] * self.count
        self.closing = False
        self.open = 0
        self.responses = 0
        self.errors: collections.Counter[str] = collections.Counter()
        # History per node (local index): receive times and versions of every response.
        self.times: list[list[float]] = [[] for _ in range(self.count)]
        # per response: gRPC message bytes and number of resources (field 2 in both SotW's
        # DiscoveryResponse and delta's DeltaDiscoveryResponse)
        self.sizes: list[list[tuple[int, int]]] = [[] for _ in range(self.count)]
        self.versions: list[list[str]] = [[] for _ in range(self.count)]
        self._intern: dict[str, str] = {}
        self.checks = 0  # responses cross-checked against the real protobuf parse
        self._check_next = {0}  # local node indexes whose next response is cross-checked
        # The active `wait`: baseline version per node, pending set, latencies.
        self._waiting: dict[int, str] | None = None
        self._wait_t = 0.0
        self._wait_lat: list[float | None] = []
        self._wait_done: asyncio.Future[None] | None = None

    # -- called by Node
    def on_response(self, node: Node, now: float, parsed: Parsed, msg: bytes) -> None:
        version, type_url, nonce, count = parsed
        i = node.idx - self.first_idx
        self.responses += 1
        if type_url != self.type_url:
            self.errors[f"unexpected type_url {type_url!r}"] += 1
        if not nonce:
            self.errors["response without nonce"] += 1
        version = self._intern.setdefault(version, version)
        self.times[i].append(now)
        self.versions[i].append(version)
        self.sizes[i].append((len(msg), count))
        if i in self._check_next:
            self._check_next.discard(i)
            self._cross_check(node, msg, parsed)
        if not node.first.done():
            node.first.set_result(None)
        w = self._waiting
        if w is not None and i in w and now >= self._wait_t and version != w[i]:
            del w[i]
            self._wait_lat[i] = now - self._wait_t
            if not w and self._wait_done is not None and not self._wait_done.done():
                self._wait_done.set_result(None)

    def _cross_check(self, node: Node, msg: bytes, parsed: Parsed) -> None:
        # The two parsers (upb and the field scanner) must agree on a sample of real responses.
        self.checks += 1
        if node.codec.other(msg) != parsed:
            self.errors["field scanner disagrees with the protobuf parse"] += 1

    # -- commands
    def stats(self) -> dict[str, object]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu": round(ru.ru_utime + ru.ru_stime, 3),
            "rss_kb": rss_kb(),
            "open": self.open,
            "responses": self.responses,
            "checks": self.checks,
            "errors": dict(self.errors),
        }

    async def connect(self) -> dict[str, object]:
        t_start = time.monotonic()
        sem = asyncio.Semaphore(self.args.concurrency)
        tcp_done: list[float] = []
        deadline = t_start + self.args.connect_timeout

        async def one(i: int) -> None:
            async with sem:
                node = Node(self, self.first_idx + i)
                self.nodes[i] = node
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    await asyncio.wait_for(
                        self.loop.create_connection(lambda: node, self.host, self.port),
                        remaining,
                    )
                except (TimeoutError, OSError) as err:
                    self.errors[f"connect: {type(err).__name__}: {err}"] += 1
                    return
                tcp_done.append(time.monotonic())
                # Hold the slot until the initial config arrived: bounds streams in set-up.
                remaining = max(0.1, deadline - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(node.first), remaining)

        await asyncio.gather(*(one(i) for i in range(self.count)))
        got = [v[0] for v in self.versions if v]
        return {
            "event": "connected",
            "t_start": t_start,
            "t_all_tcp": max(tcp_done, default=t_start),
            "t_all_initial": max((t[0] for t in self.times if t), default=t_start),
            "first_times": sorted(t[0] for t in self.times if t),
            "initial_versions": dict(collections.Counter(got)),
            "missing": self.count - len(got),
            **self.stats(),
        }

    async def wait(self, t_write: float, within: float) -> dict[str, object]:
        baseline: dict[int, str] = {}
        lat: list[float | None] = [None] * self.count
        for i in range(self.count):
            times, versions = self.times[i], self.versions[i]
            k = bisect.bisect_left(times, t_write)  # receive times are in order (monotonic)
            if k > 1:
                # Only the last response before t_write matters from now on (its version is
                # the baseline): keep the history short. Scanning it whole at every change made
                # each `wait` cost O(changes so far) per node, which over a 1-hour soak blocked
                # this process for longer and longer at the start of every push.
                del times[: k - 1], versions[: k - 1], self.sizes[i][: k - 1]
                k = 1
            before = versions[k - 1] if k else ""
            for j in range(k, len(times)):  # already arrived before this command was read
                if versions[j] != before:
                    lat[i] = times[j] - t_write
                    break
            else:
                node = self.nodes[i]
                if node is not None and node.open:
                    baseline[i] = before
        self._wait_t, self._wait_lat = t_write, lat
        self._check_next = {i for i in (0,) if i in baseline}
        if baseline:
            self._wait_done = self.loop.create_future()
            self._waiting = baseline
            try:
                await asyncio.wait_for(
                    self._wait_done, max(0.0, t_write + within - time.monotonic())
                )
            except TimeoutError:
                pass
            finally:
                self._waiting = None
        versions: collections.Counter[str] = collections.Counter()
        extra = 0  # responses after the first new one (re-sends, later pushes)
        nbytes = 0  # bytes of the first new response, summed over nodes
        resources: collections.Counter[int] = collections.Counter()  # resources per response
        for i in range(self.count):
            if lat[i] is None:
                continue
            times = self.times[i]
            k = next(j for j, t in enumerate(times) if t - t_write == lat[i])
            versions[self.versions[i][k]] += 1
            extra += len(times) - k - 1
            size, count = self.sizes[i][k]
            nbytes += size
            resources[count] += 1
        return {
            "event": "waited",
            "latencies": lat,
            "versions": dict(versions),
            "extra": extra,
            "bytes": nbytes,
            "resources": {str(k): v for k, v in resources.items()},
            **self.stats(),
        }

    async def reconnect(self) -> dict[str, object]:
        """A reconnect storm (e.g. after a control-plane restart): drop every connection and
        history, then `connect` all nodes again, same node ids."""
        for node in self.nodes:
            if node is not None:
                node.open = False  # forgotten: its loss is neither an error nor counted
                if node.transport is not None:
                    node.transport.close()
        await asyncio.sleep(0)
        self.nodes = [None] * self.count
        self.times = [[] for _ in range(self.count)]
        self.sizes = [[] for _ in range(self.count)]
        self.versions = [[] for _ in range(self.count)]
        self.open = 0
        return await self.connect()

    async def close(self) -> None:
        self.closing = True
        for node in self.nodes:
            if node is not None and node.transport is not None:
                node.transport.close()
        await asyncio.sleep(0)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(args: argparse.Namespace) -> None:
    gen = Generator(args)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "hello", "first": args.first, "count": args.count, **gen.stats()})
    deadline = time.monotonic() + args.max_seconds
    try:
        while time.monotonic() < deadline:  # bounded: --max-seconds, or stdin EOF, or quit
            try:
                line = await asyncio.wait_for(reader.readline(), deadline - time.monotonic())
            except TimeoutError:
                break
            if not line:
                break  # the driver is gone
            cmd = line.decode().split()
            if not cmd:
                continue
            if cmd[0] == "connect":
                emit(await gen.connect())
            elif cmd[0] == "wait":
                emit(await gen.wait(float(cmd[1]), float(cmd[2])))
            elif cmd[0] == "reconnect":
                emit(await gen.reconnect())
            elif cmd[0] == "stats":
                emit({"event": "stats", **gen.stats()})
            elif cmd[0] == "quit":
                break
            else:
                emit({"event": "error", "message": f"unknown command {cmd[0]!r}"})
    finally:
        await gen.close()
        emit({"event": "bye", **gen.stats()})


# --------------------------------------------------------------------------------------------


def self_check() -> None:
    """The scanner and the hand-written requests agree with the real protobuf classes."""
    from envoy.config.cluster.v3.cluster_pb2 import Cluster
    from envoy.config.core.v3.base_pb2 import ControlPlane
    from envoy.config.core.v3.base_pb2 import Node as NodePb
    from envoy.service.discovery.v3 import discovery_pb2 as d
    from google.protobuf.any_pb2 import Any as AnyPb

    resources = []
    for k in range(300):  # > 127 bytes of payload and many fields: multi-byte varints
        c = Cluster(name=f"c{k}" * (k % 7 + 1))
        c.connect_timeout.seconds = 5
        a = AnyPb()
        a.Pack(c)
        resources.append(a)
    resp = d.DiscoveryResponse(
        version_info="v-é-123", resources=resources, canary=True, type_url=CDS, nonce="n42",
        control_plane=ControlPlane(identifier="cp"),
    )  # fmt: skip
    node = node_bytes("load-7", "load")
    assert NodePb.FromString(node) == NodePb(id="load-7", cluster="load")
    for parser in ("upb", "scan"):
        sotw = SotwCodec(node, CDS, parser=parser)
        body = resp.SerializeToString(deterministic=True) + field(5, b"n43")  # last one wins
        assert d.DiscoveryResponse.FromString(body).nonce == "n43"
        assert sotw.parse(body) == ("v-é-123", CDS, b"n43", 300), (parser, sotw.parse(body))
        assert sotw.parse(resp.SerializeToString()) == ("v-é-123", CDS, b"n42", 300)
        empty = d.DiscoveryResponse(type_url=CDS).SerializeToString()
        assert sotw.parse(empty) == ("", CDS, b"", 0)
        req = d.DiscoveryRequest.FromString(sotw.initial())
        assert req == d.DiscoveryRequest(node=NodePb(id="load-7", cluster="load"), type_url=CDS)
        ack = d.DiscoveryRequest.FromString(sotw.ack("v1", b"n9"))
        assert (ack.version_info, ack.response_nonce, ack.type_url, ack.node.id) == (
            "v1", "n9", CDS, "load-7",
        ), ack  # fmt: skip
        assert not ack.resource_names
        assert not ack.HasField("error_detail")
        first_only = SotwCodec(node, CDS, False, parser).ack("v", b"n")
        assert not d.DiscoveryRequest.FromString(first_only).HasField("node")

        delta = DeltaCodec(node, CDS, parser=parser)
        dr = d.DeltaDiscoveryResponse(
            system_version_info="sv", type_url=CDS, nonce="dn",
            resources=[d.Resource(name="a", version="1", resource=resources[0]),
                       d.Resource(name="b", version="2")],
            removed_resources=["z"],
        )  # fmt: skip
        assert delta.parse(dr.SerializeToString()) == ("sv", CDS, b"dn", 2)
        dr.system_version_info = ""
        assert delta.parse(dr.SerializeToString()) == ("a@1,b@2,-z", CDS, b"dn", 2)
        dreq = d.DeltaDiscoveryRequest.FromString(delta.initial())
        assert dreq == d.DeltaDiscoveryRequest(
            node=NodePb(id="load-7", cluster="load"), type_url=CDS
        )
        dack = d.DeltaDiscoveryRequest.FromString(delta.ack("ignored", b"dn"))
        assert (dack.response_nonce, dack.type_url, dack.node.id) == ("dn", CDS, "load-7")
    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"

    n = 2000
    msg = body
    cost = {}
    for parser in ("upb", "scan"):
        parse = SotwCodec(node, CDS, parser=parser).parse
        t0 = time.perf_counter()
        for _ in range(n):
            parse(msg)
        cost[parser] = (time.perf_counter() - t0) / n * 1e6
    print(f"self-check ok; reading one {len(msg)}-byte response with {len(resources)} resources: "
          f"upb parse {cost['upb']:.1f} us, field scanner {cost['scan']:.1f} us")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--first", type=int, default=0, help="index of the first node (load-<i>)")
    ap.add_argument("--count", type=int, default=1, help="nodes (connections) in this process")
    ap.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="connections being set up at once (until their initial config)",
    )
    ap.add_argument("--connect-timeout", type=float, default=300)
    ap.add_argument("--type-url", default=CDS)
    ap.add_argument("--delta", action="store_true", help="DeltaAggregatedResources")
    ap.add_argument(
        "--node-first-only",
        action="store_true",
        help="send the node only on the first request of a stream",
    )
    ap.add_argument(
        "--window",
        type=int,
        default=256 * 1024 * 1024,
        help="HTTP/2 stream and connection receive window (Envoy's default)",
    )
    ap.add_argument(
        "--max-seconds", type=float, default=3600, help="exit by itself after this long"
    )
    ap.add_argument(
        "--parser",
        choices=("upb", "scan"),
        default="upb",
        help="read responses with the upb protobuf parse (measured ~5x cheaper "
        "than the pure-Python field scanner) or the scanner",
    )
    ap.add_argument(
        "--h2-only",
        action="store_true",
        help="read and write every frame through h2 (no raw mode: see the Node class)",
    )
    ap.add_argument("--self-check", action="store_true")
    args = ap.parse_args()  # fmt: skip
    if args.self_check:
        self_check()
        return
    if args.port is None:
        ap.error("--port is required")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
