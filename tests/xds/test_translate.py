"""Domain models -> Envoy v3 protos: one test per feature, plus a real `envoy --mode validate`."""

from __future__ import annotations

import copy
import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2 as hm_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.extensions.path.rewrite.uri_template.v3 import uri_template_rewrite_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import unknown_fields
from google.protobuf.message import Message

from flowplane.domain.cluster import Cluster
from flowplane.domain.listener import Listener
from flowplane.domain.resources import Kind, parse_spec
from flowplane.domain.route import RouteConfig
from flowplane.errors import BadRequest
from flowplane.xds import types
from flowplane.xds.translate import cluster_to_proto, listener_to_proto, route_config_to_proto

ENVOY = Path(sys.executable).parent / "envoy"


# --- builders: JSON as a REST client sends it -------------------------------------------------


def cluster(**spec: Any) -> Cluster:
    data = {"name": "c1", "endpoints": [{"host": "10.0.0.1", "port": 8080}], **spec}
    model = parse_spec(Kind.CLUSTER, data)
    assert isinstance(model, Cluster)
    return model


def route_config(*routes: dict[str, Any], **spec: Any) -> RouteConfig:
    data = {
        "name": "rc1",
        "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": list(routes)}],
        **spec,
    }
    model = parse_spec(Kind.ROUTE_CONFIG, data)
    assert isinstance(model, RouteConfig)
    return model


def route(
    match: dict[str, Any] | None = None, action: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "match": match or {"path": {"type": "prefix", "value": "/"}},
        "action": action or {"type": "forward", "cluster": "c1"},
        **kw,
    }


def one_route(r: dict[str, Any]) -> rc_pb2.Route:
    return route_config_to_proto(route_config(r), "rc1").virtual_hosts[0].routes[0]


def hcm_filter(**kw: Any) -> dict[str, Any]:
    return {"type": "httpConnectionManager", "routeConfigName": "rc1", **kw}


def listener(*chains: dict[str, Any], **spec: Any) -> Listener:
    data = {
        "name": "l1",
        "address": "0.0.0.0",
        "port": 10080,
        "filterChains": list(chains) or [{"filters": [hcm_filter()]}],
        **spec,
    }
    model = parse_spec(Kind.LISTENER, data)
    assert isinstance(model, Listener)
    return model


def unpack(any_msg: Any, cls: type[Message]) -> Any:
    out = cls()
    assert any_msg.Unpack(out), f"{any_msg.type_url} is not {cls.DESCRIPTOR.full_name}"
    return out


def unknown_strings(msg: Message) -> dict[int, str]:
    return {
        f.field_number: f.data.decode()
        for f in unknown_fields.UnknownFieldSet(msg)
        if isinstance(f.data, bytes)
    }


def first_hcm(l_pb: Any) -> Any:
    f = l_pb.filter_chains[0].filters[0]
    assert f.name == "envoy.filters.network.http_connection_manager"
    return unpack(f.typed_config, hcm_pb2.HttpConnectionManager)


# --- clusters ---------------------------------------------------------------------------------


def test_cluster_static_endpoints_and_defaults() -> None:
    c = cluster(
        endpoints=[
            {"host": "10.0.0.1", "port": 8080, "weight": 3},
            {"host": "10.0.0.2", "port": 81},
        ]
    )
    pb = cluster_to_proto(c)
    assert pb.name == "c1"
    assert pb.type == cluster_pb2.Cluster.STATIC
    assert pb.connect_timeout.seconds == 5
    assert pb.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    la = pb.load_assignment
    assert la.cluster_name == "c1"
    eps = la.endpoints[0].lb_endpoints
    assert [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in eps
    ] == [("10.0.0.1", 8080), ("10.0.0.2", 81)]
    assert eps[0].load_balancing_weight.value == 3
    assert not eps[1].HasField("load_balancing_weight")
    for field in ("transport_socket", "circuit_breakers", "outlier_detection"):
        assert not pb.HasField(field)
    assert not pb.health_checks
    assert not pb.typed_extension_protocol_options


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        ([{"host": "backend.internal", "port": 80}], cluster_pb2.Cluster.LOGICAL_DNS),
        (
            [{"host": "a.internal", "port": 80}, {"host": "10.0.0.1", "port": 80}],
            cluster_pb2.Cluster.STRICT_DNS,
        ),
    ],
)
def test_cluster_dns_discovery_types(endpoints: list[dict[str, Any]], expected: int) -> None:
    pb = cluster_to_proto(cluster(endpoints=endpoints, dnsLookupFamily="V4_ONLY"))
    assert pb.type == expected
    assert pb.dns_lookup_family == cluster_pb2.Cluster.V4_ONLY


