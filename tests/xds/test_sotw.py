"""The SotW stream state machine, rule by rule (numbers: ../shared/reference/xds-protocol.md).

Snapshots are tiny and hand-made from real protos; `content` maps a type to {name: revision}, and
each revision gives different bytes. Property tests at the bottom drive random request sequences
(ACKs, NACKs, stale nonces, resubscriptions, snapshot changes) against an independent model of
what the client holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

import flowplane.xds.sotw as sotw_module
from flowplane.errors import BadRequest
from flowplane.xds import wire
from flowplane.xds.snapshot import ORDER, Snapshot, content_version
from flowplane.xds.sotw import MAX_TYPES, Outbound, Rejection, Request, SotwStream, TypeStatus
from tests.xds.helpers import (
    BASE,
    CDS,
    EDS,
    LDS,
    MESSAGES,
    RDS,
    changed,
    name_of,
    snapshot,
)

FULL = {CDS, LDS}


def decode(out: Outbound) -> tuple[discovery_pb2.DiscoveryResponse, dict[str, str]]:
    """The response, and name -> resource version of what it carries."""
    resp = discovery_pb2.DiscoveryResponse.FromString(out.body)
    assert (resp.type_url, resp.version_info, resp.nonce) == (out.type_url, out.version, out.nonce)
    carried: dict[str, str] = {}
    for packed in resp.resources:
        assert packed.type_url == out.type_url
        raw = packed.SerializeToString(deterministic=True)
        name = name_of(out.type_url, MESSAGES[out.type_url].FromString(packed.value))
        carried[name] = hashlib.sha256(raw).hexdigest()[:16]
    # The response version is the hash over the (name, version) pairs it carries.
    assert out.version == content_version(sorted(carried.items()))
    return resp, carried


def names(out: Outbound) -> list[str]:
    return list(decode(out)[1])


def req(
    type_url: str,
    resource_names: Sequence[str] = (),
    nonce: str = "",
    error: str | None = None,
    node: str | None = None,
    version: str = "",
) -> Request:
    return Request(type_url, version, nonce, tuple(resource_names), error, node)


def ack(s: SotwStream, out: Outbound, resource_names: Sequence[str] = ()) -> None:
    s.on_request(req(out.type_url, resource_names, nonce=out.nonce, version=out.version))


def nack(s: SotwStream, out: Outbound, resource_names: Sequence[str] = ()) -> None:
    s.on_request(req(out.type_url, resource_names, nonce=out.nonce, error="bad config"))


def one(outs: list[Outbound]) -> Outbound:
    assert len(outs) == 1, [o.type_url for o in outs]
    return outs[0]


# -- Request ---------------------------------------------------------------------------------


def test_request_from_proto() -> None:
    msg = discovery_pb2.DiscoveryRequest(
        type_url=RDS,
        version_info="v1",
        response_nonce="3",
        resource_names=["a", "b"],
        node=base_pb2.Node(id="envoy-1"),
    )
    assert Request.from_proto(msg) == Request(RDS, "v1", "3", ("a", "b"), None, "envoy-1")
    # Rule 4: NACK = error_detail present, even with an empty message.
    msg = discovery_pb2.DiscoveryRequest(type_url=RDS, error_detail=status_pb2.Status(code=3))
    assert Request.from_proto(msg).error_detail == ""
    assert Request.from_proto(msg).node_id is None


def test_request_without_type_url_is_refused() -> None:
    with pytest.raises(BadRequest):
        SotwStream().on_request(req(""))


def test_rule17_a_stream_cannot_request_unbounded_type_urls() -> None:
    s = SotwStream()
    for i in range(MAX_TYPES):
        s.on_request(req(f"type.googleapis.com/x.T{i}"))
    assert s.outbound(Snapshot.empty()) == []  # unknown named types: nothing exists, nothing sent
    with pytest.raises(BadRequest):
        s.on_request(req("type.googleapis.com/x.one-too-many"))


# -- rule 2: node --------------------------------------------------------------------------------


def test_rule2_node_is_remembered_from_the_first_request() -> None:
    s = SotwStream()
    s.on_request(req(CDS, node="envoy-1"))
    out = one(s.outbound(snapshot(BASE)))
    s.on_request(req(LDS))  # gRPC's clients send the node once only
    ack(s, out)
    s.on_request(req(RDS, ["r"], node="someone-else"))
    assert s.node_id == "envoy-1"
    nack(s, one(s.outbound(snapshot(BASE))[1:]), ["r"])
    assert s.status()[RDS].last_rejection is not None
    assert s.status()[RDS].last_rejection.node_id == "envoy-1"  # type: ignore[union-attr]


# -- rules 1, 3, 14: types, nonces, order --------------------------------------------------------


def test_rule14_responses_follow_make_before_break_order() -> None:
    s = SotwStream()
    for t, n in ((RDS, ["r"]), (LDS, []), (EDS, ["a"]), (CDS, [])):
        s.on_request(req(t, n))
    outs = s.outbound(snapshot(BASE))
    assert [o.type_url for o in outs] == [CDS, EDS, LDS, RDS] == list(ORDER)
    # Rule 3: nonces are unique within the stream.
    assert len({o.nonce for o in outs}) == 4


def test_rule14_cluster_removals_go_after_the_routes_that_stop_naming_them() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    s.on_request(req(RDS, ["r"]))
    for o in s.outbound(snapshot(BASE)):
        ack(s, o, ["r"] if o.type_url == RDS else ())
    # "b" goes away while "r" changes (to stop naming it): CDS must not drop "b" before RDS.
    outs = s.outbound(snapshot(changed(changed(BASE, CDS, b=None), RDS, r=1)))
    assert [o.type_url for o in outs] == [RDS, CDS]
    assert names(outs[1]) == ["a"]


def test_rule14_cluster_additions_first_removals_last() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    s.on_request(req(RDS, ["r"]))
    for o in s.outbound(snapshot(BASE)):
        ack(s, o, ["r"] if o.type_url == RDS else ())
    # "c" replaces "b" and "r" moves from "b" to "c": add c (keep b), switch routes, drop b.
    new = changed(changed(BASE, CDS, b=None, c=0), RDS, r=1)
    outs = s.outbound(snapshot(new))
    assert [o.type_url for o in outs] == [CDS, RDS, CDS]
    assert names(outs[0]) == ["a", "b", "c"]
    assert names(outs[2]) == ["a", "c"]
    assert s.status()[CDS].version_sent == snapshot(new).version(CDS)
    assert s.outbound(snapshot(new)) == []


# -- rule 4: ACK and NACK --------------------------------------------------------------------


def test_rule4_ack_records_the_acked_version() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    out = one(s.outbound(snapshot(BASE)))
    assert s.status()[CDS] == TypeStatus(out.version, out.nonce, None, None)
    ack(s, out)
    assert s.status()[CDS].version_acked == out.version


def test_rule4_nack_is_detected_by_error_detail_not_by_version() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    good = one(s.outbound(snapshot(BASE)))
    ack(s, good)
    bad = one(s.outbound(snapshot(changed(BASE, CDS, a=1))))
    # Some clients echo the rejected version: error_detail alone decides.
    s.on_request(req(CDS, nonce=bad.nonce, version=bad.version, error="unknown field"))
    status = s.status()[CDS]
    assert status.version_acked == good.version  # the last good version is kept
    assert status.last_rejection == Rejection(
        type_url=CDS,
        version=bad.version,
        nonce=bad.nonce,
        message="unknown field",
        resource_names=("a", "b"),
        node_id=None,
    )


def test_initial_request_version_is_what_the_client_holds() -> None:
    s = SotwStream()
    s.on_request(req(CDS, version="abc"))
    assert s.status()[CDS].version_acked == "abc"


# -- rule 5: no resend loop after a NACK ---------------------------------------------------------


def test_rule5_no_resend_after_nack_until_content_changes() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    first = snapshot(BASE)
    out = one(s.outbound(first))
    nack(s, out)
    assert s.outbound(first) == []
    assert s.outbound(snapshot(BASE, serial=2)) == []  # a new snapshot, same content
    s.on_request(req(CDS, nonce=out.nonce, error="still bad"))  # repeated NACK
    assert s.outbound(first) == []
    fixed = one(s.outbound(snapshot(changed(BASE, CDS, a=1))))
    assert fixed.version != out.version


def test_rule5_named_type_after_nack_resends_only_for_new_content() -> None:
    s = SotwStream()
    s.on_request(req(RDS, ["r"]))
    out = one(s.outbound(snapshot(BASE)))
    nack(s, out, ["r"])
    assert s.outbound(snapshot(BASE)) == []
    assert s.outbound(snapshot(changed(BASE, RDS, r2=3))) == []  # not requested: no change
    s.on_request(req(RDS, ["r", "r2"], nonce=out.nonce, error="bad"))  # NACK + new name
    assert names(one(s.outbound(snapshot(BASE)))) == ["r", "r2"]


def test_rule5_names_dropped_and_asked_again_before_a_nack_are_still_sent() -> None:
    """Found by the Hypothesis test: after response R the client narrows its subscription (and
    drops what it no longer names), widens it again, then NACKs R. It lacks what it dropped, so
    the server sends it — the same content as R, because it asked for it after R (rule 9/11 over
    rule 5, which binds while the client still asks for what it was sent)."""
    s = SotwStream()
    s.on_request(req(CDS))  # wildcard: a and b
    snap = snapshot(BASE)
    r = one(s.outbound(snap))
    ack(s, r, ["a"])  # narrows: drops b
    s.on_request(req(CDS, ["*"], nonce=r.nonce, version=r.version))  # widens again
    nack(s, r, ["*"])
    again = one(s.outbound(snap))
    assert again.version == r.version
    assert s.outbound(snap) == []  # and only once


# -- rule 6: stale nonces ------------------------------------------------------------------------


def test_rule6_request_with_stale_nonce_is_ignored() -> None:
    s = SotwStream()
    s.on_request(req(RDS, ["r"]))
    old = one(s.outbound(snapshot(BASE)))
    new = one(s.outbound(snapshot(changed(BASE, RDS, r=1))))
    # A late reply to `old`: its NACK and its subscription change are out of date.
    s.on_request(req(RDS, ["r", "r2"], nonce=old.nonce, error="bad"))
    assert s.stale_requests == 1
    assert s.status()[RDS].last_rejection is None
    assert s.subscription(RDS) == (False, frozenset({"r"}))
    assert s.outbound(snapshot(changed(BASE, RDS, r=1))) == []
    ack(s, new, ["r", "r2"])
    assert s.status()[RDS].version_acked == new.version
    assert names(one(s.outbound(snapshot(changed(BASE, RDS, r=1))))) == ["r", "r2"]


def test_rule6_nonces_of_other_types_are_stale_and_empty_nonces_are_not() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    s.on_request(req(LDS))
    cds, lds = s.outbound(snapshot(BASE))
    s.on_request(req(CDS, ["a"], nonce=lds.nonce))  # LDS's nonce is not CDS's latest
    assert s.stale_requests == 1
    s.on_request(req(CDS, ["a"]))  # an empty nonce is an initial request, never stale
    assert s.stale_requests == 1
    assert s.subscription(CDS) == (False, frozenset({"a"}))
    assert cds.nonce != lds.nonce


def test_rule6_a_nonce_from_an_earlier_stream_is_treated_as_initial() -> None:
    s = SotwStream()
    s.on_request(req(CDS, nonce="7f", version="v-old"))
    assert s.stale_requests == 0
    assert names(one(s.outbound(snapshot(BASE)))) == ["a", "b"]


# -- rule 7: only what changed ------------------------------------------------------------------


def test_rule7_unchanged_content_is_never_pushed() -> None:
    s = SotwStream()
    for t, n in ((CDS, []), (EDS, ["a"]), (LDS, []), (RDS, ["r"])):
        s.on_request(req(t, n))
    outs = s.outbound(snapshot(BASE))
    assert len(outs) == 4
    assert s.outbound(snapshot(BASE)) == []
    for o in outs:
        ack(s, o, {EDS: ["a"], RDS: ["r"]}.get(o.type_url, []))
    assert s.outbound(snapshot(BASE, serial=9)) == []
    # Changes to resources this stream did not ask for are not its business.
    unrelated = changed(changed(BASE, EDS, b=5), RDS, r2=5)
    assert s.outbound(snapshot(unrelated)) == []
    # A change to one type sends that type only.
    assert [o.type_url for o in s.outbound(snapshot(changed(unrelated, LDS, l=1)))] == [LDS]


# -- rule 9: subscriptions ----------------------------------------------------------------------


def test_rule9_newly_added_names_are_sent_even_if_unchanged() -> None:
    s = SotwStream()
    s.on_request(req(RDS, ["r"]))
    first = one(s.outbound(snapshot(BASE)))
    assert names(first) == ["r"]
    ack(s, first, ["r", "r2"])
    second = one(s.outbound(snapshot(BASE)))
    assert names(second) == ["r", "r2"]
    assert second.version != first.version  # the version covers the names included
    ack(s, second, ["r2"])  # unsubscribing alone needs no response
    assert s.outbound(snapshot(BASE)) == []
    s.on_request(req(RDS, ["r", "r2"], nonce=second.nonce))  # re-adding must send "r" again
    third = one(s.outbound(snapshot(BASE)))
    assert names(third) == ["r", "r2"]


def test_rule9_empty_list_is_legacy_wildcard_only_before_any_name() -> None:
    s = SotwStream()
    s.on_request(req(CDS, []))
    assert s.subscription(CDS) == (True, frozenset())
    out = one(s.outbound(snapshot(BASE)))
    assert names(out) == ["a", "b"]
    ack(s, out, ["a"])
    assert s.subscription(CDS) == (False, frozenset({"a"}))
    ack(s, out, [])  # after naming resources, [] means "none", not wildcard
    assert s.subscription(CDS) == (False, frozenset())
    assert s.outbound(snapshot(changed(BASE, CDS, b=1))) == []


def test_rule9_star_is_the_explicit_wildcard() -> None:
    s = SotwStream()
    s.on_request(req(CDS, ["*", "a"]))
    assert s.subscription(CDS) == (True, frozenset({"a"}))
    out = one(s.outbound(snapshot(BASE)))
    assert names(out) == ["a", "b"]
    ack(s, out, [])
    assert s.subscription(CDS) == (False, frozenset())  # "*" counts as having named


def test_rule9_back_to_wildcard_resends_what_was_dropped() -> None:
    s = SotwStream()
    s.on_request(req(CDS, ["*"]))
    out = one(s.outbound(snapshot(BASE)))
    ack(s, out, ["a"])
    assert s.outbound(snapshot(BASE)) == []
    ack(s, out, ["*"])
    assert names(one(s.outbound(snapshot(BASE)))) == ["a", "b"]


# -- rules 10 and 15: full state vs named, never hold a response ---------------------------------


def test_rule10_cds_and_lds_carry_the_full_state() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    out = one(s.outbound(snapshot(BASE)))
    ack(s, out)
    gone = one(s.outbound(snapshot(changed(BASE, CDS, b=None))))
    assert names(gone) == ["a"]  # absence means deletion: the removal must be sent


def test_rule10_first_full_state_response_is_sent_even_when_empty() -> None:
    s = SotwStream()
    s.on_request(req(LDS))
    out = one(s.outbound(Snapshot.empty()))
    assert names(out) == []
    assert s.outbound(Snapshot.empty()) == []


def test_rule10_explicit_full_state_names_are_answered_even_when_absent() -> None:
    # gRPC's xDS client names its listener; an answer without it says "does not exist".
    s = SotwStream()
    s.on_request(req(LDS, ["missing"]))
    out = one(s.outbound(snapshot(BASE)))
    assert names(out) == []
    ack(s, out, ["missing", "l"])
    out = one(s.outbound(snapshot(BASE)))
    assert names(out) == ["l"]
    ack(s, out, ["l", "other"])  # a new name that does not exist either: say so
    again = one(s.outbound(snapshot(BASE)))
    assert (names(again), again.version) == (["l"], out.version)
    ack(s, again, ["l"])  # dropping a name needs no answer
    assert s.outbound(snapshot(BASE)) == []


def test_rule10_named_types_carry_only_requested_names_and_removal_is_not_pushed() -> None:
    s = SotwStream()
    s.on_request(req(EDS, ["a"]))
    out = one(s.outbound(snapshot(BASE)))
    assert names(out) == ["a"]
    ack(s, out, ["a"])
    assert s.outbound(snapshot(changed(BASE, EDS, a=None))) == []
    # It comes back unchanged: the client still holds it, nothing to send.
    assert s.outbound(snapshot(BASE)) == []
    assert names(one(s.outbound(snapshot(changed(BASE, EDS, a=4))))) == ["a"]


def test_rule15_send_what_exists_and_the_missing_names_when_they_appear() -> None:
    s = SotwStream()
    s.on_request(req(RDS, ["r", "later"]))
    out = one(s.outbound(snapshot(BASE)))
    assert names(out) == ["r"]  # not held back for "later"
    ack(s, out, ["r", "later"])
    assert s.outbound(snapshot(BASE)) == []
    assert names(one(s.outbound(snapshot(changed(BASE, RDS, later=0))))) == ["later", "r"]


def test_rule15_nothing_is_sent_for_a_named_type_until_something_exists() -> None:
    s = SotwStream()
    s.on_request(req(EDS, ["x"]))
    assert s.outbound(snapshot(BASE)) == []
    assert names(one(s.outbound(snapshot(changed(BASE, EDS, x=0))))) == ["x"]


# -- rule 17: bounded state, coalescing --------------------------------------------------------


def test_rule17_a_slow_stream_gets_only_the_latest_version() -> None:
    s = SotwStream()
    s.on_request(req(CDS))
    out = one(s.outbound(snapshot(BASE)))
    # Three publications while the stream could not write (its response is not even acked).
    for rev in range(1, 4):
        latest = snapshot(changed(BASE, CDS, a=rev))
    coalesced = one(s.outbound(latest))
    assert coalesced.version == latest.version(CDS)
    assert coalesced.nonce != out.nonce
    size = s.state_size()
    for rev in range(10, 60):
        for o in s.outbound(snapshot(changed(BASE, CDS, a=rev))):
            ack(s, o)
    assert s.state_size() == size


# -- encoding once -------------------------------------------------------------------------------


def test_bodies_are_built_once_per_content_and_shared_across_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    real = wire.sotw_response_body

    def counting(version: str, type_url: str, res: Sequence[bytes]) -> bytes:
        built.append(type_url)
        return real(version, type_url, res)

    monkeypatch.setattr(sotw_module, "sotw_response_body", counting)
    snap = snapshot(BASE)
    outs = []
    for _ in range(5):
        s = SotwStream()
        s.on_request(req(CDS))
        s.on_request(req(RDS, ["r"]))
        outs.append(s.outbound(snap))
    assert built == [CDS, RDS]
    cds = [decode(o[0])[0] for o in outs]
    for resp in cds:
        resp.nonce = ""
    assert all(r == cds[0] for r in cds)


def test_status_lists_requested_types_in_order() -> None:
    s = SotwStream()
    s.on_request(req(RDS, ["r"]))
    s.on_request(req(CDS))
    assert list(s.status()) == [CDS, RDS]
    assert s.status()[RDS] == TypeStatus(None, None, None, None)


# -- properties over random request sequences ---------------------------------------------------

NAMES = ("a", "b", "c")
_rank = {t: i for i, t in enumerate(ORDER)}

contents = st.fixed_dictionaries(
    {t: st.dictionaries(st.sampled_from(NAMES), st.integers(0, 2), max_size=3) for t in ORDER}
)
name_lists = st.one_of(st.none(), st.lists(st.sampled_from((*NAMES, "*")), max_size=4, unique=True))
ops = st.one_of(
    st.tuples(st.just("snap"), contents),
    st.tuples(
        st.just("req"),
        st.sampled_from(ORDER),
        st.sampled_from(("ack", "nack", "stale", "initial")),
        name_lists,
    ),
    st.tuples(st.just("out")),
)


@dataclass
class Model:
    """What an honest client sees: its subscription and what it was offered, per type."""

    ever_named: set[str] = field(default_factory=set)
    sub: dict[str, tuple[bool, frozenset[str]]] = field(default_factory=dict)
    last_names: dict[str, list[str]] = field(default_factory=dict)
    held: dict[str, dict[str, str]] = field(default_factory=dict)
    nonces: dict[str, list[str]] = field(default_factory=dict)
    last_version: dict[str, str] = field(default_factory=dict)
    sub_changed: dict[str, bool] = field(default_factory=dict)  # since the last response
    nacked: dict[str, str] = field(default_factory=dict)  # NACKed version, until a change
    # Full-state types: names asked for since the last response and still subscribed; each
    # must be answered (rule 9), even if absent (rule 10).
    new_names: dict[str, frozenset[str]] = field(default_factory=dict)

    def included(self, snap: Snapshot, t: str) -> dict[str, str]:
        wildcard, explicit = self.sub[t]
        res = snap.resources(t)
        return {n: r.version for n, r in res.items() if wildcard or n in explicit}


def _drive(stream: SotwStream, model: Model, snap: Snapshot, seen_nonces: set[str]) -> Snapshot:
    outs = stream.outbound(snap)
    types = [o.type_url for o in outs]
    # Rule 14: ORDER, except that a CDS carrying removals may come last.
    body = types[:-1] if len(types) > 1 and types[-1] == CDS else types
    assert [_rank[t] for t in body] == sorted(_rank[t] for t in body)
    assert len(set(body)) == len(body)
    for o in outs:
        _, carried = decode(o)
        assert o.nonce not in seen_nonces  # rule 3
        seen_nonces.add(o.nonce)
        t = o.type_url
        if model.last_version.get(t) == o.version:  # rule 7
            assert model.sub_changed.get(t), "same version twice with no subscription change"
        if t in model.nacked:  # rule 5
            assert o.version != model.nacked[t], "NACKed content offered again"
            del model.nacked[t]
        model.last_version[t] = o.version
        model.sub_changed[t] = False
        model.new_names.pop(t, None)
        model.nonces.setdefault(t, []).append(o.nonce)
        if t in FULL:
            model.held[t] = carried
        else:
            model.held.setdefault(t, {}).update(carried)
    # Liveness: whatever the client asked for that exists has been offered at its current version
    # (rules 9, 10, 15); for full-state types exactly that (absence = deletion).
    for t in model.sub:
        want = model.included(snap, t)
        held = model.held.get(t, {})
        if t in FULL:
            assert t in model.held, t  # answered at least once, even if empty
            assert held == want, t
        else:
            assert {n: held.get(n) for n in want} == want, t
    assert not any(model.new_names.values())  # rule 9: names newly asked for were answered
    assert stream.outbound(snap) == []  # rule 7: nothing more is owed
    # Rule 17: bounded state (per type: subscription, new names, held resources).
    assert stream.state_size() <= len(ORDER) * (1 + 3 * len(NAMES))
    return snap


def _request(stream: SotwStream, model: Model, t: str, kind: str, asked: list[str] | None) -> None:
    sent = model.nonces.get(t, [])
    latest = sent[-1] if sent else None
    if asked is None:
        asked = model.last_names.get(t, [])
    if kind == "initial":
        nonce = ""
    elif kind == "stale":
        nonce = sent[-2] if len(sent) > 1 else "stale-nonce"
    else:
        nonce = latest or ""
    error = "rejected" if kind == "nack" else None
    stream.on_request(req(t, asked, nonce=nonce, error=error))
    if nonce and latest is not None and nonce != latest:
        return  # rule 6: ignored
    model.last_names[t] = asked
    if kind == "nack" and nonce and not model.sub_changed.get(t):
        # Rule 5 binds while the client still asks for what it was sent. After a subscription
        # change since that response (an earlier request with the same nonce), the client is
        # owed an answer for what it asks now (rules 9, 11), even if that is the same content.
        model.nacked[t] = model.last_version[t]
    wildcard = "*" in asked or (not asked and t not in model.ever_named)
    if asked:
        model.ever_named.add(t)
    new = (wildcard, frozenset(n for n in asked if n != "*"))
    old = model.sub.get(t)
    if old != new:
        if t in FULL:
            if wildcard:
                model.new_names.pop(t, None)  # full state follows from the content alone
            else:
                if old is None:
                    added = new[1]
                elif old[0]:  # coming from a wildcard, it was already sent everything it names
                    added = frozenset()
                else:
                    added = new[1] - old[1]
                still = model.new_names.get(t, frozenset()) & new[1]
                model.new_names[t] = still | added
        model.sub[t] = new
        model.sub_changed[t] = True
        model.nacked.pop(t, None)
        if not wildcard and t in model.held:  # the client drops what it unsubscribes from
            model.held[t] = {n: v for n, v in model.held[t].items() if n in new[1]}
    assert stream.subscription(t) == new


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(ops, max_size=40))
def test_random_request_sequences_keep_the_invariants(steps: list[tuple[object, ...]]) -> None:
    stream, model, seen = SotwStream(), Model(), set[str]()
    snap = snapshot(BASE)
    for step in steps:
        if step[0] == "snap":
            snap = snapshot(step[1])  # type: ignore[arg-type]
        elif step[0] == "req":
            _, t, kind, asked = step
            _request(stream, model, t, kind, asked)  # type: ignore[arg-type]
        else:
            _drive(stream, model, snap, seen)
    _drive(stream, model, snap, seen)
    # ACK/NACK bookkeeping never invents versions.
    for t, status in stream.status().items():
        if status.last_rejection is not None:
            assert status.last_rejection.type_url == t
