"""OpenAPI import (api.md "OpenAPI import"): a document in, the API definition JSON out.

Each test quotes the rule it checks. Hostile documents and limits: test_openapi_hostile.py."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from flowplane.errors import BadRequest, UnsupportedMediaType
from flowplane.platform.openapi import ImportLimits
from tests.platform.openapi_helpers import data, doc, op, refusal, refused, run

pytestmark = pytest.mark.usefixtures("no_network")  # the import never fetches anything

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# --- real documents (tests/platform/data/openapi/README.md) -----------------------------------


def _origin_and_path(server: dict[str, Any]) -> tuple[str, str]:
    variables = server.get("variables", {})
    url = re.sub(r"\{([^}]*)\}", lambda m: variables[m.group(1)]["default"], server["url"])
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def expected_operations(
    document: dict[str, Any],
) -> dict[tuple[str, str], tuple[frozenset[str], str]]:
    """What OpenAPI says each operation is: (its path with the variable names and any #fragment
    left out, its METHOD) -> (the origins of the servers that serve it, their path). The
    servers of an operation are its own, else its path item's, else the document's."""
    out = {}
    for path, item in document["paths"].items():
        key = re.sub(r"\{[^}]*\}", "{}", path.split("#")[0])
        for method in METHODS:
            if method in item:
                servers = item[method].get("servers") or item.get("servers") or document["servers"]
                origins = frozenset(_origin_and_path(s)[0] for s in servers)
                out[(key, method.upper())] = (origins, _origin_and_path(servers[0])[1])
    return out


def check_against_document(document: dict[str, Any], definition: dict[str, Any]) -> None:
    """Every operation of the document is routed exactly once, to its own servers, under its
    path; operations of one path that go to the same place share a route."""
    sets: dict[str, set[str]] = defaultdict(set)
    for upstream in definition["upstreams"]:
        sets[upstream["name"]].add(upstream["url"])
    base = definition.get("basePath", "")
    routed: dict[tuple[str, str], dict[str, Any]] = {}
    for route in definition["routes"]:
        for method in route["methods"]:
            key = (re.sub(r"\{[^}]*\}", "{}", route["path"]), method)
            assert key not in routed, f"{key} routed twice (a 409 for the definition)"
            routed[key] = route
    expected = expected_operations(document)
    assert routed.keys() == expected.keys()
    for key, (origins, path) in expected.items():
        route = routed[key]
        assert sets[route.get("upstream", "default")] == origins, key
        assert route.get("rewrite") == (None if path == base else path + route["path"]), key
    assert len(definition["routes"]) == len({(k[0], v) for k, v in expected.items()})


REAL = [
    ("petstore.yaml", "application/yaml"),
    ("petstore.json", "application/json"),
    ("museum-api.yaml", "text/yaml"),
    ("box-openapi.json.gz", "application/json"),
]


@pytest.mark.parametrize(("name", "content_type"), REAL)
def test_real_documents_import_with_every_operation_routed(name: str, content_type: str) -> None:
    body = data(name)
    document = yaml.safe_load(body)  # the test's own reading of the document (JSON is YAML)
    result = run(body, content_type)
    check_against_document(document, result.definition)
    assert len(result.route_sources) == len(result.definition["routes"])


def test_petstore_3_0() -> None:
    """`domain` = the host of the first server; `basePath` = its path; `name` from the title;
    `http` -> an http upstream (no TLS)."""
    d = run(data("petstore.yaml"), "application/yaml").definition
    assert {k: v for k, v in d.items() if k != "routes"} == {
        "name": "swagger-petstore",
        "team": None,
        "domain": "petstore.swagger.io",
        "basePath": "/v1",
        "upstreams": [{"name": "default", "url": "http://petstore.swagger.io"}],
    }
    assert routes_shape(d["routes"]) == [
        {"path": "/pets", "methods": ["GET", "POST"]},
        {"path": "/pets/{petId}", "methods": ["GET"]},
    ]


def test_petstore_yaml_and_json_give_the_same_definition() -> None:
    assert run(data("petstore.yaml"), "application/x-yaml") == run(data("petstore.json"))


def test_museum_3_1_webhooks_and_security_are_warned_about() -> None:
    result = run(data("museum-api.yaml"), "application/yaml")
    assert result.definition["basePath"] == "/_mock/docs/openapi/museum-api"
    assert result.definition["domain"] == "redocly.com"
    assert any(w.startswith("/webhooks:") for w in result.warnings)
    assert any("security requirements are not enforced" in w for w in result.warnings)


def test_box_operations_on_other_servers_get_their_own_upstream_sets_and_rewrites() -> None:
    """Operation-level servers: other hosts -> an upstream set of their own; another path than
    the basePath -> the route's rewrite (checked for every operation by the test above)."""
    body = data("box-openapi.json.gz")
    document = json.loads(body)
    operations = sum(1 for item in document["paths"].values() for m in item if m in METHODS)
    assert operations >= 250  # hundreds of operations
    d = run(body).definition
    assert d["domain"] == "api.box.com" and d["basePath"] == "/2.0"
    assert {u["name"] for u in d["upstreams"]} == {"default", "servers-1", "servers-2", "servers-3"}
    assert any(r.get("rewrite") for r in d["routes"])


