"""`flowplane.xds.constraints`: the PGV rules Envoy's protos declare, one rule kind at a time,
each on a real Envoy message and field that declares it (the rule is quoted from the proto)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    health_check_pb2,
    http_uri_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.v3 import http_status_pb2, percent_pb2
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.domain.filters import parse_config, parse_override
from flowplane.domain.resources import Kind, parse_spec
from flowplane.errors import BadRequest
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.xds.constraints import Violation, violations
from flowplane.xds.filters import filter_config, override_config
from flowplane.xds.translate import check_resource
from tests.filters.test_filter_properties import GOOD_CONFIGS, GOOD_OVERRIDES, REFUSED, mutated


def found(msg: Message) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in violations(msg):
        out.setdefault(v.path, []).append(v.message)
    return out


def socket(port: int, address: str = "10.0.0.1") -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
    )


# --- durations --------------------------------------------------------------------------------


def test_duration_gt_zero_refuses_zero() -> None:
    # Cluster.connect_timeout: [(validate.rules).duration = {gt {}}] (issue 11: 1e-10 -> 0s)
    c = cluster_pb2.Cluster(name="x")
    c.connect_timeout.FromNanoseconds(0)
    assert found(c) == {"connect_timeout": ["value must be greater than 0s"]}
    c.connect_timeout.FromNanoseconds(1)
    assert found(c) == {}


def test_duration_gt_with_nonzero_bound() -> None:
    # Cluster.dns_refresh_rate: duration = {gt {nanos: 1000000}}
    c = cluster_pb2.Cluster(name="x")
    c.dns_refresh_rate.FromMilliseconds(1)
    assert found(c) == {"dns_refresh_rate": ["value must be greater than 0.001s"]}
    c.dns_refresh_rate.FromNanoseconds(1_000_001)
    assert found(c) == {}


def test_duration_required_and_range() -> None:
    # HttpUri.timeout: duration = {required: true, lt {seconds: 4294967296} gte {}}
    uri = http_uri_pb2.HttpUri(uri="http://a", cluster="c")
    assert found(uri) == {"timeout": ["value is required"]}
    uri.timeout.seconds = 4294967296
    assert found(uri) == {"timeout": ["value must be inside range [0s, 4294967296s)"]}
    uri.timeout.seconds = -1
    assert found(uri) == {
        "timeout": [
            "value must be inside range [0s, 4294967296s)",
            "value must not be negative (Envoy's duration limit)",
        ]
    }
    uri.timeout.seconds = 4294967295
    assert found(uri) == {}


def test_every_duration_is_held_to_envoys_int64_nanosecond_limit() -> None:
    # RouteAction.timeout declares no rule, but Envoy refuses any Duration whose seconds reach
    # INT64_MAX / 10^9 ("Invalid duration: Duration out-of-range"), or that is negative.
    a = rc_pb2.RouteAction(cluster="c")
    a.timeout.seconds = 9223372036
    assert found(a) == {"timeout": ["value must be less than 9223372036s (Envoy's duration limit)"]}
    a.timeout.seconds, a.timeout.nanos = 9223372035, 999_999_999
    assert found(a) == {}
    a.timeout.seconds = -1
    assert found(a) == {"timeout": ["value must not be negative (Envoy's duration limit)"]}


# --- numbers, wrappers --------------------------------------------------------------------------


def test_uint32_lte_applies_to_proto3_scalars() -> None:
    # SocketAddress.port_value: uint32 = {lte: 65535}; SocketAddress.address: string min_len 1
    assert found(socket(65536)) == {
        "socket_address.port_value": ["value must be less than or equal to 65535"]
    }
    assert found(socket(65535)) == {}
    assert found(socket(1, "")) == {
        "socket_address.address": ["value length must be at least 1 runes"]
    }


def test_uint32_gt_zero_fails_on_the_zero_default() -> None:
    # DirectResponseAction.status: uint32 = {lt: 600 gte: 200}; zero (unset) is checked too
    r = rc_pb2.DirectResponseAction()
    assert found(r) == {"status": ["value must be inside range [200, 600)"]}
    r.status = 404
    assert found(r) == {}


def test_wrapper_rules_apply_to_value_only_when_set() -> None:
    # Cluster.PreconnectPolicy.per_upstream_preconnect_ratio: DoubleValue,
    # double = {lte: 3.0 gte: 1.0}
    p = cluster_pb2.Cluster.PreconnectPolicy()
    assert found(p) == {}
    p.per_upstream_preconnect_ratio.value = 0.5
    assert found(p) == {"per_upstream_preconnect_ratio": ["value must be inside range [1.0, 3.0]"]}
    p.per_upstream_preconnect_ratio.value = 3.0
    assert found(p) == {}


def test_double_percent() -> None:
    # envoy.type.v3.Percent.value: double = {lte: 100.0 gte: 0.0}
    assert found(percent_pb2.Percent(value=100.5)) == {
        "value": ["value must be inside range [0.0, 100.0]"]
    }
    assert found(percent_pb2.Percent(value=0.0)) == {}


def test_uint64_wrapper_lte() -> None:
    # Cluster.RingHashLbConfig.maximum_ring_size: UInt64Value, uint64 = {lte: 8388608}
    r = cluster_pb2.Cluster.RingHashLbConfig()
    r.maximum_ring_size.value = 8388609
    assert found(r) == {"maximum_ring_size": ["value must be less than or equal to 8388608"]}


# --- enums --------------------------------------------------------------------------------------


def test_enum_defined_only() -> None:
    # Cluster.type (in the cluster_discovery_type oneof): enum = {defined_only: true}
    c = cluster_pb2.Cluster(name="x")
    c.type = 99  # type: ignore[assignment]
    assert found(c) == {"type": ["value must be one of the defined enum values"]}


def test_enum_not_in() -> None:
    # envoy.type.v3.HttpStatus.code: enum = {defined_only: true not_in: 0}
    assert found(http_status_pb2.HttpStatus()) == {"code": ["value must not be in list ['0']"]}
    assert found(http_status_pb2.HttpStatus(code=404)) == {}  # type: ignore[arg-type]


# --- strings ------------------------------------------------------------------------------------


def test_header_name_well_known_regex_and_bytes() -> None:
    # HeaderValue.key: string = {min_len: 1 max_bytes: 16384
    #   well_known_regex: HTTP_HEADER_NAME strict: false}
    assert found(base_pb2.HeaderValue(key="x-a", value="1")) == {}
    assert found(base_pb2.HeaderValue(key="x\na")) == {
        "key": ["value must be a valid HTTP header name"]
    }
    assert found(base_pb2.HeaderValue(key="")) == {"key": ["value length must be at least 1 runes"]}
    assert found(base_pb2.HeaderValue(key="a" * 16385)) == {
        "key": ["value length must be at most 16384 bytes"]
    }
    # HeaderValue.value: HTTP_HEADER_VALUE, strict: false: only NUL, CR, LF are refused
    assert found(base_pb2.HeaderValue(key="a", value="tab\tand\x01")) == {}
    assert found(base_pb2.HeaderValue(key="a", value="a\r\nb")) == {
        "value": ["value must be a valid HTTP header value"]
    }


def test_string_pattern() -> None:
    # RouteMatch.path_separated_prefix: string = {pattern: "^[^?#]+[^?#/]$"}
    m = rc_pb2.RouteMatch(path_separated_prefix="/api/")
    assert found(m) == {
        "path_separated_prefix": ["value does not match regex pattern '^[^?#]+[^?#/]$'"]
    }
    assert found(rc_pb2.RouteMatch(path_separated_prefix="/api")) == {}


def test_string_in() -> None:
    # SchemeHeaderTransformation.scheme_to_overwrite: string = {in: "http" in: "https"}
    t = protocol_pb2.SchemeHeaderTransformation(scheme_to_overwrite="ftp")
    assert found(t) == {"scheme_to_overwrite": ["value must be in list [\"'http'\", \"'https'\"]"]}


def test_string_prefix_suffix_ignore_empty() -> None:
    # RateLimit.HitsAddend.format: string = {prefix: "%" suffix: "%" ignore_empty: true}
    h = rc_pb2.RateLimit.HitsAddend()
    assert found(h) == {}
    h.format = "x"
    assert found(h) == {
        "format": ["value does not have prefix '%'", "value does not have suffix '%'"]
    }
    h.format = "%DYNAMIC%"
    assert found(h) == {}


# --- repeated and maps --------------------------------------------------------------------------


def test_repeated_min_items_and_items() -> None:
    # VirtualHost.domains: repeated = {min_items: 1 items {string {well_known_regex:
    #   HTTP_HEADER_VALUE strict: false}}}; VirtualHost.name: string min_len 1
    vh = rc_pb2.VirtualHost(name="v")
    assert found(vh) == {"domains": ["value must contain at least 1 item(s)"]}
    vh.domains.extend(["a", "b\nc"])
    assert found(vh) == {"domains[1]": ["value must be a valid HTTP header value"]}


def test_repeated_item_ranges() -> None:
    # FilterChainMatch.source_ports: repeated = {items {uint32 {lte: 65535 gte: 1}}}
    m = listener_components_pb2.FilterChainMatch(source_ports=[80, 0, 70000])
    assert found(m) == {
        "source_ports[1]": ["value must be inside range [1, 65535]"],
        "source_ports[2]": ["value must be inside range [1, 65535]"],
    }


def test_repeated_unique() -> None:
    # InternalRedirectPolicy.redirect_response_codes: repeated = {max_items: 5}
    # InternalRedirectPolicy.response_headers_to_copy: repeated = {unique: true ...}
    p = rc_pb2.InternalRedirectPolicy(response_headers_to_copy=["a", "b", "a"])
    assert found(p) == {"response_headers_to_copy": ["repeated value must contain unique items"]}
    p = rc_pb2.InternalRedirectPolicy(redirect_response_codes=[301, 302, 303, 307, 308, 301])
    assert found(p) == {"redirect_response_codes": ["value must contain no more than 5 item(s)"]}


def test_map_keys() -> None:
    # Metadata.filter_metadata: map = {keys {string {min_len: 1}}}
    md = base_pb2.Metadata()
    md.filter_metadata[""].fields["a"].string_value = "b"
    md.filter_metadata["ok"].fields["a"].string_value = "b"
    assert found(md) == {"filter_metadata['']": ["value length must be at least 1 runes"]}


# --- messages, oneofs, Any ---------------------------------------------------------------------


def test_message_required_and_oneof_required() -> None:
    # Route.match: message = {required: true}; Route.action oneof: (validate.required) = true
    r = rc_pb2.Route()
    assert found(r) == {"action": ["value is required"], "match": ["value is required"]}
    r.match.prefix = "/"
    r.route.cluster = "c"
    assert found(r) == {}


def test_nested_paths_and_any_unpacked() -> None:
    # An HCM packed in a listener's filter is checked as an HttpConnectionManager:
    # stat_prefix: string = {min_len: 1}; rds.route_config_name (no rule); http_filters[].name
    # string = {min_len: 1}.
    hcm = hcm_pb2.HttpConnectionManager()
    hcm.rds.config_source.ads.SetInParent()
    hcm.http_filters.add()
    lst = listener_pb2.Listener(name="l", address=socket(10000))
    lst.filter_chains.add().filters.add(name="hcm").typed_config.Pack(hcm)
    got = found(lst)
    assert got == {
        "filter_chains[0].filters[0].typed_config.stat_prefix": [
            "value length must be at least 1 runes"
        ],
        "filter_chains[0].filters[0].typed_config.http_filters[0].name": [
            "value length must be at least 1 runes"
        ],
    }


def test_message_skip_is_not_walked() -> None:
    # KeyValueAppend.entry: message = {skip: true}: KeyValue.key's min_len is not checked there
    kv = base_pb2.KeyValueAppend()
    kv.entry.key = ""
    kv.entry.value = b"v"
    assert found(kv) == {}


def test_unknown_any_type_is_left_alone() -> None:
    f = listener_pb2.Listener(name="l", address=socket(1))
    f.filter_chains.add().filters.add(
        name="x"
    ).typed_config.type_url = "type.googleapis.com/no.Such"
    assert found(f) == {}


def test_every_violation_is_reported_in_order() -> None:
    hc = health_check_pb2.HealthCheck()  # timeout, interval: duration required; a oneof required
    assert violations(hc) == [
        Violation("health_checker", "value is required"),
        Violation("timeout", "value is required"),
        Violation("interval", "value is required"),
        Violation("unhealthy_threshold", "value is required"),
        Violation("healthy_threshold", "value is required"),
    ]


def test_valid_protocol_options_pass() -> None:
    opts = protocol_pb2.Http2ProtocolOptions()
    opts.max_concurrent_streams.value = 100
    assert violations(opts) == []
    assert violations(substitution_format_string_pb2.SubstitutionFormatString()) == [
        Violation("format", "value is required")
    ]


# --- the call site: check_resource ---------------------------------------------------------------


def test_check_resource_names_resource_and_proto_path() -> None:
    model = parse_spec(Kind.CLUSTER, cluster_body("x", connectTimeoutSeconds=1e-10))
    with pytest.raises(BadRequest) as info:
        check_resource(Kind.CLUSTER, model)
    assert info.value.message == "cluster 'x': connect_timeout: value must be greater than 0s"
    assert [(p.field, p.message) for p in info.value.details] == [
        ("connect_timeout", "value must be greater than 0s")
    ]


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (Kind.CLUSTER, cluster_body()),
        (Kind.ROUTE_CONFIG, route_config_body()),
        (Kind.LISTENER, listener_body()),
    ],
)
def test_check_resource_passes_ordinary_resources(kind: Kind, body: dict[str, object]) -> None:
    [(_, _, msg)] = check_resource(kind, parse_spec(kind, body))
    assert violations(msg) == []


def test_cost_per_resource_is_microseconds() -> None:
    """The rule tables are cached per descriptor: a checked cluster costs tens of
    microseconds (measured ~25 us; the bound here is loose for a loaded CI machine)."""
    [(_, _, msg)] = check_resource(Kind.CLUSTER, parse_spec(Kind.CLUSTER, cluster_body()))
    start = time.perf_counter()
    for _ in range(100):
        violations(msg)
    per = (time.perf_counter() - start) / 100
    assert per < 1e-3, f"{per * 1e6:.0f} us per cluster"


# --- typed filter configs ------------------------------------------------------------------------

GOOD = [(t, c) for t, cs in GOOD_CONFIGS.items() for c in cs]
GOOD_OV = [(t, o) for t, os_ in GOOD_OVERRIDES.items() for o in os_]


@pytest.mark.parametrize(("filter_type", "config"), GOOD, ids=[t for t, _ in GOOD])
def test_known_good_filter_configs_pass(filter_type: str, config: dict[str, Any]) -> None:
    """The filter tests' known-good configs (Envoy accepts them there) break no declared rule:
    the checker is not stricter than Envoy on any filter type."""
    msg = filter_config(filter_type, parse_config(filter_type, copy.deepcopy(config)))
    assert violations(msg) == []


@pytest.mark.parametrize(("filter_type", "override"), GOOD_OV, ids=[t for t, _ in GOOD_OV])
def test_known_good_filter_overrides_pass(filter_type: str, override: dict[str, Any]) -> None:
    model = parse_override(filter_type, copy.deepcopy(override))
    assert model is not None
    assert violations(override_config(filter_type, model)) == []


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(data=st.data())
def test_checking_any_accepted_filter_config_never_raises(data: st.DataObject) -> None:
    """Mutated configs (as in the filter property tests): whatever the domain accepts, the
    check returns a list of violations (a 400 at most), never an exception (a 500)."""
    filter_type = data.draw(st.sampled_from(sorted(GOOD_CONFIGS)))
    config = data.draw(mutated(GOOD_CONFIGS[filter_type]))
    try:
        model = parse_config(filter_type, config)
    except REFUSED:
        return
    for v in violations(filter_config(filter_type, model)):
        assert v.path and v.message
