"""`custom`: type URL and protobuf JSON checked at the domain, translation, REST refusals,
`envoy --mode validate`, and real Envoy traffic through the buffer filter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.composite.v3 import composite_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from flowplane.domain.resources import Kind
from flowplane.settings import Settings
from flowplane.testing.factories import cluster_body
from flowplane.testing.plane import run_plane
from flowplane.testing.upstream import run_upstream
from tests.filters.helpers import (
    FILTER_PATH,
    assert_config_refused,
    edge_listener,
    envoy_validates,
    first_filter,
    hcm_of,
    override_of,
    problems,
    routes_body,
    serving,
    translated,
    unpack,
)
from tests.helpers import N, ok

T = "type.googleapis.com/"
BUFFER = T + "envoy.extensions.filters.http.buffer.v3.Buffer"
BUFFER_PER_ROUTE = T + "envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
SMALL = {"typeUrl": BUFFER, "config": {"maxRequestBytes": 16}}


def _filter(config: dict[str, Any], name: str | None = None) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {"type": "custom", "config": config}
    if name is not None:
        entry["name"] = name
    return [entry]


def _hcm(config: dict[str, Any], name: str | None = None) -> hcm_pb2.HttpConnectionManager:
    lst, _ = translated(edge_listener(_filter(config, name)))
    return hcm_of(lst)


def test_translation_packs_the_parsed_message() -> None:
    hcm = _hcm(SMALL)
    cfg = first_filter(hcm, "custom", buffer_pb2.Buffer)
    assert hcm.http_filters[0].typed_config.type_url == BUFFER
    assert cfg.max_request_bytes.value == 16


def test_a_named_custom_filter_keeps_its_name() -> None:
    assert _hcm(SMALL, "my-buffer").http_filters[0].name == "my-buffer"


def test_nested_any_types_resolve_and_translation_is_deterministic() -> None:
    # A type from a package not imported yet (fault), inside an Any, inside another filter type.
    config = {
        "typeUrl": T + "envoy.extensions.filters.http.composite.v3.Composite",
        "config": {},
    }
    assert _hcm(config).http_filters[0].typed_config.type_url.endswith("Composite")
    action = {
        "typeUrl": T + "envoy.extensions.filters.http.composite.v3.ExecuteFilterAction",
        "config": {"typedConfig": {"name": "fault", "typedConfig": {
            "@type": T + "envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {"httpStatus": 503, "percentage": {"numerator": 100}},
        }}},
    }  # fmt: skip
    one, two = _hcm(action), _hcm(action)
    assert one.SerializeToString(deterministic=True) == two.SerializeToString(deterministic=True)
    got = unpack(one.http_filters[0].typed_config, composite_pb2.ExecuteFilterAction)
    assert unpack(got.typed_config.typed_config, fault_pb2.HTTPFault).abort.http_status == 503


def test_override_becomes_the_per_route_message() -> None:
    override = {"typeUrl": BUFFER_PER_ROUTE, "config": {"buffer": {"maxRequestBytes": 1000}}}
    _, rc = translated(edge_listener(_filter(SMALL)), routes_body(route_filters={
        "custom": override
    }))  # fmt: skip
    assert rc is not None
    route = rc.virtual_hosts[0].routes[0]
    assert route.typed_per_filter_config["custom"].type_url == BUFFER_PER_ROUTE
    per_route = override_of(route, "custom", buffer_pb2.BufferPerRoute)
    assert per_route.buffer.max_request_bytes.value == 1000


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (None, "", "needs a config"),
        ({}, ".typeUrl", "required"),
        ({"typeUrl": "envoy.extensions.filters.http.buffer.v3.Buffer"}, ".typeUrl",
         "must start with 'type.googleapis.com/'"),
        ({"typeUrl": T + "not a name"}, ".typeUrl", "must name a protobuf message"),
        ({"typeUrl": T + "envoy.extensions.filters.http.buffer.v3.Nope"}, ".typeUrl",
         "unknown message type 'envoy.extensions.filters.http.buffer.v3.Nope'"),
        ({"typeUrl": T + "envoy.extensions.filters.http.nothing.v3.Nope"}, ".typeUrl",
         "unknown message type"),
        ({"typeUrl": T + "envoy.config.cluster.v3.Cluster"}, ".typeUrl",
         "must be an Envoy HTTP filter type"),
        ({"typeUrl": T + "google.protobuf.Struct"}, ".typeUrl", "must be an Envoy HTTP filter"),
        ({"typeUrl": T + "envoy.extensions.filters.http.router.v3.Router"}, ".typeUrl",
         "appended automatically"),
        ({"typeUrl": BUFFER, "config": {"maxRequestBytes": "many"}}, ".config",
         "Failed to parse maxRequestBytes field"),
        ({"typeUrl": BUFFER, "config": {"maxBytes": 1}}, ".config",
         'has no field named "maxBytes"'),
        ({"typeUrl": BUFFER, "config": []}, ".config", "valid dictionary"),
        ({"typeUrl": BUFFER, "config": {"maxRequestBytes": -1}}, ".config",
         "Failed to parse maxRequestBytes"),
        ({"typeUrl": T + "envoy.extensions.filters.http.composite.v3.ExecuteFilterAction",
          "config": {"typedConfig": {"name": "x", "typedConfig": {"@type": T + "no.such.Type"}}}},
         ".config", "no.such.Type"),
        ({**SMALL, "bogus": 1}, ".bogus", "unknown field"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_field_by_field(
    config: dict[str, Any] | None, field: str, message: str
) -> None:
    assert_config_refused("custom", config, field, message)


def test_bad_override_is_refused() -> None:
    got = problems(Kind.ROUTE_CONFIG, routes_body(route_filters={
        "custom": {"typeUrl": BUFFER_PER_ROUTE, "config": {"disabled": "yes"}}
    }))  # fmt: skip
    where = "virtualHosts[0].routes[0].filters.custom.config"
    assert where in got, got
    assert "Expected true or false without quotes at BufferPerRoute.disabled" in got[where]


async def test_rest_unknown_type_url_is_400_and_nothing_stored(client: httpx.AsyncClient) -> None:
    ok(await client.post(f"{N}/clusters", json=cluster_body("backend")))
    ok(await client.post(f"{N}/route-configs", json=routes_body()))
    bad = {"typeUrl": T + "envoy.extensions.filters.http.buffer.v3.Nope", "config": {}}
    r = await client.post(f"{N}/listeners", json=edge_listener(_filter(bad)))
    assert r.status_code == 400, r.text
    details = {d["field"]: d["message"] for d in r.json()["details"]}
    assert "unknown message type" in details[f"{FILTER_PATH}.config.typeUrl"]
    r = await client.post(f"{N}/listeners", json=edge_listener(_filter(
        {"typeUrl": BUFFER, "config": {"maxRequestBytes": "x"}}
    )))  # fmt: skip
    assert r.status_code == 400, r.text
    assert (await client.get(f"{N}/listeners/edge")).status_code == 404
    created = ok(await client.post(f"{N}/listeners", json=edge_listener(_filter(SMALL))))
    assert created is not None


# --- Envoy --------------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_envoy_validates_config_and_overrides(tmp_path: Path) -> None:
    routes = routes_body(
        route_filters={"custom": {"typeUrl": BUFFER_PER_ROUTE, "config": {"disabled": True}}},
        vhost_filters={"custom": {"disabled": True}},
        rc_filters={"custom": {"typeUrl": BUFFER_PER_ROUTE,
                               "config": {"buffer": {"maxRequestBytes": 64}}}},
    )  # fmt: skip
    with trio.fail_after(30):
        await envoy_validates(tmp_path, edge_listener(_filter(SMALL)), routes)


@pytest.mark.e2e
async def test_buffer_filter_refuses_large_bodies_in_real_traffic(
    xds_settings: Settings, tmp_path: Path
) -> None:
    routes = routes_body(extra_routes=[{
        "name": "big",
        "match": {"path": {"type": "prefix", "value": "/big"}},
        "action": {"type": "forward", "cluster": "backend"},
        "filters": {"custom": {"typeUrl": BUFFER_PER_ROUTE,
                               "config": {"buffer": {"maxRequestBytes": 4096}}}},
    }])  # fmt: skip
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("backend") as up,
            serving(plane, tmp_path, up.port, _filter(SMALL), routes) as (envoy, port),
        ):
            status, _, _ = await envoy.request(port, "/x", method="POST", body=b"tiny")
            assert status == 200
            assert up.requests[-1].body == b"tiny"
            status, _, _ = await envoy.request(port, "/x", method="POST", body=b"x" * 100)
            assert status == 413
            assert up.requests[-1].body == b"tiny"  # never reached the upstream
            # the per-route BufferPerRoute override raises the limit on /big
            status, _, _ = await envoy.request(port, "/big", method="POST", body=b"x" * 100)
            assert status == 200
            assert up.requests[-1].body == b"x" * 100