# --- servers ----------------------------------------------------------------------------------


def test_server_variables_take_their_defaults() -> None:
    servers = [
        {
            "url": "{scheme}://{region}.pets.example.com:{port}/{version}",
            "variables": {
                "scheme": {"default": "https", "enum": ["https", "http"]},
                "region": {"default": "eu"},
                "port": {"default": "8443"},
                "version": {"default": "v2"},
            },
        }
    ]
    d = run(doc(servers=servers)).definition
    assert d["upstreams"] == [{"name": "default", "url": "https://eu.pets.example.com:8443"}]
    assert d["domain"] == "eu.pets.example.com"
    assert d["basePath"] == "/v2"


def test_all_servers_become_upstreams_of_the_default_set() -> None:
    """`servers` -> upstreams; `https` -> TLS (the url's scheme); hosts are lower-cased."""
    servers = [{"url": "https://A.pets.example.com/v1/"}, {"url": "https://[2001:db8::1]:8443/v1"}]
    d = run(doc(servers=servers)).definition
    assert d["upstreams"] == [
        {"name": "default", "url": "https://a.pets.example.com"},
        {"name": "default", "url": "https://[2001:db8::1]:8443"},
    ]
    assert d["domain"] == "a.pets.example.com" and d["basePath"] == "/v1"


def test_a_server_at_the_root_means_no_base_path() -> None:
    assert "basePath" not in run(doc(servers=[{"url": "http://pets.example.com/"}])).definition


def test_servers_must_share_a_scheme() -> None:
    servers = [{"url": "https://a.example.com"}, {"url": "http://b.example.com"}]
    assert refused(doc(servers=servers)) == {
        "/servers": "servers mix http and https: all must share a scheme"
    }


def test_servers_must_share_a_path() -> None:
    servers = [{"url": "https://a.example.com/v1"}, {"url": "https://b.example.com/v2"}]
    assert list(refused(doc(servers=servers))) == ["/servers/1/url"]


@pytest.mark.parametrize(
    "servers",
    [
        None,
        [],
        [{"url": "/v1"}],
        [{"url": "//pets.example.com/v1"}],
        [{"url": "wss://x.example.com"}],
    ],
)
def test_no_absolute_http_server_is_refused(servers: list[dict[str, str]] | None) -> None:
    """A relative URL is relative to wherever the document is served: no upstream to route to."""
    document = doc(servers=servers)
    if servers is None:
        del document["servers"]
    problems = refused(document)
    assert list(problems) == ["/servers"] and "absolute http:// or https://" in problems["/servers"]


