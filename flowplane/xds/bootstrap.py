"""Envoy bootstrap documents that point a data plane at Flowplane's ADS server (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowplane.domain.common import is_ip


def ads_bootstrap(
    node_id: str,
    xds_host: str,
    xds_port: int,
    *,
    delta: bool = False,
    cluster: str = "flowplane",
    metadata: Mapping[str, Any] | None = None,
    admin_port: int = 0,
    tls: XdsTls | None = None,
    token: str | None = None,
    keepalive: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A bootstrap (as a JSON-able dict) for an Envoy that takes LDS and CDS over one ADS stream
    (`GRPC`, or `DELTA_GRPC` if `delta`) from `xds_host:xds_port` over plaintext HTTP/2.

    Admin listens on 127.0.0.1:`admin_port` (0 picks a free port). `xds_host` may be an IP
    address (STATIC xDS cluster) or a hostname (STRICT_DNS). RDS and EDS arrive over the same
    ADS stream when LDS/CDS resources ask for them.

    With `tls`, the xDS connection uses TLS (verifying the server against `tls.ca_file`) and, if
    `tls.cert_file`/`key_file` are given, presents a client certificate (mTLS). With `token`, the
    ADS stream sends `authorization: Bearer <token>` as initial metadata.

    With `keepalive` = (interval, timeout) in seconds, Envoy PINGs the control plane every
    `interval` over the xDS connection and drops the connection (and reconnects) when a PING is
    not answered within `timeout`: a control plane that vanished without closing the connection
    is noticed in seconds instead of when TCP gives up.
    """
    node: dict[str, Any] = {"id": node_id, "cluster": cluster}
    if metadata:
        node["metadata"] = dict(metadata)
    doc = _document(node, xds_host, xds_port, delta, admin_port)
    if keepalive is not None:
        interval, timeout = keepalive
        options = doc["static_resources"]["clusters"][0]["typed_extension_protocol_options"]
        http2 = options[_HTTP_OPTIONS]["explicit_http_config"]["http2_protocol_options"]
        http2["connection_keepalive"] = {
            "interval": _duration(interval),
            "timeout": _duration(timeout),
        }
    if token is not None:
        service = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]
        service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {token}"}]
    if tls is not None:
        common: dict[str, Any] = {
            "alpn_protocols": ["h2"],
            "validation_context": {"trusted_ca": {"filename": tls.ca_file}},
        }
        if tls.cert_file and tls.key_file:
            common["tls_certificates"] = [
                {
                    "certificate_chain": {"filename": tls.cert_file},
                    "private_key": {"filename": tls.key_file},
                }
            ]
        context: dict[str, Any] = {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        }
        if tls.sni:
            context["sni"] = tls.sni
        doc["static_resources"]["clusters"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": context,
        }
    return doc


_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _duration(seconds: float) -> str:
    """protobuf's JSON form of a Duration, in milliseconds (Envoy's keepalive resolution)."""
    return f"{round(seconds * 1000) / 1000:.3f}s"


@dataclass(frozen=True)
class XdsTls:
    """Files on the data-plane host for a TLS (or, with cert and key, mTLS) xDS connection."""

    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    sni: str | None = None


def _document(
    node: dict[str, Any], xds_host: str, xds_port: int, delta: bool, admin_port: int
) -> dict[str, Any]:
    return {
        "node": node,
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC" if is_ip(xds_host) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        _HTTP_OPTIONS: {
                            "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_host,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }
