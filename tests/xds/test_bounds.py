"""Memory bounds of the sans-I/O xDS code (issue 11, item 11).

Rules under test:
- "limit names per request and per stream (configurable, with a clear gRPC error)": the state
  machines raise `QuotaExceeded` (gRPC RESOURCE_EXHAUSTED) naming the setting.
- "Caches keyed by name sets must be bounded by bytes, not entries, and released with the
  streams": memo keys are digests (a cache never holds a stream's names), and memos and the
  per-scope view cache stay under their byte budgets however many entries are added.
"""

from __future__ import annotations

import gc
import weakref

import pytest

import flowplane.xds.scope as scope_module
from flowplane.errors import QuotaExceeded
from flowplane.xds.delta import DeltaRequest, DeltaStream
from flowplane.xds.scope import Scope, release, retain, scoped
from flowplane.xds.snapshot import MEMO_BYTES, Snapshot, TypeSnapshot, names_digest
from flowplane.xds.sotw import NameLimits, Request, SotwStream
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE
from tests.xds.helpers import resource, snapshot

LIMITS = NameLimits(per_request=10, per_stream=15)


def names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


# -- limits -----------------------------------------------------------------------------------


def test_sotw_refuses_a_request_naming_too_many_resources() -> None:
    s = SotwStream(LIMITS)
    s.on_request(Request(CLUSTER_TYPE, resource_names=names("a", 10)))  # at the limit
    with pytest.raises(QuotaExceeded, match=r"at most 10 resources.*MAX_NAMES_PER_REQUEST"):
        s.on_request(Request(CLUSTER_TYPE, resource_names=names("a", 11)))
    assert QuotaExceeded.grpc_status == 8  # RESOURCE_EXHAUSTED


def test_sotw_counts_names_over_all_types_of_a_stream() -> None:
    s = SotwStream(LIMITS)
    s.on_request(Request(CLUSTER_TYPE, resource_names=names("c", 10)))
    s.on_request(Request(ENDPOINT_TYPE, resource_names=names("e", 5)))  # 15: allowed
    with pytest.raises(QuotaExceeded, match=r"at most 15 resource names.*MAX_NAMES_PER_STREAM"):
        s.on_request(Request(ENDPOINT_TYPE, resource_names=names("e", 6)))
    # a SotW request replaces the type's subscription: shrinking one type frees room
    s.on_request(Request(CLUSTER_TYPE, resource_names=names("c", 4)))
    s.on_request(Request(ENDPOINT_TYPE, resource_names=names("e", 10)))
    assert s.subscription(ENDPOINT_TYPE) == (False, frozenset(names("e", 10)))


def test_delta_counts_subscribe_and_unsubscribe_per_request() -> None:
    s = DeltaStream(LIMITS)
    with pytest.raises(QuotaExceeded, match="names 11"):
        s.on_request(DeltaRequest(CLUSTER_TYPE, subscribe=names("a", 6), unsubscribe=names("b", 5)))


def test_a_reconnecting_wildcard_client_may_list_more_initial_versions_than_the_limit() -> None:
    """A wildcard client reconnecting to a large fleet lists every resource it holds (rule 12);
    that is not a subscription and must not end its stream."""
    s = DeltaStream(LIMITS)
    held = dict.fromkeys(names("c", 50), "v")
    s.on_request(DeltaRequest(CLUSTER_TYPE, initial_resource_versions=held))
    assert s.held(CLUSTER_TYPE) == held


def test_delta_counts_subscribed_names_per_stream_and_unsubscribing_frees_them() -> None:
    s = DeltaStream(LIMITS)
    s.on_request(DeltaRequest(CLUSTER_TYPE, subscribe=names("a", 10)))
    s.on_request(DeltaRequest(ENDPOINT_TYPE, subscribe=names("e", 5)))
    with pytest.raises(QuotaExceeded, match="would make it 16"):
        s.on_request(DeltaRequest(ENDPOINT_TYPE, subscribe=("e5",)))
    s.on_request(DeltaRequest(CLUSTER_TYPE, unsubscribe=("a0", "a1")))
    s.on_request(DeltaRequest(ENDPOINT_TYPE, subscribe=("e5", "e6")))  # 15 again
    # subscribing a name already held costs nothing; one dropped in the same request frees one
    s.on_request(DeltaRequest(CLUSTER_TYPE, subscribe=("a2", "new"), unsubscribe=("a3",)))
    subscribed = [s.subscription(url) for url in (CLUSTER_TYPE, ENDPOINT_TYPE)]
    assert sum(len(sub[1]) for sub in subscribed if sub is not None) == 15


