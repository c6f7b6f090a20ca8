"""Helpers for the typed HTTP filter tests (one test module per filter type).

- `edge_listener(http_filters, ...)`: a Native listener body (one HCM over RDS `routes`).
- `routes_body(route_filters=..., vhost_filters=..., rc_filters=...)`: a route config body with one
  catch-all route to `backend`, and per-scope `filters` where given.
- `problems(kind, body)`: the field -> message map of a refused body (asserts it is refused).
- `translated(listener_body, route_config_body)`: (Envoy Listener, RouteConfiguration) protos.
- `envoy_validates(tmp_path, listener_body, route_config_body, *cluster_bodies)`: run
  `envoy --mode validate` on a bootstrap holding exactly what Flowplane would serve.
- `serving(plane, tmp_path, ...)`: an async context: post backend + routes + edge over REST to a
  running plane, start a real Envoy on it, wait until the listener serves; yields
  (envoy, listener_port).
- `hcm_of(listener_pb)`: the HttpConnectionManager of a translated listener's first chain.
- `unpack(any_msg, msg_cls)`: the message packed in an Any (asserts it is a `msg_cls`).
- `first_filter(hcm, name, msg_cls)`: asserts the HTTP filters are [name, router] and returns the
  first one's config as a `msg_cls`.
- `filter_config(listener_body, name, msg_cls)`: translate, then `first_filter` of its HCM.
- `override_of(scope, name, msg_cls)`: the per-filter override of a route config, virtual host
  or route (its `typed_per_filter_config[name]`) as a `msg_cls`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import pytest
import trio
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from flowplane.domain.cluster import Cluster
from flowplane.domain.listener import Listener
from flowplane.domain.naming import xds_model
from flowplane.domain.resources import Kind, parse_spec
from flowplane.domain.route import RouteConfig
from flowplane.errors import BadRequest
from flowplane.testing.envoy import EnvoyProcess, ads_bootstrap, run_envoy, validate_bootstrap
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import Plane
from flowplane.testing.ports import free_port
from flowplane.xds.translate import cluster_to_proto, listener_to_proto, route_config_to_proto
from tests.helpers import N, ok

ROUTER = "envoy.filters.http.router"
M = TypeVar("M", bound=Message)
Scope: TypeAlias = (
    route_pb2.RouteConfiguration | route_components_pb2.VirtualHost | route_components_pb2.Route
)


def edge_listener(
    http_filters: list[dict[str, Any]], *, port: int = 10080, name: str = "edge"
) -> dict[str, Any]:
    return {
        "name": name,
        "address": "127.0.0.1",
        "port": port,
        "filterChains": [
            {
                "filters": [
                    {
                        "type": "httpConnectionManager",
                        "routeConfigName": "routes",
                        "httpFilters": http_filters,
                    }
                ]
            }
        ],
    }


def routes_body(
    *,
    route_filters: dict[str, Any] | None = None,
    vhost_filters: dict[str, Any] | None = None,
    rc_filters: dict[str, Any] | None = None,
    extra_routes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`extra_routes` go before the catch-all route (Envoy takes the first match)."""
    catch_all: dict[str, Any] = {
        "name": "all",
        "match": {"path": {"type": "prefix", "value": "/"}},
        "action": {"type": "forward", "cluster": "backend"},
    }
    if route_filters is not None:
        catch_all["filters"] = route_filters
    vhost: dict[str, Any] = {
        "name": "vh", "domains": ["*"], "routes": [*(extra_routes or []), catch_all],
    }  # fmt: skip
    if vhost_filters is not None:
        vhost["filters"] = vhost_filters
    body: dict[str, Any] = {"name": "routes", "virtualHosts": [vhost]}
    if rc_filters is not None:
        body["filters"] = rc_filters
    return body


def problems(kind: Kind, body: dict[str, Any]) -> dict[str, str]:
    """Parse `body` as a `kind` resource, which must be refused; field -> message."""
    with pytest.raises(BadRequest) as info:
        parse_spec(kind, body)
    return {p.field: p.message for p in info.value.details}


def translated(
    listener: dict[str, Any], routes: dict[str, Any] | None = None
) -> tuple[listener_pb2.Listener, route_pb2.RouteConfiguration | None]:
    # as the snapshot translates them: names and references resolved (flowplane.domain.naming)
    lst = xds_model(parse_spec(Kind.LISTENER, listener), listener.get("team"))
    assert isinstance(lst, Listener)
    rc_pb = None
    if routes is not None:
        rc = xds_model(parse_spec(Kind.ROUTE_CONFIG, routes), routes.get("team"))
        assert isinstance(rc, RouteConfig)
        rc_pb = route_config_to_proto(rc, rc.name)
    return listener_to_proto(lst), rc_pb


