"""The API definition model (flowplane.domain.api_definition): what it accepts, and each refusal
at the exact JSON path of the problem ("validation field by field, errors with exact JSON
paths"); two routes with the same path and method are a 409."""

from __future__ import annotations

from typing import Any

import pytest

from flowplane.domain.api_definition import (
    Endpoint,
    KeyBy,
    parse_api_definition,
    parse_key_by,
)
from flowplane.errors import Conflict
from tests.platform.helpers import JWKS, api, api_body, refused

FULL: dict[str, Any] = {
    "name": "petstore",
    "team": "payments",
    "domain": "petstore.example.com",
    "basePath": "/v1",
    "upstreams": [
        {"name": "default", "url": "https://pets.internal:8443", "weight": 1},
        {"name": "legacy", "host": "10.0.0.7", "port": 8080, "tls": False},
    ],
    "routes": [
        {
            "path": "/pets/{id}",
            "methods": ["GET", "DELETE"],
            "upstream": "default",
            "timeoutSeconds": 15,
            "rewrite": "/api/pets/{id}",
            "filters": {"rateLimit": None},
        },
        {"path": "/legacy", "upstream": "legacy"},
    ],
    "filters": {
        "rateLimit": {"requests": 100, "interval": "1m", "keyBy": "header:X-Api-Key"},
        "jwtAuth": {"issuer": "https://issuer.example", "audiences": ["pets"], "jwksUri": JWKS},
        "cors": {
            "origins": ["https://app.example"],
            "methods": ["GET"],
            "headers": ["x-a"],
            "exposeHeaders": [],
            "allowCredentials": False,
            "maxAgeSeconds": 600,
        },
    },
    "listener": {
        "isolation": True,
        "name": "pets-edge",
        "address": "0.0.0.0",
        "port": 10001,
        "filters": {"rateLimit": {"requests": 5, "interval": "1s"}},
    },
}


def test_the_full_example_is_accepted() -> None:
    a = parse_api_definition(FULL)
    assert a.base == "payments.petstore"  # f"{team}.{name}"
    assert a.isolated
    assert list(a.upstream_sets()) == ["default", "legacy"]
    assert a.upstreams[0].endpoint == Endpoint("pets.internal", 8443, True)
    assert a.upstreams[1].endpoint == Endpoint("10.0.0.7", 8080, False)
    assert a.filters is not None and a.filters.rate_limit is not None
    assert a.filters.rate_limit.interval_seconds == 60
    assert a.filters.rate_limit.key == KeyBy("header", "x-api-key")
    route = a.routes[0]
    assert route.filters is not None
    assert route.filters.given() == {"rateLimit": None}  # explicit null: stated, as none
    assert a.routes[1].upstream_set == "legacy"


def test_a_shared_api_has_no_team_in_its_names() -> None:
    assert api().base == "petstore"
    assert not api().isolated


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("http://pets.internal", Endpoint("pets.internal", 80, False)),
        ("https://pets.internal", Endpoint("pets.internal", 443, True)),
        ("https://Pets.Internal:8443/", Endpoint("pets.internal", 8443, True)),
        ("http://10.0.0.7:81", Endpoint("10.0.0.7", 81, False)),
        ("https://[::1]:8443", Endpoint("::1", 8443, True)),
    ],
)
def test_upstream_urls(url: str, endpoint: Endpoint) -> None:
    """url: http/https, host[:port]; tls defaults to url scheme == https."""
    assert api(upstreams=[{"url": url}]).upstreams[0].endpoint == endpoint


def test_host_and_port_default_to_plain_and_tls_may_be_asked() -> None:
    a = api(upstreams=[{"host": "a.internal", "port": 1}, {"name": "t", "host": "b", "port": 2,
                                                         "tls": True}])  # fmt: skip
    assert [u.endpoint.tls for u in a.upstreams] == [False, True]


@pytest.mark.parametrize(("value", "key"), [
    ("route", KeyBy("route")),
    ("client_ip", KeyBy("client_ip")),
    ("header:x-api-key", KeyBy("header", "x-api-key")),
    ("header:X-Tenant", KeyBy("header", "x-tenant")),
])  # fmt: skip
def test_key_by_values(value: str, key: KeyBy) -> None:
    assert parse_key_by(value) == key


