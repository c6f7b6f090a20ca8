"""The Platform API over the same store as the Native API (api.md "Platform API"): CRUD of API
definitions, materialisation in one transaction, ownership across the two paths, team rules."""

from __future__ import annotations

import json
from typing import Any

import httpx

from flowplane.app import Core, make_app, open_core
from flowplane.domain.resources import Kind
from flowplane.platform.openapi_document import ImportLimits
from flowplane.settings import Settings
from flowplane.testing.plane import admin_token
from tests.helpers import N, ok

P = "/api/v1/platform"
GATEWAY_ROUTES = "default-gateway-routes"


def pets(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "pets",
        "team": "payments",
        "domain": "pets.example.com",
        "upstreams": [{"host": "127.0.0.1", "port": 8001}],
        "routes": [
            {"path": "/pets", "methods": ["GET", "POST"]},
            {"path": "/pets/{id}", "methods": ["GET"]},
        ],
    }
    body.update(extra)
    return body


async def team(api: httpx.AsyncClient, name: str, **quotas: int) -> None:
    body: dict[str, Any] = {"name": name}
    if quotas:
        body["quotas"] = quotas
    ok(await api.post("/api/v1/teams", json=body))


async def token(api: httpx.AsyncClient, role: str, *teams: str) -> dict[str, str]:
    body = ok(await api.post("/api/v1/tokens", json={"name": f"{role}-t", "role": role,
                                                     "teams": list(teams)}))  # fmt: skip
    return {"Authorization": f"Bearer {body['token']}"}


async def vhosts(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    rc = ok(await api.get(f"{N}/route-configs/{GATEWAY_ROUTES}"), 200)
    return list(rc["virtualHosts"])


async def test_create_materialises_clusters_and_a_virtual_host_on_the_shared_gateway(
    api: httpx.AsyncClient,
) -> None:
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets()))
    assert created["name"] == "pets" and created["version"] == 1 and created["id"]
    resp = await api.get(f"{P}/apis/{created['id']}")
    assert resp.headers["ETag"] == '"1"'
    # every generated resource is visible on the Native API, marked as the API's
    for cluster in created["generated"]["clusters"]:
        c = ok(await api.get(f"{N}/clusters/{cluster}"), 200)
        assert c["source"] == "platform" and c["owner"] == {"kind": "api", "id": created["id"]}
        assert c["team"] == "payments"
    hosts = [v for v in await vhosts(api) if "pets.example.com" in v["domains"]]
    assert len(hosts) == 1
    assert created["generated"]["virtualHosts"] == {GATEWAY_ROUTES: hosts[0]["name"]}


async def test_native_write_to_a_platform_owned_field_is_409_naming_the_api(
    api: httpx.AsyncClient,
) -> None:
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets()))
    (cluster,) = created["generated"]["clusters"]
    resp = await api.patch(
        f"{N}/clusters/{cluster}", json={"endpoints": [{"host": "127.0.0.9", "port": 1}]}
    )
    assert resp.status_code == 409, resp.text
    assert "pets" in resp.json()["message"] and created["id"] in resp.json()["message"]
    assert (await api.delete(f"{N}/clusters/{cluster}")).status_code == 409
    # the API's virtual host in the shared route config is the API's too
    rc = ok(await api.get(f"{N}/route-configs/{GATEWAY_ROUTES}"), 200)
    resp = await api.put(f"{N}/route-configs/{GATEWAY_ROUTES}", json={**rc, "virtualHosts": []})
    assert resp.status_code == 409 and "pets" in resp.json()["message"]


async def test_native_additions_survive_platform_updates(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets()))
    (cluster,) = created["generated"]["clusters"]
    breakers = {"default": {"maxConnections": 7}}
    ok(await api.patch(f"{N}/clusters/{cluster}", json={"circuitBreakers": breakers}), 200)
    body = pets(upstreams=[{"host": "127.0.0.1", "port": 8002}])
    updated = ok(await api.put(f"{P}/apis/{created['id']}", json=body), 200)
    assert updated["version"] == 2
    c = ok(await api.get(f"{N}/clusters/{cluster}"), 200)
    assert c["circuitBreakers"] == breakers
    assert [e["port"] for e in c["endpoints"]] == [8002]


