"""The two paths over one store (api.md: "Whatever is created on one path is visible on the
other; nothing is stored twice"): what the Native API makes shows in the Platform views, what the
Platform API generates is ordinary Native configuration, and each path's changes keep the
other's view consistent. Through REST (ASGI), on a real SQLite file; one PostgreSQL variant of
create / update / delete across restarts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from flowplane.app import Core, make_app, open_core
from flowplane.settings import Settings, load_settings
from flowplane.testing.plane import admin_token
from flowplane.xds.types import CLUSTER_TYPE, ROUTE_TYPE
from tests.helpers import N, ok
from tests.storage.conftest import PG, drop_schema

P = "/api/v1/platform"
GATEWAY_ROUTES = "default-gateway-routes"
GATEWAY = "default-gateway"
KINDS = ("clusters", "route-configs", "listeners")
SERVER_FIELDS = ("id", "version", "createdAt", "updatedAt", "generated")

JWT = {"issuer": "https://issuer.test", "jwksUri": "https://issuer.test/jwks.json"}
RATE = {"requests": 5, "interval": "1m", "keyBy": "client_ip"}
CORS = {"origins": ["https://app.test"], "methods": ["GET", "POST"], "maxAgeSeconds": 600}


def pets(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "pets",
        "team": "payments",
        "domain": "pets.example.com",
        "upstreams": [{"host": "127.0.0.1", "port": 8001}],
        "routes": [{"path": "/pets", "methods": ["GET", "POST"]}, {"path": "/pets/{id}"}],
    }
    body.update(extra)
    return body


def sent(api_json: dict[str, Any]) -> dict[str, Any]:
    """An API as the client sent it: the GET minus the fields the server manages."""
    return {k: v for k, v in api_json.items() if k not in SERVER_FIELDS}


async def team(c: httpx.AsyncClient, name: str) -> None:
    ok(await c.post("/api/v1/teams", json={"name": name}))


async def native(c: httpx.AsyncClient, kind: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(await c.get(f"{N}/{kind}/{name}"), 200)
    return body


async def everything(c: httpx.AsyncClient) -> dict[str, dict[str, dict[str, Any]]]:
    """Every Native resource, by kind and name."""
    out = {}
    for kind in KINDS:
        items = ok(await c.get(f"{N}/{kind}?limit=500"), 200)["items"]
        out[kind] = {r["name"]: r for r in items}
    return out


def forward_clusters(route_config: dict[str, Any], domain: str) -> set[str]:
    """The clusters the routes of `domain`'s virtual host forward to."""
    (host,) = [v for v in route_config["virtualHosts"] if domain in v["domains"]]
    return {r["action"]["cluster"] for r in host["routes"]}


async def served(core: Core, route_config: str, domain: str) -> tuple[set[str], set[str]]:
    """What Envoy is served once the snapshot has caught up: the clusters `domain`'s routes in
    `route_config` name, and every cluster in the snapshot (xDS names)."""
    with trio.fail_after(5):
        await core.snapshots.caught_up(core.state.serial)
    snapshot = core.hub.snapshot
    resource = snapshot.get(ROUTE_TYPE).get(route_config)
    assert resource is not None
    rc = route_pb2.RouteConfiguration()
    assert any_pb2.Any.FromString(resource.any_bytes).Unpack(rc)
    (host,) = [vh for vh in rc.virtual_hosts if domain in vh.domains]
    return {r.route.cluster for r in host.routes}, set(snapshot.resources(CLUSTER_TYPE))