def test_relative_and_non_http_servers_are_skipped_with_a_warning() -> None:
    servers = [
        {"url": "/v1"},
        {"url": "wss://ws.example.com"},
        {"url": "https://pets.example.com/v1"},
    ]
    result = run(doc(servers=servers))
    assert result.definition["upstreams"] == [
        {"name": "default", "url": "https://pets.example.com"}
    ]
    assert [w.split(":")[0] for w in result.warnings] == ["/servers/0/url", "/servers/1/url"]


def test_a_server_twice_is_one_upstream() -> None:
    servers = [{"url": "https://pets.example.com/v1"}, {"url": "https://pets.example.com:443/v1/"}]
    result = run(doc(servers=servers))
    assert len(result.definition["upstreams"]) == 1
    assert result.warnings == ["/servers/1: the same upstream as /servers/0; used once"]


def test_https_servers_on_other_host_names_are_skipped() -> None:
    """A TLS upstream set sends one SNI, so it has one host name (IP addresses may join it);
    servers are mostly alternatives (production, sandbox): the first one's host is the API's."""
    servers = [
        {"url": "https://api.example.com/v1"},
        {"url": "https://sandbox.example.com/v1"},
        {"url": "https://api.example.com:8443/v1"},
        {"url": "https://10.0.0.7/v1"},
    ]
    result = run(doc(servers=servers))
    assert [u["url"] for u in result.definition["upstreams"]] == [
        "https://api.example.com", "https://api.example.com:8443", "https://10.0.0.7",
    ]  # fmt: skip
    assert [w.split(":")[0] for w in result.warnings] == ["/servers/1"]


def test_http_servers_on_other_host_names_share_the_set() -> None:
    servers = [{"url": "http://a.example.com"}, {"url": "http://b.example.com"}]
    assert len(run(doc(servers=servers)).definition["upstreams"]) == 2


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://{region}.example.com", "variable(s) {region}, not defined"),
        ("https://user:pw@pets.example.com", "no user, query or fragment"),
        ("https://pets.example.com/v1?x=1", "no user, query or fragment"),
        ("https://pets.example.com:99999", "not a valid URL"),
        ("https://pets_example!.com", "no valid host"),
        ("https://pets.example.com/a b", "the path must be literal"),
        ("https://pets.example.com/v*", "the path must be literal"),
    ],
)
def test_bad_server_urls_are_refused_at_their_url(url: str, why: str) -> None:
    problems = refused(doc(servers=[{"url": url}]))
    assert why in problems["/servers/0/url"]


def test_domain_is_the_option_else_the_first_server_host() -> None:
    assert run(doc(), domain="api.example.org").definition["domain"] == "api.example.org"
    assert run(doc()).definition["domain"] == "pets.example.com"


def test_an_ip_address_is_not_a_domain() -> None:
    document = doc(servers=[{"url": "http://10.0.0.7:8080"}])
    assert "not a domain" in refused(document)["/servers/0/url"]
    d = run(document, domain="pets.internal.example").definition
    assert d["upstreams"] == [{"name": "default", "url": "http://10.0.0.7:8080"}]


# --- options ----------------------------------------------------------------------------------


def test_options_are_checked_by_name() -> None:
    problems = refused(doc(), name="Pets!", team="A Team", domain="Pets.Example.com", port=80)
    assert set(problems) == {"name", "team", "domain", "port"}


def test_listener_isolation_with_a_port() -> None:
    assert "listener" not in run(doc()).definition
    assert refused(doc(), isolation=True) == {"port": "an isolated API's listener needs a port"}
    d = run(doc(), isolation=True, port=10001, team="payments", name="pets").definition
    assert d["listener"] == {"isolation": True, "port": 10001}
    assert (d["name"], d["team"]) == ("pets", "payments")


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Swagger Petstore", "swagger-petstore"),
        ("  Ünïcødé — API v2.1!  ", "unicde-api-v2.1"),
        ("payments.internal", "payments.internal"),
        ("A -- B", "a-b"),
    ],
)
def test_name_is_made_from_the_title(title: str, name: str) -> None:
    """NFKD then ASCII: 'ø' has no ASCII decomposition and is dropped."""
    document = doc(info={"title": title, "version": "1"})
    assert run(document).definition["name"] == name


