"""Hand-assembled response bytes equal what the upb encoder produces (DESIGN.md §2)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, wrappers_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from flowplane.xds.snapshot import Resource
from flowplane.xds.types import CLUSTER_TYPE, ENDPOINT_TYPE
from flowplane.xds.wire import (
    delta_response,
    encode_any,
    length_delimited,
    sotw_response_body,
    varint,
    with_nonce,
)
from tests.xds.helpers import cluster_resource as _cluster


def _packed(res: Resource) -> any_pb2.Any:
    return any_pb2.Any.FromString(res.any_bytes)


def test_varint_matches_protobuf() -> None:
    assert varint(0) == b"\x00"
    for n in (1, 127, 128, 300, 16_383, 16_384, 2**21, 2**32 - 1, 2**63, 2**64 - 1):
        # UInt64Value{value=n} is tag 0x08 followed by varint(n).
        assert b"\x08" + varint(n) == wrappers_pb2.UInt64Value(value=n).SerializeToString()


def test_length_delimited_field() -> None:
    assert length_delimited(2, b"abc") == b"\x12\x03abc"
    assert length_delimited(16, b"") == b"\x82\x01\x00"  # two-byte tag


def test_encode_any_equals_pack() -> None:
    msg = cluster_pb2.Cluster(name="a")
    packed = any_pb2.Any()
    packed.Pack(msg, deterministic=True)
    value = msg.SerializeToString(deterministic=True)
    assert encode_any(CLUSTER_TYPE, value) == packed.SerializeToString(deterministic=True)
    assert encode_any(CLUSTER_TYPE, b"") == any_pb2.Any(type_url=CLUSTER_TYPE).SerializeToString()


def test_sotw_body_with_nonce_equals_upb_encoding() -> None:
    resources = [_cluster("a"), _cluster("b", 2), _cluster("c" * 200)]  # one >127-byte Any
    body = sotw_response_body("v1", CLUSTER_TYPE, [r.any_bytes for r in resources])
    wire = with_nonce(body, "n-7")
    expected = discovery_pb2.DiscoveryResponse(
        version_info="v1",
        type_url=CLUSTER_TYPE,
        nonce="n-7",
        resources=[_packed(r) for r in resources],
    )
    assert discovery_pb2.DiscoveryResponse.FromString(wire) == expected
    # Fields are written in field-number order, as upb does: the bytes are identical too.
    assert wire == expected.SerializeToString(deterministic=True)


def test_sotw_body_empty_fields_are_omitted() -> None:
    body = sotw_response_body("", CLUSTER_TYPE, [])
    assert body == discovery_pb2.DiscoveryResponse(type_url=CLUSTER_TYPE).SerializeToString()
    assert with_nonce(body, "") == body


def test_nonce_appended_to_shared_body_personalises_only_field_5() -> None:
    body = sotw_response_body("v", CLUSTER_TYPE, [_cluster("a").any_bytes])
    one = discovery_pb2.DiscoveryResponse.FromString(with_nonce(body, "1"))
    two = discovery_pb2.DiscoveryResponse.FromString(with_nonce(body, "2"))
    assert (one.nonce, two.nonce) == ("1", "2")
    one.nonce = two.nonce = ""
    assert one == two


def test_delta_response_equals_upb_encoding() -> None:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="e1")
    resources = [
        Resource.encode(ENDPOINT_TYPE, "e1", cla),
        Resource.encode(ENDPOINT_TYPE, "e2", endpoint_pb2.ClusterLoadAssignment(cluster_name="e2")),
    ]
    wire = delta_response("sys-1", ENDPOINT_TYPE, resources, ["gone", "also-gone"], "9")
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="sys-1",
        type_url=ENDPOINT_TYPE,
        nonce="9",
        removed_resources=["gone", "also-gone"],
        resources=[
            discovery_pb2.Resource(name=r.name, version=r.version, resource=_packed(r))
            for r in resources
        ],
    )
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(wire) == expected
    assert wire == expected.SerializeToString(deterministic=True)


def test_delta_response_removal_only() -> None:
    wire = delta_response("", CLUSTER_TYPE, [], ["x"], "1")
    expected = discovery_pb2.DeltaDiscoveryResponse(
        type_url=CLUSTER_TYPE, nonce="1", removed_resources=["x"]
    )
    assert wire == expected.SerializeToString(deterministic=True)


_text = st.text(max_size=300)


@settings(max_examples=200, deadline=None, database=None)
@given(
    version=_text,
    nonce=_text,
    names=st.lists(st.text(min_size=1, max_size=150), max_size=5),
    removed=st.lists(_text, max_size=4),
)
def test_encoders_agree_with_upb_for_any_strings(
    version: str, nonce: str, names: list[str], removed: list[str]
) -> None:
    resources = [_cluster(n) for n in names]
    body = sotw_response_body(version, CLUSTER_TYPE, [r.any_bytes for r in resources])
    sotw = with_nonce(body, nonce)
    assert sotw == discovery_pb2.DiscoveryResponse(
        version_info=version,
        type_url=CLUSTER_TYPE,
        nonce=nonce,
        resources=[_packed(r) for r in resources],
    ).SerializeToString(deterministic=True)
    delta = delta_response(version, CLUSTER_TYPE, resources, removed, nonce)
    assert delta == discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=version,
        type_url=CLUSTER_TYPE,
        nonce=nonce,
        removed_resources=removed,
        resources=[
            discovery_pb2.Resource(name=r.name, version=r.version, resource=_packed(r))
            for r in resources
        ],
    ).SerializeToString(deterministic=True)
