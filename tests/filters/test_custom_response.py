"""`custom_response`: validation, translation (matcher on the status code, LocalResponsePolicy
actions), `envoy --mode validate`, and real Envoy traffic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.custom_response.v3 import custom_response_pb2
from envoy.extensions.http.custom_response.local_response_policy.v3 import (
    local_response_policy_pb2 as lrp_pb2,
)
from envoy.type.matcher.v3 import status_code_input_pb2
from hypothesis import given
from hypothesis import strategies as st

from flowplane.domain.resources import Kind
from flowplane.settings import Settings
from flowplane.testing.plane import run_plane
from flowplane.testing.upstream import run_upstream
from flowplane.xds.filters.custom_response import codes_regex
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

RULES = {
    "rules": [
        {"statusRange": {"start": 500, "end": 599},
         "response": {"status": 503, "body": "try later"}},
        {"statusCodes": [201, 200],
         "response": {"status": 299, "body": '{"ok": "100%"}', "contentType": "application/json"}},
    ]
}  # fmt: skip
CUSTOM_RESPONSE = "envoy.filters.http.custom_response"


def _filter(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "custom_response", "config": config}]


def _custom_response(config: dict[str, Any]) -> custom_response_pb2.CustomResponse:
    return filter_config(
        edge_listener(_filter(config)), CUSTOM_RESPONSE, custom_response_pb2.CustomResponse
    )


def test_translation_is_a_status_code_matcher_list_with_local_responses() -> None:
    matchers = _custom_response(RULES).custom_response_matcher.matcher_list.matchers
    assert len(matchers) == 2
    first, second = (m.predicate.single_predicate for m in matchers)
    for p in (first, second):
        assert p.input.typed_config.Is(
            status_code_input_pb2.HttpResponseStatusCodeMatchInput.DESCRIPTOR
        )
    assert first.value_match.safe_regex.regex == "^(?:5[0-9][0-9])$".replace(
        "5[0-9][0-9]", "|".join(f"5{t}[0-9]" for t in range(10))
    )
    assert first.value_match.safe_regex.HasField("google_re2")
    assert second.value_match.safe_regex.regex == "^(?:20[0-1])$"
    policy = lrp_pb2.LocalResponsePolicy()
    assert matchers[0].on_match.action.typed_config.Unpack(policy)
    assert (policy.status_code.value, policy.body.inline_string) == (503, "try later")
    assert not policy.HasField("body_format")
    assert matchers[1].on_match.action.typed_config.Unpack(policy)
    assert policy.status_code.value == 299
    assert not policy.HasField("body_format")  # the body is sent as is ("%" included)
    [header] = policy.response_headers_to_add
    assert (header.header.key, header.header.value) == ("content-type", "application/json")
    assert header.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_a_single_code_is_an_exact_match_and_status_is_optional() -> None:
    config = {"rules": [{"statusCodes": [404], "response": {"body": "nothing here"}}]}
    [m] = _custom_response(config).custom_response_matcher.matcher_list.matchers
    assert m.predicate.single_predicate.value_match.exact == "404"
    policy = lrp_pb2.LocalResponsePolicy()
    assert m.on_match.action.typed_config.Unpack(policy)
    assert not policy.HasField("status_code")


@given(st.sets(st.integers(200, 599), min_size=1))
def test_codes_regex_matches_exactly_the_codes(codes: set[int]) -> None:
    rx = re.compile(codes_regex(sorted(codes)))
    assert {c for c in range(100, 1000) if rx.match(str(c))} == codes


def test_override_is_a_per_route_custom_response() -> None:
    override = {"rules": [{"statusCodes": [200], "response": {"body": "route"}}]}
    _, rc = translated(edge_listener(_filter(RULES)), routes_body(route_filters={
        "custom_response": override
    }))  # fmt: skip
    assert rc is not None
    per_route = override_of(
        rc.virtual_hosts[0].routes[0], CUSTOM_RESPONSE, custom_response_pb2.CustomResponse
    )
    assert len(per_route.custom_response_matcher.matcher_list.matchers) == 1


def _rule(**kw: Any) -> dict[str, Any]:
    return {"rules": [{"statusCodes": [500], "response": {"body": "x"}, **kw}]}


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        (None, "", "needs a config"),
        ({}, ".rules", "required"),
        ({"rules": []}, ".rules", "at least 1"),
        ({"rules": [{"response": {"body": "x"}}]}, ".rules[0]", "exactly one of statusCodes"),
        (_rule(statusRange={"start": 500, "end": 599}), ".rules[0]", "exactly one of"),
        ({"rules": [{"statusCodes": [], "response": {"body": "x"}}]}, ".rules[0].statusCodes",
         "at least 1"),
        ({"rules": [{"statusCodes": [199], "response": {"body": "x"}}]},
         ".rules[0].statusCodes[0]", "greater than or equal to 200"),
        ({"rules": [{"statusCodes": [600], "response": {"body": "x"}}]},
         ".rules[0].statusCodes[0]", "less than or equal to 599"),
        ({"rules": [{"statusCodes": ["500"], "response": {"body": "x"}}]},
         ".rules[0].statusCodes[0]", "valid integer"),
        ({"rules": [{"statusRange": {"start": 599, "end": 500}, "response": {"body": "x"}}]},
         ".rules[0].statusRange", "start must not be greater than end"),
        ({"rules": [{"statusCodes": [500]}]}, ".rules[0].response", "required"),
        ({"rules": [{"statusCodes": [500], "response": {}}]}, ".rules[0].response",
         "give a status or a body"),
        ({"rules": [{"statusCodes": [500], "response": {"status": 100}}]},
         ".rules[0].response.status", "greater than or equal to 200"),
        ({"rules": [{"statusCodes": [500], "response": {"status": 503, "contentType": "a/b"}}]},
         ".rules[0].response", "contentType needs a body"),
        ({"rules": [{"statusCodes": [500],
                     "response": {"body": "x", "contentType": "text/plain\r\nx: y"}}]},
         ".rules[0].response.contentType", "pattern"),
        (_rule(bogus=1), ".rules[0].bogus", "unknown field"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_field_by_field(
    config: dict[str, Any] | None, field: str, message: str
) -> None:
    assert_config_refused("custom_response", config, field, message)


def test_bad_override_is_refused() -> None:
    got = problems(Kind.ROUTE_CONFIG, routes_body(vhost_filters={
        "custom_response": {"rules": [{"statusCodes": [700], "response": {"body": "x"}}]}
    }))  # fmt: skip
    assert "virtualHosts[0].filters.custom_response.rules[0].statusCodes[0]" in got, got


# --- Envoy --------------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_envoy_validates_config_and_overrides(tmp_path: Path) -> None:
    routes = routes_body(
        route_filters={"custom_response": RULES},
        vhost_filters={"custom_response": {"disabled": True}},
        rc_filters={"custom_response": {
            "rules": [{"statusCodes": [404], "response": {"status": 410}}]
        }},
    )  # fmt: skip
    with trio.fail_after(30):
        await envoy_validates(tmp_path, edge_listener(_filter(RULES)), routes)


@pytest.mark.e2e
async def test_responses_are_replaced_in_real_traffic(
    xds_settings: Settings, tmp_path: Path
) -> None:
    route_rules = {"rules": [{"statusCodes": [200], "response": {"body": "from the route"}}]}
    routes = routes_body(extra_routes=[
        {
            "name": "plain",
            "match": {"path": {"type": "prefix", "value": "/plain"}},
            "action": {"type": "forward", "cluster": "backend"},
            "filters": {"custom_response": {"disabled": True}},
        },
        {
            "name": "special",
            "match": {"path": {"type": "prefix", "value": "/special"}},
            "action": {"type": "forward", "cluster": "backend"},
            "filters": {"custom_response": route_rules},
        },
    ])  # fmt: skip
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("backend") as up,
            serving(plane, tmp_path, up.port, _filter(RULES), routes) as (envoy, port),
        ):
            # the upstream's 200 matches the second rule (the 5xx rule does not match)
            status, headers, body = await envoy.request(port, "/x")
            assert (status, body) == (299, b'{"ok": "100%"}')
            assert headers["content-type"] == "application/json"
            assert up.requests[-1].path == "/x"  # the upstream was asked; its answer replaced
            # disabled per route: the upstream's own answer
            status, _, body = await envoy.request(port, "/plain")
            assert (status, body) == (200, b"backend GET /plain")
            # the route's own CustomResponse: body replaced, status kept
            status, headers, body = await envoy.request(port, "/special")
            assert (status, body) == (200, b"from the route")
            assert headers["content-type"].startswith("text/plain")