async def test_unchanged_resources_keep_their_versions(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets()))
    (cluster,) = created["generated"]["clusters"]
    before = ok(await api.get(f"{N}/clusters/{cluster}"), 200)["version"]
    rc_before = ok(await api.get(f"{N}/route-configs/{GATEWAY_ROUTES}"), 200)["version"]
    ok(await api.put(f"{P}/apis/{created['id']}", json=pets()), 200)
    assert ok(await api.get(f"{N}/clusters/{cluster}"), 200)["version"] == before
    assert ok(await api.get(f"{N}/route-configs/{GATEWAY_ROUTES}"), 200)["version"] == rc_before


async def test_delete_removes_exactly_what_the_api_made(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    ok(await api.post(f"{N}/clusters", json={"name": "native-one", "team": "payments",
                                              "endpoints": [{"host": "127.0.0.1", "port": 9}]}))  # fmt: skip
    hosts_before = await vhosts(api)
    created = ok(await api.post(f"{P}/apis", json=pets()))
    assert (await api.delete(f"{P}/apis/{created['id']}")).status_code == 204
    assert (await api.get(f"{P}/apis/{created['id']}")).status_code == 404
    for cluster in created["generated"]["clusters"]:
        assert (await api.get(f"{N}/clusters/{cluster}")).status_code == 404
    assert await vhosts(api) == hosts_before
    assert (await api.get(f"{N}/clusters/native-one")).status_code == 200


async def test_isolation_gets_its_own_route_config_and_listener(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    body = pets(listener={"isolation": True, "address": "127.0.0.1", "port": 10081})
    created = ok(await api.post(f"{P}/apis", json=body))
    (rc,) = created["generated"]["routeConfigs"]
    (lis,) = created["generated"]["listeners"]
    listener = ok(await api.get(f"{N}/listeners/{lis}"), 200)
    assert listener["port"] == 10081 and listener["owner"]["id"] == created["id"]
    assert ok(await api.get(f"{N}/route-configs/{rc}"), 200)["source"] == "platform"
    assert not [v for v in await vhosts(api) if "pets.example.com" in v["domains"]]
    # isolation cannot be switched off once on
    resp = await api.put(f"{P}/apis/{created['id']}", json=pets())
    assert resp.status_code == 400 and "isolation" in resp.text
    services = ok(await api.get(f"{P}/services"), 200)["items"]
    assert any(s["name"] == lis and s["port"] == 10081 for s in services)
    endpoints = ok(await api.get(f"{P}/endpoints"), 200)["items"]
    assert {e["name"] for e in endpoints} >= set(created["generated"]["clusters"])


async def test_names_are_unique_per_team_and_domains_across_teams(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    await team(api, "search")
    ok(await api.post(f"{P}/apis", json=pets()))
    again = await api.post(f"{P}/apis", json=pets(domain="other.example.com"))
    assert again.status_code == 409, again.text
    taken = await api.post(f"{P}/apis", json=pets(team="search", name="finder"))
    assert taken.status_code == 409 and "domain" in taken.text
    # another team may use the same API name
    ok(await api.post(f"{P}/apis", json=pets(team="search", domain="s.example.com")))


async def test_api_developer_uses_the_platform_api_of_its_team_only(
    api: httpx.AsyncClient,
) -> None:
    await team(api, "payments")
    await team(api, "search")
    dev = await token(api, "api-developer", "payments")
    body = pets()
    del body["team"]  # a token of one team creates in that team
    created = ok(await api.post(f"{P}/apis", json=body, headers=dev))
    assert created["team"] == "payments"
    assert (await api.get(f"{N}/clusters", headers=dev)).status_code == 403
    other = await api.post(
        f"{P}/apis", json=pets(team="search", domain="x.example.com"), headers=dev
    )
    assert other.status_code == 403
    search_api = ok(await api.post(f"{P}/apis", json=pets(team="search", domain="s.example.com")))
    assert (await api.get(f"{P}/apis/{search_api['id']}", headers=dev)).status_code == 404
    listed = ok(await api.get(f"{P}/apis", headers=dev), 200)
    assert [a["id"] for a in listed["items"]] == [created["id"]]


async def test_quota_max_apis(api: httpx.AsyncClient) -> None:
    await team(api, "payments", maxApis=1)
    ok(await api.post(f"{P}/apis", json=pets()))
    resp = await api.post(f"{P}/apis", json=pets(name="more", domain="more.example.com"))
    assert resp.status_code == 403 and resp.json()["error"] == "quota_exceeded"


async def test_stale_if_match_is_412_and_changes_nothing(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets()))
    url = f"{P}/apis/{created['id']}"
    ok(await api.patch(url, json={"routes": [{"path": "/v2"}]}, headers={"If-Match": '"1"'}), 200)
    resp = await api.patch(url, json={"routes": [{"path": "/v3"}]}, headers={"If-Match": '"1"'})
    assert resp.status_code == 412
    assert ok(await api.get(url), 200)["routes"] == [{"path": "/v2"}]


async def test_append_route(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets()))
    appended = ok(await api.post(f"{P}/apis/{created['id']}/routes", json={"path": "/owners"}))
    assert appended["version"] == 2 and appended["routes"][-1] == {"path": "/owners"}


async def test_a_refused_api_changes_nothing(api: httpx.AsyncClient) -> None:
    """A failed request changes nothing: an API whose generated cluster name is taken by a
    Native resource is refused whole, no cluster or virtual host is left behind."""
    await team(api, "payments")
    ok(await api.post(f"{N}/clusters", json={"name": "payments.pets.default", "team": "payments",
                                              "endpoints": [{"host": "127.0.0.1", "port": 9}]}))  # fmt: skip
    hosts = await vhosts(api)
    resp = await api.post(f"{P}/apis", json=pets())
    assert resp.status_code == 409, resp.text
    assert ok(await api.get(f"{P}/apis"), 200)["total"] == 0
    assert await vhosts(api) == hosts
    bad = await api.post(f"{P}/apis", json=pets(routes=[{"path": "no-slash"}]))
    assert bad.status_code == 400 and bad.json()["details"]


async def test_apis_survive_a_restart(gw_settings: Settings, gw_core: Core) -> None:
    transport = httpx.ASGITransport(app=make_app(gw_core))
    headers = {"Authorization": f"Bearer {admin_token(gw_core)}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        await team(c, "payments")
        created = ok(await c.post(f"{P}/apis", json=pets()))
    async with open_core(gw_settings) as again:
        api = again.state.apis[created["id"]]
        assert api.name == "pets" and api.version == 1
        (cluster,) = created["generated"]["clusters"]
        res = again.state.get(Kind.CLUSTER, f"payments/{cluster}")
        assert res is not None and res.owner == created["id"]


def _doc(**paths: Any) -> bytes:
    import json

    ops = paths or {"/pets": {"get": {"responses": {"200": {"description": "ok"}}}}}
    return json.dumps({
        "openapi": "3.1.0", "info": {"title": "Shop", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:8001"}], "paths": ops,
    }).encode()  # fmt: skip


IMPORT = f"{P}/import/openapi"
JSON = {"content-type": "application/json"}


async def test_import_dry_run_changes_nothing_and_reimport_updates_in_place(
    api: httpx.AsyncClient,
) -> None:
    await team(api, "payments")
    dry = ok(await api.post(f"{IMPORT}?team=payments&domain=shop.test&dryRun=true",
                            content=_doc(), headers=JSON), 200)  # fmt: skip
    assert dry["dryRun"] is True and dry["api"]["name"] == "shop"
    assert {(c["action"], c["kind"]) for c in dry["changes"]} >= {
        ("create", "cluster"),
        ("update", "route_config"),
    }
    assert ok(await api.get(f"{P}/apis"), 200)["total"] == 0
    assert ok(await api.get(f"{N}/clusters"), 200)["total"] == 0
    # the real import: every generated resource visible on the Native API
    first = ok(await api.post(f"{IMPORT}?team=payments&domain=shop.test", content=_doc(),
                              headers=JSON))  # fmt: skip
    api_id = first["api"]["id"]
    (cluster,) = first["api"]["generated"]["clusters"]
    assert ok(await api.get(f"{N}/clusters/{cluster}"), 200)["owner"]["id"] == api_id
    version = ok(await api.get(f"{N}/clusters/{cluster}"), 200)["version"]
    # the same document again: same API, a new revision, nothing Native rewritten
    again = ok(await api.post(f"{IMPORT}?team=payments&domain=shop.test", content=_doc(),
                              headers=JSON), 200)  # fmt: skip
    assert again["api"]["id"] == api_id and again["api"]["version"] == 2
    assert again["changes"] == []
    assert ok(await api.get(f"{N}/clusters/{cluster}"), 200)["version"] == version
    # a changed document updates in place: the new path is served, the old one gone
    ops = {"/orders": {"get": {"responses": {"200": {"description": "ok"}}}}}
    ok(await api.post(f"{IMPORT}?team=payments&domain=shop.test", content=_doc(**ops),
                      headers=JSON), 200)  # fmt: skip
    (host,) = [v for v in await vhosts(api) if "shop.test" in v["domains"]]
    assert {r["match"]["path"]["value"] for r in host["routes"]} == {"/orders"}


async def test_import_refusals_change_nothing(api: httpx.AsyncClient) -> None:
    await team(api, "payments")
    hosts = await vhosts(api)
    resp = await api.post(f"{IMPORT}?team=payments&domain=shop.test", content=_doc(),
                          headers={"content-type": "text/plain"})  # fmt: skip
    assert resp.status_code == 415
    bad = {
        "/pets": {
            "get": {
                "responses": {"200": {"description": "ok"}},
                "x-flowplane-ratelimit": {"requests": 0, "interval": "1m"},
            }
        }
    }
    resp = await api.post(f"{IMPORT}?team=payments&domain=shop.test", content=_doc(**bad),
                          headers=JSON)  # fmt: skip
    assert resp.status_code == 400
    assert any(d["field"].startswith("/paths/~1pets/get") for d in resp.json()["details"]), (
        resp.text
    )
    assert ok(await api.get(f"{P}/apis"), 200)["total"] == 0
    assert await vhosts(api) == hosts


async def test_quota_max_storage_bytes_counts_both_paths(api: httpx.AsyncClient) -> None:
    """api.md: maxStorageBytes is the bytes of the team's stored JSON — Native resources and
    API definitions alike; over it, 403 quota_exceeded and nothing stored."""
    import json

    cluster = {"name": "c1", "team": "payments", "endpoints": [{"host": "127.0.0.1", "port": 9}]}
    size = len(json.dumps(cluster, separators=(",", ":")))
    await team(api, "payments", maxStorageBytes=size + 10)
    ok(await api.post(f"{N}/clusters", json=cluster))
    resp = await api.post(f"{N}/clusters", json={**cluster, "name": "c2"})
    assert resp.status_code == 403 and resp.json()["error"] == "quota_exceeded", resp.text
    resp = await api.post(f"{P}/apis", json=pets())
    assert resp.status_code == 403 and "maxStorageBytes" in resp.json()["message"]
    assert ok(await api.get(f"{N}/clusters"), 200)["total"] == 1
    assert ok(await api.get(f"{P}/apis"), 200)["total"] == 0
    # a write that does not grow the team's JSON is allowed even at the limit
    ok(await api.put(f"{N}/clusters/c1", json=cluster), 200)


async def test_import_takes_documents_up_to_its_own_limit_json_bodies_keep_theirs(
    api: httpx.AsyncClient, gw_core: Core
) -> None:
    """Regression: every body was capped at FLOWPLANE_MAX_BODY_BYTES (1 MiB), so real documents
    (Box's is 1.7 MB) could not be imported over REST though the importer takes 5 MiB. The import
    is bounded by the importer's limit; every JSON body still by max_body_bytes."""
    json_limit, doc_limit = gw_core.settings.max_body_bytes, ImportLimits().max_bytes
    assert json_limit < 2 * 1024 * 1024 < doc_limit

    def padded(size: int) -> bytes:
        doc = json.loads(_doc())
        doc["info"]["description"] = ""
        pad = size - len(json.dumps(doc).encode())
        doc["info"]["description"] = "x" * pad
        return json.dumps(doc).encode()

    big = padded(2 * 1024 * 1024)
    ok(await api.post(f"{IMPORT}?domain=shop.test&dryRun=true", content=big, headers=JSON), 200)
    too_big = padded(doc_limit + 1)
    resp = await api.post(f"{IMPORT}?domain=shop.test&dryRun=true", content=too_big, headers=JSON)
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large", resp.text
    # a JSON body over max_body_bytes (and under the import's cap) is still 413
    body = json.dumps(pets(pad="x" * json_limit)).encode()
    assert json_limit < len(body) < doc_limit
    resp = await api.post(f"{P}/apis", content=body, headers=JSON)
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large", resp.text