@pytest.mark.parametrize("value", ["", "ip", "header:", "header:a b", "header::path", "Route"])
def test_bad_key_by_values(value: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the message is checked in BAD below
        parse_key_by(value)


def _route(**fields: Any) -> list[dict[str, Any]]:
    return [{"path": "/pets", **fields}]


def _filters(**fields: Any) -> dict[str, Any]:
    return {"filters": fields}


RL = {"requests": 10, "interval": "1s"}
BAD: list[tuple[dict[str, Any], str, str]] = [
    # top level
    ({"name": "Pets"}, "name", "lowercase"),
    ({"team": "a b"}, "team", "lowercase"),
    ({"bogus": 1}, "bogus", "unknown field"),
    ({"domain": "Pets.example.com"}, "domain", "lower-case"),
    ({"domain": "pets example"}, "domain", "host name"),
    ({"domain": "a.*.example"}, "domain", '"*.example.com"'),
    ({"domain": "*"}, "domain", "host name"),
    ({"domain": "pets.example.com:8080"}, "domain", "host name"),
    ({"domain": 7}, "domain", "valid string"),
    ({"basePath": "v1"}, "basePath", "starts with '/'"),
    ({"basePath": "/v1/"}, "basePath", "does not end with one"),
    ({"basePath": "/"}, "basePath", "does not end with one"),
    ({"basePath": "/v1/{x}"}, "basePath", "literal"),
    ({"basePath": "/v 1"}, "basePath", "invalid segment"),
    ({"upstreams": []}, "upstreams", "at least 1"),
    ({"upstreams": [{"url": f"http://h{i}"} for i in range(65)]}, "upstreams", "at most 64"),
    ({"routes": []}, "routes", "at least 1"),
    ({"routes": [{"path": f"/p{i}"} for i in range(501)]}, "routes", "at most 500"),
    # upstreams, field by field
    ({"upstreams": [{"url": "ftp://x"}]}, "upstreams[0].url", "http:// or https://"),
    ({"upstreams": [{"url": "https://"}]}, "upstreams[0].url", "with a host"),
    ({"upstreams": [{"url": "http://a/api"}]}, "upstreams[0].url", "no path, query"),
    ({"upstreams": [{"url": "http://a?x=1"}]}, "upstreams[0].url", "no path, query"),
    ({"upstreams": [{"url": "http://u:p@a"}]}, "upstreams[0].url", "credentials"),
    ({"upstreams": [{"url": "http://a:99999"}]}, "upstreams[0].url", "not a valid URL"),
    ({"upstreams": [{"url": "http://a_b"}]}, "upstreams[0].url", "not a host name"),
    ({"upstreams": [{"url": "https://a", "tls": False}]}, "upstreams[0].tls", "contradicts"),
    ({"upstreams": [{"url": "http://a", "host": "a", "port": 1}]}, "upstreams[0]", "not both"),
    ({"upstreams": [{"host": "a"}]}, "upstreams[0]", "give url, or host and port"),
    ({"upstreams": [{"host": "a", "port": 0}]}, "upstreams[0].port", "greater than or equal"),
    ({"upstreams": [{"host": "a", "port": "80"}]}, "upstreams[0].port", "valid integer"),
    ({"upstreams": [{"host": "a b", "port": 80}]}, "upstreams[0].host", "IP address or a DNS"),
    ({"upstreams": [{"url": "http://a", "weight": 0}]}, "upstreams[0].weight", "greater than"),
    ({"upstreams": [{"url": "http://a", "weight": 129}]}, "upstreams[0].weight", "less than"),
    ({"upstreams": [{"url": "http://a", "name": "Default"}]}, "upstreams[0].name", "lowercase"),
    ({"upstreams": [{"url": "http://a", "name": "jwks-0"}]}, "upstreams[0].name", "JWKS"),
    ({"upstreams": [{"url": "http://a"}, {"url": "https://b"}]}, "upstreams[1]",
     "mixes TLS and plain"),
    ({"upstreams": [{"url": "https://a"}, {"url": "https://b"}]}, "upstreams[1]", "one SNI"),
    ({"upstreams": [{"url": "http://a"}, {"host": "a", "port": 80}]}, "upstreams[1]", "twice"),
    ({"upstreams": [{"url": "http://a", "name": "x"}]}, "routes[0].upstream",
     "no upstream set 'default'"),
    ({"routes": _route(upstream="nope")}, "routes[0].upstream", "no upstream set 'nope'"),
    # routes, field by field
    ({"routes": [{"path": "pets"}]}, "routes[0].path", "starts with '/'"),
    ({"routes": [{"path": "/a//b"}]}, "routes[0].path", "empty segment"),
    ({"routes": [{"path": "/a b"}]}, "routes[0].path", "invalid segment"),
    ({"routes": [{"path": "/a/x*"}]}, "routes[0].path", "stands alone"),
    ({"routes": [{"path": "/a/{pet-id}"}]}, "routes[0].path", "invalid variable name"),
    ({"routes": [{"path": "/a/{id}{x}"}]}, "routes[0].path", "at most one variable"),
    ({"routes": [{"path": "/a/{id"}]}, "routes[0].path", "unmatched"),
    ({"routes": [{"path": "/{a}/{b}/{c}/{d}/{e}/{f}"}]}, "routes[0].path", "at most 5"),
    ({"routes": [{"path": "/{abcdefghijklmnopq}"}]}, "routes[0].path", "longer than 16"),
    ({"routes": [{"path": "/a/{id}/{id}"}]}, "routes[0].path", "twice"),
    ({"routes": [{"path": "/*/{id}/{id}"}]}, "routes[0].path", "twice"),
    ({"routes": [{"path": ""}]}, "routes[0].path", "at least 1"),
    ({"routes": _route(methods=[])}, "routes[0].methods", "at least 1"),
    ({"routes": _route(methods=["GET", "FETCH"])}, "routes[0].methods[1]", "'GET'"),
    ({"routes": _route(methods=["GET", "POST", "GET"])}, "routes[0].methods[2]", "twice"),
    ({"routes": _route(methods="GET")}, "routes[0].methods", "valid list"),
    ({"routes": _route(timeoutSeconds=0)}, "routes[0].timeoutSeconds", "greater than 0"),
    ({"routes": _route(timeoutSeconds="5")}, "routes[0].timeoutSeconds", "valid number"),
    ({"routes": _route(rewrite="api")}, "routes[0].rewrite", "starting with '/'"),
    ({"routes": _route(rewrite="/api/{id}")}, "routes[0].rewrite", "literal path"),
    ({"routes": [{"path": "/a/{id}", "rewrite": "/b/{x}"}]}, "routes[0].rewrite",
     "does not capture: x"),
    ({"routes": [{"path": "/a/{id}", "rewrite": "/b//{id}"}]}, "routes[0].rewrite", "'//'"),
    ({"routes": [{"path": "/a/*", "rewrite": "/b"}]}, "routes[0].rewrite", "cannot be rewritten"),
    ({"routes": _route(bogus=1)}, "routes[0].bogus", "unknown field"),
    # filters, field by field (API level; the same models at every level)
    (_filters(rateLimit={}), "filters.rateLimit.requests", "required"),
    (_filters(rateLimit={**RL, "requests": 0}), "filters.rateLimit.requests", "greater than"),
    (_filters(rateLimit={**RL, "requests": 2**32}), "filters.rateLimit.requests", "less than"),
    (_filters(rateLimit={**RL, "interval": "2m"}), "filters.rateLimit.interval", "'1s'"),
    (_filters(rateLimit={**RL, "interval": 60}), "filters.rateLimit.interval", "'1s'"),
    (_filters(rateLimit={**RL, "keyBy": "ip"}), "filters.rateLimit.keyBy", "header:<name>"),
    (_filters(rateLimit={**RL, "keyBy": "header:a b"}), "filters.rateLimit.keyBy",
     "not an HTTP header name"),
    (_filters(jwtAuth={"jwksUri": JWKS}), "filters.jwtAuth.issuer", "required"),
    (_filters(jwtAuth={"issuer": "i"}), "filters.jwtAuth.jwksUri", "required"),
    (_filters(jwtAuth={"issuer": "i", "jwksUri": "ftp://x/k"}), "filters.jwtAuth.jwksUri",
     "http:// or https://"),
    (_filters(jwtAuth={"issuer": "i", "jwksUri": JWKS, "audiences": [""]}),
     "filters.jwtAuth.audiences[0]", "at least 1"),
    (_filters(jwtAuth={"issuer": "i", "jwksUri": JWKS, "required": "yes"}),
     "filters.jwtAuth.required", "valid boolean"),
    (_filters(cors={}), "filters.cors.origins", "required"),
    (_filters(cors={"origins": []}), "filters.cors.origins", "at least 1"),
    (_filters(cors={"origins": ["app.example"]}), "filters.cors.origins[0]", "scheme://host"),
    (_filters(cors={"origins": ["https://a.example/"]}), "filters.cors.origins[0]",
     "scheme://host"),
    (_filters(cors={"origins": ["https://a", "*"], "allowCredentials": True}),
     "filters.cors.origins[1]", "allowCredentials"),
    (_filters(cors={"origins": ["*"], "methods": ["GET", "GET"]}), "filters.cors.methods[1]",
     "twice"),
    (_filters(cors={"origins": ["*"], "headers": ["x a"]}), "filters.cors.headers[0]", "pattern"),
    (_filters(cors={"origins": ["*"], "maxAgeSeconds": 86_401}), "filters.cors.maxAgeSeconds",
     "less than"),
    (_filters(bogus={}), "filters.bogus", "unknown field"),
    ({"routes": _route(filters={"rateLimit": {"requests": 1}})},
     "routes[0].filters.rateLimit.interval", "required"),
    # listener
    ({"listener": {"port": 10001}}, "listener.port", "isolated API only"),
    ({"listener": {"filters": {}}}, "listener.filters", "isolated API only"),
    ({"listener": {"isolation": True}}, "listener.port", "needs a port"),
    ({"listener": {"isolation": True, "port": 1, "address": "localhost"}}, "listener.address",
     "IPv4 or IPv6"),
    ({"listener": {"isolation": True, "port": 1, "name": "A"}}, "listener.name", "lowercase"),
    ({"listener": {"isolation": "yes"}}, "listener.isolation", "valid boolean"),
    # generated names must be names
    ({"name": "p" * 250}, "name", "253 characters"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "field", "message"), BAD)
def test_bad_definitions_are_refused_field_by_field(
    fields: dict[str, Any], field: str, message: str
) -> None:
    got = refused(api_body(**fields))
    assert field in got, got
    assert message in got[field], got


def test_every_problem_is_listed_at_once() -> None:
    got = refused(api_body(name="X", domain="Y", routes=[{"path": "x"}, {"path": "/y{"}]))
    assert {"name", "domain", "routes[0].path", "routes[1].path"} <= set(got)


def test_too_many_distinct_jwt_settings() -> None:
    routes = [{"path": f"/p{i}", "filters": {"jwtAuth": {"issuer": f"i{i}", "jwksUri": JWKS}}}
              for i in range(21)]  # fmt: skip
    assert "at most 20 distinct jwtAuth" in refused(api_body(routes=routes))["(body)"]


@pytest.mark.parametrize(
    ("routes", "clashes"),
    [
        ([{"path": "/a", "methods": ["GET"]}, {"path": "/a", "methods": ["GET"]}],
         {"routes[1]": "GET /a is already routes[0]"}),
        # variables are compared by position, not name: /a/{id} and /a/{x} match the same
        ([{"path": "/a/{id}", "methods": ["GET"]}, {"path": "/a/{x}", "methods": ["PUT", "GET"]}],
         {"routes[1]": "GET /a/{x} is already routes[0]"}),
        # no methods = every method
        ([{"path": "/a"}, {"path": "/a", "methods": ["PUT"]}],
         {"routes[1]": "PUT /a is already routes[0]"}),
        ([{"path": "/a", "methods": ["PUT"]}, {"path": "/a"}],
         {"routes[1]": "/a (every method) is already routes[0]"}),
        ([{"path": "/a/*"}, {"path": "/a/{id}"}], {"routes[1]": "is already routes[0]"}),
    ],
)  # fmt: skip
def test_the_same_path_and_method_twice_is_a_conflict(
    routes: list[dict[str, Any]], clashes: dict[str, str]
) -> None:
    with pytest.raises(Conflict) as info:
        parse_api_definition(api_body(routes=routes))
    assert info.value.status == 409
    got = {p.field: p.message for p in info.value.details}
    assert set(got) == set(clashes)
    for field, message in clashes.items():
        assert message in got[field]


def test_different_methods_or_paths_do_not_conflict() -> None:
    api(routes=[
        {"path": "/a", "methods": ["GET"]}, {"path": "/a", "methods": ["POST"]},
        {"path": "/a/", "methods": ["GET"]}, {"path": "/a/{id}"}, {"path": "/a/{id}/b"},
    ])  # fmt: skip
