"""Sans-I/O translation of the domain models into Envoy v3 protobuf messages.

One pure function per resource kind; the same input always yields a message whose
`SerializeToString(deterministic=True)` is byte-identical (nested `Any`s are packed
deterministically too), so content hashes make stable versions (DESIGN.md §2).
Nothing here imports trio, grpclib or storage.
"""

from __future__ import annotations

from flowplane.xds.translate_cluster import cluster_to_proto
from flowplane.xds.translate_listener import listener_to_proto
from flowplane.xds.translate_route import route_config_to_proto
from flowplane.xds.types import ENVOY_NAMES, http_filter_name

__all__ = [
    "ENVOY_NAMES",
    "cluster_to_proto",
    "http_filter_name",
    "listener_to_proto",
    "route_config_to_proto",
]
