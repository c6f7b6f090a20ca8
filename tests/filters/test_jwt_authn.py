"""`jwt_authn`: validation, translation, cluster references over REST, `envoy --mode validate`,
and real Envoy traffic with tokens signed by a key made in the test."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from jwt.algorithms import ECAlgorithm

from flowplane.domain.filters import parse_config
from flowplane.domain.filters.jwt_authn import JwtAuthnConfig
from flowplane.domain.resources import Kind
from flowplane.settings import Settings
from flowplane.testing.factories import cluster_body
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
from tests.helpers import N, ok

JWT_AUTHN = "envoy.filters.http.jwt_authn"
EC_KEY = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
JWKS = json.dumps({"keys": [EC_KEY]})
LOCAL = {"inline": JWKS}
REMOTE = {"uri": "https://idp.example.com/.well-known/jwks.json", "cluster": "idp"}
FULL: dict[str, Any] = {
    "providers": {
        "corp": {
            "issuer": "https://idp.example.com",
            "audiences": ["api", "web"],
            "remoteJwks": {**REMOTE, "timeoutSeconds": 1.5, "cacheSeconds": 600},
            "fromHeaders": [{"name": "x-token", "valuePrefix": "Bearer "}],
            "fromParams": ["access_token"],
            "forward": True,
            "forwardPayloadHeader": "x-jwt-payload",
            "claimToHeaders": [{"headerName": "x-sub", "claimName": "sub"}],
        },
        "local": {"issuer": "local", "localJwks": LOCAL},
    },
    "rules": [
        {"match": {"prefix": "/public"}},
        {"match": {"path": "/exact"}, "requires": {"allowMissingOrFailed": True}},
        {"match": {"regex": "^/v[0-9]+/.*"}, "requires": {"requiresAll": [
            {"provider": "corp"}, {"requiresAny": [{"provider": "local"}, {"allowMissing": True}]},
        ]}},
        {"match": {"prefix": "/"}, "requires": {"provider": "corp"}},
    ],
    "requirementMap": {"local-only": {"provider": "local"}},
}  # fmt: skip


def _filter(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "jwt_authn", "config": config}]


def _local(**extra: Any) -> dict[str, Any]:
    """A minimal valid config with one provider `p` (local JWKS) and one rule, changed by
    `extra`: `p_<field>` sets a field of `p`, other keys a field of the config; None removes."""
    provider: dict[str, Any] = {"issuer": "me", "localJwks": LOCAL}
    config: dict[str, Any] = {
        "providers": {"p": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "p"}}],
    }
    for key, value in extra.items():
        target, field = (provider, key[2:]) if key.startswith("p_") else (config, key)
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    return config


def _jwt_config(config: dict[str, Any]) -> jwt_pb2.JwtAuthentication:
    return filter_config(edge_listener(_filter(config)), JWT_AUTHN, jwt_pb2.JwtAuthentication)


# --- translation ------------------------------------------------------------------------------


def test_translation_of_providers_rules_and_requirement_map() -> None:
    cfg = _jwt_config(FULL)
    assert set(cfg.providers) == {"corp", "local"}
    corp = cfg.providers["corp"]
    assert corp.issuer == "https://idp.example.com"
    assert list(corp.audiences) == ["api", "web"]
    assert corp.WhichOneof("jwks_source_specifier") == "remote_jwks"
    uri = corp.remote_jwks.http_uri
    assert (uri.uri, uri.cluster) == (REMOTE["uri"], "idp")
    assert uri.timeout.ToMilliseconds() == 1500
    assert corp.remote_jwks.cache_duration.seconds == 600
    assert [(h.name, h.value_prefix) for h in corp.from_headers] == [("x-token", "Bearer ")]
    assert list(corp.from_params) == ["access_token"]
    assert corp.forward is True
    assert corp.forward_payload_header == "x-jwt-payload"
    assert [(c.header_name, c.claim_name) for c in corp.claim_to_headers] == [("x-sub", "sub")]
    local = cfg.providers["local"]
    assert local.WhichOneof("jwks_source_specifier") == "local_jwks"
    assert local.local_jwks.inline_string == JWKS
    assert (local.forward, list(local.from_headers), list(local.audiences)) == (False, [], [])

    public, exact, regex, catch_all = cfg.rules
    assert public.match.prefix == "/public"
    assert public.WhichOneof("requirement_type") is None  # no token needed
    assert exact.match.path == "/exact"
    assert exact.requires.HasField("allow_missing_or_failed")
    assert regex.match.safe_regex.regex == "^/v[0-9]+/.*"
    both = regex.requires.requires_all.requirements
    assert both[0].provider_name == "corp"
    anyof = both[1].requires_any.requirements
    assert anyof[0].provider_name == "local"
    assert anyof[1].HasField("allow_missing")
    assert catch_all.match.prefix == "/"
    assert catch_all.requires.provider_name == "corp"
    assert cfg.requirement_map["local-only"].provider_name == "local"


def test_defaults_and_clusters() -> None:
    body = {
        "providers": {"a": {"issuer": "a", "remoteJwks": REMOTE},
                      "b": {"issuer": "b", "remoteJwks": {**REMOTE, "cluster": "idp2"}},
                      "c": {"issuer": "c", "localJwks": LOCAL}},
        "requirementMap": {"x": {"provider": "a"}},
    }  # fmt: skip
    config = parse_config("jwt_authn", body)
    assert isinstance(config, JwtAuthnConfig)
    assert config.clusters() == {"idp", "idp2"}
    cfg = _jwt_config(body)
    remote = cfg.providers["a"].remote_jwks
    assert remote.http_uri.timeout.seconds == 5
    assert remote.cache_duration.seconds == 300
    assert list(cfg.rules) == []


def test_translation_is_deterministic() -> None:
    a, _ = translated(edge_listener(_filter(FULL)))
    b, _ = translated(edge_listener(_filter(FULL)))
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_route_override_becomes_per_route_config() -> None:
    _, rc = translated(
        edge_listener(_filter(FULL)),
        routes_body(route_filters={"jwt_authn": {"requirementName": "local-only"}},
                    vhost_filters={"jwt_authn": {"disabled": True}}),
    )  # fmt: skip
    assert rc is not None
    per_route = override_of(rc.virtual_hosts[0].routes[0], JWT_AUTHN, jwt_pb2.PerRouteConfig)
    assert per_route.requirement_name == "local-only"
    assert override_of(rc.virtual_hosts[0], JWT_AUTHN, rc_pb2.FilterConfig).disabled


# --- validation -------------------------------------------------------------------------------


def _deep(levels: int) -> dict[str, Any]:
    req: dict[str, Any] = {"provider": "p"}
    for _ in range(levels - 1):
        req = {"requiresAny": [req, {"allowMissing": True}]}
    return req


def _rule(requires: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"match": {"prefix": "/"}, "requires": requires}]


P = ".providers.p"
BAD = [
    (None, "", "needs a config"),
    ({"providers": {"p": {"issuer": "me", "localJwks": LOCAL}}}, "",
     "at least one rule or requirementMap"),
    ({"rules": _rule({"provider": "p"})}, ".providers", "required"),
    ({"providers": {}, "requirementMap": {"m": {"allowMissing": True}}}, ".providers",
     "at least 1"),
    ({"providers": {f"p{i}": {"issuer": "me", "localJwks": LOCAL} for i in range(1001)},
      "requirementMap": {"m": {"allowMissing": True}}}, ".providers", "at most 1000"),
    ({"providers": {"Bad": {"issuer": "me", "localJwks": LOCAL}},
      "requirementMap": {"m": {"allowMissing": True}}}, ".providers.Bad", "lowercase"),
    # providers, field by field
    ({"providers": {"p": {"localJwks": LOCAL}}, "rules": _rule({"provider": "p"})},
     f"{P}.issuer", "required"),
    (_local(p_issuer=""), f"{P}.issuer", "at least 1"),
    ({"providers": {"p": {"issuer": "me"}}, "rules": _rule({"provider": "p"})}, P,
     "exactly one of remoteJwks and localJwks"),
    (_local(p_remoteJwks=REMOTE), P, "exactly one of remoteJwks and localJwks"),
    (_local(p_localJwks={"inline": "{nope"}), f"{P}.localJwks.inline", "not valid JSON"),
    (_local(p_localJwks={"inline": '{"keys": []}'}), f"{P}.localJwks.inline",
     'non-empty "keys"'),
    (_local(p_localJwks={"inline": "[1]"}), f"{P}.localJwks.inline", 'non-empty "keys"'),
    (_local(p_localJwks={"inline": '{"keys": [{"kty": "DSA"}]}'}), f"{P}.localJwks.inline",
     "keys[0] needs a \"kty\""),
    (_local(p_localJwks={"inline": '{"keys": [{"kty": "RSA", "e": "AQAB"}]}'}),
     f"{P}.localJwks.inline", "keys[0] (RSA) lacks the string member(s) n"),
    (_local(p_localJwks={"inline": json.dumps({"keys": [EC_KEY, {**EC_KEY, "x": "AAAA"}]})}),
     f"{P}.localJwks.inline", "keys[1] (EC) is not a valid key"),
    (_local(p_localJwks={"inline": json.dumps({"keys": [{**EC_KEY, "crv": "secp256k1"}]})}),
     f"{P}.localJwks.inline", "keys[0] (EC) has \"crv\" 'secp256k1'"),
    (_local(p_localJwks={"inline": json.dumps({"keys": [{**EC_KEY, "alg": "ES384"}]})}),
     f"{P}.localJwks.inline", "does not go with \"crv\" 'P-256'"),
    (_local(p_localJwks={"inline": json.dumps({"keys": [{**EC_KEY, "alg": "RS256"}]})}),
     f"{P}.localJwks.inline", "Envoy takes ES256, ES384, ES512"),
    (_local(p_localJwks={"inline": '{"keys": [{"kty": "oct", "k": ""}]}'}),
     f"{P}.localJwks.inline", "(oct) is not a valid key"),
    (_local(p_localJwks={}), f"{P}.localJwks.inline", "required"),
    (_local(p_localJwks=None, p_remoteJwks={**REMOTE, "uri": "ftp://idp/jwks"}),
     f"{P}.remoteJwks.uri", "http:// or https://"),
    (_local(p_localJwks=None, p_remoteJwks={**REMOTE, "uri": "https:///jwks"}),
     f"{P}.remoteJwks.uri", "with a host"),
    (_local(p_localJwks=None, p_remoteJwks={"uri": REMOTE["uri"]}), f"{P}.remoteJwks.cluster",
     "required"),
    (_local(p_localJwks=None, p_remoteJwks={**REMOTE, "cluster": "Bad_Name"}),
     f"{P}.remoteJwks.cluster", "lowercase"),
    (_local(p_localJwks=None, p_remoteJwks={**REMOTE, "timeoutSeconds": 0}),
     f"{P}.remoteJwks.timeoutSeconds", "greater than or equal to 0.001"),
    (_local(p_localJwks=None, p_remoteJwks={**REMOTE, "cacheSeconds": "300"}),
     f"{P}.remoteJwks.cacheSeconds", "valid number"),
    (_local(p_audiences="api"), f"{P}.audiences", "valid list"),
    (_local(p_fromHeaders=[{"valuePrefix": "Bearer "}]), f"{P}.fromHeaders[0].name", "required"),
    (_local(p_fromHeaders=[{"name": "x-t", "valuePrefix": "a\nb"}]),
     f"{P}.fromHeaders[0].valuePrefix", "pattern"),
    (_local(p_fromParams=["a=b"]), f"{P}.fromParams[0]", "pattern"),
    (_local(p_forward="yes"), f"{P}.forward", "valid boolean"),
    (_local(p_forwardPayloadHeader="X Payload"), f"{P}.forwardPayloadHeader", "lower-case HTTP header name"),
    (_local(p_claimToHeaders=[{"headerName": "x-sub"}]), f"{P}.claimToHeaders[0].claimName",
     "required"),
    (_local(p_claimToHeaders=[{"headerName": ":path", "claimName": "sub"}]),
     f"{P}.claimToHeaders[0].headerName", "lower-case HTTP header name"),
    # rules and requirements
    (_local(rules=_rule({"provider": "nope"})), ".rules[0].requires.provider",
     "unknown provider 'nope' (known: p)"),
    (_local(rules=_rule({"requiresAny": [{"provider": "p"}, {"requiresAll": [
        {"allowMissing": True}, {"provider": "nope"}]}]})),
     ".rules[0].requires.requiresAny[1].requiresAll[1].provider", "unknown provider 'nope'"),
    (_local(requirementMap={"m": {"provider": "nope"}}), ".requirementMap.m.provider",
     "unknown provider 'nope'"),
    (_local(requirementMap={"Bad": {"provider": "p"}}), ".requirementMap.Bad", "lowercase"),
    (_local(rules=[{"match": {"regex": "(?=x)"}, "requires": {"provider": "p"}}]),
     ".rules[0].match.regex", "RE2"),
    (_local(rules=[{"match": {}}]), ".rules[0].match", "exactly one of prefix, path and regex"),
    (_local(rules=[{"match": {"prefix": "/", "path": "/x"}}]), ".rules[0].match",
     "exactly one of prefix, path and regex"),
    (_local(rules=[{"match": {"prefix": "api"}}]), ".rules[0].match", "must start with '/'"),
    (_local(rules=[{"requires": {"provider": "p"}}]), ".rules[0].match", "required"),
    (_local(rules=_rule({})), ".rules[0].requires", "exactly one of provider, requiresAny"),
    (_local(rules=_rule({"provider": "p", "allowMissing": True})), ".rules[0].requires",
     "exactly one of provider"),
    (_local(rules=_rule({"requiresAny": [{"provider": "p"}]})),
     ".rules[0].requires.requiresAny", "at least 2"),
    (_local(rules=_rule({"allowMissing": False})), ".rules[0].requires.allowMissing",
     "should be True"),
    (_local(rules=_rule({"provider": "P!"})), ".rules[0].requires.provider", "pattern"),
    (_local(rules=_rule(_deep(6))), ".rules[0].requires", "at most 5 levels"),
    # unknown fields, at every level
    (_local(bogus=1), ".bogus", "unknown field"),
    (_local(p_bogus=1), f"{P}.bogus", "unknown field"),
    (_local(p_localJwks={**LOCAL, "file": "/x"}), f"{P}.localJwks.file", "unknown field"),
    (_local(p_localJwks=None, p_remoteJwks={**REMOTE, "retries": 3}),
     f"{P}.remoteJwks.retries", "unknown field"),
    (_local(rules=[{"match": {"prefix": "/", "headers": []}}]), ".rules[0].match.headers",
     "unknown field"),
    (_local(rules=_rule({"providerName": "p"})), ".rules[0].requires.providerName",
     "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "field", "message"), BAD)
def test_bad_configs_are_refused_field_by_field(
    config: dict[str, Any] | None, field: str, message: str
) -> None:
    assert_config_refused("jwt_authn", config, field, message)


def test_good_requirements_at_the_depth_limit_are_accepted() -> None:
    assert _jwt_config(_local(rules=_rule(_deep(5)))).rules[0].requires.HasField("requires_any")


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"requirementName": "Bad"}, ".requirementName", "pattern"),
        ({}, ".requirementName", "required"),
        ({"requirementName": "m", "disabled": False}, ".disabled", "unknown field"),
    ],
)
def test_bad_overrides_are_refused(override: dict[str, Any], field: str, message: str) -> None:
    got = problems(Kind.ROUTE_CONFIG, routes_body(route_filters={"jwt_authn": override}))
    where = f"virtualHosts[0].routes[0].filters.jwt_authn{field}"
    assert where in got, got
    assert message in got[where]


# --- cluster references over REST ---------------------------------------------------------------


async def test_jwks_cluster_must_exist_and_cannot_be_deleted_while_used(
    client: httpx.AsyncClient,
) -> None:
    body = edge_listener(_filter(_local(p_localJwks=None, p_remoteJwks=REMOTE)))
    with trio.fail_after(30):
        ok(await client.post(f"{N}/clusters", json=cluster_body("backend")))
        ok(await client.post(f"{N}/route-configs", json=routes_body()))
        r = await client.post(f"{N}/listeners", json=body)
        assert r.status_code == 400, r.text
        assert "cluster 'idp'" in r.json()["message"]
        ok(await client.post(f"{N}/clusters", json=cluster_body("idp", 9443)))
        ok(await client.post(f"{N}/listeners", json=body))
        r = await client.delete(f"{N}/clusters/idp")
        assert r.status_code == 409, r.text
        assert "listener 'edge'" in r.json()["message"]
        assert (await client.delete(f"{N}/listeners/edge")).status_code == 204
        assert (await client.delete(f"{N}/clusters/idp")).status_code == 204


# --- Envoy ------------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_envoy_validates_config_and_overrides(tmp_path: Path) -> None:
    routes = routes_body(
        route_filters={"jwt_authn": {"requirementName": "local-only"}},
        vhost_filters={"jwt_authn": {"disabled": True}},
        rc_filters={"jwt_authn": {"requirementName": "local-only"}},
    )
    with trio.fail_after(30):
        await envoy_validates(
            tmp_path,
            edge_listener(_filter(FULL)),
            routes,
            cluster_body("backend"),
            cluster_body("idp", 9443),
        )


class Signer:
    """An ES256 key made for the test: its JWKS and tokens signed with it."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = json.dumps({"keys": [{**jwk, "kid": kid, "alg": "ES256", "use": "sig"}]})

    def token(self, iss: str = "https://issuer.test", exp_in: float = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": iss, "sub": "alice", "iat": now, "exp": now + int(exp_in), **claims}
        return jwt.encode(payload, self.key, algorithm="ES256", headers={"kid": self.kid})


@pytest.mark.e2e
async def test_tokens_are_checked_in_real_traffic(xds_settings: Settings, tmp_path: Path) -> None:
    signer, stranger = Signer("k1"), Signer("k2")
    config = {
        "providers": {
            "main": {
                "issuer": "https://issuer.test",
                "audiences": ["api"],
                "localJwks": {"inline": signer.jwks},
                "forwardPayloadHeader": "x-jwt-payload",
                "claimToHeaders": [{"headerName": "x-user", "claimName": "sub"}],
            },
            "partner": {
                "issuer": "https://partner.test",
                "localJwks": {"inline": signer.jwks},
                "fromHeaders": [{"name": "x-partner-token"}],
                "fromParams": ["token"],
                "forward": True,
            },
        },
        "rules": [
            {"match": {"prefix": "/public"}},
            {"match": {"prefix": "/"}, "requires": {"provider": "main"}},
        ],
        "requirementMap": {"partners": {"provider": "partner"}},
    }
    routes = routes_body(extra_routes=[
        {"name": "open", "match": {"path": {"type": "prefix", "value": "/open"}},
         "action": {"type": "forward", "cluster": "backend"},
         "filters": {"jwt_authn": {"disabled": True}}},
        {"name": "partner", "match": {"path": {"type": "prefix", "value": "/partner"}},
         "action": {"type": "forward", "cluster": "backend"},
         "filters": {"jwt_authn": {"requirementName": "partners"}}},
        {"name": "unmapped", "match": {"path": {"type": "prefix", "value": "/unmapped"}},
         "action": {"type": "forward", "cluster": "backend"},
         "filters": {"jwt_authn": {"requirementName": "nope"}}},
    ])  # fmt: skip
    good = signer.token(aud="api")

    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    with trio.fail_after(60):
        async with (
            run_plane(xds_settings) as plane,
            run_upstream("one") as up,
            serving(plane, tmp_path, up.port, _filter(config), routes) as (envoy, port),
        ):

            async def status(path: str, headers: dict[str, str] | None = None) -> int:
                return (await envoy.request(port, path, headers=headers))[0]

            assert await status("/x") == 401  # no token
            seen = len(up.requests)
            assert await status("/x", bearer(good)) == 200
            assert len(up.requests) == seen + 1
            req = up.requests[-1]
            assert req.path == "/x"
            assert req.headers["x-user"] == "alice"  # claimToHeaders
            assert "authorization" not in req.headers  # forward is off: the token is removed
            payload = req.headers["x-jwt-payload"]
            decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            assert decoded["iss"] == "https://issuer.test"

            seen = len(up.requests)
            assert (
                await status("/x", bearer(signer.token(iss="https://evil.test", aud="api"))) == 401
            )
            assert await status("/x", bearer(signer.token(aud="api", exp_in=-120))) == 401
            assert await status("/x", bearer(signer.token(aud="other"))) == 403  # audience
            assert await status("/x", bearer(stranger.token(aud="api"))) == 401  # unknown key
            head, _, sig = good.split(".")
            forged = signer.token(aud="api", sub="mallory").split(".")[1]
            assert await status("/x", bearer(f"{head}.{forged}.{sig}")) == 401  # bad signature
            assert await status("/x", {"x-user": "mallory"}) == 401
            assert len(up.requests) == seen  # none of those reached the upstream

            assert await status("/public/doc") == 200  # a rule without requires
            assert await status("/open") == 200  # the filter is disabled on this route
            assert "x-user" not in up.requests[-1].headers

            # /partner applies requirementMap["partners"] instead of the rules
            partner = signer.token(iss="https://partner.test")
            assert await status("/partner") == 401
            assert await status("/partner", bearer(good)) == 401  # not from its locations
            assert await status("/partner", {"x-partner-token": good}) == 401  # wrong issuer
            assert await status("/partner", {"x-partner-token": partner}) == 200
            assert up.requests[-1].headers["x-partner-token"] == partner  # forward: kept
            assert await status(f"/partner?token={partner}") == 200
            # a requirementName the listener's filter lacks: accepted by the plane (it cannot
            # know which listener serves the route), refused by Envoy on every request
            assert await status("/unmapped", bearer(good)) == 403