def test_a_title_without_letters_or_digits_needs_the_name_option() -> None:
    document = doc(info={"title": "☃ ☃", "version": "1"})
    assert "pass the name option" in refused(document)["/info/title"]
    assert run(document, name="snowman").definition["name"] == "snowman"


# --- paths and routes -------------------------------------------------------------------------


def test_operations_of_a_path_share_a_route_only_with_equal_settings() -> None:
    limit = {"requests": 5, "interval": "1s"}
    paths = {
        "/pets/{id}": {
            "parameters": [_path_param("id")],
            "get": op(),
            "head": op(),
            "put": op(**{"x-flowplane-ratelimit": limit}),
            "delete": op(**{"x-flowplane-ratelimit": limit}),
            "patch": op(**{"x-flowplane-ratelimit": None}),
        }
    }
    assert routes_shape(run(doc(paths=paths)).definition["routes"]) == [
        {"path": "/pets/{id}", "methods": ["GET", "HEAD"]},
        {"path": "/pets/{id}", "methods": ["PUT", "DELETE"], "filters": {"rateLimit": limit}},
        {"path": "/pets/{id}", "methods": ["PATCH"], "filters": {"rateLimit": None}},
    ]


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def test_fragments_and_queries_in_paths_are_not_part_of_the_request_path() -> None:
    """Variants of one request documented as separate paths share the route (with warnings)."""
    paths = {
        "/files/{file_id}": {"get": op(parameters=[_path_param("file_id")])},
        "/files/{file_id}#shared_link": {"get": op(parameters=[_path_param("file_id")])},
        "/search?type=pets": {"get": op()},
    }
    result = run(doc(paths=paths))
    assert routes_shape(result.definition["routes"]) == [
        {"path": "/files/{file_id}", "methods": ["GET"]},
        {"path": "/search", "methods": ["GET"]},
    ]
    assert len(result.warnings) == 3


def test_variants_with_different_settings_are_refused() -> None:
    """A router cannot tell apart two requests that differ only by what it never sees."""
    paths = {
        "/files": {"put": op()},
        "/files#lock": {"put": op(**{"x-flowplane-ratelimit": {"requests": 1, "interval": "1m"}})},
    }
    problems = refused(doc(paths=paths))
    assert list(problems) == ["/paths/~1files#lock/put"]
    assert "/paths/~1files/put" in problems["/paths/~1files#lock/put"]


def test_paths_differing_only_in_variable_names_are_one_route() -> None:
    paths = {
        "/pets/{id}": {"get": op(parameters=[_path_param("id")])},
        "/pets/{name}": {"delete": op(parameters=[_path_param("name")])},
    }
    result = run(doc(paths=paths))
    assert routes_shape(result.definition["routes"]) == [
        {"path": "/pets/{id}", "methods": ["GET", "DELETE"]}
    ]
    assert result.warnings[0].startswith("/paths/~1pets~1{name} is the same route as")


@pytest.mark.parametrize(
    "path", ["/pets/{}", "/pets/{id", "/pets/{a/b}", "/pets/a b", "/pets/{{id}}"]
)
def test_malformed_paths_are_refused(path: str) -> None:
    assert list(refused(doc(paths={path: {"get": op()}}))) == ["/paths/" + path.replace("/", "~1")]


def test_a_path_item_reference_is_followed() -> None:
    """3.1 `components/pathItems`; the extension's pointer is where the item really is."""
    document = doc(
        openapi="3.1.0",
        paths={"/pets": {"$ref": "#/components/pathItems/Pets"}},
        components={
            "pathItems": {
                "Pets": {"get": op(**{"x-flowplane-ratelimit": {"requests": 0, "interval": "1s"}})}
            }
        },
    )
    assert list(refused(document)) == [
        "/components/pathItems/Pets/get/x-flowplane-ratelimit/requests"
    ]
    document["components"]["pathItems"]["Pets"]["get"]["x-flowplane-ratelimit"]["requests"] = 3
    result = run(document)
    assert routes_shape(result.definition["routes"]) == [
        {
            "path": "/pets",
            "methods": ["GET"],
            "filters": {"rateLimit": {"requests": 3, "interval": "1s"}},
        }
    ]
    assert result.route_sources == ["/components/pathItems/Pets"]