def test_cluster_fractional_connect_timeout() -> None:
    pb = cluster_to_proto(cluster(connectTimeoutSeconds=0.25))
    assert (pb.connect_timeout.seconds, pb.connect_timeout.nanos) == (0, 250_000_000)


def test_cluster_lb_policies() -> None:
    pb = cluster_to_proto(cluster(lbPolicy="LEAST_REQUEST", leastRequest={"choiceCount": 5}))
    assert pb.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert pb.least_request_lb_config.choice_count.value == 5

    assert cluster_to_proto(cluster(lbPolicy="RANDOM")).lb_policy == cluster_pb2.Cluster.RANDOM

    pb = cluster_to_proto(
        cluster(lbPolicy="RING_HASH", ringHash={"minimumRingSize": 64, "maximumRingSize": 4096})
    )
    assert pb.lb_policy == cluster_pb2.Cluster.RING_HASH
    assert pb.ring_hash_lb_config.minimum_ring_size.value == 64
    assert pb.ring_hash_lb_config.maximum_ring_size.value == 4096

    pb = cluster_to_proto(cluster(lbPolicy="MAGLEV", maglev={"tableSize": 5003}))
    assert pb.lb_policy == cluster_pb2.Cluster.MAGLEV
    assert pb.maglev_lb_config.table_size.value == 5003

    # A policy without options leaves the option message unset.
    pb = cluster_to_proto(cluster(lbPolicy="LEAST_REQUEST"))
    assert not pb.HasField("least_request_lb_config")


def test_cluster_health_checks() -> None:
    pb = cluster_to_proto(
        cluster(
            healthChecks=[
                {
                    "type": "http",
                    "path": "/healthz",
                    "host": "svc.local",
                    "method": "HEAD",
                    "intervalSeconds": 2.5,
                    "timeoutSeconds": 1,
                    "healthyThreshold": 2,
                    "unhealthyThreshold": 4,
                    "expectedStatuses": [200, 204],
                },
                {"type": "tcp"},
            ]
        )
    )
    http, tcp = pb.health_checks
    assert (http.interval.seconds, http.interval.nanos) == (2, 500_000_000)
    assert http.timeout.seconds == 1
    assert http.healthy_threshold.value == 2
    assert http.unhealthy_threshold.value == 4
    h = http.http_health_check
    assert (h.path, h.host, h.method) == ("/healthz", "svc.local", base_pb2.HEAD)
    assert [(r.start, r.end) for r in h.expected_statuses] == [(200, 201), (204, 205)]
    assert tcp.WhichOneof("health_checker") == "tcp_health_check"
    assert tcp.interval.seconds == 10
    assert tcp.timeout.seconds == 5
    assert (tcp.healthy_threshold.value, tcp.unhealthy_threshold.value) == (1, 3)
    # Envoy 1.40 needs names when there are several (field 27, unknown to xds-protos 1.85).
    assert [unknown_strings(x) for x in pb.health_checks] == [{27: "http-0"}, {27: "tcp-1"}]
    single = cluster_to_proto(cluster(healthChecks=[{"type": "tcp"}])).health_checks[0]
    assert unknown_strings(single) == {}


def test_cluster_circuit_breakers_and_outlier_detection() -> None:
    pb = cluster_to_proto(
        cluster(
            circuitBreakers={
                "default": {"maxConnections": 100, "maxPendingRequests": 10},
                "high": {"maxRequests": 500, "maxRetries": 3},
            },
            outlierDetection={
                "consecutive5xx": 7,
                "intervalSeconds": 5,
                "baseEjectionTimeSeconds": 30,
                "maxEjectionPercent": 50,
                "minHosts": 4,
            },
        )
    )
    default, high = pb.circuit_breakers.thresholds
    assert default.priority == base_pb2.DEFAULT
    assert (default.max_connections.value, default.max_pending_requests.value) == (100, 10)
    assert not default.HasField("max_requests")
    assert high.priority == base_pb2.HIGH
    assert (high.max_requests.value, high.max_retries.value) == (500, 3)
    od = pb.outlier_detection
    assert od.consecutive_5xx.value == 7
    assert od.interval.seconds == 5
    assert od.base_ejection_time.seconds == 30
    assert od.max_ejection_percent.value == 50
    assert od.success_rate_minimum_hosts.value == 4