async def test_native_resources_show_in_the_platform_views(api: httpx.AsyncClient) -> None:
    """A Native cluster is an endpoint, a Native listener a service, and a Native change or
    delete is what the views show next."""
    await team(api, "payments")
    cluster = {"name": "orders", "team": "payments",
               "endpoints": [{"host": "10.0.0.1", "port": 8080}]}  # fmt: skip
    ok(await api.post(f"{N}/clusters", json=cluster))
    rc = {"name": "orders-routes", "team": "payments", "virtualHosts": [{
        "name": "orders", "domains": ["orders.test"],
        "routes": [{"match": {"path": {"type": "prefix", "value": "/"}},
                    "action": {"type": "forward", "cluster": "orders"}}]}]}  # fmt: skip
    ok(await api.post(f"{N}/route-configs", json=rc))
    listener = {"name": "orders-in", "team": "payments", "address": "127.0.0.1", "port": 10090,
                "filterChains": [{"filters": [{"type": "httpConnectionManager",
                                               "routeConfigName": "orders-routes"}]}]}  # fmt: skip
    ok(await api.post(f"{N}/listeners", json=listener))

    endpoint = ok(await api.get(f"{P}/endpoints/orders"), 200)
    assert endpoint == {"name": "orders", "team": "payments", "source": "native", "owner": None,
                        "targets": [{"host": "10.0.0.1", "port": 8080}], "tls": False,
                        "version": 1}  # fmt: skip
    listed = ok(await api.get(f"{P}/endpoints?team=payments"), 200)["items"]
    assert [e["name"] for e in listed] == ["orders"]
    service = ok(await api.get(f"{P}/services/orders-in"), 200)
    assert service == {"name": "orders-in", "team": "payments", "source": "native",
                       "owner": None, "address": "127.0.0.1", "port": 10090,
                       "routeConfigs": ["orders-routes"], "version": 1}  # fmt: skip
    assert "orders-in" in {s["name"] for s in ok(await api.get(f"{P}/services"), 200)["items"]}

    ok(await api.patch(f"{N}/clusters/orders",
                       json={"endpoints": [{"host": "10.0.0.2", "port": 9090}]}), 200)  # fmt: skip
    endpoint = ok(await api.get(f"{P}/endpoints/orders"), 200)
    assert endpoint["targets"] == [{"host": "10.0.0.2", "port": 9090}]
    assert endpoint["version"] == 2
    ok(await api.delete(f"{N}/listeners/orders-in"), 204)
    assert (await api.get(f"{P}/services/orders-in")).status_code == 404


async def test_every_resource_an_import_generates_is_visible_via_native(
    api: httpx.AsyncClient,
) -> None:
    """An imported document (isolated, with a JWKS host) -> each cluster, route config and
    listener it generated is on the Native API as the API's, of its team, and the Native
    listener serves the Native route config that carries the document's routes."""
    await team(api, "payments")
    doc = {
        "openapi": "3.1.0", "info": {"title": "Shop", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:8001"}],
        "x-flowplane-jwt-auth": JWT,
        "paths": {"/orders": {"get": {"responses": {"200": {"description": "ok"}}}},
                  "/orders/{id}": {
                      "parameters": [{"name": "id", "in": "path", "required": True,
                                      "schema": {"type": "string"}}],
                      "delete": {"responses": {"204": {"description": "ok"}}}}},
    }  # fmt: skip
    url = f"{P}/import/openapi?team=payments&domain=shop.test&listenerIsolation=true&port=10091"
    created = ok(await api.post(url, content=json.dumps(doc),
                                headers={"content-type": "application/json"}))  # fmt: skip
    api_id, generated = created["api"]["id"], created["api"]["generated"]
    assert len(generated["clusters"]) == 2  # the upstream and the JWKS host
    assert len(generated["routeConfigs"]) == 1 and len(generated["listeners"]) == 1
    for kind, key in zip(KINDS, ("clusters", "routeConfigs", "listeners"), strict=True):
        for name in generated[key]:
            res = await native(api, kind, name)
            assert res["source"] == "platform", (kind, name)
            assert res["owner"] == {"kind": "api", "id": api_id}, (kind, name)
            assert res["team"] == "payments", (kind, name)
    (rc_name,) = generated["routeConfigs"]
    rc = await native(api, "route-configs", rc_name)
    (host,) = rc["virtualHosts"]
    assert "shop.test" in host["domains"]
    assert {r["match"]["path"]["value"] for r in host["routes"]} == {"/orders", "/orders/{id}"}
    assert forward_clusters(rc, "shop.test") <= set(generated["clusters"])
    (lis_name,) = generated["listeners"]
    service = ok(await api.get(f"{P}/services/{lis_name}"), 200)
    assert service["routeConfigs"] == [rc_name] and service["port"] == 10091
    # every Native change the import made is in the audit log, as this API's team's
    audit = ok(await api.get("/api/v1/audit?team=payments&limit=200"), 200)["items"]
    audited = {(e["resourceType"], e["resourceName"]) for e in audit if e["action"] == "create"}
    for kind, key in (("cluster", "clusters"), ("route_config", "routeConfigs"),
                      ("listener", "listeners")):  # fmt: skip
        assert {(kind, n) for n in generated[key]} <= audited


async def test_an_updated_upstream_resolves_on_both_paths(
    api: httpx.AsyncClient, gw_core: Core
) -> None:
    """PUT a new upstream set, then PATCH its port: the Native route config's routes name the
    new cluster, which exists on the Native API and as an endpoint with the new targets; the
    replaced cluster is gone from both, and from what Envoy is served."""
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets()))
    url = f"{P}/apis/{created['id']}"
    (old,) = created["generated"]["clusters"]
    body = pets(upstreams=[{"name": "blue", "host": "127.0.0.2", "port": 8002}],
                routes=[{"path": "/pets", "upstream": "blue"}])  # fmt: skip
    updated = ok(await api.put(url, json=body, headers={"If-Match": '"1"'}), 200)
    (new,) = updated["generated"]["clusters"]
    assert new != old
    rc = await native(api, "route-configs", GATEWAY_ROUTES)
    # the shared gateway's route config names the team's cluster `<team>/<name>` (api.md)
    assert forward_clusters(rc, "pets.example.com") == {f"payments/{new}"}
    assert (await native(api, "clusters", new))["endpoints"] == [{"host": "127.0.0.2",
                                                                  "port": 8002}]  # fmt: skip
    assert ok(await api.get(f"{P}/endpoints/{new}"), 200)["targets"] == [
        {"host": "127.0.0.2", "port": 8002}
    ]
    assert (await api.get(f"{N}/clusters/{old}")).status_code == 404
    assert (await api.get(f"{P}/endpoints/{old}")).status_code == 404
    routed, clusters = await served(gw_core, GATEWAY_ROUTES, "pets.example.com")
    assert len(routed) == 1 and routed <= clusters
    assert routed == {f"payments/{new}"}  # its xDS name (team-qualified)
    assert f"payments/{old}" not in clusters

    patch = {"upstreams": [{"name": "blue", "host": "127.0.0.2", "port": 8003}]}
    patched = ok(await api.patch(url, json=patch, headers={"If-Match": '"2"'}), 200)
    assert patched["generated"]["clusters"] == [new]
    assert (await native(api, "clusters", new))["endpoints"][0]["port"] == 8003
    assert ok(await api.get(f"{P}/endpoints/{new}"), 200)["targets"][0]["port"] == 8003
    rc = await native(api, "route-configs", GATEWAY_ROUTES)
    # the shared gateway's route config names the team's cluster `<team>/<name>` (api.md)
    assert forward_clusters(rc, "pets.example.com") == {f"payments/{new}"}
    assert sent(ok(await api.get(url), 200))["upstreams"] == patch["upstreams"]


