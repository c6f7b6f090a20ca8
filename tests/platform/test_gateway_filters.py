"""The shared gateway's HTTP filters (api.md "Filters on the shared gateway"): cors (no policy),
jwt_authn (the providers of every shared-mode API, named `<api id>.<provider>`, no rules; each
API's requirement in requirement_map; `required: false` -> allowMissing), local_rate_limit (no
bucket: enforces nothing at listener level), then router."""

from __future__ import annotations

import json
from typing import Any

import pytest
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl_pb2

from flowplane.domain.resources import Kind, parse_spec
from flowplane.platform.materialise import gateway_http_filters, materialise
from flowplane.xds.translate import translate_resource
from tests.filters.helpers import hcm_of, unpack
from tests.platform.helpers import JWKS, api

JWT = {"issuer": "https://issuer.example", "jwksUri": JWKS}
A, B, C = "0a", "0b", "0c"


def _apis() -> list[tuple[str, Any]]:
    return [
        (B, api(name="b", domain="b.example", filters={"jwtAuth": {**JWT, "required": False}})),
        (A, api(name="a", domain="a.example", routes=[
            {"path": "/x", "filters": {"jwtAuth": JWT}},
            {"path": "/y", "filters": {"jwtAuth": {**JWT, "issuer": "https://two.example"}}},
        ])),
        (C, api(name="c", domain="c.example", filters={"jwtAuth": JWT},
                listener={"isolation": True, "port": 10001})),  # isolated: its own listener
    ]  # fmt: skip


def gateway_listener(http_filters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "default-gateway", "address": "0.0.0.0", "port": 10000,
        "filterChains": [{"filters": [{"type": "httpConnectionManager",
                                       "routeConfigName": "default-gateway-routes",
                                       "httpFilters": http_filters}]}],
    }  # fmt: skip


def test_the_chain() -> None:
    chain = gateway_http_filters(_apis())
    assert [f["type"] for f in chain] == ["cors", "jwt_authn", "local_rate_limit", "router"]
    assert "config" not in chain[0]  # cors: no policy at the listener
    assert chain[2]["config"] == {"tokenBucket": None}
    jwt = chain[1]["config"]
    assert "rules" not in jwt  # a route needs a token only where its override says so
    assert jwt["providers"] == {
        f"{A}.0": {"issuer": JWT["issuer"],
                   "remoteJwks": {"uri": JWKS, "cluster": "a.jwks-0"}, "forward": True},
        f"{A}.1": {"issuer": "https://two.example",
                   "remoteJwks": {"uri": JWKS, "cluster": "a.jwks-0"}, "forward": True},
        f"{B}.0": {"issuer": JWT["issuer"],
                   "remoteJwks": {"uri": JWKS, "cluster": "b.jwks-0"}, "forward": True},
    }  # fmt: skip
    assert jwt["requirementMap"] == {
        f"{A}.0": {"provider": f"{A}.0"},
        f"{A}.1": {"provider": f"{A}.1"},
        f"{B}.0": {"requiresAny": [{"provider": f"{B}.0"}, {"allowMissing": True}]},
    }  # fmt: skip


def test_each_apis_routes_name_its_own_requirements() -> None:
    """What the routes name is what the gateway's filter holds (same numbering)."""
    chain = gateway_http_filters(_apis())
    held = set(chain[1]["config"]["requirementMap"])
    named = set()
    for api_id, definition in _apis()[:2]:
        for route in materialise(definition, api_id=api_id).virtual_host["routes"]:
            if "jwt_authn" in route.get("filters", {}):
                named.add(route["filters"]["jwt_authn"]["requirementName"])
    assert named == held


def test_order_of_the_apis_does_not_matter() -> None:
    assert json.dumps(gateway_http_filters(_apis())) == json.dumps(
        gateway_http_filters(list(reversed(_apis())))
    )


def test_the_chain_is_the_same_with_or_without_jwt_apis() -> None:
    """jwt_authn is in the chain from the start, its config delivered over ECDS: APIs coming
    and going change that filter's config, never the listener's chain."""
    chain = gateway_http_filters([(A, api())])
    assert [f["type"] for f in chain] == ["cors", "jwt_authn", "local_rate_limit", "router"]
    assert chain[1] == {"type": "jwt_authn", "discovery": True}
    assert gateway_http_filters([]) == chain
    with_jwt = gateway_http_filters(_apis())
    assert [f for f in with_jwt if f["type"] != "jwt_authn"] == [
        f for f in chain if f["type"] != "jwt_authn"
    ]
    assert {k: v for k, v in with_jwt[1].items() if k != "config"} == chain[1]


def test_a_repeated_api_id_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        gateway_http_filters([(A, api()), (A, api(name="other"))])


def test_the_gateway_listener_is_valid_native_and_translates() -> None:
    listener = parse_spec(Kind.LISTENER, gateway_listener(gateway_http_filters(_apis())))
    [(_, _, pb), (ecds_type, ecds_name, ecds)] = translate_resource(Kind.LISTENER, listener)
    hcm = hcm_of(pb)  # type: ignore[arg-type]
    name = listener.name  # type: ignore[attr-defined]
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.cors", f"{name}/envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit", "envoy.filters.http.router",
    ]  # fmt: skip
    # the listener names the jwt_authn config; the config is an ECDS resource of that name
    discovery = hcm.http_filters[1].config_discovery
    assert discovery.config_source.HasField("ads")
    assert not hcm.http_filters[1].HasField("typed_config")
    assert ecds_type.endswith("TypedExtensionConfig")
    assert ecds_name == f"{name}/envoy.filters.http.jwt_authn" == ecds.name  # type: ignore[attr-defined]
    assert list(discovery.type_urls) == [ecds.typed_config.type_url]  # type: ignore[attr-defined]
    jwt = unpack(ecds.typed_config, jwt_pb2.JwtAuthentication)  # type: ignore[attr-defined]
    assert sorted(jwt.providers) == [f"{A}.0", f"{A}.1", f"{B}.0"]
    assert not jwt.rules
    assert jwt.requirement_map[f"{B}.0"].requires_any.requirements[1].HasField("allow_missing")
    lrl = unpack(hcm.http_filters[2].typed_config, lrl_pb2.LocalRateLimit)
    assert not lrl.HasField("token_bucket")