def test_cluster_upstream_tls() -> None:
    pb = cluster_to_proto(
        cluster(
            tls={
                "sni": "api.example.com",
                "caCertFile": "/etc/ca.pem",
                "clientCertFile": "/etc/cert.pem",
                "clientKeyFile": "/etc/key.pem",
            }
        )
    )
    assert pb.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = unpack(pb.transport_socket.typed_config, tls_pb2.UpstreamTlsContext)
    assert ctx.sni == "api.example.com"
    common = ctx.common_tls_context
    assert common.validation_context.trusted_ca.filename == "/etc/ca.pem"
    (cert,) = common.tls_certificates
    assert cert.certificate_chain.filename == "/etc/cert.pem"
    assert cert.private_key.filename == "/etc/key.pem"

    assert not cluster_to_proto(cluster(tls={"enabled": False, "sni": "x"})).HasField(
        "transport_socket"
    )


def test_cluster_http2() -> None:
    pb = cluster_to_proto(cluster(http2=True))
    opts = unpack(
        pb.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ],
        http_protocol_options_pb2.HttpProtocolOptions,
    )
    assert opts.explicit_http_config.HasField("http2_protocol_options")


# --- route configurations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "value", "field"),
    [
        ("exact", "/a", "path"),
        ("prefix", "/api/", "prefix"),
        ("regex", "/v[0-9]+/.*", "safe_regex"),
    ],
)
def test_route_path_matches(type_: str, value: str, field: str) -> None:
    m = one_route(route({"path": {"type": type_, "value": value}})).match
    assert m.WhichOneof("path_specifier") == field
    if field == "safe_regex":
        assert m.safe_regex.regex == value
        assert m.safe_regex.WhichOneof("engine_type") is None  # Envoy's default: RE2
    else:
        assert getattr(m, field) == value


def test_route_template_match_and_rewrite() -> None:
    r = one_route(
        route(
            {"path": {"type": "template", "value": "/users/{id}/items/{item=**}"}},
            {"type": "forward", "cluster": "c1", "templateRewrite": "/v2/{item}/{id}"},
        )
    )
    pol = r.match.path_match_policy
    assert pol.name == "envoy.path.match.uri_template"
    cfg = unpack(pol.typed_config, uri_template_match_pb2.UriTemplateMatchConfig)
    assert cfg.path_template == "/users/{id}/items/{item=**}"
    rw = r.route.path_rewrite_policy
    assert rw.name == "envoy.path.rewrite.uri_template"
    rw_cfg = unpack(rw.typed_config, uri_template_rewrite_pb2.UriTemplateRewriteConfig)
    assert rw_cfg.path_template_rewrite == "/v2/{item}/{id}"


def test_route_header_query_and_method_matchers() -> None:
    m = one_route(
        route(
            {
                "path": {"type": "prefix", "value": "/"},
                "headers": [
                    {"name": "x-exact", "exact": "v"},
                    {"name": "x-prefix", "prefix": "pre"},
                    {"name": "x-regex", "regex": "a.*b"},
                    {"name": "x-here", "present": True},
                    {"name": "x-gone", "present": False},
                ],
                "queryParameters": [
                    {"name": "q1", "exact": "yes"},
                    {"name": "q2", "regex": "[0-9]+"},
                    {"name": "q3", "present": True},
                ],
                "methods": ["GET"],
            }
        )
    ).match
    h = {x.name: x for x in m.headers}
    assert h["x-exact"].string_match.exact == "v"
    assert h["x-prefix"].string_match.prefix == "pre"
    assert h["x-regex"].string_match.safe_regex.regex == "a.*b"
    assert h["x-here"].WhichOneof("header_match_specifier") == "present_match"
    assert h["x-here"].present_match is True
    assert h["x-gone"].WhichOneof("header_match_specifier") == "present_match"
    assert h["x-gone"].present_match is False
    assert h[":method"].string_match.exact == "GET"
    for x in m.headers:  # only the non-deprecated matcher fields
        assert x.WhichOneof("header_match_specifier") in ("string_match", "present_match")
    q = {x.name: x for x in m.query_parameters}
    assert q["q1"].string_match.exact == "yes"
    assert q["q2"].string_match.safe_regex.regex == "[0-9]+"
    assert q["q3"].present_match is True
    assert q["q3"].WhichOneof("query_parameter_match_specifier") == "present_match"


