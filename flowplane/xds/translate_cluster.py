"""Cluster (domain) -> `envoy.config.cluster.v3.Cluster` (CDS). Sans-I/O and deterministic."""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import range_pb2

from flowplane.domain.cluster import (
    CircuitBreakers,
    Cluster,
    HealthCheck,
    OutlierDetection,
    Thresholds,
    UpstreamTls,
)
from flowplane.xds.types import (
    HTTP_PROTOCOL_OPTIONS,
    TLS_TRANSPORT_SOCKET,
    duration,
    pack,
    set_unknown_string,
    u32,
)

_PbCluster = cluster_pb2.Cluster
_HEALTH_CHECK_NAME_FIELD = 27  # envoy.config.core.v3.HealthCheck.name (string)


def cluster_to_proto(c: Cluster) -> cluster_pb2.Cluster:
    """The Envoy cluster for `c`, endpoints inline as `load_assignment` (no EDS).

    The discovery type follows `c.discovery_type` (IP endpoints STATIC, hostnames STRICT_DNS or
    LOGICAL_DNS). Optional settings the client left out are left unset, so Envoy's defaults apply.
    """
    out = _PbCluster(
        name=c.name,
        type=_PbCluster.DiscoveryType.Value(c.discovery_type),
        connect_timeout=duration(c.connect_timeout_seconds),
        lb_policy=_PbCluster.LbPolicy.Value(c.lb_policy),
        load_assignment=_load_assignment(c),
    )
    if c.least_request is not None:
        out.least_request_lb_config.choice_count.value = c.least_request.choice_count
    if c.ring_hash is not None:
        out.ring_hash_lb_config.minimum_ring_size.value = c.ring_hash.minimum_ring_size
        out.ring_hash_lb_config.maximum_ring_size.value = c.ring_hash.maximum_ring_size
    if c.maglev is not None:
        out.maglev_lb_config.table_size.value = c.maglev.table_size
    if c.dns_lookup_family is not None:
        out.dns_lookup_family = _PbCluster.DnsLookupFamily.Value(c.dns_lookup_family)
    checks = c.health_checks or []
    for i, hc in enumerate(checks):
        pb = _health_check(hc)
        if len(checks) > 1:
            # Envoy 1.40 refuses several unnamed health checks. `HealthCheck.name` (field 27) is
            # newer than xds-protos 1.85, so it travels as an unknown field. A single check stays
            # unnamed, keeping its stat names unchanged.
            set_unknown_string(pb, _HEALTH_CHECK_NAME_FIELD, f"{hc.type}-{i}")
        out.health_checks.append(pb)
    if c.circuit_breakers is not None:
        out.circuit_breakers.CopyFrom(_circuit_breakers(c.circuit_breakers))
    if c.outlier_detection is not None:
        out.outlier_detection.CopyFrom(_outlier_detection(c.outlier_detection))
    if c.tls is not None and c.tls.enabled:
        out.transport_socket.name = TLS_TRANSPORT_SOCKET
        out.transport_socket.typed_config.CopyFrom(pack(_upstream_tls(c.tls)))
    if c.http2:
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        opts.explicit_http_config.http2_protocol_options.SetInParent()
        out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(opts))
    return out


def _load_assignment(c: Cluster) -> endpoint_pb2.ClusterLoadAssignment:
    lb_endpoints = []
    for ep in c.endpoints:
        lb = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=ep.host, port_value=ep.port)
                )
            )
        )
        if ep.weight is not None:
            lb.load_balancing_weight.value = ep.weight
        lb_endpoints.append(lb)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=c.name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)],
    )


def _health_check(hc: HealthCheck) -> health_check_pb2.HealthCheck:
    out = health_check_pb2.HealthCheck(
        timeout=duration(hc.timeout_seconds),
        interval=duration(hc.interval_seconds),
        healthy_threshold=u32(hc.healthy_threshold),
        unhealthy_threshold=u32(hc.unhealthy_threshold),
    )
    if hc.type == "tcp":
        out.tcp_health_check.SetInParent()  # an empty tcp check: connect succeeds = healthy
        return out
    http = out.http_health_check
    http.path = hc.path or "/"
    if hc.host is not None:
        http.host = hc.host
    if hc.method is not None:
        http.method = base_pb2.RequestMethod.Value(hc.method)
    for status in hc.expected_statuses or ():
        # Int64Range is half-open: [start, end).
        http.expected_statuses.append(range_pb2.Int64Range(start=status, end=status + 1))
    return out


def _thresholds(priority: str, t: Thresholds) -> circuit_breaker_pb2.CircuitBreakers.Thresholds:
    out = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=base_pb2.RoutingPriority.Value(priority)
    )
    if t.max_connections is not None:
        out.max_connections.value = t.max_connections
    if t.max_pending_requests is not None:
        out.max_pending_requests.value = t.max_pending_requests
    if t.max_requests is not None:
        out.max_requests.value = t.max_requests
    if t.max_retries is not None:
        out.max_retries.value = t.max_retries
    return out


def _circuit_breakers(cb: CircuitBreakers) -> circuit_breaker_pb2.CircuitBreakers:
    out = circuit_breaker_pb2.CircuitBreakers()
    if cb.default is not None:
        out.thresholds.append(_thresholds("DEFAULT", cb.default))
    if cb.high is not None:
        out.thresholds.append(_thresholds("HIGH", cb.high))
    return out


def _outlier_detection(od: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    out = outlier_detection_pb2.OutlierDetection()
    if od.consecutive5xx is not None:
        out.consecutive_5xx.value = od.consecutive5xx
    if od.interval_seconds is not None:
        out.interval.CopyFrom(duration(od.interval_seconds))
    if od.base_ejection_time_seconds is not None:
        out.base_ejection_time.CopyFrom(duration(od.base_ejection_time_seconds))
    if od.max_ejection_percent is not None:
        out.max_ejection_percent.value = od.max_ejection_percent
    if od.min_hosts is not None:
        # api.md's `minHosts`: the hosts needed before success-rate ejection is computed.
        out.success_rate_minimum_hosts.value = od.min_hosts
    return out


def _upstream_tls(tls: UpstreamTls) -> tls_pb2.UpstreamTlsContext:
    out = tls_pb2.UpstreamTlsContext()
    if tls.sni is not None:
        out.sni = tls.sni
    ctx = out.common_tls_context
    if tls.ca_cert_file is not None:
        ctx.validation_context.trusted_ca.filename = tls.ca_cert_file
    if tls.client_cert_file is not None and tls.client_key_file is not None:
        ctx.tls_certificates.append(
            common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=tls.client_cert_file),
                private_key=base_pb2.DataSource(filename=tls.client_key_file),
            )
        )
    return out


__all__ = ["cluster_to_proto"]
