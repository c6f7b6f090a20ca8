"""`header_mutation`: validation, translation, `envoy --mode validate`, and real Envoy traffic."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2 as hm_pb2

from flowplane.domain.resources import Kind
from flowplane.settings import Settings
from flowplane.testing.plane import run_plane
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

HEADER_MUTATION = "envoy.filters.http.header_mutation"
ADD_REQ = {"requestHeadersToAdd": [{"name": "x-added", "value": "yes"}]}
FULL = {
    "requestHeadersToAdd": [
        {"name": "x-added", "value": "yes"},
        {"name": "x-multi", "value": "two", "append": True},
    ],
    "requestHeadersToRemove": ["x-secret"],
    "responseHeadersToAdd": [{"name": "x-served-by", "value": "flowplane"}],
    "responseHeadersToRemove": ["x-upstream"],
}


def _filter(config: dict[str, object]) -> list[dict[str, object]]:
    return [{"type": "header_mutation", "config": config}]


def test_translation_removes_then_adds_with_the_right_append_action() -> None:
    cfg = filter_config(edge_listener(_filter(FULL)), HEADER_MUTATION, hm_pb2.HeaderMutation)
    req = cfg.mutations.request_mutations
    assert req[0].remove == "x-secret"
    assert (req[1].append.header.key, req[1].append.header.value) == ("x-added", "yes")
    assert req[1].append.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert req[2].append.append_action == base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    resp = cfg.mutations.response_mutations
    assert [m.remove for m in resp[:1]] == ["x-upstream"]
    assert resp[1].append.header.key == "x-served-by"


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (None, "", "needs a config"),
        ({}, "", "at least one header"),
        ({"requestHeadersToRemove": ["host"]}, ".requestHeadersToRemove[0]", "cannot be removed"),
        ({"requestHeadersToAdd": [{"name": ":path", "value": "/"}]},
         ".requestHeadersToAdd[0].name", "lower-case HTTP header name"),
        ({"requestHeadersToAdd": [{"name": "x", "value": 5}]},
         ".requestHeadersToAdd[0].value", "valid string"),
        ({"requestHeadersToAdd": [{"name": "x"}]}, ".requestHeadersToAdd[0].value", "required"),
        ({"bogus": 1}, ".bogus", "unknown field"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_field_by_field(
    config: dict[str, object] | None, field: str, message: str
) -> None:
    assert_config_refused("header_mutation", config, field, message)


def test_route_override_becomes_header_mutation_per_route() -> None:
    _, rc = translated(edge_listener(_filter(ADD_REQ)), routes_body(route_filters={
        "header_mutation": {"responseHeadersToAdd": [{"name": "x-route", "value": "1"}]}
    }))  # fmt: skip
    assert rc is not None
    per_route = override_of(
        rc.virtual_hosts[0].routes[0], HEADER_MUTATION, hm_pb2.HeaderMutationPerRoute
    )
    assert per_route.mutations.response_mutations[0].append.header.key == "x-route"


@pytest.mark.e2e
async def test_envoy_validates_config_and_overrides(tmp_path: Path) -> None:
    routes = routes_body(
        route_filters={"header_mutation": ADD_REQ},
        vhost_filters={"header_mutation": {"disabled": True}},
        rc_filters={"header_mutation": FULL},
    )
    with trio.fail_after(30):
        await envoy_validates(tmp_path, edge_listener(_filter(FULL)), routes)


@pytest.mark.e2e
async def test_headers_are_mutated_in_real_traffic(xds_settings: Settings, tmp_path: Path) -> None:
    routes = routes_body(
        extra_routes=[{
            "name": "plain",
            "match": {"path": {"type": "prefix", "value": "/plain"}},
            "action": {"type": "forward", "cluster": "backend"},
            "filters": {"header_mutation": {"disabled": True}},
        }]
    )  # fmt: skip
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("one") as up,
            serving(plane, tmp_path, up.port, _filter(FULL), routes) as (envoy, port),
        ):
            status, headers, _ = await envoy.request(
                port, "/x", headers={"x-secret": "s", "x-multi": "one"}
            )
            assert status == 200
            seen = up.requests[-1].headers
            assert seen["x-added"] == "yes"
            assert "x-secret" not in seen
            assert seen["x-multi"] == "one, two"
            assert headers["x-served-by"] == "flowplane"
            assert "x-upstream" not in headers  # removed from the response
            # disabled on the /plain route: untouched both ways
            status, headers, _ = await envoy.request(port, "/plain", headers={"x-secret": "s"})
            assert status == 200
            assert up.requests[-1].headers.get("x-secret") == "s"
            assert "x-added" not in up.requests[-1].headers
            assert headers["x-upstream"] == "one"


def test_a_filter_cannot_take_the_name_of_another_type() -> None:
    entry = {"type": "header_mutation", "name": "router", "config": ADD_REQ}
    got = problems(Kind.LISTENER, edge_listener([entry]))
    assert "another filter type" in got["filterChains[0].filters[0].httpFilters[0].name"]