async def test_filters_survive_round_trips_across_both_paths(api: httpx.AsyncClient) -> None:
    """An API with rateLimit / cors / jwtAuth comes back exactly as sent; the Native route
    config carries them as per-route overrides; a Native PUT that repeats a generated
    resource's fields and adds a Native-only one is accepted and changes nothing on the
    Platform side; a PUT of the API's own GET changes no Native resource."""
    await team(api, "payments")
    body = pets(
        filters={"cors": CORS, "rateLimit": RATE},
        routes=[
            {"path": "/pets", "methods": ["GET"], "filters": {"jwtAuth": JWT}},
            {"path": "/pets/{id}", "methods": ["DELETE"],
             "filters": {"rateLimit": {"requests": 1, "interval": "1s"}, "cors": None}},
        ],
    )  # fmt: skip
    created = ok(await api.post(f"{P}/apis", json=body))
    url = f"{P}/apis/{created['id']}"
    assert sent(ok(await api.get(url), 200)) == body

    rc = await native(api, "route-configs", GATEWAY_ROUTES)
    (host,) = [v for v in rc["virtualHosts"] if "pets.example.com" in v["domains"]]
    routes = {r["name"]: r.get("filters", {}) for r in host["routes"]}
    get_pets, delete_pet = routes["GET /pets"], routes["DELETE /pets/{id}"]
    # the gateway's jwt_authn comes over ECDS, so its per-route configs are keyed per listener
    jwt_key = f"{GATEWAY}/jwt_authn"
    assert get_pets[jwt_key]["requirementName"].startswith(f"{created['id']}.")
    assert get_pets["cors"]["origins"] == [{"exact": "https://app.test"}]
    assert get_pets["local_rate_limit"]["tokenBucket"] == {
        "maxTokens": 5, "tokensPerFill": 5, "fillIntervalSeconds": 60}  # fmt: skip
    assert delete_pet["local_rate_limit"]["tokenBucket"] == {
        "maxTokens": 1, "tokensPerFill": 1, "fillIntervalSeconds": 1}  # fmt: skip
    assert jwt_key not in delete_pet  # the JWT was the other route's only
    assert delete_pet.get("cors", {"disabled": True}) == {"disabled": True}  # cors: null
    # the gateway listener carries this API's provider, by its id
    gateway = await native(api, "listeners", GATEWAY)
    assert created["id"] in json.dumps(gateway["filterChains"])

    # Native PUT of a platform-owned cluster: its generated fields unchanged, plus breakers
    api_before = ok(await api.get(url), 200)
    cluster_name = next(c for c in created["generated"]["clusters"] if c.endswith(".default"))
    cluster = await native(api, "clusters", cluster_name)
    breakers = {"default": {"maxConnections": 9}}
    put = {k: v for k, v in cluster.items()
           if k not in ("version", "source", "createdAt", "updatedAt", "owner")}  # fmt: skip
    ok(await api.put(f"{N}/clusters/{cluster_name}", json={**put, "circuitBreakers": breakers},
                     headers={"If-Match": f'"{cluster["version"]}"'}), 200)  # fmt: skip
    assert ok(await api.get(url), 200) == api_before
    # ... but changing a generated field is the API's business (409 naming it)
    moved = {**put, "endpoints": [{"host": "127.0.0.9", "port": 1}]}
    resp = await api.put(f"{N}/clusters/{cluster_name}", json=moved)
    assert resp.status_code == 409 and created["id"] in resp.json()["message"]

    # the API's GET, PUT back: a new revision, every Native resource as it was
    resources = await everything(api)
    again = ok(await api.put(url, json=api_before), 200)
    assert sent(again) == body and again["version"] == api_before["version"] + 1
    assert await everything(api) == resources
    # a Platform change to the filters keeps the Native-only field
    patched = ok(await api.patch(url, json={"filters": {"rateLimit": None}}), 200)
    assert patched["filters"] == {"cors": CORS}
    assert (await native(api, "clusters", cluster_name))["circuitBreakers"] == breakers
    rc = await native(api, "route-configs", GATEWAY_ROUTES)
    (host,) = [v for v in rc["virtualHosts"] if "pets.example.com" in v["domains"]]
    routes = {r["name"]: r.get("filters", {}) for r in host["routes"]}
    assert "local_rate_limit" not in routes["GET /pets"]
    assert routes["DELETE /pets/{id}"]["local_rate_limit"]["tokenBucket"]["maxTokens"] == 1


