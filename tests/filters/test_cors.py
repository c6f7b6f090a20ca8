"""`cors`: validation, translation, `envoy --mode validate`, and real Envoy traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import string_pb2

from flowplane.domain.resources import Kind, parse_spec
from flowplane.settings import Settings
from flowplane.testing.plane import run_plane
from flowplane.testing.upstream import run_upstream
from tests.filters.helpers import (
    edge_listener,
    envoy_validates,
    filter_config,
    override_of,
    problems,
    routes_body,
    serving,
    translated,
)

CORS = "envoy.filters.http.cors"
APP = "https://app.example.com"
POLICY: dict[str, Any] = {
    "origins": [{"exact": APP}, {"suffix": ".trusted.test"}],
    "methods": ["GET", "POST"],
    "headers": ["content-type", "x-token"],
    "exposeHeaders": ["x-upstream"],
    "maxAge": 600,
    "allowCredentials": True,
}
LISTENER = edge_listener([{"type": "cors"}])


def _policy(scope: Any) -> cors_pb2.CorsPolicy:
    return override_of(scope, CORS, cors_pb2.CorsPolicy)


def test_listener_filter_is_an_empty_cors_config_given_or_not() -> None:
    assert filter_config(LISTENER, CORS, cors_pb2.Cors) == cors_pb2.Cors()
    parse_spec(Kind.LISTENER, edge_listener([{"type": "cors", "config": {}}]))


def test_policy_translation() -> None:
    _, rc = translated(LISTENER, routes_body(vhost_filters={"cors": POLICY}))
    assert rc is not None
    p = _policy(rc.virtual_hosts[0])
    assert list(p.allow_origin_string_match) == [
        string_pb2.StringMatcher(exact=APP, ignore_case=True),
        string_pb2.StringMatcher(suffix=".trusted.test", ignore_case=True),
    ]
    assert (p.allow_methods, p.allow_headers, p.expose_headers, p.max_age) == (
        "GET,POST", "content-type,x-token", "x-upstream", "600",
    )  # fmt: skip
    assert p.HasField("allow_credentials")
    assert p.allow_credentials.value
    assert not p.HasField("filter_enabled")  # unset: enabled for every request


def test_minimal_policy_at_every_scope_never_inherits_credentials() -> None:
    minimal = {"origins": [{"prefix": "https://"}, {"regex": r"https://[a-z]+\.example\.org"}]}
    _, rc = translated(
        LISTENER,
        routes_body(
            route_filters={"cors": minimal},
            vhost_filters={"cors": {"disabled": True}},
            rc_filters={"cors": POLICY},
        ),
    )
    assert rc is not None
    route = _policy(rc.virtual_hosts[0].routes[0])
    assert route.allow_origin_string_match[0] == string_pb2.StringMatcher(
        prefix="https://", ignore_case=True
    )
    regex = route.allow_origin_string_match[1]
    assert regex.safe_regex.regex == r"https://[a-z]+\.example\.org"
    assert not regex.ignore_case
    # left out: empty, so Envoy takes them from an enclosing scope's policy...
    assert (route.allow_methods, route.allow_headers, route.expose_headers, route.max_age) == (
        "", "", "", "",
    )  # fmt: skip
    # ...but credentials are always explicit (the route config's `true` must not apply to
    # a policy that allows every https origin)
    assert route.HasField("allow_credentials")
    assert not route.allow_credentials.value
    assert _policy(rc).allow_credentials.value
    assert override_of(rc.virtual_hosts[0], CORS, rc_pb2.FilterConfig).disabled
    again = translated(LISTENER, routes_body(route_filters={"cors": minimal}))[1]
    assert again is not None
    assert _policy(again.virtual_hosts[0].routes[0]) == route  # deterministic


@pytest.mark.parametrize(
    "config",
    [{"origins": [{"exact": "*"}]}, {"allowCredentials": True}, {"x": 1}, {"disabled": True}],
)
def test_listener_config_must_be_empty(config: dict[str, Any]) -> None:
    got = problems(Kind.LISTENER, edge_listener([{"type": "cors", "config": config}]))
    where = "filterChains[0].filters[0].httpFilters[0].config"
    assert where in got, got
    assert "goes in filters.cors on the route config, virtual host or route" in got[where]


def _with(**fields: Any) -> dict[str, Any]:
    return {**POLICY, **fields}


WILD = "matches every origin, which allowCredentials: true does not allow"


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        ({}, ".origins", "required"),
        (_with(origins=[]), ".origins", "at least 1 item"),
        (_with(origins=[{}]), ".origins[0]", "exactly one of exact, prefix, suffix, regex"),
        (_with(origins=[{"exact": APP, "prefix": "https://"}]), ".origins[0]",
         "(got exact, prefix)"),
        (_with(origins=[{"contains": "x"}]), ".origins[0].contains", "unknown field"),
        (_with(origins=[{"exact": ""}]), ".origins[0].exact", "at least 1 character"),
        (_with(origins=[{"exact": 5}]), ".origins[0].exact", "valid string"),
        (_with(origins=[{"suffix": ""}]), ".origins[0].suffix", "at least 1 character"),
        (_with(origins=[{"regex": "(a"}]), ".origins[0].regex", "not a valid RE2"),
        (_with(origins=[{"regex": "(?=a)"}]), ".origins[0].regex", "not a valid RE2"),
        # credentials with an origin matching everything: refused on that origin
        (_with(origins=[{"exact": APP}, {"exact": "*"}]), ".origins[1]", WILD),
        (_with(origins=[{"prefix": ""}]), ".origins[0].prefix", "at least 1 character"),
        (_with(origins=[{"regex": ".*"}]), ".origins[0]", WILD),
        (_with(origins=[{"regex": "https?://.+"}]), ".origins[0]", WILD),
        (_with(origins=[{"prefix": "https://"}]), ".origins[0]", WILD),
        (_with(origins=[{"prefix": "*"}]), ".origins[0]", WILD),
        (_with(origins=[{"suffix": "*"}]), ".origins[0]", WILD),
        (_with(methods=[]), ".methods", "at least 1 item"),
        (_with(methods=["FETCH"]), ".methods[0]", "'GET'"),
        (_with(methods=["get"]), ".methods[0]", "'GET'"),
        (_with(methods=["GET", "GET"]), ".methods", "GET is listed twice"),
        (_with(headers=["bad header"]), ".headers[0]", "pattern"),
        (_with(headers=["X-Token", "x-token"]), ".headers", "x-token is listed twice"),
        (_with(headers=["*", "x-token"]), ".headers", "cannot be combined"),
        (_with(exposeHeaders=[""]), ".exposeHeaders[0]", "at least 1 character"),
        (_with(exposeHeaders="x-upstream"), ".exposeHeaders", "valid list"),
        (_with(maxAge=-1), ".maxAge", "greater than or equal to 0"),
        (_with(maxAge=86_401), ".maxAge", "less than or equal to 86400"),
        (_with(maxAge="600"), ".maxAge", "valid integer"),
        (_with(maxAge=1.5), ".maxAge", "valid integer"),
        (_with(allowCredentials="true"), ".allowCredentials", "valid boolean"),
        (_with(bogus=1), ".bogus", "unknown field"),
    ],
)  # fmt: skip
def test_bad_policies_are_refused_field_by_field(
    policy: dict[str, Any], field: str, message: str
) -> None:
    got = problems(Kind.ROUTE_CONFIG, routes_body(route_filters={"cors": policy}))
    where = f"virtualHosts[0].routes[0].filters.cors{field}"
    assert where in got, got
    assert message in got[where]


@pytest.mark.parametrize(
    "policy",
    [
        {"origins": [{"exact": "*"}]},  # every origin, without credentials
        {"origins": [{"regex": ".*"}], "headers": ["*"], "allowCredentials": False},
        {"origins": [{"suffix": ".example.com"}, {"prefix": "https://app."}],
         "allowCredentials": True},
        {"origins": [{"exact": APP}], "maxAge": 0, "methods": ["OPTIONS"]},
    ],
)  # fmt: skip
def test_good_policies_are_accepted(policy: dict[str, Any]) -> None:
    parse_spec(Kind.ROUTE_CONFIG, routes_body(vhost_filters={"cors": policy}))


@pytest.mark.e2e
async def test_envoy_validates_filter_and_policies(tmp_path: Path) -> None:
    routes = routes_body(
        route_filters={"cors": {"origins": [{"regex": r"https://[a-z]+\.example\.org(:\d+)?"}]}},
        vhost_filters={"cors": {"disabled": True}},
        rc_filters={"cors": {**POLICY, "headers": ["*"], "maxAge": 0}},
    )
    with trio.fail_after(30):
        await envoy_validates(tmp_path, LISTENER, routes)
        await envoy_validates(
            tmp_path, edge_listener([{"type": "cors", "config": {}}]), routes_body()
        )


def _cors_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("access-control-")}


@pytest.mark.e2e
async def test_cors_in_real_traffic(xds_settings: Settings, tmp_path: Path) -> None:
    open_policy = {"origins": [{"regex": r"https://[a-z]+\.open\.test"}]}
    routes = routes_body(
        vhost_filters={"cors": POLICY},
        extra_routes=[
            {
                "name": "open",
                "match": {"path": {"type": "prefix", "value": "/open"}},
                "action": {"type": "forward", "cluster": "backend"},
                "filters": {"cors": open_policy},
            },
            {
                "name": "nocors",
                "match": {"path": {"type": "prefix", "value": "/nocors"}},
                "action": {"type": "forward", "cluster": "backend"},
                "filters": {"cors": {"disabled": True}},
            },
        ],
    )
    preflight = {"access-control-request-method": "POST"}
    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("one") as up,
            serving(plane, tmp_path, up.port, [{"type": "cors"}], routes) as (envoy, port),
        ):
            # preflight from an allowed origin: answered by Envoy itself
            status, headers, _ = await envoy.request(
                port, "/x", method="OPTIONS", headers={"origin": APP, **preflight}
            )
            assert status == 200
            assert _cors_headers(headers) == {
                "access-control-allow-origin": APP,
                "access-control-allow-methods": "GET,POST",
                "access-control-allow-headers": "content-type,x-token",
                "access-control-max-age": "600",
                "access-control-allow-credentials": "true",
                "access-control-expose-headers": "x-upstream",  # Envoy adds it to any answer
            }
            assert up.requests == []
            # preflight from another origin: no CORS headers (forwarded to the upstream)
            status, headers, _ = await envoy.request(
                port, "/x", method="OPTIONS",
                headers={"origin": "https://evil.test", **preflight},
            )  # fmt: skip
            assert status == 200
            assert _cors_headers(headers) == {}
            assert headers["x-upstream"] == "one"
            # simple request from an allowed origin (suffix, any case): origin echoed, exposed
            # headers listed
            origin = "https://API.trusted.test"
            status, headers, _ = await envoy.request(port, "/x", headers={"origin": origin})
            assert status == 200
            assert _cors_headers(headers) == {
                "access-control-allow-origin": origin,
                "access-control-allow-credentials": "true",
                "access-control-expose-headers": "x-upstream",
            }
            assert headers["x-upstream"] == "one"
            for h in ({"origin": "https://evil.test"}, {"origin": "https://trusted.test.evil"}, {}):
                status, headers, _ = await envoy.request(port, "/x", headers=h)
                assert (status, _cors_headers(headers)) == (200, {}), h
            # /open has a policy of its own: its origins replace the virtual host's, credentials
            # are not inherited, exposed headers are (Envoy merges unset fields)
            origin = "https://any.open.test"
            status, headers, _ = await envoy.request(port, "/open", headers={"origin": origin})
            assert _cors_headers(headers) == {
                "access-control-allow-origin": origin,
                "access-control-expose-headers": "x-upstream",
            }
            status, headers, _ = await envoy.request(port, "/open", headers={"origin": APP})
            assert _cors_headers(headers) == {}
            # disabled on /nocors
            status, headers, _ = await envoy.request(
                port, "/nocors", method="OPTIONS", headers={"origin": APP, **preflight}
            )
            assert (status, _cors_headers(headers)) == (200, {})
            assert headers["x-upstream"] == "one"  # the upstream answered the OPTIONS
