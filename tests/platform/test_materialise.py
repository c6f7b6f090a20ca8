"""Materialisation (flowplane.platform.materialise): an API definition -> Native bodies that the
Native models accept and translate, deterministically, with the names, routes and filters the
module's contract gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
import re2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2

from flowplane.domain.api_definition import ApiDefinition, parse_api_definition
from flowplane.domain.cluster import Cluster
from flowplane.domain.resources import Kind, parse_spec
from flowplane.platform.materialise import Materialised, materialise
from flowplane.xds.translate import translate_resource
from tests.filters.helpers import hcm_of, unpack
from tests.platform.helpers import API_ID, JWKS, api, api_body
from tests.platform.test_api_definition import FULL

JWT = {"issuer": "https://issuer.example", "jwksUri": JWKS}
CORS = {"origins": ["https://app.example"]}


def _translate_all(m: Materialised) -> None:
    """Every body parses with its Native model and translates (what the config actor does)."""
    for c in m.clusters:
        translate_resource(Kind.CLUSTER, parse_spec(Kind.CLUSTER, c))
    rc = m.route_config or {"name": "default-gateway-routes", "virtualHosts": [m.virtual_host]}
    translate_resource(Kind.ROUTE_CONFIG, parse_spec(Kind.ROUTE_CONFIG, rc))
    if m.listener is not None:
        translate_resource(Kind.LISTENER, parse_spec(Kind.LISTENER, m.listener))


DEFINITIONS: dict[str, dict[str, Any]] = {
    "minimal": api_body(),
    "full, isolated": FULL,
    "everything at every level": api_body(
        team="t1",
        basePath="/v2",
        upstreams=[
            {"url": "https://a.internal"},
            {"url": "https://a.internal:8443", "weight": 3},
            {"name": "ip", "host": "10.1.2.3", "port": 80},
        ],
        routes=[
            {"path": "/", "filters": {"cors": None}},
            {"path": "/a/{id}", "methods": ["GET"], "rewrite": "/b/{id}", "timeoutSeconds": 2.5},
            {
                "path": "/a/{id}",
                "methods": ["PUT"],
                "upstream": "ip",
                "filters": {"jwtAuth": {**JWT, "required": False}, "rateLimit": None},
            },
            {
                "path": "/c/*/d",
                "methods": ["GET", "HEAD"],
                "filters": {"rateLimit": {"requests": 1, "interval": "1h", "keyBy": "client_ip"}},
            },
            {"path": "/e", "methods": ["OPTIONS"], "rewrite": "/f"},
        ],
        filters={
            "rateLimit": {"requests": 9, "interval": "1s"},
            "jwtAuth": JWT,
            "cors": {**CORS, "methods": ["GET"], "allowCredentials": True},
        },
        listener={
            "isolation": True,
            "port": 10002,
            "filters": {
                "rateLimit": {"requests": 99, "interval": "1m"},
                "jwtAuth": {**JWT, "jwksUri": "http://127.0.0.1:9000/k"},
            },
        },
    ),
}


@pytest.mark.parametrize("body", DEFINITIONS.values(), ids=list(DEFINITIONS))
def test_every_body_is_valid_native_and_translates(body: dict[str, Any]) -> None:
    _translate_all(materialise(parse_api_definition(body), api_id=API_ID))


@pytest.mark.parametrize("body", DEFINITIONS.values(), ids=list(DEFINITIONS))
def test_same_input_same_bytes(body: dict[str, Any]) -> None:
    """Deterministic: unchanged resources keep their versions on re-import."""
    once = json.dumps(materialise(parse_api_definition(body), api_id=API_ID).to_json())
    # the same definition again, from its JSON text (as after storage)
    again = parse_api_definition(json.loads(json.dumps(body)))
    assert json.dumps(materialise(again, api_id=API_ID).to_json()) == once


def test_adding_a_route_changes_nothing_else() -> None:
    body = DEFINITIONS["everything at every level"]
    before = materialise(parse_api_definition(body), api_id=API_ID)
    more = {
        **body,
        "routes": [*body["routes"], {"path": "/g", "filters": {"jwtAuth": {**JWT, "issuer": "x"}}}],
    }
    after = materialise(parse_api_definition(more), api_id=API_ID)  # fmt: skip
    assert after.clusters[: len(before.clusters)] == before.clusters
    assert after.listener != before.listener  # the new provider joins the listener's filter
    old = hcm_filters(before.listener)
    new = hcm_filters(after.listener)
    assert {k: v for k, v in new["jwt_authn"]["providers"].items()
            if k in old["jwt_authn"]["providers"]} == old["jwt_authn"]["providers"]  # fmt: skip


def hcm_filters(listener: dict[str, Any] | None) -> dict[str, Any]:
    """The listener's httpFilters by type -> config."""
    assert listener is not None
    hcm = listener["filterChains"][0]["filters"][0]
    return {f["type"]: f.get("config") for f in hcm["httpFilters"]}