async def test_deleting_an_api_removes_exactly_its_generated_resources(
    api: httpx.AsyncClient,
) -> None:
    """Native resources, another API (shared) and an isolated API are there; the isolated
    one and then a shared one with JWT are deleted: what each made is gone, everything else is
    as it was (the shared gateway's route config and listener back to their content)."""
    await team(api, "payments")
    ok(await api.post(f"{N}/clusters", json={"name": "native-one", "team": "payments",
                                              "endpoints": [{"host": "127.0.0.1", "port": 9}]}))  # fmt: skip
    ok(await api.post(f"{P}/apis", json=pets(name="keep", domain="keep.test")))
    before = await everything(api)
    isolated = ok(await api.post(f"{P}/apis", json=pets(
        name="iso", domain="iso.test", listener={"isolation": True, "port": 10092})))  # fmt: skip
    shared = ok(await api.post(f"{P}/apis", json=pets(filters={"jwtAuth": JWT})))
    made = await everything(api)
    for created in (isolated, shared):
        for kind, key in zip(KINDS, ("clusters", "routeConfigs", "listeners"), strict=True):
            assert set(created["generated"][key]) <= set(made[kind])
    ok(await api.delete(f"{P}/apis/{isolated['id']}"), 204)
    ok(await api.delete(f"{P}/apis/{shared['id']}", headers={"If-Match": '"1"'}), 204)
    after = await everything(api)
    assert {k: set(v) for k, v in after.items()} == {k: set(v) for k, v in before.items()}
    volatile = ("version", "updatedAt", "source")  # the last writer of the gateway: platform
    for kind, items in before.items():
        for name, res in items.items():
            now = after[kind][name]
            if name in (GATEWAY_ROUTES, GATEWAY):  # rewritten twice, back to the same content
                now = {k: v for k, v in now.items() if k not in volatile}
                res = {k: v for k, v in res.items() if k not in volatile}
            assert now == res, (kind, name)
    assert [a["name"] for a in ok(await api.get(f"{P}/apis"), 200)["items"]] == ["keep"]