def test_route_several_methods_become_one_regex() -> None:
    m = one_route(
        route({"path": {"type": "prefix", "value": "/"}, "methods": ["GET", "POST", "PUT"]})
    ).match
    (method,) = m.headers
    assert method.name == ":method"
    assert method.string_match.safe_regex.regex == "^(GET|POST|PUT)$"


def test_query_parameter_absent_is_refused_by_the_domain() -> None:
    # Envoy has no "absent" query parameter matcher; accepting it would silently match presence.
    with pytest.raises(BadRequest):
        route_config(
            route(
                {
                    "path": {"type": "prefix", "value": "/"},
                    "queryParameters": [{"name": "q", "present": False}],
                }
            )
        )


def test_route_forward_minimal_has_no_timeout() -> None:
    r = one_route(route())
    assert r.WhichOneof("action") == "route"
    assert r.route.cluster == "c1"
    assert not r.route.HasField("timeout")
    assert not r.route.HasField("retry_policy")
    assert r.route.prefix_rewrite == ""
    assert r.name == ""


def test_route_forward_full() -> None:
    r = one_route(
        route(
            action={
                "type": "forward",
                "cluster": "c1",
                "timeoutSeconds": 0,
                "prefixRewrite": "/v2/",
                "retry": {"attempts": 3, "retryOn": "5xx, reset", "perTryTimeoutSeconds": 0.5},
            },
            name="r-main",
        )
    )
    assert r.name == "r-main"
    assert r.route.HasField("timeout")  # 0 disables the timeout: given, so it is sent
    assert r.route.timeout.seconds == 0
    assert r.route.prefix_rewrite == "/v2/"
    rp = r.route.retry_policy
    assert rp.retry_on == "5xx,reset"
    assert rp.num_retries.value == 3
    assert rp.per_try_timeout.nanos == 500_000_000


def test_route_weighted() -> None:
    r = one_route(
        route(
            action={
                "type": "weighted",
                "clusters": [{"name": "c1", "weight": 90}, {"name": "c2", "weight": 10}],
                "timeoutSeconds": 3,
            }
        )
    )
    wc = r.route.weighted_clusters
    assert [(c.name, c.weight.value) for c in wc.clusters] == [("c1", 90), ("c2", 10)]
    assert not wc.HasField("total_weight")
    assert r.route.timeout.seconds == 3


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (301, rc_pb2.RedirectAction.MOVED_PERMANENTLY),
        (302, rc_pb2.RedirectAction.FOUND),
        (303, rc_pb2.RedirectAction.SEE_OTHER),
        (307, rc_pb2.RedirectAction.TEMPORARY_REDIRECT),
        (308, rc_pb2.RedirectAction.PERMANENT_REDIRECT),
    ],
)
def test_route_redirect(code: int, expected: int) -> None:
    r = one_route(
        route(
            action={
                "type": "redirect",
                "host": "new.example.com",
                "path": "/x",
                "responseCode": code,
            }
        )
    )
    assert r.WhichOneof("action") == "redirect"
    assert r.redirect.host_redirect == "new.example.com"
    assert r.redirect.path_redirect == "/x"
    assert r.redirect.response_code == expected


def test_route_direct_response() -> None:
    r = one_route(route(action={"type": "directResponse", "status": 418, "body": "teapot"}))
    assert r.direct_response.status == 418
    assert r.direct_response.body.inline_string == "teapot"
    r = one_route(route(action={"type": "directResponse", "status": 204}))
    assert not r.direct_response.HasField("body")