def test_names() -> None:
    """base = team.name; cluster per set base.set; JWKS base.jwks-i; vhost, route config and
    listener base (or listener.name)."""
    m = materialise(parse_api_definition(FULL), api_id=API_ID)
    assert [c["name"] for c in m.clusters] == [
        "payments.petstore.default", "payments.petstore.legacy", "payments.petstore.jwks-0",
    ]  # fmt: skip
    assert all(c["team"] == "payments" for c in m.clusters)
    assert m.virtual_host["name"] == "payments.petstore"
    assert m.route_config is not None and m.listener is not None
    assert (m.route_config["name"], m.route_config["team"]) == ("payments.petstore", "payments")
    assert m.route_config["virtualHosts"] == [m.virtual_host]
    assert (m.listener["name"], m.listener["address"], m.listener["port"]) == (
        "pets-edge", "0.0.0.0", 10001,
    )  # fmt: skip
    hcm = m.listener["filterChains"][0]["filters"][0]
    assert hcm["routeConfigName"] == "payments.petstore"
    shared = materialise(api(), api_id=API_ID)
    assert (shared.route_config, shared.listener) == (None, None)
    assert "team" not in shared.clusters[0]
    assert shared.virtual_host["name"] == "petstore"


def test_isolated_listener_defaults() -> None:
    m = materialise(api(listener={"isolation": True, "port": 10009}), api_id=API_ID)
    assert m.listener is not None
    assert (m.listener["name"], m.listener["address"]) == ("petstore", "0.0.0.0")


def test_domains_include_any_port_except_for_wildcards() -> None:
    assert materialise(api(), api_id=API_ID).virtual_host["domains"] == [
        "petstore.example.com", "petstore.example.com:*",
    ]  # fmt: skip
    wild = materialise(api(domain="*.example.com"), api_id=API_ID)
    assert wild.virtual_host["domains"] == ["*.example.com"]


def _cluster_model(body: dict[str, Any]) -> Cluster:
    model = parse_spec(Kind.CLUSTER, body)
    assert isinstance(model, Cluster)
    return model


def test_clusters_one_per_set_with_weights_tls_and_discovery() -> None:
    a = api(upstreams=[
        {"url": "https://pets.internal:8443", "weight": 2},
        {"name": "default", "host": "10.0.0.8", "port": 8443, "tls": True, "weight": 5},
        {"name": "ips", "host": "10.0.0.7", "port": 8080},
        {"name": "ips", "url": "http://10.0.0.9"},
        {"name": "dns", "url": "http://a.internal"},
        {"name": "dns", "url": "http://b.internal"},
    ], routes=[{"path": "/"}])  # fmt: skip
    default, ips, dns = materialise(a, api_id=API_ID).clusters
    assert default == {
        "name": "petstore.default",
        "endpoints": [{"host": "pets.internal", "port": 8443, "weight": 2},
                      {"host": "10.0.0.8", "port": 8443, "weight": 5}],
        "tls": {"enabled": True, "sni": "pets.internal"},  # https -> TLS with SNI
    }  # fmt: skip
    assert ips == {"name": "petstore.ips", "endpoints": [{"host": "10.0.0.7", "port": 8080},
                                                         {"host": "10.0.0.9", "port": 80}]}  # fmt: skip
    # the Native model decides the discovery type: IPs -> STATIC, host names -> DNS
    assert _cluster_model(ips).discovery_type == "STATIC"
    assert _cluster_model(dns).discovery_type == "STRICT_DNS"
    tls_ip = materialise(api(upstreams=[{"url": "https://10.0.0.1"}]), api_id=API_ID).clusters[0]
    assert tls_ip["tls"] == {"enabled": True}  # no SNI for an IP address