def test_operation_and_path_item_servers() -> None:
    """Other hosts -> an upstream set of their own; another path -> `rewrite`; an operation's
    servers win over its path item's; the document's own servers -> the default set."""
    upload = [{"url": "https://upload.example.com/api/v1"}]
    paths = {
        "/files": {
            "servers": upload,
            "post": op(),
            "get": op(servers=[{"url": "https://pets.example.com/v1"}]),
        },
        "/token": {"post": op(servers=[{"url": "https://pets.example.com/oauth"}])},
        "/blobs": {"put": op(servers=upload)},
    }
    d = run(doc(paths=paths)).definition
    assert d["upstreams"] == [
        {"name": "default", "url": "https://pets.example.com"},
        {"name": "servers-1", "url": "https://upload.example.com"},
    ]
    assert routes_shape(d["routes"]) == [
        {
            "path": "/files",
            "methods": ["POST"],
            "upstream": "servers-1",
            "rewrite": "/api/v1/files",
        },
        {"path": "/files", "methods": ["GET"]},
        {"path": "/token", "methods": ["POST"], "rewrite": "/oauth/token"},
        {"path": "/blobs", "methods": ["PUT"], "upstream": "servers-1", "rewrite": "/api/v1/blobs"},
    ]


def test_an_operation_server_set_must_share_a_scheme() -> None:
    servers = [{"url": "https://a.example.com"}, {"url": "http://b.example.com"}]
    paths = {"/pets": {"get": op(servers=servers)}}
    assert list(refused(doc(paths=paths))) == ["/paths/~1pets/get/servers"]


def test_a_document_without_operations_is_refused() -> None:
    """A 3.1 document may hold webhooks only: nothing to route."""
    document = yaml.safe_load(data("museum-api.yaml"))
    document["paths"] = {}
    assert "nothing to route" in refused(document)["/paths"]


def test_more_routes_than_an_api_may_have_are_refused() -> None:
    paths = {f"/p{i}": {"get": op()} for i in range(4)}
    problems = refused(doc(paths=paths), limits=ImportLimits(max_routes=3))
    assert problems == {"/paths": "makes 4 routes; an API has at most 3"}


# --- extensions -------------------------------------------------------------------------------

RATE = {"requests": 100, "interval": "1m", "keyBy": "header:x-api-key"}
JWT = {
    "issuer": "https://issuer.example",
    "audiences": ["pets"],
    "jwksUri": "https://issuer.example/.well-known/jwks.json",
    "required": False,
}
CORS = {
    "origins": ["https://app.example", "https://*.example.org:8443"],
    "methods": ["GET", "POST"],
    "headers": ["x-a"],
    "exposeHeaders": ["x-request-id"],
    "allowCredentials": True,
    "maxAgeSeconds": 600,
}
EXTENSIONS = [
    ("x-flowplane-ratelimit", "rateLimit", RATE),
    ("x-flowplane-jwt-auth", "jwtAuth", JWT),
    ("x-flowplane-cors", "cors", CORS),
]


@pytest.mark.parametrize(("key", "filter_key", "payload"), EXTENSIONS)
def test_document_level_extension_becomes_an_api_filter(
    key: str, filter_key: str, payload: dict[str, Any]
) -> None:
    d = run(doc(**{key: payload})).definition
    assert d["filters"] == {filter_key: payload}
    assert routes_shape(d["routes"]) == [{"path": "/pets", "methods": ["GET"]}]


