"""Sans-I/O translation of the domain models into Envoy v3 protobuf messages.

One pure function per resource kind; the same input always yields a message whose
`SerializeToString(deterministic=True)` is byte-identical (nested `Any`s are packed
deterministically too), so content hashes make stable versions (DESIGN.md §2).
Nothing here imports trio, grpclib or storage.
"""

from __future__ import annotations

from google.protobuf.message import Message
from pydantic import BaseModel

from flowplane.domain.cluster import Cluster
from flowplane.domain.listener import Listener
from flowplane.domain.resources import Kind
from flowplane.domain.route import RouteConfig
from flowplane.errors import BadRequest, FieldProblem
from flowplane.xds.constraints import violations
from flowplane.xds.translate_cluster import cluster_to_proto
from flowplane.xds.translate_listener import extension_configs, listener_to_proto
from flowplane.xds.translate_route import route_config_to_proto
from flowplane.xds.types import (
    CLUSTER_TYPE,
    ENVOY_NAMES,
    EXTENSION_CONFIG_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    http_filter_name,
)

__all__ = [
    "ENVOY_NAMES",
    "check_resource",
    "cluster_to_proto",
    "http_filter_name",
    "listener_to_proto",
    "route_config_to_proto",
    "translate_resource",
]


def translate_resource(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
    """The xDS resources one stored resource becomes: [(type URL, name, message)].

    Clusters carry their endpoints inline (`load_assignment`), so a cluster is one Cluster.
    Does not fail for a model the domain accepted (typed filters included); the config actor
    runs it (through `check_resource`) before storing anything, as the last check that what is
    stored can be served.
    """
    if kind is Kind.CLUSTER:
        assert isinstance(model, Cluster)
        return [(CLUSTER_TYPE, model.name, cluster_to_proto(model))]
    if kind is Kind.ROUTE_CONFIG:
        assert isinstance(model, RouteConfig)
        return [(ROUTE_TYPE, model.name, route_config_to_proto(model, model.name))]
    assert isinstance(model, Listener)
    # A listener's discovered HTTP filter configs are resources of their own (ECDS), scoped and
    # versioned with it, so a change to one re-sends the extension config, not the listener.
    return [(LISTENER_TYPE, model.name, listener_to_proto(model))] + [
        (EXTENSION_CONFIG_TYPE, ext.name, ext) for ext in extension_configs(model)
    ]


def check_resource(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
    """`translate_resource`, then every translated message checked against the validation
    rules Envoy's protos declare (`flowplane.xds.constraints`): the config actor's last check
    before storing, so nothing is stored that Envoy would NACK for a declared constraint (one
    NACKed cluster would hold back every later CDS update to that Envoy).

    Raises `BadRequest` naming the resource and each broken rule's proto field path, e.g.
    "cluster 'x': connect_timeout: value must be greater than 0s"; details carry one problem
    per rule, with the proto path as the field. The snapshot builder keeps using
    `translate_resource`: what it builds from has passed this check.
    """
    out = translate_resource(kind, model)
    found = [v for _, _, msg in out for v in violations(msg)]
    if found:
        name = getattr(model, "name", "")
        first = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise BadRequest(
            f"{kind.label} {name!r}: {first.path}: {first.message}{more}",
            [FieldProblem(v.path, v.message) for v in found],
        )
    return out
