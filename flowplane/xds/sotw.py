"""The state-of-the-world (SotW) ADS stream as a sans-I/O state machine (DESIGN.md §3, §8).

One `SotwStream` per gRPC stream. The edge feeds it every request (`on_request`) and, whenever
the stream may write (a request arrived or a snapshot was published), asks what the stream is
owed now (`outbound(snapshot)`), then sends those bytes in order. Plain data in, plain data out:
no I/O, no clocks, no tasks. Rule numbers refer to ../shared/reference/xds-protocol.md.

Per type URL the machine remembers only the subscription, what was last sent (names and
resource versions, by reference to immutable snapshot data) and the ACK/NACK records — never a
queue of versions. Because `outbound` computes from the latest snapshot, a slow stream is
coalesced to the latest version per type (rule 17).

The body of a response is assembled once per content (memoised on the immutable
`TypeSnapshot`, keyed by the content version) and shared by every stream owed that content;
only the nonce (field 5) is appended per stream (DESIGN.md §2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol

from flowplane.errors import BadRequest, QuotaExceeded
from flowplane.xds.snapshot import (
    FULL_STATE_TYPES,
    Resource,
    Snapshot,
    TypeSnapshot,
    content_version,
    names_digest,
    order_key,
    selection_cost,
)
from flowplane.xds.types import CLUSTER_TYPE
from flowplane.xds.wire import sotw_response_body, with_nonce

if TYPE_CHECKING:
    from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

__all__ = [
    "MAX_NAMES_PER_REQUEST",
    "MAX_NAMES_PER_STREAM",
    "MAX_TYPES",
    "WILDCARD",
    "NameLimits",
    "Outbound",
    "Rejection",
    "Request",
    "SotwStream",
    "TypeStatus",
]

WILDCARD: Final = "*"
"""The explicit wildcard resource name (rule 9)."""

MAX_TYPES: Final = 16
"""Distinct type URLs one stream may request (Envoy uses 4, or 5 with SDS)."""

MAX_NAMES_PER_REQUEST: Final = 10_000
"""Default limit of resource names in one request (FLOWPLANE_XDS_MAX_NAMES_PER_REQUEST)."""
MAX_NAMES_PER_STREAM: Final = 20_000
"""Default limit of names one stream subscribes to at once, over all its types
(FLOWPLANE_XDS_MAX_NAMES_PER_STREAM)."""


@dataclass(frozen=True, slots=True)
class NameLimits:
    """How many resource names a client may send in one request and hold subscribed on one
    stream (rule 17: a client cannot grow our state at will; issue 11, item 11). Past either,
    `on_request` raises `QuotaExceeded` (gRPC RESOURCE_EXHAUSTED) and the stream ends."""

    per_request: int = MAX_NAMES_PER_REQUEST
    per_stream: int = MAX_NAMES_PER_STREAM

    def check_request(self, count: int) -> None:
        if count > self.per_request:
            raise QuotaExceeded(
                f"a request may name at most {self.per_request} resources, this one names "
                f"{count} (FLOWPLANE_XDS_MAX_NAMES_PER_REQUEST)"
            )

    def check_stream(self, count: int) -> None:
        if count > self.per_stream:
            raise QuotaExceeded(
                f"a stream may subscribe to at most {self.per_stream} resource names, this "
                f"request would make it {count} (FLOWPLANE_XDS_MAX_NAMES_PER_STREAM)"
            )


_NO_RESOURCES: Final[Mapping[str, Resource]] = MappingProxyType({})
_NO_NAMES_KEY: Final = names_digest(())


@dataclass(frozen=True, slots=True)
class Request:
    """One SotW `DiscoveryRequest`, as plain data.

    `error_detail` is the NACK's message (`""` if the client sent a status without one) or None
    for an ACK or a request; `node_id` is None when the request carries no node.
    """

    type_url: str
    version_info: str = ""
    response_nonce: str = ""
    resource_names: tuple[str, ...] = ()
    error_detail: str | None = None
    node_id: str | None = None

    @classmethod
    def from_proto(cls, msg: DiscoveryRequest) -> Request:
        return cls(
            type_url=msg.type_url,
            version_info=msg.version_info,
            response_nonce=msg.response_nonce,
            resource_names=tuple(msg.resource_names),
            # Rule 4: a NACK is recognised by the presence of error_detail, not by versions.
            error_detail=msg.error_detail.message if msg.HasField("error_detail") else None,
            node_id=(msg.node.id or None) if msg.HasField("node") else None,
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """A NACK (rule 5): which response the client refused, and why.

    `version`/`nonce` identify the refused response; `resource_names` are the names it carried.
    The edge adds the time when it logs or exposes it.
    """

    type_url: str
    version: str | None
    nonce: str
    message: str
    resource_names: tuple[str, ...]
    node_id: str | None


@dataclass(frozen=True, slots=True)
class TypeStatus:
    """What a stream knows about one type, for `GET /api/v1/nodes` and metrics."""

    version_sent: str | None
    nonce_sent: str | None
    version_acked: str | None
    last_rejection: Rejection | None


@dataclass(frozen=True, slots=True)
class Outbound:
    """One response to send; `body` is the whole serialized `DiscoveryResponse` (with nonce)."""

    type_url: str
    version: str
    nonce: str
    body: bytes


class _TypeState:
    """Per type URL: subscription, what was sent, ACK/NACK records (rule 17: O(names), no queue)."""

    __slots__ = (
        "ever_named",
        "last_included",
        "last_rejection",
        "names",
        "names_key",
        "new_names",
        "nonce_sent",
        "seen",
        "sent",
        "sent_version",
        "version_acked",
        "version_sent",
        "wildcard",
    )

    def __init__(self) -> None:
        self.wildcard = False
        self.names: frozenset[str] = frozenset()
        self.names_key = _NO_NAMES_KEY  # names_digest(names): keys the shared selection memo
        self.ever_named = False  # rule 9: once a name was sent, [] no longer means wildcard
        # Full-state types only: names added to the subscription since the last response; the
        # client must be answered even if they do not exist (absence tells it so, rule 10).
        self.new_names: frozenset[str] = frozenset()
        # name -> Resource the client was last sent, limited to what it still subscribes to.
        self.sent: Mapping[str, Resource] = _NO_RESOURCES
        # content_version(sent) when `sent` is exactly one response's content, else None: lets an
        # unchanged type be recognised by one string comparison instead of a walk over `sent`.
        self.sent_version: str | None = None
        self.last_included: Mapping[str, Resource] = _NO_RESOURCES  # the last response's content
        self.version_sent: str | None = None
        self.nonce_sent: str | None = None
        self.version_acked: str | None = None
        self.last_rejection: Rejection | None = None
        # The TypeSnapshot this state was last evaluated against; None = evaluate again. When the
        # snapshot's TypeSnapshot is the same object and the subscription did not change, nothing
        # can be owed, so `outbound` skips the type in O(1).
        self.seen: TypeSnapshot | None = None


_Plan = tuple[str, _TypeState, TypeSnapshot, Mapping[str, Resource], str]


class SotwStream:
    """The SotW protocol state of one ADS stream (all types multiplexed, rules 1-17)."""

    def __init__(self, limits: NameLimits | None = None) -> None:
        self._types: dict[str, _TypeState] = {}
        self._order: list[str] = []  # subscribed type URLs in ORDER (rule 14)
        self._nonces = 0
        self._limits = limits or NameLimits()
        self._names = 0  # explicit names subscribed, over all types
        self.node_id: str | None = None
        self.stale_requests = 0
        """Requests ignored because their nonce was stale (rule 6); a metric."""

    # -- input ------------------------------------------------------------------------------

    def on_request(self, req: Request) -> bool:
        """Record a request: node, ACK or NACK, and the subscription it states.

        Raises `BadRequest` for a request without a type URL (ADS needs it on every request) or
        for more than `MAX_TYPES` distinct type URLs on one stream, and `QuotaExceeded` for more
        names than the stream's `NameLimits` allow (the stream must then end).
        Never produces output itself: call `outbound` afterwards. Returns whether `outbound`
        may now owe something for an unchanged snapshot (False for plain ACKs, NACKs and stale
        requests, so the edge need not wake its writer for them).
        """
        if not req.type_url:
            raise BadRequest("every request on an aggregated stream must carry type_url")
        self._limits.check_request(len(req.resource_names))
        # Rule 2: only the first request is guaranteed to carry the node; keep the first one.
        if self.node_id is None and req.node_id:
            self.node_id = req.node_id
        st = self._types.get(req.type_url)
        if st is None:
            if len(self._types) >= MAX_TYPES:  # rule 17: a client cannot grow our state at will
                raise BadRequest(f"a stream may request at most {MAX_TYPES} resource types")
            st = self._types[req.type_url] = _TypeState()
            self._order.append(req.type_url)
            self._order.sort(key=order_key)

        nonce = req.response_nonce
        if st.nonce_sent is None:
            # Initial request for this type on this stream. A nonce here can only come from an
            # earlier stream (nonces mean nothing across streams, rule 3), so it is not stale;
            # the version it names is what the client holds.
            if req.version_info:
                st.version_acked = req.version_info
        elif nonce and nonce != st.nonce_sent:
            # Rule 6: a reply to a response that has been superseded. Its subscription and
            # ACK/NACK are out of date; the client will answer the latest response too.
            self.stale_requests += 1
            return False
        elif nonce:
            if req.error_detail is not None:
                # Rules 4 and 5: a NACK. Record it; the acked version stays the last good one and
                # `sent` stays as offered, so the same content is not offered again.
                st.last_rejection = Rejection(
                    type_url=req.type_url,
                    version=st.version_sent,
                    nonce=nonce,
                    message=req.error_detail,
                    resource_names=tuple(st.last_included),
                    node_id=self.node_id,
                )
            else:
                st.version_acked = st.version_sent  # rule 4: an ACK of the latest response

        self._subscribe(st, req.resource_names)
        return st.seen is None  # the subscription changed: `outbound` must re-plan this type

    def _subscribe(self, st: _TypeState, requested: tuple[str, ...]) -> None:
        """Rule 9: `requested` is the complete desired set for this type."""
        wildcard = WILDCARD in requested or (not requested and not st.ever_named)
        names = frozenset(n for n in requested if n != WILDCARD)
        if requested:
            st.ever_named = True
        if wildcard == st.wildcard and names == st.names:
            return  # unchanged subscription (the common case: an ACK)
        total = self._names - len(st.names) + len(names)
        self._limits.check_stream(total)
        self._names = total
        # Shared caches are keyed by this digest, never by the set itself: a cache entry must not
        # keep a closed stream's names alive (issue 11, item 11).
        st.names_key = names_digest(names)
        if wildcard:
            st.new_names = frozenset()
        else:
            added = frozenset() if st.wildcard else names - st.names
            st.new_names = (st.new_names & names) | added
            # The client drops what it unsubscribed from; re-adding a name must send it again.
            if any(n not in names for n in st.sent):
                st.sent = {n: r for n, r in st.sent.items() if n in names}
                st.sent_version = None
        st.wildcard, st.names = wildcard, names
        st.seen = None

    # -- output -----------------------------------------------------------------------------

    def outbound(self, snap: Snapshot) -> list[Outbound]:
        """The responses this stream is owed for `snap`, in make-before-break order.

        The caller must send all of them, in order: they are recorded as sent (nonce, version,
        content). Only content that changed for this stream — or names it newly asked for — is
        sent (rule 7); after a NACK the same content is not offered again (rule 5). Calling this
        again with the same snapshot and no new request returns [].
        """
        plans: list[_Plan] = []
        for url in self._order:
            st = self._types[url]
            ts = snap.get(url)
            if st.seen is ts:
                continue
            st.seen = ts
            plan = self._plan(url, st, ts)
            if plan is not None:
                plans.append(plan)
        if not plans:
            return []

        out: list[Outbound] = []
        last: _Plan | None = None
        first = plans[0]
        if first[0] == CLUSTER_TYPE and len(plans) > 1:
            # Rule 14: "... then removals". Clusters the client holds that this CDS response
            # drops may still be named by the routes/listeners it holds: send additions and
            # changes first (keeping the removed clusters), the other types, and the removal last.
            url, st, ts, included, _ = first
            removed = {n: r for n, r in st.sent.items() if n not in included}
            if removed:
                last, plans = first, plans[1:]
                if _has_news(included, st.sent):
                    kept = dict(sorted({**included, **removed}.items()))
                    kv = content_version((n, r.version) for n, r in kept.items())
                    out.append(self._emit((url, st, ts, MappingProxyType(kept), kv)))
                # else: a removal only, which simply goes last.
        out.extend(self._emit(p) for p in plans)
        if last is not None:
            out.append(self._emit(last))
        return out

    def _plan(self, url: str, st: _TypeState, ts: TypeSnapshot) -> _Plan | None:
        """What `url` owes now (content and its version), or None if nothing is owed."""
        if st.wildcard:
            included, version = ts.resources, ts.version
        else:
            included, version = ts.memo(
                ("select", st.names_key), lambda: _select(ts, st.names), cost=selection_cost
            )
        if url in FULL_STATE_TYPES:
            # Rule 10: full state. Owed on the first request (even if empty: the client then
            # knows there is nothing), when a subscribed resource changed, appeared or went away
            # (absence = deletion), or when new names were asked for (rule 9).
            owed = (
                st.version_sent is None
                or bool(st.new_names)
                or (
                    version != st.sent_version
                    if st.sent_version is not None
                    else not _same(included, st.sent)
                )
            )
            if not owed and st.sent_version is None:
                st.sent_version = version  # `sent` equals `included`: remember it cheaply
        else:
            # Rules 10 and 15: named types carry the requested names that exist; send as soon as
            # any of them is new or changed for this client, never wait for the missing ones.
            # Removal alone is not sent (the client keeps them until it unsubscribes).
            owed = version != st.sent_version and _has_news(included, st.sent)
        return (url, st, ts, included, version) if owed else None

    def _emit(self, plan: _Plan) -> Outbound:
        url, st, ts, included, version = plan
        body = ts.memo(
            ("body", version),
            lambda: sotw_response_body(version, url, [r.any_bytes for r in included.values()]),
        )
        self._nonces += 1
        nonce = f"{self._nonces:x}"  # rule 3: unique within the stream
        # The client now holds `included` (for named types also anything deleted since; it is
        # forgotten here, which at worst resends such a resource if it reappears: rule 11's
        # "if it appears later, send it"). A reference, not a copy: `included` is immutable.
        st.sent, st.sent_version = included, version
        st.last_included = included
        st.new_names = frozenset()
        st.version_sent, st.nonce_sent = version, nonce
        return Outbound(url, version, nonce, with_nonce(body, nonce))

    # -- introspection ----------------------------------------------------------------------

    def status(self) -> dict[str, TypeStatus]:
        """type URL -> what was sent, acked and rejected, for every type the stream requested."""
        return type_statuses(self._order, self._types)

    def versions(self) -> list[tuple[str, str | None, str | None, bool]]:
        """`status()` in brief: (type URL, version sent, version acknowledged, whether a
        rejection is recorded) per requested type, as an xDS worker's status report groups
        streams (built for every stream after a push: no TypeStatus objects)."""
        return type_versions(self._order, self._types)

    def subscription(self, type_url: str) -> tuple[bool, frozenset[str]] | None:
        """(wildcard, explicit names) for `type_url`, or None if it was never requested."""
        st = self._types.get(type_url)
        return None if st is None else (st.wildcard, st.names)

    def state_size(self) -> int:
        """A measure of retained state (types + names + held resources); bounded (rule 17)."""
        return sum(
            1 + len(st.names) + len(st.new_names) + len(st.sent) for st in self._types.values()
        )


class _StatusFields(Protocol):
    version_sent: str | None
    nonce_sent: str | None
    version_acked: str | None
    last_rejection: Rejection | None


def type_statuses(
    order: Sequence[str], types: Mapping[str, _StatusFields]
) -> dict[str, TypeStatus]:
    """`status()` of a stream state machine (SotW or delta), in the order types were requested."""
    return {
        url: TypeStatus(st.version_sent, st.nonce_sent, st.version_acked, st.last_rejection)
        for url in order
        for st in (types[url],)
    }


def type_versions(
    order: Sequence[str], types: Mapping[str, _StatusFields]
) -> list[tuple[str, str | None, str | None, bool]]:
    """`versions()` of a stream state machine (SotW or delta)."""
    out = []
    for url in order:
        st = types[url]
        out.append((url, st.version_sent, st.version_acked, st.last_rejection is not None))
    return out


def _select(ts: TypeSnapshot, names: frozenset[str]) -> tuple[Mapping[str, Resource], str]:
    resources = ts.resources
    included = {n: resources[n] for n in sorted(names) if n in resources}
    version = content_version((n, r.version) for n, r in included.items())
    return MappingProxyType(included), version


def _same(a: Mapping[str, Resource], b: Mapping[str, Resource]) -> bool:
    if len(a) != len(b):
        return False
    for name, res in a.items():
        other = b.get(name)
        if other is None or (other is not res and other.version != res.version):
            return False
    return True


def _has_news(included: Mapping[str, Resource], sent: Mapping[str, Resource]) -> bool:
    for name, res in included.items():
        other = sent.get(name)
        if other is None or (other is not res and other.version != res.version):
            return True
    return False