def _routes(a: ApiDefinition) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = materialise(a, api_id=API_ID).virtual_host["routes"]
    return routes


def test_a_route_becomes_a_native_route() -> None:
    a = api(basePath="/v1", upstreams=[{"url": "http://a"}, {"name": "b", "url": "http://b"}],
            routes=[{"path": "/pets/{id}", "methods": ["GET", "DELETE"], "upstream": "b",
                     "timeoutSeconds": 15, "rewrite": "/api/pets/{id}"},
                    {"path": "/static", "rewrite": "/assets", "timeoutSeconds": 0.5}])  # fmt: skip
    assert _routes(a) == [
        {"name": "GET,DELETE /v1/pets/{id}",
         "match": {"path": {"type": "template", "value": "/v1/pets/{id}"},
                   "methods": ["GET", "DELETE"]},
         "action": {"type": "forward", "cluster": "petstore.b", "timeoutSeconds": 15,
                    "templateRewrite": "/api/pets/{id}"}},
        {"name": "* /v1/static",
         "match": {"path": {"type": "prefix", "value": "/v1/static"}},
         "action": {"type": "forward", "cluster": "petstore.default", "timeoutSeconds": 0.5,
                    "prefixRewrite": "/assets"}},
    ]  # fmt: skip


def test_methods_with_the_same_settings_share_a_route_and_others_do_not() -> None:
    """One route per path when methods share settings; separate routes when settings differ."""
    a = api(routes=[
        {"path": "/pets", "methods": ["GET"]},
        {"path": "/pets", "methods": ["POST"], "timeoutSeconds": 3},
        {"path": "/pets", "methods": ["HEAD"]},
    ])  # fmt: skip
    routes = _routes(a)
    assert [(r["match"].get("methods"), r["action"].get("timeoutSeconds")) for r in routes] == [
        (["GET", "HEAD"], None), (["POST"], 3),
    ]  # fmt: skip


def _envoy_pick(routes: list[dict[str, Any]], path: str) -> str | None:
    """The name of the first route whose path matches `path`, as Envoy picks (prefix: string
    prefix; template: each variable one segment of literal characters; regex: full match)."""
    for r in routes:
        kind, value = r["match"]["path"]["type"], r["match"]["path"]["value"]
        if kind == "prefix":
            hit = path.startswith(value)
        elif kind == "regex":
            hit = re2.fullmatch(value, path) is not None
        else:
            regex = "".join(
                "[A-Za-z0-9._~%!$&'()+,;:@=-]+" if part.startswith("{") else re2.escape(part)
                for part in re2.split(r"(\{[^}]*\})", value)
                if part
            )
            hit = re2.fullmatch(regex, path) is not None
        if hit:
            return str(r["name"]).split(" ", 1)[1]
    return None


def test_routes_are_ordered_most_specific_first() -> None:
    """Envoy takes the first match: more segments first, literal before variable, a trailing '/'
    last, then definition order."""
    a = api(routes=[{"path": p} for p in [
        "/", "/pets", "/pets/", "/pets/{id}", "/pets/mine", "/pets/{id}/toys", "/pets/*/toys/{t}",
        "/pets/{id}.json", "/users",
    ]])  # fmt: skip
    routes = _routes(a)
    assert [r["name"].split(" ", 1)[1] for r in routes] == [
        "/pets/*/toys/{t}", "/pets/{id}/toys", "/pets/mine", "/pets/{id}.json", "/pets/{id}",
        "/pets/", "/pets", "/users", "/",
    ]  # fmt: skip
    expected = {
        "/pets/1/toys/2": "/pets/*/toys/{t}", "/pets/1/toys": "/pets/{id}/toys",
        "/pets/mine": "/pets/mine", "/pets/42": "/pets/{id}", "/pets/42.json": "/pets/{id}.json",
        "/pets/42/x": "/pets/", "/pets": "/pets", "/users/7": "/users", "/other": "/",
    }  # fmt: skip
    assert {p: _envoy_pick(routes, p) for p in expected} == expected


