"""History and rollback over REST (api.md "History and rollback"), on the Native kinds and on
API definitions, with the default gateway on: the endpoints, their error bodies, ETags, teams
and scopes; an API's rollback re-materialises what it generates in one transaction and a
rollback of a deleted API re-creates it with its resources."""

from __future__ import annotations

from typing import Any

import httpx
import jsonpatch

from flowplane.app import Core
from flowplane.storage.base import AuditQuery
from flowplane.testing.factories import cluster_body
from tests.helpers import N, ok
from tests.platform.test_platform_api import GATEWAY_ROUTES, P, pets, team, token, vhosts


async def history(api: httpx.AsyncClient, path: str, **params: Any) -> list[tuple[int, str]]:
    body = ok(await api.get(f"{path}/history", params=params), 200)
    return [(i["version"], i["action"]) for i in body["items"]]


async def test_native_history_version_diff_and_rollback_over_rest(api: httpx.AsyncClient) -> None:
    ok(await api.post(f"{N}/clusters", json=cluster_body(port=1)))
    ok(await api.patch(f"{N}/clusters/backend", json={"http2": True}), 200)
    listing = ok(await api.get(f"{N}/clusters/backend/history", params={"limit": 1}), 200)
    assert (listing["total"], listing["limit"], listing["offset"]) == (2, 1, 0)
    item = listing["items"][0]
    assert set(item) == {"version", "action", "actor", "actorId", "at", "schemaVersion"}
    assert (item["version"], item["action"], item["schemaVersion"]) == (2, "update", 1)
    old = ok(await api.get(f"{N}/clusters/backend/history/1"), 200)
    assert old["version"] == 1 and "http2" not in old and old["endpoints"][0]["port"] == 1
    diff = await api.get(f"{N}/clusters/backend/history/2", params={"diff": "previous"})
    assert diff.headers["content-type"] == "application/json-patch+json"
    assert diff.json() == [{"op": "add", "path": "/http2", "value": True}]
    assert jsonpatch.apply_patch(cluster_body(port=1), diff.json()) == {
        **cluster_body(port=1),
        "http2": True,
    }
    stale = await api.post(f"{N}/clusters/backend/rollback", json={"version": 1},
                           headers={"If-Match": '"1"'})  # fmt: skip
    assert stale.status_code == 412 and stale.json()["error"] == "precondition_failed"
    back = await api.post(f"{N}/clusters/backend/rollback", json={"version": 1},
                          headers={"If-Match": '"2"'})  # fmt: skip
    assert back.status_code == 200 and back.headers["ETag"] == '"3"'
    assert "http2" not in back.json() and back.json()["version"] == 3
    assert ok(await api.get(f"{N}/clusters/backend"), 200)["version"] == 3
    assert (await history(api, f"{N}/clusters/backend"))[0] == (3, "rollback")


async def test_bad_history_requests_get_clear_errors(api: httpx.AsyncClient) -> None:
    """Every bad input gets the JSON error body and changes nothing."""
    ok(await api.post(f"{N}/clusters", json=cluster_body()))
    cases = [
        (api.get(f"{N}/clusters/backend/history/x"), 400),
        (api.get(f"{N}/clusters/backend/history/0"), 400),
        (api.get(f"{N}/clusters/backend/history/9"), 404),
        (api.get(f"{N}/clusters/backend/history/1", params={"diff": "next"}), 400),
        (api.get(f"{N}/clusters/backend/history", params={"limit": 0}), 400),
        (api.get(f"{N}/clusters/nope/history"), 404),
        (api.post(f"{N}/clusters/backend/rollback", json={}), 400),
        (api.post(f"{N}/clusters/backend/rollback", json={"version": "1"}), 400),
        (api.post(f"{N}/clusters/backend/rollback", json={"version": 1, "x": 1}), 400),
        (api.post(f"{N}/clusters/backend/rollback", json={"version": 7}), 404),
        (
            api.post(
                f"{N}/clusters/backend/rollback",
                content=b"1",
                headers={"content-type": "text/plain"},
            ),
            415,
        ),
    ]
    for request, status in cases:
        resp = await request
        assert resp.status_code == status, resp.text
        assert set(resp.json()) == {"error", "message", "details"}
    assert await history(api, f"{N}/clusters/backend") == [(1, "create")]