def hcm_of(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    """The HttpConnectionManager of the first filter chain of a translated listener."""
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return hcm


def unpack(any_msg: AnyPb, msg_cls: type[M]) -> M:
    """The `msg_cls` packed in `any_msg` (asserts that is what it holds)."""
    out: M = msg_cls()
    assert any_msg.Unpack(out), f"{any_msg.type_url} is not a {msg_cls.DESCRIPTOR.full_name}"
    return out


def first_filter(hcm: hcm_pb2.HttpConnectionManager, name: str, msg_cls: type[M]) -> M:
    """Asserts the HCM's HTTP filters are [`name`, router]; the first one's config."""
    assert [f.name for f in hcm.http_filters] == [name, ROUTER]
    return unpack(hcm.http_filters[0].typed_config, msg_cls)


def filter_config(listener: dict[str, Any], name: str, msg_cls: type[M]) -> M:
    """Translate the listener body; the config of its only HTTP filter `name` (before router)."""
    lst, _ = translated(listener)
    return first_filter(hcm_of(lst), name, msg_cls)


def override_of(scope: Scope, name: str, msg_cls: type[M]) -> M:
    """The override of filter `name` at a route config, virtual host or route scope."""
    return unpack(scope.typed_per_filter_config[name], msg_cls)


async def envoy_validates(
    tmp_path: Path,
    listener: dict[str, Any],
    routes: dict[str, Any],
    *clusters: dict[str, Any],
) -> None:
    """`envoy --mode validate` on a bootstrap with the listener, its route config inline as RDS
    is not available in validate mode (the route config is validated as the HCM's inline
    `route_config` of the same listener), and the clusters (default: `backend`)."""
    lst_pb, rc_pb = translated(listener, routes)
    assert rc_pb is not None
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id, boot.node.cluster = "validate", "validate"
    for c in clusters or (cluster_body("backend"),):
        # by its xDS name (`<team>/<name>` for a team's cluster), as the snapshot names it
        model = xds_model(parse_spec(Kind.CLUSTER, c), c.get("team"))
        assert isinstance(model, Cluster)
        boot.static_resources.clusters.append(cluster_to_proto(model))
    # Swap RDS for the translated route config inline, so Envoy validates both.
    for chain in lst_pb.filter_chains:
        for f in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            f.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                hcm.ClearField("rds")
                hcm.route_config.CopyFrom(rc_pb)
                f.typed_config.Pack(hcm, deterministic=True)
    boot.static_resources.listeners.append(lst_pb)
    doc = MessageToDict(boot, preserving_proto_field_name=True)
    await validate_bootstrap(doc, tmp_dir=tmp_path)


@asynccontextmanager
async def serving(
    plane: Plane,
    tmp_path: Path,
    upstream_port: int,
    http_filters: list[dict[str, Any]],
    routes: dict[str, Any] | None = None,
    *,
    extra_clusters: tuple[dict[str, Any], ...] = (),
) -> AsyncIterator[tuple[EnvoyProcess, int]]:
    port = free_port()
    ok(await plane.api.post(f"{N}/clusters", json=cluster_body("backend", upstream_port)))
    for c in extra_clusters:
        ok(await plane.api.post(f"{N}/clusters", json=c))
    ok(await plane.api.post(f"{N}/route-configs", json=routes or routes_body()))
    ok(await plane.api.post(f"{N}/listeners", json=edge_listener(http_filters, port=port)))
    await plane.settled()
    boot = ads_bootstrap("envoy-filters", "127.0.0.1", plane.xds_port)
    async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
        await envoy.wait_ready()
        await envoy.wait_for(lambda: _serving(envoy, port), 20, what=f"edge on {port} serving")
        assert all(v == 0 for v in (await envoy.rejected_counts()).values())
        yield envoy, port


async def _serving(envoy: EnvoyProcess, port: int) -> bool:
    """The listener is active and its route config arrived, checked without sending an HTTP
    request through it (a probe would count against rate limits, need tokens, ...)."""
    have = await envoy.resource_versions()
    if "edge" not in have.get("listeners", {}) or "routes" not in have.get("route_configs", {}):
        return False
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


FILTER_PATH = "filterChains[0].filters[0].httpFilters[0]"


def assert_config_refused(
    filter_type: str, config: dict[str, Any] | None, field: str, message: str
) -> None:
    """A listener whose only filter is `filter_type` with `config` (absent if None) is refused,
    with a problem at `<filter>.config<field>` (or at the filter itself when there is no config)
    whose message contains `message`."""
    entry: dict[str, Any] = {"type": filter_type}
    if config is not None:
        entry["config"] = config
    got = problems(Kind.LISTENER, edge_listener([entry]))
    where = f"{FILTER_PATH}.config{field}" if config is not None else FILTER_PATH
    assert where in got, got
    assert message in got[where], got