@pytest.mark.parametrize(("key", "filter_key", "payload"), EXTENSIONS)
def test_operation_level_extension_becomes_a_route_filter(
    key: str, filter_key: str, payload: dict[str, Any]
) -> None:
    d = run(doc(paths={"/pets": {"get": op(**{key: payload}), "post": op()}})).definition
    assert "filters" not in d
    assert routes_shape(d["routes"]) == [
        {"path": "/pets", "methods": ["GET"], "filters": {filter_key: payload}},
        {"path": "/pets", "methods": ["POST"]},
    ]


@pytest.mark.parametrize(("key", "filter_key", "payload"), EXTENSIONS)
def test_path_item_level_extension_applies_to_each_operation_of_the_path(
    key: str, filter_key: str, payload: dict[str, Any]
) -> None:
    paths = {"/pets": {key: payload, "get": op(), "post": op()}, "/toys": {"get": op()}}
    assert routes_shape(run(doc(paths=paths)).definition["routes"]) == [
        {"path": "/pets", "methods": ["GET", "POST"], "filters": {filter_key: payload}},
        {"path": "/toys", "methods": ["GET"]},
    ]


def test_operation_overrides_path_item_per_key_and_null_disables() -> None:
    """Operation level overrides the document (and the path item) per filter; an explicit null
    at route level = this route has none; a null at the document level is no filter."""
    slow = {"requests": 1, "interval": "1h"}
    document = doc(
        **{"x-flowplane-ratelimit": RATE, "x-flowplane-cors": None},
        paths={
            "/pets": {
                "x-flowplane-ratelimit": slow,
                "x-flowplane-jwt-auth": JWT,
                "get": op(**{"x-flowplane-ratelimit": None}),
                "post": op(**{"x-flowplane-jwt-auth": {**JWT, "required": True}}),
            }
        },
    )
    d = run(document).definition
    assert d["filters"] == {"rateLimit": RATE}
    assert routes_shape(d["routes"]) == [
        {"path": "/pets", "methods": ["GET"], "filters": {"rateLimit": None, "jwtAuth": JWT}},
        {
            "path": "/pets",
            "methods": ["POST"],
            "filters": {"rateLimit": slow, "jwtAuth": {**JWT, "required": True}},
        },
    ]


def test_extension_payloads_are_copied_as_written() -> None:
    """Defaults are not filled in: the definition gets exactly what the author wrote."""
    minimal = {"requests": 1, "interval": "1s"}
    assert run(doc(**{"x-flowplane-ratelimit": minimal})).definition["filters"] == {
        "rateLimit": minimal
    }


@pytest.mark.parametrize(
    ("key", "payload", "field", "message"),
    [
        ("x-flowplane-ratelimit", {"requests": 5, "interval": "2m"}, "/interval", "'1s', '1m' or '1h'"),
        ("x-flowplane-ratelimit", {"interval": "1s"}, "/requests", "Field required"),
        ("x-flowplane-ratelimit", {"requests": "5", "interval": "1s"}, "/requests", "valid integer"),
        ("x-flowplane-ratelimit", {"requests": 0, "interval": "1s"}, "/requests", "greater than or equal to 1"),
        ("x-flowplane-ratelimit", {"requests": 5, "interval": "1s", "keyBy": "cookie:a"}, "/keyBy", '"header:<name>"'),
        ("x-flowplane-ratelimit", {"requests": 5, "interval": "1s", "burst": 2}, "/burst", "unknown field"),
        ("x-flowplane-ratelimit", [1], "", "valid dictionary"),
        ("x-flowplane-ratelimit", {"requests": 5, "interval": "1s", "keyBy": "header:a b"}, "/keyBy", "not an HTTP header name"),
        ("x-flowplane-jwt-auth", {**JWT, "jwksUri": "ftp://keys.example"}, "/jwksUri", "http:// or https://"),
        ("x-flowplane-jwt-auth", {**JWT, "issuer": ""}, "/issuer", "at least 1 character"),
        ("x-flowplane-jwt-auth", {**JWT, "audiences": ["a", 7]}, "/audiences/1", "valid string"),
        ("x-flowplane-jwt-auth", {**JWT, "required": "yes"}, "/required", "valid boolean"),
        ("x-flowplane-cors", {"origins": []}, "/origins", "at least 1 item"),
        ("x-flowplane-cors", {"origins": ["https://app.example/path"]}, "/origins/0", "an origin is"),
        ("x-flowplane-cors", {"origins": ["*"], "allowCredentials": True}, "/origins/0", "cannot be combined with allowCredentials"),
        ("x-flowplane-cors", {"origins": ["*"], "methods": ["GET", "GET"]}, "/methods/1", "listed twice"),
        ("x-flowplane-cors", {"origins": ["*"], "methods": ["FETCH"]}, "/methods/0", "Input should be"),
        ("x-flowplane-cors", {"origins": ["*"], "headers": ["x a"]}, "/headers/0", "should match pattern"),
        ("x-flowplane-cors", {"origins": ["*"], "maxAgeSeconds": 86401}, "/maxAgeSeconds", "less than or equal"),
    ],
)  # fmt: skip
def test_invalid_extension_payloads_are_refused_at_their_pointer(
    key: str, payload: Any, field: str, message: str
) -> None:
    """An invalid value -> 400 with the JSON pointer of the problem (api.md)."""
    problems = refused(doc(paths={"/pets": {"get": op(**{key: payload})}}))
    where = f"/paths/~1pets/get/{key}{field}"
    assert list(problems) == [where]
    assert message in problems[where]


