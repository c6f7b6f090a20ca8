"""Authentication and authorisation: tokens, scopes, teams, quotas, rate limits, audit."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flowplane.api.auth import PUBLIC, RULES
from flowplane.app import Core, make_app, quart_app
from flowplane.testing.factories import cluster_body, listener_body, route_config_body

N = "/api/v1/native"


async def new_token(client: httpx.AsyncClient, **body: Any) -> str:
    body.setdefault("name", "t")
    r = await client.post("/api/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()["token"]  # type: ignore[no-any-return]


def as_(client: httpx.AsyncClient, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the rule table covers every endpoint ---------------------------------------------------


async def test_every_endpoint_has_an_authorisation_rule(core: Core) -> None:
    app = quart_app(core)
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    missing = sorted(endpoints - set(RULES))
    assert not missing, f"endpoints without a rule in flowplane/api/auth.py RULES: {missing}"
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            assert RULES[rule.endpoint] != PUBLIC, rule.rule


async def test_every_api_endpoint_refuses_anonymous_requests(client: httpx.AsyncClient, core: Core) -> None:
    app = quart_app(core)
    anon = httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(core)), base_url="http://x")
    async with anon:
        for rule in app.url_map.iter_rules():
            if not rule.rule.startswith("/api/v1/"):
                continue
            path = rule.rule.replace("<path:node_id>", "n").replace("<", "").replace(">", "")
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                r = await anon.request(method, path, json={})
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.json()["error"] == "unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")


# --- bad tokens -----------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_tampered_and_invalid_tokens_are_401(client: httpx.AsyncClient, core: Core) -> None:
    good = await new_token(client, role="admin")
    header, payload, sig = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    other_key = Ed25519PrivateKey.generate()
    bad = {
        "garbage": "not-a-jwt",
        "tampered payload": f"{header}.{_b64({**claims, 'sub': 'evil'})}.{sig}",
        "tampered signature": f"{header}.{payload}.{sig[:-4]}AAAA",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload}.",
        "HS256 with the public key": jwt.encode(claims, "a-guessed-shared-secret-of-32-bytes!!", algorithm="HS256", headers={"kid": kid}),
        "wrong key": jwt.encode(claims, other_key, algorithm="EdDSA", headers={"kid": kid}),
        "unknown kid": jwt.encode(claims, other_key, algorithm="EdDSA", headers={"kid": "k-nope"}),
        "unknown jti": jwt.encode({**claims, "jti": "00000000-0000-0000-0000-000000000000"},
                                  core.auth.active_key.private, algorithm="EdDSA", headers={"kid": kid}),
        "expired": jwt.encode({**claims, "exp": 1_000_000_000}, core.auth.active_key.private,
                              algorithm="EdDSA", headers={"kid": kid}),
        "wrong scheme": None,
    }  # fmt: skip
    for why, token in bad.items():
        headers = {"Authorization": f"Basic {good}"} if token is None else as_(client, token)
        r = await client.get(f"{N}/clusters", headers=headers)
        assert r.status_code == 401, why
        assert r.json()["error"] == "unauthorized", why


async def test_revoked_expired_and_rotated_tokens(client: httpx.AsyncClient) -> None:
    tok = await new_token(client, role="platform-engineer")
    tid = jwt.decode(tok, options={"verify_signature": False})["jti"]
    assert (await client.get(f"{N}/clusters", headers=as_(client, tok))).status_code == 200
    # rotate: a new token works, the old one stops at once
    r = await client.post(f"/api/v1/tokens/{tid}/rotate")
    assert r.status_code == 201 and r.json()["replaces"] == tid
    new = r.json()["token"]
    assert (await client.get(f"{N}/clusters", headers=as_(client, tok))).status_code == 401
    assert (await client.get(f"{N}/clusters", headers=as_(client, new))).status_code == 200
    # revoke
    new_id = r.json()["id"]
    assert (await client.delete(f"/api/v1/tokens/{new_id}")).status_code == 204
    assert (await client.get(f"{N}/clusters", headers=as_(client, new))).status_code == 401
    assert (await client.get(f"/api/v1/tokens/{new_id}")).json()["status"] == "revoked"
    # expiry set after the fact takes effect on the next request
    tok2 = await new_token(client, role="platform-engineer")
    tid2 = jwt.decode(tok2, options={"verify_signature": False})["jti"]
    soon = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert (await client.patch(f"/api/v1/tokens/{tid2}", json={"expiresAt": soon})).status_code == 200
    assert (await client.get(f"{N}/clusters", headers=as_(client, tok2))).status_code == 401


async def test_token_string_shown_once_and_never_listed(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tokens", json={"name": "ci", "scopes": ["clusters:read"]})
    assert r.status_code == 201 and r.headers["location"].startswith("/api/v1/tokens/")
    token = r.json()["token"]
    listing = (await client.get("/api/v1/tokens")).text
    one = (await client.get(r.headers["location"])).text
    assert token not in listing and token not in one and '"token"' not in one


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x"},  # neither role nor scopes
        {"name": "x", "scopes": ["clusters:fly"]},
        {"name": "x", "role": "emperor"},
        {"name": "", "role": "admin"},
        {"name": "x", "role": "admin", "expiresAt": "2001-01-01T00:00:00Z"},
        {"name": "x", "role": "admin", "expiresAt": "2030-01-01T00:00:00"},  # no time zone
        {"name": "x", "role": "admin", "teams": ["Not A Team"]},
    ],
)
async def test_bad_token_bodies_are_400(client: httpx.AsyncClient, body: dict) -> None:
    before = len((await client.get("/api/v1/tokens")).json()["items"])
    r = await client.post("/api/v1/tokens", json=body)
    assert r.status_code == 400, r.text
    assert len((await client.get("/api/v1/tokens")).json()["items"]) == before


# --- scopes ---------------------------------------------------------------------------------


async def test_missing_scope_is_403(client: httpx.AsyncClient) -> None:
    reader = await new_token(client, scopes=["clusters:read"])
    h = as_(client, reader)
    assert (await client.get(f"{N}/clusters", headers=h)).status_code == 200
    r = await client.post(f"{N}/clusters", json=cluster_body(), headers=h)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert (await client.get(f"{N}/listeners", headers=h)).status_code == 403
    assert (await client.get("/api/v1/audit", headers=h)).status_code == 403
    assert (await client.post("/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=h)).status_code == 403


async def test_no_privilege_escalation_through_tokens(client: httpx.AsyncClient) -> None:
    dev = await new_token(client, scopes=["tokens:write", "tokens:read", "clusters:read"], teams=["a"])
    h = as_(client, dev)
    r = await client.post("/api/v1/tokens", json={"name": "x", "role": "admin", "teams": ["a"]}, headers=h)
    assert r.status_code == 403
    r = await client.post("/api/v1/tokens", json={"name": "x", "scopes": ["clusters:read"], "teams": ["b"]}, headers=h)
    assert r.status_code == 403
    r = await client.post("/api/v1/tokens", json={"name": "x", "scopes": ["clusters:read"], "teams": ["a"]}, headers=h)
    assert r.status_code == 201
    tid = r.json()["id"]
    r = await client.patch(f"/api/v1/tokens/{tid}", json={"scopes": ["admin:all"]}, headers=h)
    assert r.status_code == 403


async def test_api_developer_is_refused_the_native_api(client: httpx.AsyncClient) -> None:
    """api.md "Teams, tokens, auth": `api-developer` (the Platform API only, own teams: Native
    API -> 403). Issue 9: the role could read clusters and listeners. nodes:read is kept (not the
    Native API; how an API developer sees whether their team's Envoys took their APIs)."""
    assert (await client.post(f"{N}/clusters", json=cluster_body(team="a"))).status_code == 201
    for teams in ({}, {"teams": ["a"]}):
        body = {"name": "dev", "role": "api-developer", **teams}
        r = await client.post("/api/v1/tokens", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["scopes"] == ["apis:read", "apis:write", "nodes:read"]
        h = as_(client, r.json()["token"])
        for path in ("clusters", "route-configs", "listeners"):
            for url in (f"{N}/{path}", f"{N}/{path}/backend"):
                r = await client.get(url, headers=h)
                assert r.status_code == 403 and r.json()["error"] == "forbidden", (teams, url)
        assert (await client.get("/api/v1/nodes", headers=h)).status_code == 200


# --- teams ----------------------------------------------------------------------------------


async def test_team_isolation_on_the_native_api(client: httpx.AsyncClient) -> None:
    a = as_(client, await new_token(client, role="platform-engineer", teams=["a"]))
    b = as_(client, await new_token(client, role="platform-engineer", teams=["b"]))
    assert (await client.post(f"{N}/clusters", json=cluster_body("shared"))).status_code == 201
    r = await client.post(f"{N}/clusters", json=cluster_body("ca"), headers=a)
    assert r.status_code == 201 and r.json()["team"] == "a"  # defaults to the token's one team
    assert (await client.post(f"{N}/clusters", json=cluster_body("cb", team="b"), headers=b)).status_code == 201
    # lists show own team + shared; another team's resource is 404, not 403
    names = [c["name"] for c in (await client.get(f"{N}/clusters", headers=a)).json()["items"]]
    assert names == ["ca", "shared"]
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        r = await client.request(method, f"{N}/clusters/cb", headers=a, json=cluster_body("cb", team="a"))
        assert r.status_code == 404, method
    assert (await client.get(f"{N}/clusters?team=b", headers=a)).json()["items"] == []
    # cannot create in, or move to, another team; shared is read-only for non-admins
    assert (await client.post(f"{N}/clusters", json=cluster_body("x", team="b"), headers=a)).status_code == 403
    assert (await client.patch(f"{N}/clusters/ca", json={"team": "b"}, headers=a)).status_code == 400
    assert (await client.get(f"{N}/clusters/shared", headers=a)).status_code == 200
    assert (await client.patch(f"{N}/clusters/shared", json={"http2": True}, headers=a)).status_code == 403
    assert (await client.delete(f"{N}/clusters/shared", headers=a)).status_code == 403
    # cannot reference another team's cluster (reported as missing: no existence leak)
    r = await client.post(f"{N}/route-configs", json=route_config_body("ra", cluster="cb"), headers=a)
    assert r.status_code == 400 and "'cb'" in r.json()["message"]
    r = await client.post(f"{N}/route-configs", json=route_config_body("ra", cluster="ca"), headers=a)
    assert r.status_code == 201
    # nothing of b's changed
    got = (await client.get(f"{N}/clusters/cb", headers=b)).json()
    assert got["version"] == 1 and got["team"] == "b"


async def test_even_admins_cannot_wire_teams_together(client: httpx.AsyncClient) -> None:
    await client.post(f"{N}/clusters", json=cluster_body("ca", team="a"))
    r = await client.post(f"{N}/route-configs", json=route_config_body("rb", cluster="ca", team="b"))
    assert r.status_code == 400
    r = await client.post(f"{N}/route-configs", json=route_config_body("shared", cluster="ca"))
    assert r.status_code == 400  # a shared route cannot depend on one team's cluster
    # nor through an HTTP filter: team b's listener using team a's cluster for ext_authz
    await client.post(f"{N}/clusters", json=cluster_body("cb", team="b"))
    await client.post(f"{N}/route-configs", json=route_config_body("rb2", cluster="cb", team="b"))
    authz = {"type": "ext_authz", "config": {"service": {"type": "grpc", "cluster": "ca"}}}
    body = listener_body("lb", "rb2", 10090, team="b")
    body["filterChains"][0]["filters"][0]["httpFilters"] = [authz]
    r = await client.post(f"{N}/listeners", json=body)
    assert r.status_code == 400, r.text
    assert "ca" in r.text


async def test_teams_api_and_quotas(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/teams", json={"name": "a", "quotas": {"maxClusters": 1}})
    assert r.status_code == 201 and r.json()["quotas"] == {"maxClusters": 1}
    assert (await client.post("/api/v1/teams", json={"name": "a"})).status_code == 409
    assert (await client.post("/api/v1/teams", json={"name": "Bad Name"})).status_code == 400
    assert (await client.post("/api/v1/teams", json={"name": "z", "quotas": {"maxClusters": -1}})).status_code == 400
    assert (await client.post(f"{N}/clusters", json=cluster_body("c1", team="a"))).status_code == 201
    r = await client.post(f"{N}/clusters", json=cluster_body("c2", team="a"))
    assert r.status_code == 403 and r.json()["error"] == "quota_exceeded"
    assert (await client.post(f"{N}/clusters", json=cluster_body("c3"))).status_code == 201  # shared: no quota
    r = await client.patch("/api/v1/teams/a", json={"quotas": {"maxClusters": 2}})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert (await client.post(f"{N}/clusters", json=cluster_body("c2", team="a"))).status_code == 201
    assert (await client.delete("/api/v1/teams/a")).status_code == 409  # still owns clusters
    a = as_(client, await new_token(client, role="platform-engineer", teams=["a"]))
    assert [t["name"] for t in (await client.get("/api/v1/teams", headers=a)).json()["items"]] == ["a"]
    assert (await client.post("/api/v1/teams", json={"name": "q"}, headers=a)).status_code == 403


async def test_rate_limit_is_429_with_retry_after(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/teams", json={"name": "slow", "quotas": {"requestsPerMinute": 3}})
    h = as_(client, await new_token(client, role="platform-engineer", teams=["slow"]))
    codes = [(await client.get(f"{N}/clusters", headers=h)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = await client.get(f"{N}/clusters", headers=h)
    assert r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1


# --- audit ----------------------------------------------------------------------------------


async def test_audit_records_changes_token_events_and_failures(client: httpx.AsyncClient, core: Core) -> None:
    await client.post(f"{N}/clusters", json=cluster_body(team="a"))
    await client.patch(f"{N}/clusters/backend", json={"http2": True})
    await client.delete(f"{N}/clusters/backend")
    await client.post("/api/v1/tokens", json={"name": "x", "role": "api-developer"})
    await client.get(f"{N}/clusters", headers={"Authorization": "Bearer nope"})
    await core.actor.submit(__import__("flowplane.actors.auth", fromlist=["RecordAudit"]).RecordAudit(
        list(core.authenticator.take_failures())))
    items = (await client.get("/api/v1/audit", params={"resourceType": "cluster"})).json()["items"]
    assert [i["action"] for i in items] == ["delete", "update", "create"]
    delete, update, create = items
    assert create["before"] is None and create["after"]["name"] == "backend" and create["team"] == "a"
    assert "http2" not in update["before"] and update["after"]["http2"] is True
    assert delete["after"] is None and delete["actor"]["name"] == "initial-admin"
    assert all(i["actor"]["tokenId"] for i in items)
    tokens = (await client.get("/api/v1/audit", params={"resourceType": "token"})).json()["items"]
    assert tokens[0]["action"] == "create" and "token" not in json.dumps(tokens[0]["after"]).replace('"tokenId"', "")
    failed = (await client.get("/api/v1/audit", params={"resourceType": "auth"})).json()["items"]
    assert failed and failed[0]["action"] == "authentication_failed"
    assert (await client.get("/api/v1/audit", params={"team": "a"})).json()["total"] == 3
    assert (await client.get("/api/v1/audit", params={"since": "2000-01-01T00:00:00Z", "limit": 1})).json()["limit"] == 1
    assert (await client.get("/api/v1/audit", params={"since": "yesterday"})).status_code == 400


async def test_token_last_use_is_recorded(client: httpx.AsyncClient, core: Core) -> None:
    from flowplane.services.startup import _flush_last_used

    tok = await new_token(client, role="platform-engineer")
    tid = jwt.decode(tok, options={"verify_signature": False})["jti"]
    assert (await client.get(f"{N}/clusters", headers=as_(client, tok))).status_code == 200
    await _flush_last_used(core.actor, core.authenticator)
    rows = {r["id"]: r for r in await core.repo.load_rows("tokens")}
    assert rows[tid]["last_used_at"] is not None and rows[tid]["name"] == "t"
    assert (await client.get(f"/api/v1/tokens/{tid}")).json()["lastUsedAt"] is not None


@pytest.mark.parametrize("body", ["null", "[]", '"x"', "5"])
async def test_a_non_object_patch_is_400_and_deletes_nothing(
    client: httpx.AsyncClient, body: str
) -> None:
    """Found by schemathesis: `PATCH /teams/{team}` with the JSON body `null` used to delete the
    team (and answer 500), and `PATCH /tokens/{id}` with `null` to revoke the token, because
    "no body" doubled as the delete/revoke command."""
    assert (await client.post("/api/v1/teams", json={"name": "keep"})).status_code == 201
    tok = await new_token(client, role="platform-engineer")
    tid = jwt.decode(tok, options={"verify_signature": False})["jti"]
    headers = {"Content-Type": "application/json"}
    for path in ("/api/v1/teams/keep", f"/api/v1/tokens/{tid}"):
        r = await client.patch(path, content=body, headers=headers)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == "bad_request"
    team = await client.get("/api/v1/teams/keep")
    assert team.status_code == 200 and team.json()["version"] == 1
    assert (await client.get(f"/api/v1/tokens/{tid}")).json()["status"] == "active"
    assert (await client.get(f"{N}/clusters", headers=as_(client, tok))).status_code == 200