def _filters_of(routes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r.get("filters", {}) for r in routes if not r["name"].startswith("pre")}


def test_api_filters_apply_to_every_route_and_route_entries_replace_them() -> None:
    a = api(routes=[
        {"path": "/a"},
        {"path": "/b", "filters": {"rateLimit": None, "cors": {"origins": ["*"]}}},
        {"path": "/c", "filters": {"rateLimit": {"requests": 1, "interval": "1h",
                                                 "keyBy": "header:X-Key"}}},
    ], filters={"rateLimit": {"requests": 5, "interval": "1s"}, "cors": CORS})  # fmt: skip
    got = _filters_of(_routes(a))
    own_bucket = {"tokenBucket": {"maxTokens": 5, "tokensPerFill": 5, "fillIntervalSeconds": 1},
                  "statPrefix": "petstore"}  # fmt: skip
    app = {"origins": [{"exact": "https://app.example"}], "allowCredentials": False}
    assert got["* /a"] == {"cors": app, "local_rate_limit": own_bucket}
    # explicit null: none here; cors replaced (not merged) by the route's own policy
    assert got["* /b"] == {"cors": {"origins": [{"exact": "*"}], "allowCredentials": False}}
    assert got["* /c"]["local_rate_limit"] == {
        "tokenBucket": {"maxTokens": 1, "tokensPerFill": 1, "fillIntervalSeconds": 3600},
        "statPrefix": "petstore", "keyBy": {"header": "x-key"},
    }  # fmt: skip


def test_listener_rate_limit_is_one_bucket_and_null_disables_it() -> None:
    a = api(routes=[{"path": "/a"}, {"path": "/b", "filters": {"rateLimit": None}},
                    {"path": "/c", "filters": {"rateLimit": {"requests": 1, "interval": "1s"}}}],
            listener={"isolation": True, "port": 10001,
                      "filters": {"rateLimit": {"requests": 50, "interval": "1s",
                                                "keyBy": "client_ip"}}})  # fmt: skip
    m = materialise(a, api_id=API_ID)
    got = _filters_of(m.virtual_host["routes"])
    assert "local_rate_limit" not in got["* /a"]  # the listener's bucket applies
    assert got["* /b"] == {"local_rate_limit": {"disabled": True}}
    assert got["* /c"]["local_rate_limit"]["tokenBucket"]["maxTokens"] == 1
    assert hcm_filters(m.listener)["local_rate_limit"] == {
        "tokenBucket": {"maxTokens": 50, "tokensPerFill": 50, "fillIntervalSeconds": 1},
        "statPrefix": "petstore.listener", "keyBy": {"clientIp": True},
    }  # fmt: skip


def test_isolated_listener_chain_and_its_translation() -> None:
    m = materialise(api(filters={"jwtAuth": JWT}, listener={"isolation": True, "port": 10001}),
                    api_id=API_ID)  # fmt: skip
    assert m.listener is not None
    assert list(hcm_filters(m.listener)) == ["cors", "jwt_authn", "local_rate_limit", "router"]
    assert hcm_filters(m.listener)["local_rate_limit"] == {"tokenBucket": None}
    lst = parse_spec(Kind.LISTENER, m.listener)
    [(_, _, pb)] = translate_resource(Kind.LISTENER, lst)
    hcm = hcm_of(pb)  # type: ignore[arg-type]
    lrl = unpack(hcm.http_filters[2].typed_config, lrl_pb2.LocalRateLimit)
    assert not lrl.HasField("token_bucket")  # enforces nothing at listener level
    no_jwt = materialise(api(listener={"isolation": True, "port": 10001}), api_id=API_ID)
    assert list(hcm_filters(no_jwt.listener)) == ["cors", "local_rate_limit", "router"]


