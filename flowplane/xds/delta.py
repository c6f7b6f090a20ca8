"""The delta (incremental) ADS stream as a sans-I/O state machine (DESIGN.md §3, §8).

One `DeltaStream` per gRPC stream, used like `SotwStream`: the edge feeds it every request
(`on_request`) and, whenever the stream may write, asks what it is owed now
(`outbound(snapshot)`) and sends those bytes in order. Plain data in, plain data out: no I/O, no
clocks, no tasks. Rule numbers refer to ../shared/reference/xds-protocol.md.

Per type URL the machine keeps the subscription (explicit names + wildcard flag) and what the
client holds, name -> resource version, in two layers:

- `acked`: what the client has confirmed (its `initial_resource_versions`, then ACKed responses);
- `held`: `acked` overlaid with every response sent but not yet answered, i.e. what the client
  holds once it has applied everything we sent. `outbound` diffs the latest snapshot against
  `held`, so a slow client is coalesced to the latest content (rule 17), never queued.

Each unanswered response is remembered (nonce, version, name -> version or None for a removal)
until the client answers it, so a NACK restores exactly what the client held before the rejected
response (rule 5). Responses of one type may be outstanding at once; see `_answer` for how an
answer to an older nonce is handled.

Decisions (documented here because a test pins each one):
- Reconnect (rule 12): resources whose version equals the client's `initial_resource_versions`
  are not sent; held resources that no longer exist go into `removed_resources`. When nothing
  differs, *no response at all* is sent for that type (Envoy is already warm and needs none).
  A first request *without* initial versions is always answered, even with an empty response,
  so that a fresh client's initial fetch completes (like SotW's first full-state response).
- NACK (rule 5): the client's versions revert to what it held before the rejected response and
  the rejected (name, version) pairs -- a rejected removal included -- are not offered again
  until the resource's content changes, the client subscribes to the name again, or the stream
  reconnects. A NACK of an older, superseded nonce rolls back only the names no newer response
  carried (see `_answer`). A NACK of a nonce that is no longer outstanding is recorded (version
  None, no names) and changes nothing.
- Wildcard plus an explicit name, then unsubscribing the name (rule 11): the client keeps it, and
  it is sent once more, because Envoy holds such a resource as "ambiguous" until the server
  confirms it (go-control-plane does the same).
- Ordering (rule 14): additions and changes first, one response per type in `ORDER` (CDS, EDS,
  LDS, RDS); then removals, referrers before what they refer to (LDS, RDS, CDS, EDS), so a
  route never loses a cluster it still names. A type's removals ride in its own additions
  response only when that response is the last addition and the first removal anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from flowplane.errors import BadRequest
from flowplane.xds.snapshot import (
    Resource,
    Snapshot,
    TypeSnapshot,
    content_version,
    names_digest,
    order_key,
)
from flowplane.xds.sotw import (
    MAX_TYPES,
    WILDCARD,
    NameLimits,
    Outbound,
    Rejection,
    TypeStatus,
    type_statuses,
    type_versions,
)
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from flowplane.xds.wire import delta_response, with_nonce

if TYPE_CHECKING:
    from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

__all__ = ["BREAK_ORDER", "MAX_PENDING", "DeltaRequest", "DeltaStream"]

BREAK_ORDER: Final[tuple[str, ...]] = (LISTENER_TYPE, ROUTE_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE)
"""Rule 14, the "then removals" half: referrers go before what they refer to."""

MAX_PENDING: Final = 32
"""Unanswered responses remembered per type (rule 17). Past this the oldest counts as accepted."""

_BREAK_RANK: Final[dict[str, int]] = {t: i for i, t in enumerate(BREAK_ORDER)}
_NO_VERSIONS: Final[Mapping[str, str]] = MappingProxyType({})


def _break_key(type_url: str) -> tuple[int, str]:
    return (_BREAK_RANK.get(type_url, len(BREAK_ORDER)), type_url)


@dataclass(frozen=True, slots=True)
class DeltaRequest:
    """One `DeltaDiscoveryRequest`, as plain data.

    `error_detail` is the NACK's message (`""` if the client sent a status without one) or None;
    `node_id` is None when the request carries no node (rule 2: often only the first does).
    """

    type_url: str
    response_nonce: str = ""
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_resource_versions: Mapping[str, str] = field(default_factory=lambda: _NO_VERSIONS)
    error_detail: str | None = None
    node_id: str | None = None

    @classmethod
    def from_proto(cls, msg: DeltaDiscoveryRequest) -> DeltaRequest:
        # (an ACK, one per response to every stream, has none of the three collections: no
        # copies of empty containers then)
        sub, unsub = msg.resource_names_subscribe, msg.resource_names_unsubscribe
        versions = msg.initial_resource_versions
        return cls(
            type_url=msg.type_url,
            response_nonce=msg.response_nonce,
            subscribe=tuple(sub) if sub else (),
            unsubscribe=tuple(unsub) if unsub else (),
            initial_resource_versions=dict(versions) if versions else _NO_VERSIONS,
            # Rule 4: a NACK is recognised by the presence of error_detail.
            error_detail=msg.error_detail.message if msg.HasField("error_detail") else None,
            node_id=(msg.node.id or None) if msg.HasField("node") else None,
        )


class _Sent:
    """One response not answered yet: name -> version sent, or None for a removal."""

    __slots__ = ("changes", "names", "nonce", "version")

    def __init__(self, nonce: str, version: str, changes: dict[str, str | None]) -> None:
        self.nonce = nonce
        self.version = version
        self.changes = changes  # shrinks when the client unsubscribes a name it carried
        self.names = tuple(changes)  # as sent, for the Rejection record


class _TypeState:
    """Per type URL: subscription, what the client holds, unanswered responses, ACK/NACK."""

    __slots__ = (
        "acked",
        "dirty",
        "forced",
        "held",
        "last_rejection",
        "names",
        "names_key",
        "nonce_sent",
        "owe",
        "pending",
        "rejected",
        "rescan",
        "seen",
        "version_acked",
        "version_sent",
        "wildcard",
    )

    def __init__(self) -> None:
        self.wildcard = False
        self.names: set[str] = set()  # explicit subscriptions (also kept while wildcard)
        # names_digest(`names`), rebuilt on demand: keys the shared version memo (never the names
        # themselves, which a cache would keep alive after the stream closed).
        self.names_key: bytes | None = None
        self.acked: dict[str, str] = {}
        self.held: dict[str, str] = {}
        self.pending: list[_Sent] = []  # oldest first
        # Rule 11: names the next response must mention (sent, or removed if absent) whatever
        # the client supposedly holds: freshly subscribed, or unsubscribed under a wildcard.
        self.forced: set[str] = set()
        # Rule 5: name -> version whose content the client NACKed (None: a rejected removal).
        self.rejected: dict[str, str | None] = {}
        self.owe = False  # a first request without initial versions: answer even if empty
        # Incremental evaluation: `seen` is the TypeSnapshot this state is reconciled with;
        # `dirty` names changed since by requests; `rescan` means evaluate every name.
        self.seen: TypeSnapshot | None = None
        self.dirty: set[str] = set()
        self.rescan = True
        self.version_sent: str | None = None
        self.nonce_sent: str | None = None
        self.version_acked: str | None = None
        self.last_rejection: Rejection | None = None

    def covers(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def forget(self, name: str) -> None:
        """The client dropped `name` (unsubscribed): it holds nothing of it any more."""
        self.held.pop(name, None)
        self.acked.pop(name, None)
        self.forced.discard(name)
        self.rejected.pop(name, None)
        for sent in self.pending:
            sent.changes.pop(name, None)


@dataclass(slots=True)
class _Plan:
    url: str
    st: _TypeState
    ts: TypeSnapshot
    adds: list[Resource]
    removes: list[str]


class DeltaStream:
    """The delta protocol state of one ADS stream (all types multiplexed, rules 1-17)."""

    def __init__(self, limits: NameLimits | None = None) -> None:
        self._types: dict[str, _TypeState] = {}
        self._order: list[str] = []  # requested type URLs in ORDER (rule 14)
        self._nonces = 0
        self._limits = limits or NameLimits()
        self._names = 0  # explicit names subscribed, over all types
        self.node_id: str | None = None
        self.stale_answers = 0
        """ACKs/NACKs naming a nonce that is not outstanding (a metric; their subscription
        changes are still applied, rule 6)."""

    # -- input ------------------------------------------------------------------------------

    def on_request(self, req: DeltaRequest) -> bool:
        """Record a request: node, ACK or NACK of `response_nonce`, subscription changes.

        Raises `BadRequest` for a request without a type URL or past `MAX_TYPES` type URLs, and
        `QuotaExceeded` for more names (subscribed plus unsubscribed in one request; subscribed on
        the stream) than its `NameLimits` allow; the stream must then end.
        Never produces output itself: call `outbound` afterwards. Returns whether `outbound`
        may now owe something for an unchanged snapshot (the same test `outbound` uses to skip
        a type), so the edge need not wake its writer for a plain ACK.
        """
        if not req.type_url:
            raise BadRequest("every request on an aggregated stream must carry type_url")
        # `initial_resource_versions` is not counted: a reconnecting wildcard client lists every
        # resource it holds (legitimately more than any per-request limit in a large fleet). It
        # is bounded by the request size limit, read on a type's first request only, and what
        # no longer exists is removed by the first response and forgotten.
        self._limits.check_request(len(req.subscribe) + len(req.unsubscribe))
        # Rule 2: only the first request is guaranteed to carry the node; keep the first one.
        if self.node_id is None and req.node_id:
            self.node_id = req.node_id
        st = self._types.get(req.type_url)
        first = st is None
        if st is None:
            if len(self._types) >= MAX_TYPES:  # rule 17: a client cannot grow our state at will
                raise BadRequest(f"a stream may request at most {MAX_TYPES} resource types")
            st = self._types[req.type_url] = _TypeState()
            self._order.append(req.type_url)
            self._order.sort(key=order_key)
        elif req.response_nonce:
            # On a type's first request a nonce can only come from an earlier stream (rule 3):
            # it answers nothing here.
            self._answer(req.type_url, st, req)
        # Rule 6 (delta): subscription changes count even when the nonce is stale.
        if req.subscribe:
            subscribing = set(req.subscribe)
            subscribing.discard(WILDCARD)
            after = (st.names | subscribing).difference(req.unsubscribe)
            self._limits.check_stream(self._names - len(st.names) + len(after))
        before = len(st.names)
        self._subscribe(st, req.subscribe, req.unsubscribe, first)
        self._names += len(st.names) - before
        if first:
            self._initial(st, req.initial_resource_versions)
        return st.seen is None or st.rescan or bool(st.dirty) or st.owe

    def _answer(self, url: str, st: _TypeState, req: DeltaRequest) -> None:
        """Rules 4 and 5: settle the response `req.response_nonce` names.

        The client answers responses in order, but Envoy may answer only the latest of several
        (it keeps one pending ACK per type), so responses older than the answered one count as
        accepted. A NACK discards exactly the rejected response: every name it carried reverts
        to what the client held before it — unless a *newer* response (already sent, still
        unanswered) carried that name too: that newer content supersedes the rejected one and
        nothing is rolled back or marked for it. A nonce that is not outstanding (answered
        already, or of another type) changes nothing; a NACK of it is still recorded.
        """
        nonce = req.response_nonce
        index = next((i for i, s in enumerate(st.pending) if s.nonce == nonce), None)
        if index is None:
            self.stale_answers += 1
            if req.error_detail is not None and (
                st.last_rejection is None or st.last_rejection.nonce != nonce
            ):
                st.last_rejection = Rejection(url, None, nonce, req.error_detail, (), self.node_id)
            return
        answered = st.pending[index]
        for older in st.pending[:index]:
            _accept(st, older)
        del st.pending[: index + 1]
        if req.error_detail is None:
            _accept(st, answered)
            st.version_acked = answered.version
            return
        st.last_rejection = Rejection(
            type_url=url,
            version=answered.version,
            nonce=nonce,
            message=req.error_detail,
            resource_names=answered.names,
            node_id=self.node_id,
        )
        newer: set[str] = set()
        for sent in st.pending:
            newer.update(sent.changes)
        for name, version in answered.changes.items():
            if name in newer:
                continue
            before = st.acked.get(name)
            if before is None:
                st.held.pop(name, None)
            else:
                st.held[name] = before
            st.rejected[name] = version  # rule 5: not offered again until it changes
            # A re-subscription made before this NACK no longer forces a resend: the client has
            # now said it cannot apply this content, and sending it again would be refused again
            # (found by the Hypothesis test: subscribe 'a' again, then NACK the response that
            # carried 'a'). If the content changes, it is sent as any change is.
            st.forced.discard(name)
            st.dirty.add(name)

    def _subscribe(
        self,
        st: _TypeState,
        subscribe: tuple[str, ...],
        unsubscribe: tuple[str, ...],
        first: bool,
    ) -> None:
        """Rule 11: subscribe/unsubscribe are changes to the current subscription."""
        if first and not subscribe:
            # Legacy wildcard: Envoy opens LDS/CDS with an empty subscribe list. It stays in force
            # until `*` is unsubscribed, even after names are subscribed explicitly.
            st.wildcard = True
        for name in subscribe:
            if name == WILDCARD:
                if not st.wildcard:
                    st.wildcard, st.rescan = True, True
                continue
            # Answered even if the client supposedly holds it (and even if it NACKed it).
            st.names.add(name)
            st.forced.add(name)
            st.rejected.pop(name, None)
            st.dirty.add(name)
            st.names_key = None
        for name in unsubscribe:
            if name == WILDCARD:
                if st.wildcard:
                    st.wildcard, st.rescan = False, True
                    # The client drops what only the wildcard covered.
                    known = set(st.held) | set(st.acked) | st.forced | set(st.rejected)
                    for sent in st.pending:
                        known.update(sent.changes)
                    for other in known - st.names:
                        st.forget(other)
                continue
            if name not in st.names:
                continue  # unknown unsubscribe: ignored
            st.names.discard(name)
            st.names_key = None
            if st.wildcard:
                # Still covered by the wildcard: the client keeps it but waits for the server to
                # confirm (Envoy's "ambiguous" resources), so answer it: resend or remove.
                st.forced.add(name)
                st.rejected.pop(name, None)
                st.dirty.add(name)
            else:
                st.forget(name)

    def _initial(self, st: _TypeState, versions: Mapping[str, str]) -> None:
        """Rule 12: a type's first request states what the client already holds."""
        held = {n: v for n, v in versions.items() if n != WILDCARD and st.covers(n)}
        st.held, st.acked = dict(held), held
        st.forced.difference_update(held)  # declared as held: sent only if it differs
        st.owe = not held
        if held:
            st.version_acked = content_version(sorted(held.items()))

    # -- output -----------------------------------------------------------------------------

    def outbound(self, snap: Snapshot) -> list[Outbound]:
        """The responses this stream is owed for `snap`, in make-before-break order (rule 14).

        The caller must send all of them, in order: they are recorded as sent. Only resources
        whose version differs from what the client holds are sent (rules 7, 13), plus names it
        newly asked for (rule 11); held resources that are gone or that the client must be told
        do not exist go into `removed_resources`. Content the client NACKed is not offered again
        until it changes (rule 5). Calling this again with no new input returns [].
        """
        plans: list[_Plan] = []
        for url in self._order:
            st = self._types[url]
            ts = snap.get(url)
            if st.seen is ts and not st.rescan and not st.dirty and not st.owe:
                continue  # nothing can be owed (the common case at 10,000 streams)
            adds, removes = self._diff(st, ts)
            st.seen, st.rescan = ts, False
            st.dirty.clear()
            if adds or removes or st.owe:
                plans.append(_Plan(url, st, ts, adds, removes))
        if not plans:
            return []

        # Rule 14: additions and changes in ORDER, then removals in BREAK_ORDER.
        makes = [p for p in plans if p.adds or not p.removes]
        breaks = sorted((p for p in plans if p.removes), key=lambda p: _break_key(p.url))
        merged = bool(makes) and bool(breaks) and makes[-1] is breaks[0]
        out = [self._emit(p, p.adds, p.removes if merged and p is breaks[0] else []) for p in makes]
        out.extend(self._emit(p, [], p.removes) for p in (breaks[1:] if merged else breaks))
        return out

    def _diff(self, st: _TypeState, ts: TypeSnapshot) -> tuple[list[Resource], list[str]]:
        """What `st` owes for `ts`: resources to send and names to remove, both name-sorted."""
        resources = ts.resources
        if st.wildcard and not (st.held or st.forced or st.rejected):
            return list(resources.values()), []  # a fresh wildcard client is owed everything
        if (st.rescan or st.seen is None) and not (st.forced or st.rejected):
            # A full comparison with nothing forced or withheld (e.g. a reconnect, rule 12):
            # one pass in name order over what the subscription covers.
            have = st.held
            if st.wildcard:
                owed = [r for n, r in resources.items() if have.get(n) != r.version]
            else:
                covered = (resources.get(n) for n in sorted(st.names))
                owed = [r for r in covered if r is not None and have.get(r.name) != r.version]
            return owed, sorted(n for n in have if n not in resources)
        candidates: set[str]
        if st.rescan or st.seen is None:
            candidates = set(resources) if st.wildcard else set(st.names)
            candidates.update(st.held, st.forced, st.rejected)
        else:
            candidates = set(st.dirty)
            if st.seen is not ts:
                candidates.update(_changed(st.seen, ts))
        adds: list[Resource] = []
        removes: list[str] = []
        for name in sorted(candidates):
            res = resources.get(name)
            if name in st.forced:  # rule 11: answer it, whatever the client holds
                if res is not None:
                    adds.append(res)
                else:
                    removes.append(name)
                continue
            if not st.covers(name):
                continue
            if name in st.rejected:  # rule 5: the same content is not offered again
                if st.rejected[name] == (res.version if res is not None else None):
                    continue
                del st.rejected[name]  # it changed since the NACK
            held = st.held.get(name)
            if res is not None:
                if held != res.version:  # rules 7, 13: versions are content hashes
                    adds.append(res)
            elif held is not None:  # rule 11: deleted while the client holds it
                removes.append(name)
        return adds, removes

    def _emit(self, plan: _Plan, adds: list[Resource], removes: list[str]) -> Outbound:
        st = plan.st
        version = self._version(st, plan.ts)
        self._nonces += 1
        nonce = f"{self._nonces:x}"  # rule 3: unique within the stream
        changes: dict[str, str | None] = {}
        for res in adds:
            st.held[res.name] = changes[res.name] = res.version
            st.forced.discard(res.name)
            st.rejected.pop(res.name, None)
        for name in removes:
            st.held.pop(name, None)
            changes[name] = None
            st.forced.discard(name)
            st.rejected.pop(name, None)
        st.pending.append(_Sent(nonce, version, changes))
        if len(st.pending) > MAX_PENDING:  # rule 17: a client that never answers
            _accept(st, st.pending.pop(0))
        st.owe = False
        st.version_sent, st.nonce_sent = version, nonce
        if not removes and len(adds) == len(plan.ts) > 1:
            # Everything of the type (a fresh wildcard client: the reconnect storm of rule 18):
            # one body per content, shared by all such streams; the nonce (field 5) is appended,
            # which protobuf parsers accept in any position.
            url, ts = plan.url, plan.ts
            shared = ts.memo(
                ("delta-all", version),
                lambda: delta_response(version, url, list(ts.resources.values()), (), ""),
            )
            body = with_nonce(shared, nonce)
        else:
            body = delta_response(version, plan.url, adds, removes, nonce)
        return Outbound(plan.url, version, nonce, body)

    @staticmethod
    def _version(st: _TypeState, ts: TypeSnapshot) -> str:
        """system_version_info: the content version of what the subscription covers."""
        if st.wildcard:
            return ts.version
        if st.names_key is None:
            st.names_key = names_digest(st.names)
        names = st.names
        return ts.memo(("delta-version", st.names_key), lambda: _selected_version(ts, names))

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
        return None if st is None else (st.wildcard, frozenset(st.names))

    def held(self, type_url: str) -> dict[str, str]:
        """name -> version the client holds once it applies every response sent so far."""
        st = self._types.get(type_url)
        return {} if st is None else dict(st.held)

    def state_size(self) -> int:
        """A measure of retained state; bounded by names and `MAX_PENDING` (rule 17)."""
        return sum(
            1
            + len(st.names)
            + len(st.held)
            + len(st.acked)
            + len(st.forced)
            + len(st.rejected)
            + sum(len(s.changes) for s in st.pending)
            for st in self._types.values()
        )


def _accept(st: _TypeState, sent: _Sent) -> None:
    for name, version in sent.changes.items():
        if version is None:
            st.acked.pop(name, None)
        else:
            st.acked[name] = version


def _changed(old: TypeSnapshot, new: TypeSnapshot) -> frozenset[str]:
    """Names whose resource differs between `old` and `new` (memoised, shared by all streams)."""
    return new.memo(("delta-changed", old.version), lambda: _compute_changed(old, new))


def _compute_changed(old: TypeSnapshot, new: TypeSnapshot) -> frozenset[str]:
    a, b = old.resources, new.resources
    changed = [
        n
        for n, r in b.items()
        if (o := a.get(n)) is not r and (o is None or o.version != r.version)
    ]
    changed.extend(n for n in a if n not in b)
    return frozenset(changed)


def _selected_version(ts: TypeSnapshot, names: Iterable[str]) -> str:
    resources = ts.resources
    return content_version((n, resources[n].version) for n in sorted(names) if n in resources)
