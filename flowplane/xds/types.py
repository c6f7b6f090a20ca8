"""Envoy v3 type URLs and extension names, plus the tiny proto helpers every translator uses.

Pure constants and functions over protobuf messages: no I/O, no trio, no grpclib, no storage.
"""

from __future__ import annotations

from typing import Final

from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

_PREFIX: Final = "type.googleapis.com/"

CLUSTER_TYPE: Final = _PREFIX + "envoy.config.cluster.v3.Cluster"
LISTENER_TYPE: Final = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE_TYPE: Final = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
ENDPOINT_TYPE: Final = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
# ECDS: an HTTP filter's config delivered on its own (a listener names it in `config_discovery`)
EXTENSION_CONFIG_TYPE: Final = _PREFIX + "envoy.config.core.v3.TypedExtensionConfig"

# Extension names Envoy knows its factories by (the `name` of a TypedExtensionConfig, filter,
# transport socket, access logger, tracer ...).
TLS_TRANSPORT_SOCKET: Final = "envoy.transport_sockets.tls"
HTTP_PROTOCOL_OPTIONS: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_CONNECTION_MANAGER: Final = "envoy.filters.network.http_connection_manager"
TCP_PROXY: Final = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR: Final = "envoy.filters.listener.tls_inspector"
FILE_ACCESS_LOG: Final = "envoy.access_loggers.file"
ZIPKIN_TRACER: Final = "envoy.tracers.zipkin"
OPENTELEMETRY_TRACER: Final = "envoy.tracers.opentelemetry"
URI_TEMPLATE_MATCH: Final = "envoy.path.match.uri_template"
URI_TEMPLATE_REWRITE: Final = "envoy.path.rewrite.uri_template"
ZIPKIN_COLLECTOR_ENDPOINT: Final = "/api/v2/spans"

# Flowplane HTTP filter `type` -> the name of Envoy's filter. The same mapping names a filter in
# the HCM's `http_filters` and keys `typed_per_filter_config`, which must agree for Envoy to
# apply a per-route override (see `http_filter_name`).
ENVOY_NAMES: Final[dict[str, str]] = {
    "router": "envoy.filters.http.router",
    "jwt_authn": "envoy.filters.http.jwt_authn",
    "local_rate_limit": "envoy.filters.http.local_ratelimit",
    "cors": "envoy.filters.http.cors",
    "header_mutation": "envoy.filters.http.header_mutation",
    "ext_authz": "envoy.filters.http.ext_authz",
    "custom_response": "envoy.filters.http.custom_response",
}


def http_filter_name(name: str) -> str:
    """The Envoy name of the HTTP filter a client calls `name` (its `name`, else its `type`).

    Known filter types map to Envoy's own names; any other (client-chosen) name is used as is.
    Used for the HCM filter list and for per-scope overrides alike, so the two always agree.
    """
    return ENVOY_NAMES.get(name, name)


def pack(msg: Message) -> any_pb2.Any:
    """`msg` in an Any, serialized deterministically (maps sorted) so equal input -> equal bytes."""
    out = any_pb2.Any()
    out.Pack(msg, deterministic=True)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    """A Duration from float seconds, rounded to the nanosecond."""
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1_000_000_000))
    return out


def u32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def set_unknown_string(msg: Message, number: int, value: str) -> None:
    """Set string field `number`, which Envoy knows but our xds-protos does not, on `msg`.

    It is kept as an unknown field: serialized (deterministically, after the known fields) and
    so sent to Envoy, but invisible to `json_format`. Only for fields Envoy requires.
    """
    payload = value.encode()
    msg.MergeFromString(_varint(number << 3 | 2) + _varint(len(payload)) + payload)