def test_filter_overrides_at_every_scope() -> None:
    add_x = {"requestHeadersToAdd": [{"name": "x-scope", "value": "route"}]}
    data = {
        "name": "rc1",
        "filters": {"cors": {"disabled": True}},
        "virtualHosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "filters": {"my-jwt": {"disabled": True}},
                "routes": [
                    route(filters={"jwt_authn": {"disabled": True}, "header_mutation": add_x})
                ],
            }
        ],
    }
    rc = parse_spec(Kind.ROUTE_CONFIG, data)
    assert isinstance(rc, RouteConfig)
    pb = route_config_to_proto(rc, "rc1")
    assert pb.name == "rc1"

    def disabled(m: Any) -> dict[str, bool]:
        return {k: unpack(v, rc_pb2.FilterConfig).disabled for k, v in m.items()}

    assert disabled(pb.typed_per_filter_config) == {"envoy.filters.http.cors": True}
    vh = pb.virtual_hosts[0]
    assert vh.name == "vh"
    assert list(vh.domains) == ["*"]
    assert disabled(vh.typed_per_filter_config) == {"my-jwt": True}  # a custom name stays
    per_route = dict(vh.routes[0].typed_per_filter_config)
    assert disabled({"j": per_route.pop("envoy.filters.http.jwt_authn")}) == {"j": True}
    typed = unpack(
        per_route.pop("envoy.filters.http.header_mutation"), hm_pb2.HeaderMutationPerRoute
    )
    assert not per_route
    added = typed.mutations.request_mutations[0].append.header
    assert (added.key, added.value) == ("x-scope", "route")


@pytest.mark.parametrize(
    ("filters", "field", "message"),
    [
        ({"my-jwt": {"requirementName": "a"}}, "my-jwt", "typed overrides are keyed by the"),
        ({"router": {"x": 1}}, "router", "can only be disabled per scope"),
        ({"header_mutation": {"bogus": 1}}, "header_mutation.bogus", "unknown field"),
        ({"header_mutation": {"disabled": False}}, "header_mutation.disabled", "unknown field"),
    ],
)
def test_bad_filter_overrides_are_refused_field_by_field(
    filters: dict[str, Any], field: str, message: str
) -> None:
    data = {
        "name": "rc1",
        "virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [route(filters=filters)]}],
    }
    with pytest.raises(BadRequest) as info:
        parse_spec(Kind.ROUTE_CONFIG, data)
    [problem] = [p for p in info.value.details if p.field.endswith(field)]
    assert problem.field == f"virtualHosts[0].routes[0].filters.{field}"
    assert message in problem.message


def test_listener_unknown_http_filter_type_is_refused() -> None:
    with pytest.raises(BadRequest) as info:
        listener({"filters": [hcm_filter(httpFilters=[{"type": "brotli"}, {"type": "router"}])]})
    [problem] = info.value.details
    assert problem.field == "filterChains[0].filters[0].httpFilters[0].type"
    assert "unknown filter type 'brotli'" in problem.message


def test_listener_inline_route_config() -> None:
    inline = {"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [route()]}]}
    hcm = first_hcm(
        listener_to_proto(
            listener({"filters": [{"type": "httpConnectionManager", "inlineRouteConfig": inline}]})
        )
    )
    assert not hcm.HasField("rds")
    assert hcm.route_config.name == "l1"  # unnamed inline configs take the listener's name
    assert hcm.route_config.virtual_hosts[0].routes[0].route.cluster == "c1"
    named = {**inline, "name": "inline-rc"}
    hcm = first_hcm(
        listener_to_proto(
            listener({"filters": [{"type": "httpConnectionManager", "inlineRouteConfig": named}]})
        )
    )
    assert hcm.route_config.name == "inline-rc"


def test_listener_access_log_and_tracing() -> None:
    hcm = first_hcm(
        listener_to_proto(
            listener(
                {
                    "filters": [
                        hcm_filter(
                            accessLog={"path": "/tmp/a.log", "format": "%REQ(:PATH)%\n"},
                            tracing={
                                "provider": "zipkin",
                                "collectorCluster": "zipkin",
                                "samplePercent": 12.5,
                            },
                        )
                    ]
                }
            )
        )
    )
    (log,) = hcm.access_log
    assert log.name == "envoy.access_loggers.file"
    fal = unpack(log.typed_config, file_pb2.FileAccessLog)
    assert fal.path == "/tmp/a.log"
    assert fal.log_format.text_format_source.inline_string == "%REQ(:PATH)%\n"
    assert hcm.tracing.random_sampling.value == 12.5
    assert hcm.tracing.provider.name == "envoy.tracers.zipkin"
    z = unpack(hcm.tracing.provider.typed_config, zipkin_pb2.ZipkinConfig)
    assert z.collector_cluster == "zipkin"
    assert z.collector_endpoint == "/api/v2/spans"
    assert z.collector_endpoint_version == zipkin_pb2.ZipkinConfig.HTTP_JSON

    hcm = first_hcm(
        listener_to_proto(
            listener(
                {
                    "filters": [
                        hcm_filter(
                            accessLog={},
                            tracing={"provider": "opentelemetry", "collectorCluster": "otel"},
                        )
                    ]
                }
            )
        )
    )
    fal = unpack(hcm.access_log[0].typed_config, file_pb2.FileAccessLog)
    assert fal.path == "/dev/stdout"
    assert not fal.HasField("log_format")
    assert hcm.tracing.random_sampling.value == 100.0
    assert hcm.tracing.provider.name == "envoy.tracers.opentelemetry"
    otel = unpack(hcm.tracing.provider.typed_config, opentelemetry_pb2.OpenTelemetryConfig)
    assert otel.grpc_service.envoy_grpc.cluster_name == "otel"


def test_listener_tcp_proxy() -> None:
    pb = listener_to_proto(listener({"filters": [{"type": "tcpProxy", "cluster": "db"}]}))
    (f,) = pb.filter_chains[0].filters
    assert f.name == "envoy.filters.network.tcp_proxy"
    tp = unpack(f.typed_config, tcp_proxy_pb2.TcpProxy)
    assert (tp.stat_prefix, tp.cluster) == ("l1", "db")


def test_listener_filter_chain_sni_and_downstream_tls() -> None:
    pb = listener_to_proto(
        listener(
            {
                "name": "secure",
                "serverNames": ["api.example.com", "*.example.org"],
                "tls": {
                    "certChainFile": "/c.pem",
                    "privateKeyFile": "/k.pem",
                    "caCertFile": "/ca.pem",
                    "requireClientCertificate": True,
                },
                "filters": [hcm_filter()],
            },
            {"filters": [hcm_filter()]},
        )
    )
    fc, plain = pb.filter_chains
    assert fc.name == "secure"
    assert list(fc.filter_chain_match.server_names) == ["api.example.com", "*.example.org"]
    assert fc.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = unpack(fc.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    (cert,) = ctx.common_tls_context.tls_certificates
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/c.pem", "/k.pem")
    assert ctx.common_tls_context.validation_context.trusted_ca.filename == "/ca.pem"
    assert ctx.require_client_certificate.value is True
    assert not plain.HasField("filter_chain_match")
    assert not plain.HasField("transport_socket")
    # SNI matching needs the TLS inspector.
    assert [f.name for f in pb.listener_filters] == ["envoy.filters.listener.tls_inspector"]


def test_api_listener() -> None:
    l_ = parse_spec(
        Kind.LISTENER,
        {"name": "grpc-api", "apiListener": True, "filterChains": [{"filters": [hcm_filter()]}]},
    )
    assert isinstance(l_, Listener)
    pb = listener_to_proto(l_)
    assert not pb.HasField("address")
    assert not pb.filter_chains
    hcm = unpack(pb.api_listener.api_listener, hcm_pb2.HttpConnectionManager)
    assert hcm.rds.route_config_name == "rc1"
    assert hcm.stat_prefix == "grpc-api"
    assert hcm.http_filters[-1].name == "envoy.filters.http.router"


# --- determinism and purity ---------------------------------------------------------------------


def test_translation_is_deterministic_even_with_reordered_maps() -> None:
    filters_a = {
        "cors": {"disabled": True},
        "jwt_authn": {"disabled": True},
        "zz": {"disabled": True},
    }
    filters_b = dict(reversed(list(filters_a.items())))

    def rc_json(filters: dict[str, Any]) -> dict[str, Any]:
        return {
            "virtualHosts": [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "filters": filters,
                    "routes": [route(filters=filters)],
                }
            ],
            "filters": filters,
        }

    def encoded(filters: dict[str, Any]) -> bytes:
        l_ = listener(
            {"filters": [{"type": "httpConnectionManager", "inlineRouteConfig": rc_json(filters)}]}
        )
        return bytes(listener_to_proto(l_).SerializeToString(deterministic=True))

    assert encoded(filters_a) == encoded(copy.deepcopy(filters_a)) == encoded(filters_b)
    c = cluster(http2=True, tls={"sni": "x"})
    assert cluster_to_proto(c).SerializeToString(deterministic=True) == cluster_to_proto(
        cluster(http2=True, tls={"sni": "x"})
    ).SerializeToString(deterministic=True)


def test_translate_is_sans_io() -> None:
    code = (
        "import sys, flowplane.xds.translate\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('trio', 'grpclib', 'trio_asyncio')"
        " or m.startswith('flowplane.storage')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_type_urls() -> None:
    assert types.CLUSTER_TYPE == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert types.LISTENER_TYPE == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert types.ROUTE_TYPE == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    assert (
        types.ENDPOINT_TYPE == "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    )
    assert types.pack(cluster_to_proto(cluster())).type_url == types.CLUSTER_TYPE


# --- a real Envoy accepts all of it -------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flowplane.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("flowplane.test")]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def _everything_route_config() -> dict[str, Any]:
    """An inline route config using every matcher, action and override scope."""
    fwd = {"type": "forward", "cluster": "c-static"}
    routes = [
        route(
            {
                "path": {"type": "exact", "value": "/exact"},
                "headers": [
                    {"name": "x-exact", "exact": "v"},
                    {"name": "x-prefix", "prefix": "p"},
                    {"name": "x-regex", "regex": "^a+$"},
                    {"name": "x-present", "present": True},
                    {"name": "x-absent", "present": False},
                ],
                "queryParameters": [
                    {"name": "q1", "exact": "1"},
                    {"name": "q2", "regex": "[a-z]+"},
                    {"name": "q3", "present": True},
                ],
                "methods": ["GET"],
            },
            {
                "type": "forward",
                "cluster": "c-static",
                "timeoutSeconds": 2.5,
                "prefixRewrite": "/rewritten",
                "retry": {
                    "attempts": 2,
                    "retryOn": "5xx,connect-failure",
                    "perTryTimeoutSeconds": 1,
                },
            },
            name="exact-route",
            filters={"cors": {"disabled": True}},
        ),
        route(
            {"path": {"type": "prefix", "value": "/multi"}, "methods": ["GET", "POST", "DELETE"]},
            {
                "type": "weighted",
                "clusters": [{"name": "c-lr", "weight": 70}, {"name": "c-ring", "weight": 30}],
                "timeoutSeconds": 10,
            },
        ),
        route(
            {"path": {"type": "template", "value": "/users/{id}/files/{path=**}"}},
            {
                "type": "forward",
                "cluster": "c-maglev",
                "templateRewrite": "/files/{path}/owner/{id}",
            },
        ),
        route(
            {"path": {"type": "regex", "value": "/old/[0-9]+"}},
            {"type": "redirect", "host": "new.example.com", "path": "/new", "responseCode": 308},
        ),
        route(
            {"path": {"type": "prefix", "value": "/moved"}},
            {"type": "redirect", "path": "/elsewhere", "responseCode": 302},
        ),
        route(
            {"path": {"type": "prefix", "value": "/teapot"}},
            {"type": "directResponse", "status": 418, "body": "I am a teapot"},
        ),
        route({"path": {"type": "prefix", "value": "/"}}, {**fwd, "cluster": "c-random"}),
    ]
    return {
        "filters": {"cors": {"disabled": True}},
        "virtualHosts": [
            {
                "name": "main",
                "domains": ["example.com", "*.example.com"],
                "filters": {"jwt_authn": {"disabled": True}},
                "routes": routes,
            },
            {"name": "tls-vh", "domains": ["*"], "routes": [route(action=fwd)]},
        ],
    }


def _bootstrap(tmp: Path) -> bootstrap_pb2.Bootstrap:
    cert, key = _self_signed(tmp)
    access_log = str(tmp / "access.log")
    ip1 = {"host": "127.0.0.1", "port": 9001}
    clusters = [
        cluster(
            name="c-static",
            endpoints=[{**ip1, "weight": 2}, {"host": "127.0.0.2", "port": 9002}],
            connectTimeoutSeconds=0.75,
            healthChecks=[
                {
                    "type": "http",
                    "path": "/healthz",
                    "host": "svc.local",
                    "method": "GET",
                    "expectedStatuses": [200, 204],
                    "intervalSeconds": 3,
                    "timeoutSeconds": 1.5,
                    "healthyThreshold": 2,
                    "unhealthyThreshold": 5,
                },
                {"type": "tcp"},
            ],
            circuitBreakers={
                "default": {
                    "maxConnections": 10,
                    "maxPendingRequests": 20,
                    "maxRequests": 30,
                    "maxRetries": 4,
                },
                "high": {"maxConnections": 100},
            },
            outlierDetection={
                "consecutive5xx": 5,
                "intervalSeconds": 10,
                "baseEjectionTimeSeconds": 30,
                "maxEjectionPercent": 50,
                "minHosts": 3,
            },
        ),
        cluster(
            name="c-lr",
            endpoints=[
                {"host": "a.example.internal", "port": 80},
                {"host": "b.example.internal", "port": 80},
            ],
            lbPolicy="LEAST_REQUEST",
            leastRequest={"choiceCount": 3},
            dnsLookupFamily="V4_ONLY",
        ),
        cluster(
            name="c-random",
            endpoints=[{"host": "single.example.internal", "port": 80}],
            lbPolicy="RANDOM",
        ),
        cluster(
            name="c-ring",
            endpoints=[ip1],
            lbPolicy="RING_HASH",
            ringHash={"minimumRingSize": 128, "maximumRingSize": 1024},
        ),
        cluster(name="c-maglev", endpoints=[ip1], lbPolicy="MAGLEV", maglev={"tableSize": 65537}),
        cluster(
            name="c-tls",
            endpoints=[{"host": "127.0.0.1", "port": 9443}],
            tls={
                "sni": "flowplane.test",
                "caCertFile": cert,
                "clientCertFile": cert,
                "clientKeyFile": key,
            },
            http2=True,
        ),
        cluster(name="zipkin", endpoints=[{"host": "127.0.0.1", "port": 9411}]),
        cluster(name="otel", endpoints=[{"host": "127.0.0.1", "port": 4317}], http2=True),
        cluster(name="xds", endpoints=[{"host": "127.0.0.1", "port": 18000}], http2=True),
    ]
    listeners = [
        listener(
            {
                "filters": [
                    {
                        "type": "httpConnectionManager",
                        "inlineRouteConfig": _everything_route_config(),
                        "httpFilters": [{"type": "router"}],
                        "accessLog": {
                            "path": access_log,
                            "format": "[%START_TIME%] %REQ(:METHOD)%\n",
                        },
                        "tracing": {
                            "provider": "zipkin",
                            "collectorCluster": "zipkin",
                            "samplePercent": 50,
                        },
                    }
                ]
            },
            {
                "name": "sni-tls",
                "serverNames": ["flowplane.test"],
                "tls": {
                    "certChainFile": cert,
                    "privateKeyFile": key,
                    "caCertFile": cert,
                    "requireClientCertificate": True,
                },
                "filters": [
                    {
                        "type": "httpConnectionManager",
                        "statPrefix": "secure",
                        "inlineRouteConfig": {
                            "name": "tls-routes",
                            "virtualHosts": [
                                {
                                    "name": "t",
                                    "domains": ["*"],
                                    "routes": [
                                        route(action={"type": "forward", "cluster": "c-tls"})
                                    ],
                                }
                            ],
                        },
                        "accessLog": {"path": access_log},
                        "tracing": {"provider": "opentelemetry", "collectorCluster": "otel"},
                    }
                ],
            },
            name="l-http",
            address="127.0.0.1",
            port=10080,
        ),
        # RDS over ADS: Envoy validates the config source against the bootstrap's ads_config.
        listener(name="l-rds", address="127.0.0.1", port=10081),
        listener(
            {"filters": [{"type": "tcpProxy", "cluster": "c-static", "statPrefix": "tcp"}]},
            name="l-tcp",
            address="127.0.0.1",
            port=10082,
        ),
    ]

    # Binary, not JSON: the bytes Envoy gets are exactly what ADS would send (json_format would
    # drop the health-check names carried as unknown fields).
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id, boot.node.cluster = "validate", "flowplane-test"
    ads = boot.dynamic_resources.ads_config
    ads.api_type = ads.GRPC
    ads.transport_api_version = config_source_pb2.V3
    ads.grpc_services.add().envoy_grpc.cluster_name = "xds"
    boot.static_resources.clusters.extend(cluster_to_proto(c) for c in clusters)
    boot.static_resources.listeners.extend(listener_to_proto(x) for x in listeners)
    return boot


@pytest.mark.e2e
def test_real_envoy_validates_every_feature(tmp_path: Path) -> None:
    if not ENVOY.exists():
        pytest.skip(f"no Envoy binary at {ENVOY}")
    config = tmp_path / "bootstrap.pb"
    config.write_bytes(_bootstrap(tmp_path).SerializeToString(deterministic=True))
    proc = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "OK" in output, output
    # Nothing we emit may rely on a deprecated field (those break on Envoy upgrades).
    assert "deprecated" not in output.lower(), output