async def test_api_rollback_rematerialises_in_one_transaction(
    api: httpx.AsyncClient, gw_core: Core
) -> None:
    """An API's rollback replaces the definition and re-materialises its clusters and virtual
    host, audited as `rollback`; the generated resources' history records their changes."""
    await team(api, "payments")
    made = ok(await api.post(f"{P}/apis", json=pets()))
    aid = made["id"]
    changed = pets(upstreams=[{"host": "127.0.0.1", "port": 8002}],
                   routes=[{"path": "/pets", "methods": ["GET"]}, {"path": "/toys"}])  # fmt: skip
    ok(await api.put(f"{P}/apis/{aid}", json=changed), 200)
    host = next(v for v in await vhosts(api) if "pets.example.com" in v["domains"])
    assert "/toys" in {r["match"]["path"]["value"] for r in host["routes"]}
    assert await history(api, f"{P}/apis/{aid}") == [(2, "update"), (1, "create")]
    v1 = ok(await api.get(f"{P}/apis/{aid}/history/1"), 200)
    assert v1["id"] == aid and v1["routes"] == pets()["routes"]
    patch = ok(await api.get(f"{P}/apis/{aid}/history/2", params={"diff": "previous"}), 200)
    assert jsonpatch.apply_patch(pets(), patch) == changed
    back = ok(await api.post(f"{P}/apis/{aid}/rollback", json={"version": 1},
                             headers={"If-Match": '"2"'}), 200)  # fmt: skip
    assert back["version"] == 3 and back["routes"] == pets()["routes"]
    (cluster,) = back["generated"]["clusters"]
    assert ok(await api.get(f"{N}/clusters/{cluster}"), 200)["endpoints"] == [
        {"host": "127.0.0.1", "port": 8001}
    ]
    host = next(v for v in await vhosts(api) if "pets.example.com" in v["domains"])
    assert {r["match"]["path"]["value"] for r in host["routes"]} == {"/pets", "/pets/{id}"}
    assert (await history(api, f"{N}/clusters/{cluster}"))[0][1] == "update"
    assert (await history(api, f"{N}/route-configs/{GATEWAY_ROUTES}"))[0][1] == "update"
    rows, _ = await gw_core.repo.query_audit(AuditQuery(resource_type="api"))
    assert rows[0].action == "rollback"


async def test_a_deleted_api_is_recreated_by_rollback_with_its_resources(
    api: httpx.AsyncClient,
) -> None:
    await team(api, "payments")
    made = ok(await api.post(f"{P}/apis", json=pets()))
    aid, clusters = made["id"], made["generated"]["clusters"]
    assert (await api.delete(f"{P}/apis/{aid}")).status_code == 204
    assert (await api.get(f"{P}/apis/{aid}")).status_code == 404
    assert await history(api, f"{P}/apis/{aid}") == [(2, "delete"), (1, "create")]
    deletion = ok(await api.get(f"{P}/apis/{aid}/history/2"), 200)
    assert deletion["action"] == "delete" and "routes" not in deletion
    refused = await api.post(f"{P}/apis/{aid}/rollback", json={"version": 2})
    assert refused.status_code == 400 and "deletion" in refused.json()["message"]
    back = ok(await api.post(f"{P}/apis/{aid}/rollback", json={"version": 1}), 200)
    assert (back["id"], back["version"], back["generated"]["clusters"]) == (aid, 3, clusters)
    for cluster in clusters:
        c = ok(await api.get(f"{N}/clusters/{cluster}"), 200)
        assert c["owner"] == {"kind": "api", "id": aid} and c["source"] == "platform"
    assert any("pets.example.com" in v["domains"] for v in await vhosts(api))


