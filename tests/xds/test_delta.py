"""The delta (incremental) stream state machine, rule by rule (numbers: xds-protocol.md).

Snapshots are tiny and hand-made from real protos; `content` maps a type to {name: revision}, and
each revision gives different bytes. A property test at the bottom drives random request sequences
(subscriptions incl. `*`, ACKs, NACKs, late and stale answers, reconnects, snapshot changes)
against an independent model of what the client holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

import flowplane.xds.delta as delta_module
from flowplane.errors import BadRequest
from flowplane.xds import wire
from flowplane.xds.delta import BREAK_ORDER, MAX_PENDING, DeltaRequest, DeltaStream
from flowplane.xds.snapshot import ORDER, Snapshot, content_version
from flowplane.xds.sotw import MAX_TYPES, Outbound, Rejection, TypeStatus
from tests.xds.helpers import (
    BASE,
    CDS,
    EDS,
    LDS,
    MESSAGES,
    RDS,
    changed,
    name_of,
    resource,
    snapshot,
)


@dataclass
class Decoded:
    resp: discovery_pb2.DeltaDiscoveryResponse
    sent: dict[str, str]  # name -> resource version carried
    removed: list[str]


def decode(out: Outbound) -> Decoded:
    resp = discovery_pb2.DeltaDiscoveryResponse.FromString(out.body)
    assert (resp.type_url, resp.system_version_info, resp.nonce) == (
        out.type_url,
        out.version,
        out.nonce,
    )
    sent: dict[str, str] = {}
    for res in resp.resources:
        assert res.resource.type_url == out.type_url
        raw = res.resource.SerializeToString(deterministic=True)
        # Rule 13: the per-resource version is the content hash of that resource.
        assert res.version == hashlib.sha256(raw).hexdigest()[:16]
        assert res.name == name_of(
            out.type_url, MESSAGES[out.type_url].FromString(res.resource.value)
        )
        assert res.name not in sent
        sent[res.name] = res.version
    assert list(sent) == sorted(sent)
    return Decoded(resp, sent, list(resp.removed_resources))


def sent(out: Outbound) -> dict[str, str]:
    return decode(out).sent


def removed(out: Outbound) -> list[str]:
    return decode(out).removed


def v(type_url: str, name: str, rev: int = 0) -> str:
    return resource(type_url, name, rev).version


def req(
    type_url: str,
    subscribe: Sequence[str] = (),
    unsubscribe: Sequence[str] = (),
    *,
    nonce: str = "",
    error: str | None = None,
    node: str | None = None,
    initial: Mapping[str, str] | None = None,
) -> DeltaRequest:
    return DeltaRequest(
        type_url, nonce, tuple(subscribe), tuple(unsubscribe), dict(initial or {}), error, node
    )


def ack(
    s: DeltaStream, out: Outbound, subscribe: Sequence[str] = (), unsubscribe: Sequence[str] = ()
) -> None:
    s.on_request(req(out.type_url, subscribe, unsubscribe, nonce=out.nonce))


def nack(s: DeltaStream, out: Outbound, message: str = "bad config") -> None:
    s.on_request(req(out.type_url, nonce=out.nonce, error=message))


def one(outs: list[Outbound]) -> Outbound:
    assert len(outs) == 1, [(o.type_url, sent(o), removed(o)) for o in outs]
    return outs[0]


def synced(snap: Snapshot, *requests: DeltaRequest) -> DeltaStream:
    """A stream that asked for `requests` and ACKed everything it was sent for `snap`."""
    s = DeltaStream()
    for r in requests:
        s.on_request(r)
    for o in s.outbound(snap):
        ack(s, o)
    assert s.outbound(snap) == []
    return s


# -- DeltaRequest ----------------------------------------------------------------------------


def test_request_from_proto() -> None:
    msg = discovery_pb2.DeltaDiscoveryRequest(
        type_url=RDS,
        response_nonce="3",
        resource_names_subscribe=["a", "b"],
        resource_names_unsubscribe=["c"],
        initial_resource_versions={"a": "v1"},
        node=base_pb2.Node(id="envoy-1"),
    )
    assert DeltaRequest.from_proto(msg) == DeltaRequest(
        RDS, "3", ("a", "b"), ("c",), {"a": "v1"}, None, "envoy-1"
    )
    # Rule 4: NACK = error_detail present, even with an empty message.
    msg = discovery_pb2.DeltaDiscoveryRequest(type_url=RDS, error_detail=status_pb2.Status(code=3))
    assert DeltaRequest.from_proto(msg).error_detail == ""
    assert DeltaRequest.from_proto(msg).node_id is None


def test_request_without_type_url_is_refused() -> None:
    with pytest.raises(BadRequest):
        DeltaStream().on_request(req(""))


def test_rule17_a_stream_cannot_request_unbounded_type_urls() -> None:
    s = DeltaStream()
    for i in range(MAX_TYPES):
        s.on_request(req(f"type.googleapis.com/x.T{i}", ["n"]))
    with pytest.raises(BadRequest):
        s.on_request(req("type.googleapis.com/x.one-too-many"))


# -- rules 2, 3: node, nonces --------------------------------------------------------------------


def test_rule2_node_is_remembered_from_the_first_request() -> None:
    s = DeltaStream()
    s.on_request(req(CDS, node="envoy-1"))
    s.on_request(req(RDS, ["r"], node="someone-else"))
    assert s.node_id == "envoy-1"
    _, rds = s.outbound(snapshot(BASE))
    nack(s, rds)
    rejection = s.status()[RDS].last_rejection
    assert rejection is not None
    assert rejection.node_id == "envoy-1"


def test_rule3_nonces_are_unique_within_the_stream() -> None:
    s = DeltaStream()
    nonces: list[str] = []
    s.on_request(req(CDS))
    for rev in range(20):
        for o in s.outbound(snapshot(changed(BASE, CDS, a=rev))):
            nonces.append(o.nonce)
    assert len(nonces) == len(set(nonces)) == 20


# -- rule 11: subscriptions are changes ----------------------------------------------------------


@pytest.mark.parametrize("type_url", [CDS, LDS, RDS, EDS])
def test_rule11_empty_first_request_is_a_legacy_wildcard_for_any_type(type_url: str) -> None:
    s = DeltaStream()
    s.on_request(req(type_url))
    assert s.subscription(type_url) == (True, frozenset())
    out = one(s.outbound(snapshot(BASE)))
    assert list(sent(out)) == sorted(BASE[type_url])
    assert out.version == snapshot(BASE).version(type_url)
    # Later requests with empty lists change nothing (they are changes, not the full set).
    ack(s, out)
    assert s.subscription(type_url) == (True, frozenset())
    assert s.outbound(snapshot(BASE)) == []


def test_rule11_legacy_wildcard_survives_explicit_names_until_star_is_unsubscribed() -> None:
    s = DeltaStream()
    s.on_request(req(CDS))
    ack(s, one(s.outbound(snapshot(BASE))), ["a"])
    assert s.subscription(CDS) == (True, frozenset({"a"}))
    out = one(s.outbound(snapshot(BASE)))
    assert (sent(out), removed(out)) == ({"a": v(CDS, "a")}, [])  # rule 11: "a" is answered
    ack(s, out, unsubscribe=["*"])
    assert s.subscription(CDS) == (False, frozenset({"a"}))
    assert s.held(CDS) == {"a": v(CDS, "a")}  # the client drops what only the wildcard covered
    assert s.outbound(snapshot(changed(BASE, CDS, b=1, c=0))) == []


def test_rule11_star_subscribes_the_wildcard_and_unsubscribing_it_ends_it() -> None:
    s = DeltaStream()
    s.on_request(req(CDS, ["*"]))
    out = one(s.outbound(snapshot(BASE)))
    assert list(sent(out)) == ["a", "b"]
    ack(s, out)
    new = one(s.outbound(snapshot(changed(BASE, CDS, c=0))))
    assert sent(new) == {"c": v(CDS, "c")}
    ack(s, new, unsubscribe=["*"])
    assert s.subscription(CDS) == (False, frozenset())
    assert s.outbound(snapshot(changed(BASE, CDS, a=1, d=0))) == []
    # Subscribing `*` again sends only what the client lacks (it dropped everything).
    s.on_request(req(CDS, ["*"]))
    assert list(sent(one(s.outbound(snapshot(BASE))))) == ["a", "b"]


def test_rule11_star_with_explicit_names_on_the_first_request() -> None:
    s = DeltaStream()
    s.on_request(req(CDS, ["*", "a", "missing"]))
    out = one(s.outbound(snapshot(BASE)))
    assert (list(sent(out)), removed(out)) == (["a", "b"], ["missing"])


def test_rule11_subscribing_more_names_sends_only_the_new_ones() -> None:
    s = DeltaStream()
    s.on_request(req(RDS, ["r"]))
    out = one(s.outbound(snapshot(BASE)))
    assert sent(out) == {"r": v(RDS, "r")}
    ack(s, out, ["r2"])
    assert sent(one(s.outbound(snapshot(BASE)))) == {"r2": v(RDS, "r2")}


def test_rule11_subscribing_a_name_the_client_holds_is_answered_again() -> None:
    s = synced(snapshot(BASE), req(RDS, ["r"]))
    s.on_request(req(RDS, ["r"]))
    assert sent(one(s.outbound(snapshot(BASE)))) == {"r": v(RDS, "r")}
    assert s.outbound(snapshot(BASE)) == []


def test_rule11_a_missing_name_is_removed_once_and_sent_when_it_appears() -> None:
    s = DeltaStream()
    s.on_request(req(RDS, ["r", "later"]))
    out = one(s.outbound(snapshot(BASE)))
    assert (sent(out), removed(out)) == ({"r": v(RDS, "r")}, ["later"])
    ack(s, out)
    assert s.outbound(snapshot(BASE)) == []  # told once
    assert s.outbound(snapshot(changed(BASE, RDS, r2=7))) == []  # not subscribed: not our business
    appeared = one(s.outbound(snapshot(changed(BASE, RDS, later=0))))
    assert (sent(appeared), removed(appeared)) == ({"later": v(RDS, "later")}, [])


def test_rule11_unknown_unsubscribes_are_ignored() -> None:
    s = synced(snapshot(BASE), req(RDS, ["r"]))
    s.on_request(req(RDS, unsubscribe=["nope", "*"]))
    assert s.subscription(RDS) == (False, frozenset({"r"}))
    assert s.outbound(snapshot(BASE)) == []


def test_rule11_unsubscribing_drops_the_name_and_resubscribing_sends_it_again() -> None:
    s = synced(snapshot(BASE), req(RDS, ["r", "r2"]))
    s.on_request(req(RDS, unsubscribe=["r"]))
    assert s.outbound(snapshot(changed(BASE, RDS, r=1))) == []  # no longer its business
    assert s.outbound(snapshot(changed(BASE, RDS, r=None))) == []  # nor its deletion
    s.on_request(req(RDS, ["r"]))
    assert sent(one(s.outbound(snapshot(BASE)))) == {"r": v(RDS, "r")}


def test_rule11_wildcard_plus_name_unsubscribing_the_name_keeps_it() -> None:
    s = synced(snapshot(BASE), req(CDS, ["*", "a"]))
    s.on_request(req(CDS, unsubscribe=["a"]))
    assert s.subscription(CDS) == (True, frozenset())
    # Still covered by the wildcard. Envoy holds it as "ambiguous" until the server confirms,
    # so it is sent again (never removed), then kept up to date like any wildcard resource.
    out = one(s.outbound(snapshot(BASE)))
    assert (sent(out), removed(out)) == ({"a": v(CDS, "a")}, [])
    ack(s, out)
    assert s.held(CDS) == {"a": v(CDS, "a"), "b": v(CDS, "b")}
    assert sent(one(s.outbound(snapshot(changed(BASE, CDS, a=1))))) == {"a": v(CDS, "a", 1)}


def test_rule11_deleting_a_held_resource_puts_it_in_removed_resources() -> None:
    s = synced(snapshot(BASE), req(CDS), req(EDS, ["a", "b"]))
    outs = s.outbound(snapshot(changed(changed(BASE, CDS, b=None), EDS, b=None)))
    assert [(o.type_url, sent(o), removed(o)) for o in outs] == [
        (CDS, {}, ["b"]),
        (EDS, {}, ["b"]),
    ]
    assert s.held(CDS) == {"a": v(CDS, "a")}


# -- rule 6 (delta): stale nonces still carry subscription changes ------------------------------


def test_rule6_subscription_changes_on_a_stale_nonce_are_honoured() -> None:
    s = DeltaStream()
    s.on_request(req(RDS, ["r"]))
    old = one(s.outbound(snapshot(BASE)))
    ack(s, old)
    new = one(s.outbound(snapshot(changed(BASE, RDS, r=1))))
    # A request echoing the already answered nonce: the answer part means nothing ...
    s.on_request(req(RDS, ["r2"], nonce=old.nonce, error="late"))
    assert s.stale_answers == 1
    # ... but the subscription change counts.
    assert s.subscription(RDS) == (False, frozenset({"r", "r2"}))
    assert sent(one(s.outbound(snapshot(changed(BASE, RDS, r=1))))) == {"r2": v(RDS, "r2")}
    ack(s, new)
    assert s.status()[RDS].version_acked == new.version


# -- rule 12: reconnect ---------------------------------------------------------------------------


def test_rule12_reconnect_with_unchanged_config_receives_nothing() -> None:
    snap = snapshot(BASE)
    before = synced(snap, req(CDS), req(EDS, ["a", "b"]), req(LDS), req(RDS, ["r"]))
    # The control plane restarts (same content, so the same content-hash versions, rule 8) and
    # Envoy reconnects stating what it holds.
    after = DeltaStream()
    for t, names in ((CDS, []), (EDS, ["a", "b"]), (LDS, []), (RDS, ["r"])):
        after.on_request(req(t, names, initial=before.held(t)))
    assert after.outbound(snapshot(BASE, serial=1)) == []  # zero resources, and no response
    assert after.status()[CDS] == TypeStatus(None, None, snap.version(CDS), None)
    # ... and afterwards it is an ordinary stream.
    assert sent(one(after.outbound(snapshot(changed(BASE, RDS, r=1))))) == {"r": v(RDS, "r", 1)}


def test_rule12_reconnect_sends_only_what_differs_and_removes_what_was_deleted() -> None:
    s = DeltaStream()
    held = {"a": v(CDS, "a"), "b": v(CDS, "b", 5), "gone": v(CDS, "gone")}
    s.on_request(req(CDS, ["*"], initial=held))
    out = one(s.outbound(snapshot(changed(BASE, CDS, c=0))))
    assert (sent(out), removed(out)) == ({"b": v(CDS, "b"), "c": v(CDS, "c")}, ["gone"])


def test_rule12_named_reconnect_sends_differences_and_answers_names_not_held() -> None:
    s = DeltaStream()
    s.on_request(req(RDS, ["r", "r2", "x"], initial={"r": v(RDS, "r"), "r2": "old"}))
    out = one(s.outbound(snapshot(BASE)))
    assert (sent(out), removed(out)) == ({"r2": v(RDS, "r2")}, ["x"])


def test_rule12_initial_versions_for_names_not_subscribed_are_ignored() -> None:
    s = DeltaStream()
    s.on_request(req(RDS, ["r"], initial={"r": v(RDS, "r"), "r2": "old"}))
    assert s.held(RDS) == {"r": v(RDS, "r")}
    assert s.outbound(snapshot(BASE)) == []


def test_rule12_a_fresh_client_is_answered_even_when_there_is_nothing() -> None:
    # No initial versions: Envoy waits for a first response to finish initialising.
    s = DeltaStream()
    s.on_request(req(LDS))
    out = one(s.outbound(Snapshot.empty()))
    assert (sent(out), removed(out)) == ({}, [])
    assert s.outbound(Snapshot.empty()) == []
    ack(s, out)
    assert s.status()[LDS].version_acked == Snapshot.empty().version(LDS)


def test_rule12_initial_versions_on_later_requests_are_ignored() -> None:
    s = synced(snapshot(BASE), req(CDS))
    s.on_request(req(CDS, initial={"a": "bogus"}))
    assert s.outbound(snapshot(BASE)) == []


# -- rules 4, 5: ACK and NACK per nonce --------------------------------------------------------


def test_rule4_ack_records_the_acked_version() -> None:
    s = DeltaStream()
    s.on_request(req(CDS))
    out = one(s.outbound(snapshot(BASE)))
    assert s.status()[CDS] == TypeStatus(out.version, out.nonce, None, None)
    ack(s, out)
    assert s.status()[CDS].version_acked == out.version


def test_rule5_after_a_nack_the_same_content_is_not_sent_again() -> None:
    s = synced(snapshot(BASE), req(CDS))
    good = s.status()[CDS].version_acked
    bad_snap = snapshot(changed(BASE, CDS, a=1, c=0))
    bad = one(s.outbound(bad_snap))
    assert sent(bad) == {"a": v(CDS, "a", 1), "c": v(CDS, "c")}
    nack(s, bad, "unknown field")
    status = s.status()[CDS]
    assert status.version_acked == good  # the last good version is kept
    assert status.last_rejection == Rejection(
        type_url=CDS,
        version=bad.version,
        nonce=bad.nonce,
        message="unknown field",
        resource_names=("a", "c"),
        node_id=None,
    )
    # The client still holds what it held before the rejected response.
    assert s.held(CDS) == {"a": v(CDS, "a"), "b": v(CDS, "b")}
    assert s.outbound(bad_snap) == []  # no resend loop
    assert s.outbound(snapshot(changed(BASE, CDS, a=1, c=0), serial=2)) == []
    # Only the resource whose content changes is sent again.
    fixed = one(s.outbound(snapshot(changed(BASE, CDS, a=2, c=0))))
    assert sent(fixed) == {"a": v(CDS, "a", 2)}


def test_rule5_a_rejected_removal_is_not_sent_again() -> None:
    s = synced(snapshot(BASE), req(CDS))
    without_b = snapshot(changed(BASE, CDS, b=None))
    out = one(s.outbound(without_b))
    assert removed(out) == ["b"]
    nack(s, out)
    assert s.held(CDS) == {"a": v(CDS, "a"), "b": v(CDS, "b")}
    assert s.outbound(without_b) == []
    back = one(s.outbound(snapshot(changed(BASE, CDS, b=3))))
    assert sent(back) == {"b": v(CDS, "b", 3)}


def test_rule5_a_nack_for_a_superseded_nonce_rolls_back_only_what_is_not_superseded() -> None:
    s = synced(snapshot(BASE), req(CDS))
    first = one(s.outbound(snapshot(changed(BASE, CDS, a=1, b=1))))
    # Sent before the client answered `first` (coalescing: no waiting for ACKs).
    second = one(s.outbound(snapshot(changed(BASE, CDS, a=2, b=1))))
    assert sent(second) == {"a": v(CDS, "a", 2)}
    nack(s, first)
    # "a" was superseded by `second`: no roll-back. "b" reverts to what the client held before.
    assert s.held(CDS) == {"a": v(CDS, "a", 2), "b": v(CDS, "b")}
    rejection = s.status()[CDS].last_rejection
    assert rejection is not None
    assert (rejection.nonce, rejection.resource_names) == (first.nonce, ("a", "b"))
    assert s.outbound(snapshot(changed(BASE, CDS, a=2, b=1))) == []  # b@1 was rejected
    ack(s, second)
    assert s.status()[CDS].version_acked == second.version
    # If `second` is NACKed too, the client is back where it started.
    third = one(s.outbound(snapshot(changed(BASE, CDS, a=3, b=1))))
    nack(s, third)
    assert s.held(CDS) == {"a": v(CDS, "a", 2), "b": v(CDS, "b")}


def test_rule5_nacking_both_outstanding_responses_restores_the_original() -> None:
    s = synced(snapshot(BASE), req(CDS))
    first = one(s.outbound(snapshot(changed(BASE, CDS, a=1))))
    second = one(s.outbound(snapshot(changed(BASE, CDS, a=2))))
    nack(s, first)
    nack(s, second)
    assert s.held(CDS) == {"a": v(CDS, "a"), "b": v(CDS, "b")}
    assert s.outbound(snapshot(changed(BASE, CDS, a=2))) == []
    assert sent(one(s.outbound(snapshot(changed(BASE, CDS, a=1))))) == {"a": v(CDS, "a", 1)}


def test_rule5_answering_only_the_latest_response_accepts_the_earlier_ones() -> None:
    # Envoy keeps one pending ACK per type: it may answer only the newest of two responses.
    s = synced(snapshot(BASE), req(CDS))
    one(s.outbound(snapshot(changed(BASE, CDS, a=1))))
    second = one(s.outbound(snapshot(changed(BASE, CDS, a=1, b=1))))
    nack(s, second)
    assert s.held(CDS) == {"a": v(CDS, "a", 1), "b": v(CDS, "b")}
    assert s.stale_answers == 0
    # "a"@1 counts as accepted: a later rejected change to "a" reverts to it, not to "a"@0.
    third = one(s.outbound(snapshot(changed(BASE, CDS, a=2))))
    nack(s, third)
    assert s.held(CDS) == {"a": v(CDS, "a", 1), "b": v(CDS, "b")}


def test_rule5_a_nack_of_an_unknown_nonce_is_recorded_and_changes_nothing() -> None:
    s = synced(snapshot(BASE), req(CDS))
    held = s.held(CDS)
    s.on_request(req(CDS, nonce="ffff", error="what?"))
    assert s.stale_answers == 1
    assert s.status()[CDS].last_rejection == Rejection(CDS, None, "ffff", "what?", (), None)
    assert s.held(CDS) == held
    assert s.outbound(snapshot(BASE)) == []


def test_rule5_resubscribing_a_rejected_name_sends_it_again() -> None:
    s = synced(snapshot(BASE), req(RDS, ["r"]))
    bad = snapshot(changed(BASE, RDS, r=1))
    nack(s, one(s.outbound(bad)))
    assert s.outbound(bad) == []
    s.on_request(req(RDS, ["r"]))  # the client asks for it explicitly
    assert sent(one(s.outbound(bad))) == {"r": v(RDS, "r", 1)}


def test_rule5_a_nack_after_a_resubscription_cancels_the_forced_resend() -> None:
    """Found by the Hypothesis test below: the client asks for `r` again *before* it NACKs the
    response that carried `r`. The NACK is the later word: the same content is not resent."""
    s = synced(snapshot(BASE), req(RDS, ["r"]))
    bad = snapshot(changed(BASE, RDS, r=1))
    out = one(s.outbound(bad))  # not answered yet
    s.on_request(req(RDS, ["r"]))  # asks for r again (a stale nonce: answers nothing)
    nack(s, out)
    assert s.outbound(bad) == []  # r@1 was rejected after it was asked for
    assert sent(one(s.outbound(snapshot(changed(BASE, RDS, r=2))))) == {"r": v(RDS, "r", 2)}


def test_rule5_nonces_of_other_types_answer_nothing() -> None:
    s = DeltaStream()
    s.on_request(req(CDS))
    s.on_request(req(LDS))
    cds, lds = s.outbound(snapshot(BASE))
    s.on_request(req(CDS, nonce=lds.nonce, error="x"))
    assert s.stale_answers == 1
    assert s.held(CDS) == sent(cds)


# -- rule 7: only what changed, exactly once ---------------------------------------------------


def test_rule7_a_change_to_one_resource_sends_exactly_that_resource_to_its_subscribers() -> None:
    snap = snapshot(BASE)
    wild = synced(snap, req(CDS), req(EDS, ["a", "b"]), req(LDS), req(RDS, ["r"]))
    other = synced(snap, req(RDS, ["r2"]))
    big = {**BASE, CDS: {f"c{i}": 0 for i in range(50)}}
    wild2 = synced(snapshot(big), req(CDS))
    assert wild.outbound(snapshot(BASE, serial=2)) == []  # same content, new snapshot
    new = snapshot(changed(BASE, RDS, r=1))
    out = one(wild.outbound(new))
    assert (out.type_url, sent(out), removed(out)) == (RDS, {"r": v(RDS, "r", 1)}, [])
    assert other.outbound(new) == []  # not subscribed to "r"
    bigger = snapshot(changed(big, CDS, c7=1))
    out = one(wild2.outbound(bigger))
    assert (sent(out), removed(out)) == ({"c7": v(CDS, "c7", 1)}, [])
    assert out.version == bigger.version(CDS)


def test_rule7_unchanged_resources_in_a_changed_type_are_not_resent() -> None:
    s = synced(snapshot(BASE), req(CDS))
    out = one(s.outbound(snapshot(changed(BASE, CDS, c=0))))
    assert sent(out) == {"c": v(CDS, "c")}


# -- rule 14: make before break ------------------------------------------------------------------


def test_rule14_responses_follow_make_before_break_order() -> None:
    s = DeltaStream()
    for t, n in ((RDS, ["r"]), (LDS, []), (EDS, ["a"]), (CDS, [])):
        s.on_request(req(t, n))
    outs = s.outbound(snapshot(BASE))
    assert [o.type_url for o in outs] == [CDS, EDS, LDS, RDS] == list(ORDER)
    assert len({o.nonce for o in outs}) == 4


def test_rule14_cluster_additions_first_then_routes_then_cluster_removals() -> None:
    s = synced(snapshot(BASE), req(CDS), req(RDS, ["r"]))
    # "c" replaces "b" and "r" moves from "b" to "c": add c, switch the route, then drop b.
    outs = s.outbound(snapshot(changed(changed(BASE, CDS, b=None, c=0), RDS, r=1)))
    assert [(o.type_url, sent(o), removed(o)) for o in outs] == [
        (CDS, {"c": v(CDS, "c")}, []),
        (RDS, {"r": v(RDS, "r", 1)}, []),
        (CDS, {}, ["b"]),
    ]
    assert outs[0].version == outs[2].version  # the type's version for the whole change
    assert s.outbound(snapshot(changed(changed(BASE, CDS, b=None, c=0), RDS, r=1))) == []


def test_rule14_removals_go_referrers_first() -> None:
    s = synced(snapshot(BASE), req(CDS), req(EDS, ["a", "b"]), req(LDS), req(RDS, ["r", "r2"]))
    gone = changed(
        changed(changed(changed(BASE, CDS, b=None), EDS, b=None), LDS, l=None), RDS, r2=None
    )
    outs = s.outbound(snapshot(gone))
    assert [o.type_url for o in outs] == list(BREAK_ORDER)
    assert all(not sent(o) for o in outs)


def test_rule14_a_types_own_removals_ride_with_its_additions_when_nothing_follows() -> None:
    s = synced(snapshot(BASE), req(CDS))
    out = one(s.outbound(snapshot(changed(BASE, CDS, b=None, c=0))))
    assert (sent(out), removed(out)) == ({"c": v(CDS, "c")}, ["b"])


# -- rule 17: bounded state, coalescing --------------------------------------------------------


def test_rule17_a_slow_stream_gets_only_the_latest_content() -> None:
    s = DeltaStream()
    s.on_request(req(CDS))
    first = one(s.outbound(snapshot(BASE)))
    for rev in range(1, 4):  # three publications while the stream could not write
        latest = snapshot(changed(BASE, CDS, a=rev))
    out = one(s.outbound(latest))
    assert sent(out) == {"a": v(CDS, "a", 3)}
    assert out.nonce != first.nonce
    size = s.state_size()
    for rev in range(10, 10 + 3 * MAX_PENDING):  # never answered: memory stays bounded
        s.outbound(snapshot(changed(BASE, CDS, a=rev)))
    assert s.state_size() <= size + MAX_PENDING
    for rev in range(100, 150):
        for o in s.outbound(snapshot(changed(BASE, CDS, a=rev))):
            ack(s, o)
    assert s.state_size() <= size


def test_a_full_wildcard_response_is_built_once_and_shared_across_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    real = wire.delta_response

    def counting(*args: Any) -> bytes:
        built.append(args[1])
        return real(*args)

    monkeypatch.setattr(delta_module, "delta_response", counting)
    snap = snapshot(BASE)
    bodies = []
    for _ in range(5):  # a reconnect storm of fresh Envoys (rule 18)
        s = DeltaStream()
        s.on_request(req(CDS))
        out = one(s.outbound(snap))
        assert list(sent(out)) == ["a", "b"]
        resp = decode(out).resp
        resp.nonce = ""
        bodies.append(resp)
    assert built == [CDS]
    assert all(b == bodies[0] for b in bodies)


def test_status_lists_requested_types_in_order_and_versions_cover_the_subscription() -> None:
    s = DeltaStream()
    s.on_request(req(RDS, ["r", "missing"]))
    s.on_request(req(CDS))
    assert list(s.status()) == [CDS, RDS]
    assert s.status()[RDS] == TypeStatus(None, None, None, None)
    _, rds = s.outbound(snapshot(BASE))
    assert rds.version == content_version([("r", v(RDS, "r"))])
    assert s.status()[RDS].version_sent == rds.version


# -- properties over random request sequences ---------------------------------------------------

NAMES = ("a", "b", "c")
_rank = {t: i for i, t in enumerate(ORDER)}
_break_rank = {t: i for i, t in enumerate(BREAK_ORDER)}

edits = st.tuples(
    st.sampled_from(ORDER), st.sampled_from(NAMES), st.one_of(st.none(), st.integers(0, 2))
)
KINDS = ("ack", "ack", "nack", "nack", "ack_latest", "nack_latest", "stale", "stale_nack", "plain")
requests = st.tuples(
    st.just("req"),
    st.sampled_from(ORDER),
    st.sampled_from(KINDS),
    st.lists(st.sampled_from((*NAMES, "*")), max_size=2, unique=True),
    st.lists(st.sampled_from((*NAMES, "*", "zz")), max_size=2, unique=True),
)
ops = st.one_of(
    st.tuples(st.just("snap"), edits),  # one resource changes, appears or goes away
    st.tuples(st.just("push"), edits),  # the same, then outbound
    requests,
    requests,
    requests,
    st.tuples(st.just("out")),
    st.tuples(st.just("out")),
    st.tuples(st.just("reconnect"), st.booleans()),
)
first_requests = st.fixed_dictionaries(
    {t: st.lists(st.sampled_from((*NAMES, "*")), max_size=3, unique=True) for t in ORDER}
)


@dataclass
class Response:
    nonce: str
    changes: dict[str, str | None]  # name -> version, None = removed


@dataclass
class Client:
    """An honest client, written independently of the server's bookkeeping: per type its
    subscription, what it confirmed, the responses it applied but has not answered yet, and what
    the server owes it (forced answers, a first response) or may withhold (rejected content)."""

    sub: dict[str, tuple[bool, set[str]]] = field(default_factory=dict)
    confirmed: dict[str, dict[str, str]] = field(default_factory=dict)
    inbox: dict[str, list[Response]] = field(default_factory=dict)
    answered: dict[str, list[str]] = field(default_factory=dict)
    rejected: dict[str, dict[str, str | None]] = field(default_factory=dict)
    forced: dict[str, set[str]] = field(default_factory=dict)
    must_answer: set[str] = field(default_factory=set)

    def view(self, t: str) -> dict[str, str]:
        """What the client holds after applying every response it received, in order."""
        held = dict(self.confirmed.get(t, {}))
        for r in self.inbox.get(t, []):
            for n, ver in r.changes.items():
                if ver is None:
                    held.pop(n, None)
                else:
                    held[n] = ver
        return held

    def forget(self, t: str, n: str) -> None:
        self.confirmed.get(t, {}).pop(n, None)
        for r in self.inbox.get(t, []):
            r.changes.pop(n, None)
        self.rejected.get(t, {}).pop(n, None)
        self.forced.get(t, set()).discard(n)

    def accept(self, t: str, r: Response) -> None:
        conf = self.confirmed.setdefault(t, {})
        for n, ver in r.changes.items():
            if ver is None:
                conf.pop(n, None)
            else:
                conf[n] = ver

    def reject(self, t: str, r: Response) -> None:
        newer = {n for later in self.inbox[t] for n in later.changes}
        for n, ver in r.changes.items():
            if n not in newer:
                self.rejected.setdefault(t, {})[n] = ver
                # A NACK answers an earlier re-subscription too: the client rejected that content.
                self.forced.get(t, set()).discard(n)


def _request(
    stream: DeltaStream, client: Client, t: str, kind: str, sub: list[str], unsub: list[str]
) -> None:
    first = t not in client.sub
    inbox = client.inbox.setdefault(t, [])
    nonce, error, answered = "", None, False
    if not first and kind in ("ack", "nack") and inbox:
        r = inbox.pop(0)
        nonce, answered = r.nonce, True
    elif not first and kind in ("ack_latest", "nack_latest") and inbox:
        *older, r = inbox
        inbox.clear()
        for o in older:  # never answered: a later answer implies they were applied
            client.accept(t, o)
        nonce, answered = r.nonce, True
    elif kind in ("stale", "stale_nack"):
        done = client.answered.get(t, [])
        nonce = done[-1] if done else "bogus"
        error = "late" if kind == "stale_nack" else None
    if answered:
        client.answered.setdefault(t, []).append(nonce)
        if kind.startswith("nack"):
            error = "rejected"
            client.reject(t, r)
        else:
            client.accept(t, r)
    stream.on_request(req(t, sub, unsub, nonce=nonce, error=error))
    if answered and error is not None:
        rejection = stream.status()[t].last_rejection
        assert rejection is not None
        assert (rejection.nonce, rejection.version is not None) == (nonce, True)

    # Rule 11: the requested changes, as the client understands them.
    wildcard, names = client.sub.get(t, (not sub, set()))
    forced = client.forced.setdefault(t, set())
    for n in sub:
        if n == "*":
            wildcard = True
        else:
            names.add(n)
            forced.add(n)
            client.rejected.get(t, {}).pop(n, None)
    for n in unsub:
        if n == "*":
            if wildcard:
                wildcard = False
                known = set(client.view(t)) | set(client.confirmed.get(t, {}))
                known |= {x for r in inbox for x in r.changes} | set(client.rejected.get(t, {}))
                for other in known - names:
                    client.forget(t, other)
                for other in list(forced):
                    if other not in names:
                        forced.discard(other)
        elif n in names:
            names.discard(n)
            if wildcard:  # still covered: answered again, kept
                forced.add(n)
                client.rejected.get(t, {}).pop(n, None)
            else:
                client.forget(t, n)
    client.sub[t] = (wildcard, names)
    if first:
        client.must_answer.add(t)
    assert stream.subscription(t) == (wildcard, frozenset(names))


def _drive(stream: DeltaStream, client: Client, snap: Snapshot, nonces: set[str]) -> None:
    outs = stream.outbound(snap)
    decoded = [decode(o) for o in outs]
    # Rule 14: additions in ORDER (one response per type), removals after the last addition,
    # in BREAK_ORDER.
    adds = [i for i, d in enumerate(decoded) if d.sent]
    rems = [i for i, d in enumerate(decoded) if d.removed]
    add_ranks = [_rank[outs[i].type_url] for i in adds]
    assert add_ranks == sorted(set(add_ranks))
    rem_ranks = [_break_rank[outs[i].type_url] for i in rems]
    assert rem_ranks == sorted(set(rem_ranks))
    if adds:
        assert all(i >= adds[-1] for i in rems)
    for o, d in zip(outs, decoded, strict=True):
        t = o.type_url
        assert o.nonce not in nonces  # rule 3
        nonces.add(o.nonce)
        assert t in client.sub
        wildcard, names = client.sub[t]
        current = snap.resources(t)
        covered = {n: r.version for n, r in current.items() if wildcard or n in names}
        assert o.version == content_version(sorted(covered.items()))
        view, forced = client.view(t), client.forced.setdefault(t, set())
        rejected = client.rejected.setdefault(t, {})
        for n, ver in d.sent.items():
            assert covered.get(n) == ver  # subscribed, at its current version
            # Rule 7: never what the client already holds, unless it asked for it again.
            assert view.get(n) != ver or n in forced, (n, ver)
            assert n not in rejected or rejected[n] != ver  # rule 5: no resend loop
        for n in d.removed:
            assert n not in covered
            assert n in view or n in forced  # held, or newly subscribed and absent
            assert n not in rejected or rejected[n] is not None
        changes: dict[str, str | None] = {**d.sent, **dict.fromkeys(d.removed)}
        client.inbox.setdefault(t, []).append(Response(o.nonce, changes))
        for n in changes:
            rejected.pop(n, None)
            forced.discard(n)
        client.must_answer.discard(t)
    assert not any(client.forced.values()), "rule 11: a subscribed name was not answered"
    assert not client.must_answer, "a first request was not answered"
    # The client's held set is exactly the subscribed and existing resources at their current
    # versions, except content it rejected that has not changed since (rule 5).
    for t, (wildcard, names) in client.sub.items():
        covered = {n: r.version for n, r in snap.resources(t).items() if wildcard or n in names}
        view = client.view(t)
        rejected = client.rejected.setdefault(t, {})
        for n, ver in covered.items():
            assert view.get(n) == ver or rejected.get(n) == ver, (t, n)
        for n in view:
            assert n in covered or (n in rejected and rejected[n] is None), (t, n)
        for n in list(rejected):
            if rejected[n] != covered.get(n):
                del rejected[n]  # changed since: the server owed it and sent it above
        assert stream.held(t) == view
        status = stream.status()[t]
        if outs and outs[-1].type_url == t:
            assert status.version_sent == outs[-1].version
    assert stream.outbound(snap) == []  # rule 7: nothing more is owed
    # Rule 17: bounded state.
    assert stream.state_size() <= len(ORDER) * (1 + 5 * len(NAMES) + MAX_PENDING * len(NAMES))


def _reconnect(client: Client, legacy: bool) -> DeltaStream:
    """The stream breaks; the client keeps what it applied and reconnects (rule 12)."""
    for t in client.sub:
        client.confirmed[t] = client.view(t)
    client.inbox.clear()
    client.answered.clear()
    client.rejected.clear()
    client.forced.clear()
    client.must_answer.clear()
    stream = DeltaStream()
    for t in sorted(client.sub, reverse=True):
        wildcard, names = client.sub[t]
        held = client.confirmed.get(t, {})
        if not wildcard and not names:
            assert not held
            del client.sub[t]
            continue
        if wildcard:
            subscribe = [] if legacy and not names else ["*", *sorted(names)]
        else:
            subscribe = sorted(names)
        stream.on_request(req(t, subscribe, initial=held))
        client.forced[t] = names - set(held)
        if not held:
            client.must_answer.add(t)
    return stream


@settings(max_examples=200, deadline=None, database=None)
@given(first_requests, st.lists(ops, min_size=5, max_size=40))
def test_random_request_sequences_keep_the_invariants(
    first: dict[str, list[str]], steps: list[tuple[object, ...]]
) -> None:
    stream, client, nonces = DeltaStream(), Client(), set[str]()
    content = {t: dict(by_name) for t, by_name in BASE.items()}
    snap = snapshot(content)
    for t, subscribe in first.items():
        _request(stream, client, t, "plain", subscribe, [])
    _drive(stream, client, snap, nonces)
    for step in steps:
        if step[0] in ("snap", "push"):
            t, name, rev = cast("tuple[str, str, int | None]", step[1])
            if rev is None:
                content[t].pop(name, None)
            else:
                content[t][name] = rev
            snap = snapshot(content)
            if step[0] == "push":
                _drive(stream, client, snap, nonces)
        elif step[0] == "req":
            _, t, kind, sub, unsub = cast("tuple[str, str, str, list[str], list[str]]", step)
            _request(stream, client, t, kind, sub, unsub)
        elif step[0] == "reconnect":
            stream, nonces = _reconnect(client, bool(step[1])), set()
        else:
            _drive(stream, client, snap, nonces)
    _drive(stream, client, snap, nonces)


def test_versions_is_status_in_brief() -> None:
    """`versions()` (what an xDS worker's status report groups streams by) says what `status()`
    says: per requested type, in order, the version sent and acknowledged and whether a
    rejection is recorded."""
    s = DeltaStream()
    s.on_request(req(CDS, node="envoy-1"))
    s.on_request(req(RDS, ["r"]))
    cds, rds = s.outbound(snapshot(BASE))
    ack(s, cds)
    nack(s, rds)
    brief = [
        (url, st.version_sent, st.version_acked, st.last_rejection is not None)
        for url, st in s.status().items()
    ]
    assert s.versions() == brief
    assert [b[3] for b in brief] == [False, True]
    assert brief[0][2] == cds.version