def test_every_extension_problem_is_listed_at_once() -> None:
    document = doc(
        **{
            "x-flowplane-ratelimit": {"requests": 1, "interval": "1d"},
            "x-flowplane-rate-limit": {"requests": 1, "interval": "1s"},
        },
        paths={
            "/pets": {
                "x-FlowPlane-Cors": {"origins": ["*"]},
                "get": op(**{"x-flowplane-jwt-auth": {"issuer": "i"}, "x-other": {"anything": 1}}),
            }
        },
    )
    problems = refused(document)
    assert set(problems) == {
        "/x-flowplane-ratelimit/interval",
        "/x-flowplane-rate-limit",
        "/paths/~1pets/x-FlowPlane-Cors",
        "/paths/~1pets/get/x-flowplane-jwt-auth/jwksUri",
    }
    assert problems["/x-flowplane-rate-limit"].startswith("unknown Flowplane extension")


def test_other_extensions_are_ignored() -> None:
    document = doc(**{"x-logo": {"url": "x"}}, paths={"/pets": {"x-a": 1, "get": op(**{"x-b": 2})}})
    assert routes_shape(run(document).definition["routes"]) == [
        {"path": "/pets", "methods": ["GET"]}
    ]


# --- what the validator refuses ---------------------------------------------------------------


def test_invalid_openapi_is_refused_with_every_problem_by_pointer() -> None:
    document = doc(paths={"/pets": {"get": {"responses": {"200": {}}}}, "pets": {}})
    del document["info"]
    problems = refused(document)
    assert set(problems) == {"", "/paths/~1pets/get/responses/200", "/paths"}
    assert "'info' is a required property" in problems[""]


def test_semantic_problems_are_refused_at_their_path_item() -> None:
    """What no schema can say: undeclared path parameters, duplicate operationIds."""
    paths = {
        "/pets/{id}": {"get": op(operationId="a")},
        "/toys": {"get": op(operationId="a")},
    }
    problems = refused(doc(paths=paths))
    assert set(problems) == {"/paths/~1pets~1{id}", "/paths/~1toys"}
    assert "Path parameter 'id'" in problems["/paths/~1pets~1{id}"]
    assert "not unique" in problems["/paths/~1toys"]


@pytest.mark.parametrize("version", ["3.0.3", "3.1.0"])
def test_invalid_schemas_are_refused(version: str) -> None:
    document = doc(openapi=version, components={"schemas": {"Pet": {"type": "strin"}}})
    [where] = refused(document)
    assert where.startswith("/components/schemas/Pet")  # 3.0's OpenAPI schema says /type