# -- caches -----------------------------------------------------------------------------------


def test_no_cache_keeps_a_closed_streams_names_alive() -> None:
    snap = snapshot({CLUSTER_TYPE: {"a": 0, "b": 0}})
    s = SotwStream()
    s.on_request(Request(CLUSTER_TYPE, resource_names=("a", "x", "y")))
    assert s.outbound(snap)
    d = DeltaStream()
    d.on_request(DeltaRequest(CLUSTER_TYPE, subscribe=("a", "z")))
    assert d.outbound(snap)
    held = [weakref.ref(s), weakref.ref(d)]
    del s, d
    gc.collect()
    assert all(ref() is None for ref in held)
    keys = list(snap.get(CLUSTER_TYPE)._memo._entries)
    assert keys  # the selection and the version were memoised...
    for key in keys:  # ...under digests and versions, never under a set of names
        assert not any(isinstance(part, frozenset | set) for part in key), key
    assert ("select", names_digest({"a", "x", "y"})) in snap.get(CLUSTER_TYPE)._memo


def test_names_digest_is_order_insensitive_and_separates_names() -> None:
    assert names_digest(["a", "b"]) == names_digest(["b", "a"]) == names_digest({"a", "b"})
    assert names_digest(["ab"]) != names_digest(["a", "b"])
    assert len(names_digest(names("n", 50_000))) == 16


def test_type_snapshot_memo_is_bounded_by_bytes() -> None:
    ts = TypeSnapshot(CLUSTER_TYPE, {"a": resource(CLUSTER_TYPE, "a")})
    body = b"x" * (MEMO_BYTES // 8)
    for i in range(40):  # 5x the budget, in 40 entries (far fewer than the entry limit)
        assert ts.memo(("body", i), lambda: body) is body
        assert ts.memo_bytes <= MEMO_BYTES
    assert len(ts._memo) < 8
    assert ("body", 39) in ts._memo and ("body", 0) not in ts._memo  # oldest dropped first


def test_snapshot_memo_is_bounded_by_bytes() -> None:
    snap = Snapshot({}, 1)
    for i in range(10):
        snap.memo(i, lambda: b"y" * (MEMO_BYTES // 4))
    assert snap._memo.bytes <= MEMO_BYTES
    assert len(snap._memo) <= 4


def test_last_views_per_scope_are_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scope_module, "_last_views", {})
    monkeypatch.setattr(scope_module, "_last_views_bytes", 0)
    monkeypatch.setattr(scope_module, "_LAST_VIEWS_BYTES", 100_000)
    snap = snapshot({CLUSTER_TYPE: {"a": 0}})
    for i in range(200):  # each scope carries a 1,000-name allowlist: ~64 KB estimated
        scoped(snap, Scope.for_allowlist(names(f"s{i}-", 1000)))
        assert scope_module._last_views_bytes <= 100_000
    assert len(scope_module._last_views) == 1


def test_a_scopes_last_view_is_released_with_its_last_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scope_module, "_last_views", {})
    monkeypatch.setattr(scope_module, "_last_views_bytes", 0)
    monkeypatch.setattr(scope_module, "_streams", {})
    snap = snapshot({CLUSTER_TYPE: {"a": 0}})
    scope = Scope.for_allowlist(names("l", 1000))
    retain(scope)
    retain(scope)
    scoped(snap, scope)
    release(scope)
    assert scope in scope_module._last_views  # one stream still serves it
    release(scope)
    assert scope_module._last_views == {} and scope_module._streams == {}
    assert scope_module._last_views_bytes == 0