async def test_history_and_rollback_respect_teams_and_scopes_over_rest(
    api: httpx.AsyncClient,
) -> None:
    """Another team's history -> 404 (existing or deleted, resource or API); a token without
    the read scope -> 403; a read-only token cannot roll back (403)."""
    await team(api, "payments")
    await team(api, "search")
    made = ok(await api.post(f"{P}/apis", json=pets()))
    ok(await api.post(f"{N}/clusters", json=cluster_body("theirs", team="search")))
    ok(await api.post(f"{N}/clusters", json=cluster_body("gone", team="search")))
    assert (await api.delete(f"{N}/clusters/gone")).status_code == 204
    dev = await token(api, "api-developer", "payments")
    assert (await api.get(f"{P}/apis/{made['id']}/history", headers=dev)).status_code == 200
    for path in (f"{N}/clusters/theirs", f"{N}/clusters/gone"):
        for resp in (
            await api.get(f"{path}/history", headers=dev),
            await api.get(f"{path}/history/1", headers=dev),
            await api.post(f"{path}/rollback", json={"version": 1}, headers=dev),
        ):
            assert resp.status_code in (403, 404), resp.text
    search = await token(api, "platform-engineer", "search")
    for resp in (
        await api.get(f"{P}/apis/{made['id']}/history", headers=search),
        await api.get(f"{P}/apis/{made['id']}/history/1", headers=search),
        await api.post(f"{P}/apis/{made['id']}/rollback", json={"version": 1}, headers=search),
    ):
        assert resp.status_code == 404, resp.text
    assert (await api.get(f"{N}/clusters/gone/history", headers=search)).status_code == 200
    reader = ok(await api.post("/api/v1/tokens", json={
        "name": "r", "scopes": ["clusters:read"], "teams": ["search"]}))  # fmt: skip
    auth = {"Authorization": f"Bearer {reader['token']}"}
    assert (await api.get(f"{N}/clusters/theirs/history", headers=auth)).status_code == 200
    refused = await api.post(f"{N}/clusters/theirs/rollback", json={"version": 1}, headers=auth)
    assert refused.status_code == 403 and "clusters:write" in refused.json()["message"]
    no_scope = await api.get(f"{P}/apis/{made['id']}/history", headers=auth)
    assert no_scope.status_code == 403


async def test_shared_gateway_history_is_not_a_team_tokens_to_read(api: httpx.AsyncClient) -> None:
    """A team token reads the shared gateway's route config without other teams' virtual hosts
    (api.md "a token bound to teams sees only those teams' resources"); its history holds them,
    so a team token gets 403 for it, while a shared cluster's history stays readable."""
    await team(api, "payments")
    await team(api, "search")
    ok(await api.post(f"{P}/apis", json=pets()))  # payments' virtual host in the gateway
    ok(await api.post(f"{N}/clusters", json=cluster_body("shared-one")))
    search = await token(api, "platform-engineer", "search")
    for path in (f"{N}/route-configs/{GATEWAY_ROUTES}", f"{N}/listeners/default-gateway"):
        for url in (f"{path}/history", f"{path}/history/1"):
            refused = await api.get(url, headers=search)
            assert refused.status_code == 403, refused.text
            assert "other teams' APIs" in refused.json()["message"]
    assert "pets.example.com" not in (await api.get(f"{N}/route-configs/{GATEWAY_ROUTES}",
                                                     headers=search)).text  # fmt: skip
    admin_view = ok(await api.get(f"{N}/route-configs/{GATEWAY_ROUTES}/history/2"), 200)
    assert "pets.example.com" in str(admin_view)
    assert (await api.get(f"{N}/clusters/shared-one/history", headers=search)).status_code == 200