def test_jwt_providers_requirements_and_jwks_clusters() -> None:
    other = {"issuer": "https://other.example", "jwksUri": "http://keys.internal:8080/jwks"}
    a = api(routes=[
        {"path": "/a"},
        {"path": "/b", "filters": {"jwtAuth": {**JWT, "required": False}}},
        {"path": "/c", "filters": {"jwtAuth": other}},
        {"path": "/d", "filters": {"jwtAuth": None}},
    ], filters={"jwtAuth": {**JWT, "audiences": ["pets"]}},
       listener={"isolation": True, "port": 10001})  # fmt: skip
    m = materialise(a, api_id=API_ID)
    jwt = hcm_filters(m.listener)["jwt_authn"]
    p0, p1, p2 = (f"{API_ID}.{i}" for i in range(3))
    assert jwt == {
        "providers": {
            p0: {"issuer": "https://issuer.example", "audiences": ["pets"],
                 "remoteJwks": {"uri": JWKS, "cluster": "petstore.jwks-0"}, "forward": True},
            p1: {"issuer": "https://issuer.example",
                 "remoteJwks": {"uri": JWKS, "cluster": "petstore.jwks-0"}, "forward": True},
            p2: {"issuer": "https://other.example",
                 "remoteJwks": {"uri": other["jwksUri"], "cluster": "petstore.jwks-1"},
                 "forward": True},
        },
        "requirementMap": {
            p0: {"provider": p0},
            p1: {"requiresAny": [{"provider": p1}, {"allowMissing": True}]},  # required: false
            p2: {"provider": p2},
        },
    }  # fmt: skip
    got = _filters_of(m.virtual_host["routes"])
    assert [got[f"* /{x}"].get("jwt_authn") for x in "abcd"] == [
        {"requirementName": p0}, {"requirementName": p1}, {"requirementName": p2}, None,
    ]  # fmt: skip
    jwks = [c for c in m.clusters if ".jwks-" in c["name"]]
    assert jwks == [
        {"name": "petstore.jwks-0", "endpoints": [{"host": "issuer.example", "port": 443}],
         "tls": {"enabled": True, "sni": "issuer.example"}},
        {"name": "petstore.jwks-1", "endpoints": [{"host": "keys.internal", "port": 8080}]},
    ]  # fmt: skip


def test_cors_routes_with_methods_get_a_preflight_route() -> None:
    a = api(routes=[{"path": "/a", "methods": ["GET", "PUT"]}, {"path": "/b"},
                    {"path": "/c", "methods": ["GET"], "filters": {"cors": None}},
                    {"path": "/d", "methods": ["OPTIONS", "GET"]}],
            filters={"cors": {**CORS, "methods": ["GET", "PUT"]}})  # fmt: skip
    routes = _routes(a)
    names = [r["name"] for r in routes]
    # /b has every method (OPTIONS too), /c has no CORS, /d routes OPTIONS itself
    assert names == ["preflight OPTIONS /a", "GET,PUT /a", "* /b", "GET /c", "OPTIONS,GET /d"]
    pre = routes[0]
    assert pre["match"] == {
        "path": {"type": "prefix", "value": "/a"},
        "headers": [{"name": "access-control-request-method", "regex": "^(GET|PUT)$"}],
        "methods": ["OPTIONS"],
    }  # fmt: skip
    assert pre["action"] == routes[1]["action"]
    assert pre["filters"] == {"cors": routes[1]["filters"]["cors"]}


def test_bad_api_ids_are_refused() -> None:
    for bad in ("", "Upper", "a.b", "x" * 57):
        with pytest.raises(ValueError, match="API id"):
            materialise(api(), api_id=bad)


def test_a_cors_policy_without_methods_allows_the_routes_methods() -> None:
    """Else a browser could not preflight a PUT (Envoy would allow no method by name)."""
    a = api(routes=[{"path": "/a", "methods": ["PUT"]}, {"path": "/b", "methods": ["GET"]},
                    {"path": "/b", "methods": ["HEAD"]}, {"path": "/c"}],
            filters={"cors": CORS})  # fmt: skip
    routes = {r["name"]: r for r in _routes(a)}
    assert routes["PUT /a"]["filters"]["cors"]["methods"] == ["PUT"]
    assert routes["preflight OPTIONS /a"]["filters"]["cors"]["methods"] == ["PUT"]
    assert routes["GET,HEAD /b"]["filters"]["cors"]["methods"] == ["GET", "HEAD"]
    assert "methods" not in routes["* /c"]["filters"]["cors"]  # every method: Envoy's default