@pytest.mark.parametrize("version", ["3.0.3", "3.1.0"])
def test_duplicate_parameters_and_tags_are_refused(version: str) -> None:
    """`uniqueItems` (checked in linear time, see test_openapi_hostile)."""
    param = {"name": "q", "in": "query", "schema": {"type": "string"}}
    document = doc(openapi=version, tags=[{"name": "a"}, {"name": "a"}])
    document["paths"]["/pets"]["get"]["parameters"] = [param, dict(param)]
    assert refused(document)


# --- versions and formats ---------------------------------------------------------------------


def test_swagger_2_is_refused_clearly() -> None:
    problems = refused({"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}})
    assert "only OpenAPI 3.0 and 3.1" in problems["/swagger"]


@pytest.mark.parametrize(
    ("version", "message"),
    [("3.2.0", "only OpenAPI 3.0 and 3.1"), ("4.0.0", "only OpenAPI 3.0 and 3.1"),
     (None, "not an OpenAPI document"), (3.0, "quote it")],
)  # fmt: skip
def test_other_versions_are_refused(version: Any, message: str) -> None:
    document = doc(openapi=version)
    if version is None:
        del document["openapi"]
    assert message in refused(document)["/openapi"]


def test_yaml_with_unquoted_status_codes_and_dates() -> None:
    """YAML: `200:` is the status code '200'; an unquoted date stays a string, as in JSON."""
    text = """
openapi: 3.0.3
info: {title: Pets, version: 2024-01-01}
servers: [{url: "https://pets.example.com"}]
paths:
  /pets:
    get:
      responses:
        200: {description: ok}
"""
    assert routes_shape(run(text, "application/yaml").definition["routes"]) == [
        {"path": "/pets", "methods": ["GET"]}
    ]


def test_yaml_anchors_and_aliases_are_allowed() -> None:
    text = """
openapi: 3.0.3
info: {title: Pets, version: "1"}
servers: [{url: "https://pets.example.com"}]
x-flowplane-ratelimit: &limit {requests: 10, interval: 1s}
paths:
  /pets:
    get: &op
      responses: {"200": {description: ok}}
      x-flowplane-ratelimit: *limit
    post: *op
"""
    limit = {"requests": 10, "interval": "1s"}
    d = run(text, "text/yaml").definition
    assert routes_shape(d["routes"]) == [
        {"path": "/pets", "methods": ["GET", "POST"], "filters": {"rateLimit": limit}}
    ]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/yaml",
     "application/x-yaml", "text/yaml; charset=UTF-8"],
)  # fmt: skip
def test_accepted_content_types(content_type: str) -> None:
    assert run(doc(), content_type).definition["name"] == "pets-api"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "", "application/json; charset=latin-1"]
)
def test_other_content_types_are_415(content_type: str) -> None:
    assert isinstance(
        refusal(doc(), content_type, error=UnsupportedMediaType), UnsupportedMediaType
    )


def test_a_refusal_is_a_bad_request_with_a_message() -> None:
    err = refusal(doc(servers=[]))
    assert isinstance(err, BadRequest) and err.status == 400
    assert err.to_json()["error"] == "bad_request"
    assert err.message == "cannot import the document: 1 problem(s)"


def routes_shape(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The routes without `exact` (set on every literal path: `test_literal_paths_match_exactly`
    checks it), so the other tests read as the document they import."""
    return [{k: v for k, v in r.items() if k != "exact"} for r in routes]


def test_literal_paths_match_exactly() -> None:
    """An OpenAPI path names one path: a literal one is imported with `exact: true` (as a prefix,
    `/pets` would also send `/pets/42/x` and `/petsfoo` to the upstream); one with variables is a
    URI template, which matches its own segments only."""
    param = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {"/pets": {"get": op()}, "/pets/{id}": {"get": op(parameters=[param])}}
    routes = run(doc(paths=paths)).definition["routes"]
    by_path = {r["path"]: r for r in routes}
    assert by_path["/pets"]["exact"] is True
    assert "exact" not in by_path["/pets/{id}"]
