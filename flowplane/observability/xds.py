"""What the xDS edge reports per stream: streams by protocol and team, responses, ACKs and NACKs
by type and team, push latency (write -> sent) and ACK latency (sent -> ACK), and a span per push.

The stream actor owns one `StreamObserver` and calls it at four points: the stream opened (made),
its node identified (`identified`), a response written (`sent`), a request read (`received`) and
the stream ended (`closed`). Snapshots are linked to the write that caused them through
`published` (called by the snapshot builder before the hub wakes the streams): the stream looks
the origin up by the snapshot object it serves from.

`flowplane_snapshot_resources{type}` and `flowplane_snapshot_bytes{type}` are computed from the
last published snapshot when Prometheus scrapes, not when a snapshot is built.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flowplane.observability import metrics, tracing
from flowplane.observability.metrics import NO_TEAM
from flowplane.observability.tracing import Origin


class _Resource(Protocol):
    any_bytes: bytes


class _Types(Protocol):
    @property
    def resources(self) -> Mapping[str, _Resource]: ...


class _Snapshot(Protocol):
    @property
    def types(self) -> Mapping[str, _Types]: ...


_KEEP = 8
_published: OrderedDict[int, tuple[object, Origin]] = OrderedDict()
_latest: list[Any] = [None]


def published(snapshot: object, origin: Origin) -> None:
    """`snapshot` is about to be published; it carries the writes of `origin`."""
    _latest[0] = snapshot
    if origin.at is None and origin.context is None:
        return
    _published[id(snapshot)] = (snapshot, origin)  # the snapshot is held: its id stays its own
    while len(_published) > _KEEP:
        _published.popitem(last=False)


def origin_of(snapshot: object) -> Origin | None:
    hit = _published.get(id(snapshot))
    return hit[1] if hit is not None and hit[0] is snapshot else None


def short_type(type_url: str) -> str:
    return type_url.rpartition(".")[2]


_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """A labelled child, looked up once (labels() costs a lock and a tuple per call)."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class _TypeMetrics:
    """One stream's labelled metric children for one type (looked up once per stream and type,
    not per response: a push to 10,000 streams touches them 40,000 times)."""

    __slots__ = ("ack_seconds", "acks", "push_seconds", "responses", "short")

    def __init__(self, protocol: str, type_url: str, team: str) -> None:
        self.short = short = short_type(type_url)
        self.responses = _child(metrics.XDS_RESPONSES, protocol, short, team)
        self.push_seconds = _child(metrics.XDS_PUSH_SECONDS, short)
        self.acks = _child(metrics.XDS_ACKS, short, team)
        self.ack_seconds = _child(metrics.XDS_ACK_SECONDS, short)


class StreamObserver:
    __slots__ = ("_by_type", "_pushed", "_sent", "node", "opened", "protocol", "team", "token_id")

    def __init__(self, protocol: str, token_id: str | None = None) -> None:
        self.protocol = protocol
        self.token_id = token_id  # the data-plane token the stream authenticated with
        self.team = NO_TEAM
        self.node: str | None = None
        self.opened = time.monotonic()
        self._sent: dict[str, tuple[str, float]] = {}  # type URL -> (last nonce, when sent)
        self._pushed: dict[str, Origin] = {}  # type URL -> the last origin timed for it
        self._by_type: dict[str, _TypeMetrics] = {}  # for this stream's protocol and team
        _child(metrics.XDS_STREAMS, protocol, NO_TEAM).inc()

    def identified(self, node: str | None, team: str | None) -> None:
        """The first request fixed the stream's node and team."""
        self.node = node
        new = team or NO_TEAM
        if new != self.team:
            _child(metrics.XDS_STREAMS, self.protocol, self.team).dec()
            _child(metrics.XDS_STREAMS, self.protocol, new).inc()
            self.team = new
            self._by_type.clear()

    def sent(self, snapshot: object, type_url: str, nonce: str, version: str) -> None:
        """A response for `type_url`, built from `snapshot`, was written to the stream."""
        now = time.monotonic()
        kids = self._by_type.get(type_url) or self._metrics(type_url)
        kids.responses.inc()
        self._sent[type_url] = (nonce, now)
        origin = origin_of(snapshot)
        if origin is None or self._pushed.get(type_url) is origin:
            return
        self._pushed[type_url] = origin
        if origin.at is not None and origin.at >= self.opened:
            # only streams that were connected before the write: a stream that connects later
            # gets the configuration as its initial state, not as a push
            kids.push_seconds.observe(now - origin.at)
        if origin.context is None:  # no span to continue (tracing off, or none captured)
            return
        span = tracing.span_from(origin, "xds.push", {
            "xds.protocol": self.protocol, "xds.type": kids.short, "xds.version": version,
            "xds.node": self.node or "", "flowplane.team": self.team,
        })  # fmt: skip
        if span is not None:
            span.end()

    def _metrics(self, type_url: str) -> _TypeMetrics:
        kids = self._by_type[type_url] = _TypeMetrics(self.protocol, type_url, self.team)
        return kids

    def received(self, type_url: str, response_nonce: str, nack: bool) -> None:
        """A request answering the response with `response_nonce` (an ACK unless `nack`)."""
        last = self._sent.get(type_url)
        if last is None or last[0] != response_nonce or not response_nonce:
            return
        del self._sent[type_url]
        if nack:  # counted where the rejection is recorded (once per rejection)
            return
        kids = self._by_type.get(type_url) or self._metrics(type_url)
        kids.acks.inc()
        kids.ack_seconds.observe(time.monotonic() - last[1])

    def closed(self, reason: str) -> None:
        """The stream ended: closed | refused | error | shutdown."""
        _child(metrics.XDS_STREAMS, self.protocol, self.team).dec()
        _child(metrics.XDS_STREAM_ENDS, self.protocol, self.team, reason).inc()


def refused(protocol: str) -> None:
    """A stream refused before it was a node (credentials)."""
    _child(metrics.XDS_STREAM_ENDS, protocol, NO_TEAM, "refused").inc()


class _SnapshotSize(Collector):
    def collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "flowplane_snapshot_resources",
            "Resources in the last published snapshot, by short type name",
            labels=["type"],
        )
        size = GaugeMetricFamily(
            "flowplane_snapshot_bytes",
            "Encoded size of the last published snapshot's resources, by short type name",
            labels=["type"],
        )
        snap: _Snapshot | None = _latest[0]
        if snap is not None:
            for url, ts in snap.types.items():
                resources, name = ts.resources, short_type(url)
                count.add_metric([name], len(resources))
                size.add_metric([name], sum(len(r.any_bytes) for r in resources.values()))
        yield count
        yield size


REGISTRY.register(_SnapshotSize())
