"""`ext_authz`: validation, translation, cluster references over REST, `envoy --mode validate`,
and real Envoy traffic against an HTTP authorization service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2

from flowplane.domain.resources import Kind
from flowplane.settings import Settings
from flowplane.testing.envoy import EnvoyProcess
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import run_upstream
from tests.filters.helpers import (
    assert_config_refused,
    edge_listener,
    envoy_validates,
    filter_config,
    override_of,
    problems,
    routes_body,
    serving,
    translated,
)
from tests.helpers import N, ok

GRPC = {"service": {"type": "grpc", "cluster": "authz"}}
HTTP = {
    "service": {
        "type": "http", "cluster": "authz", "pathPrefix": "/check", "allowedHeaders": ["x-user"],
    },
    "timeoutSeconds": 1.5,
    "failureModeAllow": True,
    "statusOnError": 503,
}  # fmt: skip
CONTEXT = {"contextExtensions": {"tier": "gold", "app": "shop"}}
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def _filter(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "ext_authz", "config": config}]


def _ext_authz(config: dict[str, Any]) -> ext_authz_pb2.ExtAuthz:
    return filter_config(edge_listener(_filter(config)), EXT_AUTHZ, ext_authz_pb2.ExtAuthz)


def test_grpc_service_translation_with_defaults() -> None:
    cfg = _ext_authz(GRPC)
    assert cfg.WhichOneof("services") == "grpc_service"
    assert cfg.grpc_service.envoy_grpc.cluster_name == "authz"
    assert cfg.grpc_service.timeout.ToNanoseconds() == 200_000_000
    assert cfg.transport_api_version == config_source_pb2.ApiVersion.V3
    assert not cfg.failure_mode_allow
    assert not cfg.HasField("status_on_error")
    assert not cfg.HasField("allowed_headers")


def test_http_service_translation() -> None:
    cfg = _ext_authz(HTTP)
    assert cfg.WhichOneof("services") == "http_service"
    uri = cfg.http_service.server_uri
    assert (uri.uri, uri.cluster, uri.timeout.ToNanoseconds()) == (
        "http://authz", "authz", 1_500_000_000,
    )  # fmt: skip
    assert cfg.http_service.path_prefix == "/check"
    assert [p.exact for p in cfg.allowed_headers.patterns] == ["x-user"]
    assert cfg.failure_mode_allow
    assert cfg.status_on_error.code == 503
    assert cfg.transport_api_version == config_source_pb2.ApiVersion.V3


def test_translation_is_deterministic() -> None:
    routes = routes_body(route_filters={"ext_authz": CONTEXT})
    one = translated(edge_listener(_filter(HTTP)), routes)
    two = translated(edge_listener(_filter(HTTP)), routes_body(
        route_filters={"ext_authz": {"contextExtensions": {"app": "shop", "tier": "gold"}}}
    ))  # fmt: skip
    assert one[0].SerializeToString(deterministic=True) == two[0].SerializeToString(
        deterministic=True
    )
    assert one[1] is not None and two[1] is not None
    assert one[1].SerializeToString(deterministic=True) == two[1].SerializeToString(
        deterministic=True
    )


def test_override_becomes_per_route_context_extensions() -> None:
    _, rc = translated(edge_listener(_filter(GRPC)), routes_body(route_filters={
        "ext_authz": CONTEXT
    }))  # fmt: skip
    assert rc is not None
    per_route = override_of(
        rc.virtual_hosts[0].routes[0], EXT_AUTHZ, ext_authz_pb2.ExtAuthzPerRoute
    )
    assert dict(per_route.check_settings.context_extensions) == {"tier": "gold", "app": "shop"}


def test_clusters_are_referenced() -> None:
    from flowplane.domain.listener import Listener
    from flowplane.domain.resources import parse_spec

    lst = parse_spec(Kind.LISTENER, edge_listener(_filter(HTTP)))
    assert isinstance(lst, Listener)
    assert lst.cluster_names() == {"authz"}


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (None, "", "needs a config"),
        ({}, ".service", "required"),
        ({"service": {"type": "soap", "cluster": "authz"}}, ".service.type", "'grpc' or 'http'"),
        ({"service": {"type": "grpc"}}, ".service.cluster", "required"),
        ({"service": {"type": "grpc", "cluster": "Bad_Name"}}, ".service.cluster", "lowercase"),
        ({"service": {"type": "grpc", "cluster": "a", "pathPrefix": "/x"}}, ".service",
         "pathPrefix only apply to an http service"),
        ({"service": {"type": "grpc", "cluster": "a", "allowedHeaders": ["x"]}}, ".service",
         "allowedHeaders only apply"),
        ({"service": {"type": "http", "cluster": "a", "pathPrefix": "check"}},
         ".service.pathPrefix", "pattern"),
        ({"service": {"type": "http", "cluster": "a", "pathPrefix": "/a b"}},
         ".service.pathPrefix", "pattern"),
        ({"service": {"type": "http", "cluster": "a", "allowedHeaders": ["X User"]}},
         ".service.allowedHeaders[0]", "pattern"),
        ({**GRPC, "timeoutSeconds": 0}, ".timeoutSeconds", "greater than 0"),
        ({**GRPC, "timeoutSeconds": 61}, ".timeoutSeconds", "less than or equal to 60"),
        ({**GRPC, "timeoutSeconds": "1"}, ".timeoutSeconds", "valid number"),
        ({**GRPC, "failureModeAllow": "yes"}, ".failureModeAllow", "valid boolean"),
        ({**GRPC, "statusOnError": 200}, ".statusOnError", "greater than or equal to 400"),
        ({**GRPC, "statusOnError": 499}, ".statusOnError", "HTTP error status"),
        ({**GRPC, "statusOnError": 600}, ".statusOnError", "less than or equal to 599"),
        ({**GRPC, "bogus": 1}, ".bogus", "unknown field"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_field_by_field(
    config: dict[str, Any] | None, field: str, message: str
) -> None:
    assert_config_refused("ext_authz", config, field, message)


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({}, ".contextExtensions", "required"),
        ({"contextExtensions": {}}, ".contextExtensions", "at least 1"),
        ({"contextExtensions": {"a": 1}}, ".contextExtensions.a", "valid string"),
        ({"contextExtensions": {"": "x"}}, ".contextExtensions", "keys must be 1-256"),
        ({"contextExtensions": {"a": "b"}, "x": 1}, ".x", "unknown field"),
    ],
)
def test_bad_overrides_are_refused(override: dict[str, Any], field: str, message: str) -> None:
    got = problems(Kind.ROUTE_CONFIG, routes_body(route_filters={"ext_authz": override}))
    where = f"virtualHosts[0].routes[0].filters.ext_authz{field}"
    assert where in got, got
    assert message in got[where], got


# --- REST: the service cluster is a reference -----------------------------------------------


async def test_missing_cluster_is_400_and_used_cluster_cannot_be_deleted(
    client: httpx.AsyncClient,
) -> None:
    ok(await client.post(f"{N}/clusters", json=cluster_body("backend")))
    ok(await client.post(f"{N}/route-configs", json=routes_body()))
    r = await client.post(f"{N}/listeners", json=edge_listener(_filter(GRPC)))
    assert r.status_code == 400, r.text
    assert "cluster 'authz'" in r.json()["message"]
    ok(await client.post(f"{N}/clusters", json=cluster_body("authz", http2=True)))
    ok(await client.post(f"{N}/listeners", json=edge_listener(_filter(GRPC))))
    r = await client.delete(f"{N}/clusters/authz")
    assert r.status_code == 409, r.text
    assert "listener 'edge'" in r.json()["message"]
    assert (await client.delete(f"{N}/listeners/edge")).status_code == 204
    assert (await client.delete(f"{N}/clusters/authz")).status_code == 204


# --- Envoy --------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("config", [GRPC, HTTP], ids=["grpc", "http"])
async def test_envoy_validates_config_and_overrides(tmp_path: Path, config: dict[str, Any]) -> None:
    routes = routes_body(
        route_filters={"ext_authz": CONTEXT},
        vhost_filters={"ext_authz": {"disabled": True}},
        rc_filters={"ext_authz": {"contextExtensions": {"k": "v"}}},
    )
    clusters = (cluster_body("backend"), cluster_body("authz", http2=config is GRPC))
    with trio.fail_after(30):
        await envoy_validates(tmp_path, edge_listener(_filter(config)), routes, *clusters)


def _open_route() -> dict[str, Any]:
    """A `/open` route that skips the check (`{"disabled": true}` per route)."""
    return routes_body(extra_routes=[{
        "name": "open",
        "match": {"path": {"type": "prefix", "value": "/open"}},
        "action": {"type": "forward", "cluster": "backend"},
        "filters": {"ext_authz": {"disabled": True}},
    }])  # fmt: skip


@pytest.mark.e2e
async def test_http_service_is_asked_and_allows(xds_settings: Settings, tmp_path: Path) -> None:
    config = {"service": {"type": "http", "cluster": "authz", "pathPrefix": "/check",
                          "allowedHeaders": ["x-user"]}}  # fmt: skip
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("backend") as up,
            run_upstream("authz") as authz,
            serving(plane, tmp_path, up.port, _filter(config), _open_route(),
                    extra_clusters=(cluster_body("authz", authz.port),)) as (envoy, port),
        ):  # fmt: skip
            status, _, body = await envoy.request(
                port, "/x?q=1", headers={"x-user": "ann", "x-other": "o"}
            )
            assert (status, body) == (200, b"backend GET /x?q=1")
            check = authz.requests[-1]
            assert (check.method, check.path) == ("GET", "/check/x?q=1")
            assert check.headers["x-user"] == "ann"
            assert "x-other" not in check.headers  # not an allowed header
            assert up.requests[-1].path == "/x?q=1"
            # disabled on /open: no check request
            checks = len(authz.requests)
            status, _, _ = await envoy.request(port, "/open")
            assert status == 200
            assert len(authz.requests) == checks
            assert up.requests[-1].path == "/open"


async def _status_becomes(envoy: EnvoyProcess, port: int, path: str, want: int) -> None:
    async def check() -> bool:
        status, _, _ = await envoy.request(port, path)
        return status == want

    await envoy.wait_for(check, 20, what=f"{path} answers {want}")


@pytest.mark.e2e
async def test_unreachable_service_denies_unless_failure_mode_allow(
    xds_settings: Settings, tmp_path: Path
) -> None:
    dead = cluster_body("authz", free_port())  # nothing listens there
    config: dict[str, Any] = {"service": {"type": "http", "cluster": "authz"}}
    with trio.fail_after(90):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("backend") as up,
            serving(plane, tmp_path, up.port, _filter(config), _open_route(),
                    extra_clusters=(dead,)) as (envoy, port),
        ):  # fmt: skip
            status, _, _ = await envoy.request(port, "/x")
            assert status == 403
            assert not [r for r in up.requests if r.path == "/x"]
            status, _, _ = await envoy.request(port, "/open")  # the check is disabled there
            assert status == 200
            # statusOnError changes the denial's status
            with_status = {**config, "statusOnError": 503}
            ok(
                await plane.api.put(
                    f"{N}/listeners/edge", json=edge_listener(_filter(with_status), port=port)
                ),
                200,
            )
            await _status_becomes(envoy, port, "/x", 503)
            # failureModeAllow lets requests through when the service cannot be reached
            allow = {**config, "failureModeAllow": True}
            ok(
                await plane.api.put(
                    f"{N}/listeners/edge", json=edge_listener(_filter(allow), port=port)
                ),
                200,
            )
            await _status_becomes(envoy, port, "/x", 200)
            assert up.requests[-1].path == "/x"
