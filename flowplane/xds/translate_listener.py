"""Listener (domain) -> `envoy.config.listener.v3.Listener` (LDS). Sans-I/O and deterministic."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    extension_pb2,
    grpc_service_pb2,
)
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.v3 import percent_pb2

from flowplane.domain.filters import ROUTER
from flowplane.domain.listener import (
    AccessLog,
    DownstreamTls,
    FilterChain,
    HttpConnectionManager,
    HttpFilter,
    Listener,
    TcpProxy,
    Tracing,
)
from flowplane.xds.filters import filter_config
from flowplane.xds.translate_route import route_config_to_proto
from flowplane.xds.types import (
    FILE_ACCESS_LOG,
    HTTP_CONNECTION_MANAGER,
    OPENTELEMETRY_TRACER,
    TCP_PROXY,
    TLS_INSPECTOR,
    TLS_TRANSPORT_SOCKET,
    ZIPKIN_COLLECTOR_ENDPOINT,
    ZIPKIN_TRACER,
    http_filter_name,
    pack,
)


def listener_to_proto(listener: Listener) -> listener_pb2.Listener:
    """The Envoy listener for `listener`.

    An API listener (`apiListener: true`, for gRPC's proxyless clients) becomes
    `api_listener.api_listener` holding its one HTTP connection manager, with no address and no
    filter chains. Every HTTP filter's typed config is translated (the domain validated it).
    """
    out = listener_pb2.Listener(name=listener.name)
    if listener.api_listener:
        hcm = listener.filter_chains[0].filters[0]
        assert isinstance(hcm, HttpConnectionManager)  # the domain guarantees it
        out.api_listener.api_listener.CopyFrom(pack(_hcm(listener, hcm)))
        return out
    # The domain guarantees a non-API listener has both.
    assert listener.address is not None
    assert listener.port is not None
    out.address.socket_address.CopyFrom(
        address_pb2.SocketAddress(address=listener.address, port_value=listener.port)
    )
    out.filter_chains.extend(_filter_chain(listener, fc) for fc in listener.filter_chains)
    if any(fc.server_names for fc in listener.filter_chains):
        # SNI matching needs the TLS inspector to read the ClientHello (Envoy no longer adds it).
        out.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
            )
        )
    return out


def _filter_chain(listener: Listener, fc: FilterChain) -> listener_components_pb2.FilterChain:
    out = listener_components_pb2.FilterChain()
    if fc.name is not None:
        out.name = fc.name
    if fc.server_names:
        out.filter_chain_match.server_names.extend(fc.server_names)
    if fc.tls is not None:
        out.transport_socket.name = TLS_TRANSPORT_SOCKET
        out.transport_socket.typed_config.CopyFrom(pack(_downstream_tls(fc.tls)))
    for f in fc.filters:
        if isinstance(f, TcpProxy):
            out.filters.append(
                listener_components_pb2.Filter(
                    name=TCP_PROXY, typed_config=pack(_tcp_proxy(listener, f))
                )
            )
        else:
            hcm = _hcm(listener, f)
            out.filters.append(
                listener_components_pb2.Filter(name=HTTP_CONNECTION_MANAGER, typed_config=pack(hcm))
            )
    return out


def _downstream_tls(tls: DownstreamTls) -> tls_pb2.DownstreamTlsContext:
    out = tls_pb2.DownstreamTlsContext()
    out.common_tls_context.tls_certificates.append(
        common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename=tls.cert_chain_file),
            private_key=base_pb2.DataSource(filename=tls.private_key_file),
        )
    )
    if tls.ca_cert_file is not None:
        out.common_tls_context.validation_context.trusted_ca.filename = tls.ca_cert_file
    if tls.require_client_certificate is not None:
        out.require_client_certificate.value = tls.require_client_certificate
    return out


def _tcp_proxy(listener: Listener, f: TcpProxy) -> tcp_proxy_pb2.TcpProxy:
    return tcp_proxy_pb2.TcpProxy(stat_prefix=f.stat_prefix or listener.name, cluster=f.cluster)


def _hcm(listener: Listener, f: HttpConnectionManager) -> hcm_pb2.HttpConnectionManager:
    out = hcm_pb2.HttpConnectionManager(
        stat_prefix=f.stat_prefix or listener.name,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
    )
    if f.route_config_name is not None:
        # RDS over the same ADS stream this Envoy gets its listeners from (xDS protocol,
        # "Aggregated Discovery Service").
        out.rds.config_source.ads.SetInParent()
        out.rds.config_source.resource_api_version = config_source_pb2.V3
        out.rds.route_config_name = f.route_config_name
    else:
        assert f.inline_route_config is not None  # the domain guarantees exactly one
        irc = f.inline_route_config
        out.route_config.CopyFrom(route_config_to_proto(irc, irc.name or listener.name))
    out.http_filters.extend(_http_filter(hf, listener) for hf in f.http_filters)
    if not any(hf.type == ROUTER for hf in f.http_filters):
        router = HttpFilter.model_validate({"type": ROUTER})
        out.http_filters.append(_http_filter(router, listener))
    if f.access_log is not None:
        out.access_log.append(_access_log(f.access_log))
    if f.tracing is not None:
        out.tracing.CopyFrom(_tracing(f.tracing))
    return out


def extension_config_name(listener: Listener, f: HttpFilter) -> str:
    """The name of a discovered HTTP filter, which is also its ECDS resource's name (Envoy
    subscribes by the filter's name) and the key of its per-route configs: the listener's name
    and the filter's Envoy name (`<listener>/<filter>` keys its per-scope overrides)."""
    return f"{listener.name}/{http_filter_name(f.name or f.type)}"


def extension_configs(listener: Listener) -> list[extension_pb2.TypedExtensionConfig]:
    """The ECDS resources of `listener`: one per HTTP filter with `discovery`, in chain order."""
    out = []
    for fc in listener.filter_chains:
        for f in fc.filters:
            if isinstance(f, HttpConnectionManager):
                for hf in f.http_filters:
                    if hf.discovery:
                        out.append(
                            extension_pb2.TypedExtensionConfig(
                                name=extension_config_name(listener, hf),
                                typed_config=pack(filter_config(hf.type, hf.typed_config)),
                            )
                        )
    return out


def _http_filter(f: HttpFilter, listener: Listener) -> hcm_pb2.HttpFilter:
    """One HTTP filter, its typed config translated by `flowplane.xds.filters`. Named by
    `http_filter_name`, the same function that keys per-scope overrides. A discovered filter
    names its ECDS resource instead (over the same ADS stream), so changing its config changes
    the extension config, not the listener."""
    if f.discovery:
        out = hcm_pb2.HttpFilter(name=extension_config_name(listener, f))
        ecds = out.config_discovery
        ecds.config_source.ads.SetInParent()
        ecds.config_source.resource_api_version = config_source_pb2.V3
        ecds.type_urls.append(pack(filter_config(f.type, f.typed_config)).type_url)
    else:
        out = hcm_pb2.HttpFilter(
            name=http_filter_name(f.name or f.type),
            typed_config=pack(filter_config(f.type, f.typed_config)),
        )
    if f.optional is not None:
        out.is_optional = f.optional
    if f.disabled is not None:
        out.disabled = f.disabled
    return out


def _access_log(a: AccessLog) -> accesslog_pb2.AccessLog:
    log = file_pb2.FileAccessLog(path=a.path)
    if a.format is not None:
        log.log_format.text_format_source.inline_string = a.format
    return accesslog_pb2.AccessLog(name=FILE_ACCESS_LOG, typed_config=pack(log))


def _tracing(t: Tracing) -> hcm_pb2.HttpConnectionManager.Tracing:
    provider = http_tracer_pb2.Tracing.Http()
    if t.provider == "zipkin":
        provider.name = ZIPKIN_TRACER
        provider.typed_config.CopyFrom(
            pack(
                zipkin_pb2.ZipkinConfig(
                    collector_cluster=t.collector_cluster,
                    collector_endpoint=ZIPKIN_COLLECTOR_ENDPOINT,
                    collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
                )
            )
        )
    else:
        provider.name = OPENTELEMETRY_TRACER
        provider.typed_config.CopyFrom(
            pack(
                opentelemetry_pb2.OpenTelemetryConfig(
                    grpc_service=grpc_service_pb2.GrpcService(
                        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                            cluster_name=t.collector_cluster
                        )
                    )
                )
            )
        )
    return hcm_pb2.HttpConnectionManager.Tracing(
        random_sampling=percent_pb2.Percent(value=t.sample_percent), provider=provider
    )


__all__ = ["listener_to_proto"]