# -- PostgreSQL: create / update / delete across restarts -----------------------------------


@pytest.fixture
async def aio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture
async def pg_settings(aio_loop: asyncio.AbstractEventLoop) -> AsyncIterator[Settings]:
    """A core on a schema of its own in the real PostgreSQL server (dropped afterwards)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield load_settings(
            database_url=f"{PG}?schema={schema}", api_address="127.0.0.1:0",
            default_gateway=True, default_gateway_address="127.0.0.1:10000",
        )  # fmt: skip
    finally:
        await drop_schema(schema, aio_loop)


def client(core: Core) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=make_app(core)), base_url="http://flowplane.test",
        headers={"Authorization": f"Bearer {admin_token(core)}"},
    )  # fmt: skip


@pytest.mark.postgres
async def test_create_update_delete_across_restarts_on_postgres(pg_settings: Settings) -> None:
    with trio.fail_after(60):
        async with open_core(pg_settings) as core, client(core) as c:
            await team(c, "payments")
            created = ok(await c.post(f"{P}/apis", json=pets(filters={"jwtAuth": JWT})))
            api_id = created["id"]
            body = pets(upstreams=[{"name": "blue", "host": "127.0.0.2", "port": 8002}],
                        routes=[{"path": "/pets", "upstream": "blue"}])  # fmt: skip
            updated = ok(await c.put(f"{P}/apis/{api_id}", json=body), 200)
            resources = await everything(c)
        async with open_core(pg_settings) as core, client(core) as c:
            assert ok(await c.get(f"{P}/apis/{api_id}"), 200) == updated
            assert await everything(c) == resources
            (cluster,) = updated["generated"]["clusters"]
            rc = await native(c, "route-configs", GATEWAY_ROUTES)
            assert forward_clusters(rc, "pets.example.com") == {f"payments/{cluster}"}
            assert (await native(c, "clusters", cluster))["owner"]["id"] == api_id
            # JWT gone with the update: the gateway listener no longer names the API
            assert api_id not in json.dumps(await native(c, "listeners", GATEWAY))
            ok(await c.delete(f"{P}/apis/{api_id}"), 204)
        async with open_core(pg_settings) as core, client(core) as c:
            assert (await c.get(f"{P}/apis/{api_id}")).status_code == 404
            assert (await c.get(f"{N}/clusters/{cluster}")).status_code == 404
            left = await everything(c)
            assert left["clusters"] == {}
            assert set(left["route-configs"]) == {GATEWAY_ROUTES}
            gateway_routes = left["route-configs"][GATEWAY_ROUTES]
            assert "pets.example.com" not in json.dumps(gateway_routes["virtualHosts"])


async def test_a_shared_api_can_drop_its_jwt_and_be_deleted(api: httpx.AsyncClient) -> None:
    """Regression: the JWKS cluster of a shared-mode API is named by the gateway listener's
    jwt_authn provider, so the listener must drop the provider before the cluster is deleted
    (it was deleted first: 409 "still referenced by listener 'default-gateway'")."""
    await team(api, "payments")
    created = ok(await api.post(f"{P}/apis", json=pets(filters={"jwtAuth": JWT})))
    jwks = [c for c in created["generated"]["clusters"] if ".jwks-" in c]
    assert jwks
    dropped = ok(await api.patch(f"{P}/apis/{created['id']}", json={"filters": None}), 200)
    assert not [c for c in dropped["generated"]["clusters"] if ".jwks-" in c]
    assert (await api.get(f"{N}/clusters/{jwks[0]}")).status_code == 404
    assert created["id"] not in json.dumps(await native(api, "listeners", GATEWAY))
    ok(await api.patch(f"{P}/apis/{created['id']}", json={"filters": {"jwtAuth": JWT}}), 200)
    ok(await api.delete(f"{P}/apis/{created['id']}"), 204)
    assert (await api.get(f"{N}/clusters/{jwks[0]}")).status_code == 404
