"""The Native API end to end, in-process over ASGI against a real SQLite file."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.testing.factories import cluster_body, listener_body, route_config_body

N = "/api/v1/native"


async def create(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(f"{N}/{path}", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def stored_rows(core: Core) -> int:
    return len(await core.repo.load_all())


def assert_error(r: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == kind
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    return body  # type: ignore[no-any-return]


# --- happy paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("clusters", cluster_body()),
        ("route-configs", route_config_body()),
        ("listeners", listener_body()),
    ],
)
async def test_crud_cycle(client: httpx.AsyncClient, core: Core, path: str, body: dict) -> None:
    if path != "clusters":
        await create(client, "clusters", cluster_body())
    if path == "listeners":
        await create(client, "route-configs", route_config_body())

    r = await client.post(f"{N}/{path}", json=body)
    assert r.status_code == 201
    assert r.headers["location"] == f"{N}/{path}/{body['name']}"
    assert r.headers["etag"] == '"1"'
    created = r.json()
    assert created["version"] == 1 and created["source"] == "native" and created["team"] is None
    assert created["createdAt"].endswith("Z") and created["createdAt"] == created["updatedAt"]

    r = await client.get(f"{N}/{path}/{body['name']}")
    assert r.status_code == 200 and r.json() == created and r.headers["etag"] == '"1"'

    r = await client.get(f"{N}/{path}")
    assert r.json()["total"] == 1 and r.json()["items"] == [created]

    changed = {**copy.deepcopy(body), "team": "payments"}
    # api.md Conventions: references resolve inside a team, so a resource never moves (400)
    r = await client.put(f"{N}/{path}/{body['name']}", json=changed, headers={"If-Match": '"1"'})
    assert r.status_code == 400 and r.json()["details"] == [
        {"field": "team", "message": "must be absent or null"}
    ]
    r = await client.put(f"{N}/{path}/{body['name']}", json=body, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["team"] is None
    assert r.json()["createdAt"] == created["createdAt"]
    assert r.json()["updatedAt"] >= created["updatedAt"]
    assert r.headers["etag"] == '"2"'

    r = await client.patch(f"{N}/{path}/{body['name']}", json={"team": "payments"})
    assert r.status_code == 400
    r = await client.patch(f"{N}/{path}/{body['name']}", json={"team": None})
    assert r.status_code == 200 and r.json()["version"] == 3 and r.json()["team"] is None

    if path != "listeners":  # others are referenced; delete the referrers first
        return
    r = await client.delete(f"{N}/{path}/{body['name']}", headers={"If-Match": '"3"'})
    assert r.status_code == 204 and r.content == b""
    assert (await client.get(f"{N}/{path}/{body['name']}")).status_code == 404
    assert await stored_rows(core) == 2


async def test_round_trip_is_exact(client: httpx.AsyncClient) -> None:
    body = cluster_body(
        connectTimeoutSeconds=1,  # an int for a float field stays an int
        lbPolicy="RING_HASH",
        ringHash={"minimumRingSize": 64},
        dnsLookupFamily="V4_ONLY",
        healthChecks=[{"type": "http", "path": "/health", "expectedStatuses": [200, 204]}],
        circuitBreakers={"default": {"maxConnections": 100}, "high": {"maxRetries": 3}},
        outlierDetection={"consecutive5xx": 5, "intervalSeconds": 2.5},
        tls={"enabled": True, "sni": "backend.internal"},
        http2=True,
    )
    created = await create(client, "clusters", body)
    got = (await client.get(f"{N}/clusters/backend")).json()
    for key, value in body.items():
        assert got[key] == value and type(got[key]) is type(value), key
    assert got == created
    assert set(got) == set(body) | {"team", "version", "source", "createdAt", "updatedAt"}


async def test_put_back_what_get_returned(client: httpx.AsyncClient) -> None:
    got = await create(client, "clusters", cluster_body())
    r = await client.put(f"{N}/clusters/backend", json=got)  # read-only fields are ignored
    assert r.status_code == 200 and r.json()["version"] == 2


async def test_put_replaces_patch_merges(client: httpx.AsyncClient) -> None:
    await create(client, "clusters", cluster_body(http2=True, lbPolicy="RANDOM"))
    r = await client.patch(
        f"{N}/clusters/backend",
        content=b'{"lbPolicy": null}',
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200 and "lbPolicy" not in r.json() and r.json()["http2"] is True
    r = await client.put(f"{N}/clusters/backend", json=cluster_body())
    assert "http2" not in r.json()


async def test_list_paging_and_team_filter(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await create(client, "clusters", cluster_body(f"c{i}", team="a" if i % 2 else "b"))
    page = (await client.get(f"{N}/clusters", params={"limit": 2, "offset": 1})).json()
    assert [c["name"] for c in page["items"]] == ["c1", "c2"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    page = (await client.get(f"{N}/clusters", params={"team": "a"})).json()
    assert [c["name"] for c in page["items"]] == ["c1", "c3"] and page["total"] == 2
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}, {"bogus": 1}):
        assert_error(await client.get(f"{N}/clusters", params=params), 400, "bad_request")


# --- references and conflicts --------------------------------------------------------------


async def test_route_naming_missing_cluster_is_400(client: httpx.AsyncClient, core: Core) -> None:
    body = assert_error(
        await client.post(f"{N}/route-configs", json=route_config_body(cluster="nope")),
        400,
        "bad_request",
    )
    assert "cluster 'nope'" in body["message"]
    assert await stored_rows(core) == 0


async def test_listener_naming_missing_route_config_is_400(client: httpx.AsyncClient) -> None:
    body = assert_error(
        await client.post(f"{N}/listeners", json=listener_body()), 400, "bad_request"
    )
    assert "route config 'routes'" in body["message"]


async def test_delete_referenced_is_409_naming_referrers(client: httpx.AsyncClient) -> None:
    await create(client, "clusters", cluster_body())
    await create(client, "route-configs", route_config_body())
    await create(client, "route-configs", route_config_body("more"))
    await create(client, "listeners", listener_body())
    body = assert_error(await client.delete(f"{N}/clusters/backend"), 409, "conflict")
    assert "route config 'more'" in body["message"] and "route config 'routes'" in body["message"]
    body = assert_error(await client.delete(f"{N}/route-configs/routes"), 409, "conflict")
    assert "listener 'edge'" in body["message"]
    assert (await client.get(f"{N}/clusters/backend")).status_code == 200
    # once the referrers are gone, the delete goes through
    assert (await client.delete(f"{N}/listeners/edge")).status_code == 204
    assert (await client.delete(f"{N}/route-configs/routes")).status_code == 204
    assert (await client.delete(f"{N}/route-configs/more")).status_code == 204
    assert (await client.delete(f"{N}/clusters/backend")).status_code == 204


async def test_references_follow_updates(client: httpx.AsyncClient) -> None:
    await create(client, "clusters", cluster_body("a"))
    await create(client, "clusters", cluster_body("b"))
    await create(client, "route-configs", route_config_body(cluster="a"))
    r = await client.put(f"{N}/route-configs/routes", json=route_config_body(cluster="b"))
    assert r.status_code == 200
    assert (await client.delete(f"{N}/clusters/a")).status_code == 204
    assert_error(await client.delete(f"{N}/clusters/b"), 409, "conflict")


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    await create(client, "clusters", cluster_body())
    assert_error(await client.post(f"{N}/clusters", json=cluster_body()), 409, "conflict")


@pytest.mark.parametrize(
    ("first", "second", "conflict"),
    [
        (("0.0.0.0", 10000), ("0.0.0.0", 10000), True),
        (("127.0.0.1", 10000), ("127.0.0.1", 10000), True),
        (("0.0.0.0", 10000), ("127.0.0.1", 10000), True),
        (("127.0.0.1", 10000), ("0.0.0.0", 10000), True),
        (("127.0.0.1", 10000), ("127.0.0.2", 10000), False),
        (("0.0.0.0", 10000), ("0.0.0.0", 10001), False),
        (("0.0.0.0", 10000), ("::1", 10000), False),
    ],
)
async def test_listener_address_conflicts(
    client: httpx.AsyncClient, first: tuple, second: tuple, conflict: bool
) -> None:
    await create(client, "clusters", cluster_body())
    await create(client, "route-configs", route_config_body())
    await create(client, "listeners", listener_body("one", address=first[0], port=first[1]))
    r = await client.post(
        f"{N}/listeners", json=listener_body("two", address=second[0], port=second[1])
    )
    if conflict:
        assert "'one'" in assert_error(r, 409, "conflict")["message"]
    else:
        assert r.status_code == 201


async def test_listener_may_keep_its_own_address(client: httpx.AsyncClient) -> None:
    await create(client, "clusters", cluster_body())
    await create(client, "route-configs", route_config_body())
    await create(client, "listeners", listener_body())
    r = await client.put(f"{N}/listeners/edge", json=listener_body())
    assert r.status_code == 200


# --- If-Match ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
async def test_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient, method: str
) -> None:
    await create(client, "clusters", cluster_body())
    await client.patch(f"{N}/clusters/backend", json={"http2": True})  # now version 2
    kwargs: dict[str, Any] = {"headers": {"If-Match": '"1"'}}
    if method == "put":
        kwargs["json"] = cluster_body(port=9)
    elif method == "patch":
        kwargs["json"] = {"http2": False}
    r = await client.request(method.upper(), f"{N}/clusters/backend", **kwargs)
    assert_error(r, 412, "precondition_failed")
    got = (await client.get(f"{N}/clusters/backend")).json()
    assert got["version"] == 2 and got["http2"] is True


async def test_if_match_star_and_weak(client: httpx.AsyncClient) -> None:
    await create(client, "clusters", cluster_body())
    r = await client.patch(f"{N}/clusters/backend", json={"http2": True}, headers={"If-Match": "*"})
    assert r.status_code == 200
    r = await client.patch(
        f"{N}/clusters/backend", json={"http2": False}, headers={"If-Match": 'W/"2"'}
    )
    assert r.status_code == 200


# --- bad input: clear 4xx, nothing written -------------------------------------------------


BAD_CLUSTERS: list[tuple[str, Any, str]] = [
    ("unknown field", cluster_body(colour="blue"), "colour"),
    ("wrong type", cluster_body(connectTimeoutSeconds="5"), "connectTimeoutSeconds"),
    ("string port", {"name": "a", "endpoints": [{"host": "h", "port": "80"}]}, "endpoints[0].port"),
    ("port 0", cluster_body(port=0), "endpoints[0].port"),
    ("port 65536", cluster_body(port=65536), "endpoints[0].port"),
    ("empty name", cluster_body(""), "name"),
    ("upper-case name", cluster_body("Backend"), "name"),
    ("name with slash", cluster_body("a/b"), "name"),
    ("name with quote", cluster_body("a'; DROP TABLE resources;--"), "name"),
    ("traversal name", cluster_body("../../etc/passwd"), "name"),
    ("no endpoints", {"name": "a", "endpoints": []}, "endpoints"),
    ("missing endpoints", {"name": "a"}, "endpoints"),
    (
        "bad host",
        {"name": "a", "endpoints": [{"host": "not a host", "port": 1}]},
        "endpoints[0].host",
    ),
    ("bad lb", cluster_body(lbPolicy="FASTEST"), "lbPolicy"),
    ("option w/o policy", cluster_body(maglev={"tableSize": 65537}), "(body)"),
    ("maglev not prime", cluster_body(lbPolicy="MAGLEV", maglev={"tableSize": 1000}), "maglev"),
    ("http check w/o path", cluster_body(healthChecks=[{"type": "http"}]), "healthChecks[0]"),
    ("negative timeout", cluster_body(connectTimeoutSeconds=-1), "connectTimeoutSeconds"),
    # Issue 11: 1e-10 s becomes a 0s Duration, which Envoy NACKs (PGV `duration.gt: 0s`).
    ("timeout Envoy sees as 0s", cluster_body(connectTimeoutSeconds=1e-10), "connect_timeout"),
    ("not an object", ["a"], "(body)"),
]


@pytest.mark.parametrize(("why", "body", "field"), BAD_CLUSTERS, ids=[b[0] for b in BAD_CLUSTERS])
async def test_bad_cluster_is_400_with_field(
    client: httpx.AsyncClient, core: Core, why: str, body: Any, field: str
) -> None:
    err = assert_error(await client.post(f"{N}/clusters", json=body), 400, "bad_request")
    assert field in [d["field"] for d in err["details"]], err
    assert await stored_rows(core) == 0 and core.state.count(Kind.CLUSTER) == 0


async def test_envoy_rule_refusal_names_resource_and_proto_path(
    client: httpx.AsyncClient, core: Core
) -> None:
    """Issue 11: a value the model accepts but Envoy's declared rules refuse is a 400 naming
    the resource and the proto field, and nothing is stored (so no NACK can hold back CDS)."""
    body = cluster_body("tiny", connectTimeoutSeconds=1e-10)
    err = assert_error(await client.post(f"{N}/clusters", json=body), 400, "bad_request")
    assert err["message"] == "cluster 'tiny': connect_timeout: value must be greater than 0s"
    assert err["details"] == [
        {"field": "connect_timeout", "message": "value must be greater than 0s"}
    ]
    assert await stored_rows(core) == 0 and core.state.count(Kind.CLUSTER) == 0
    await create(client, "clusters", cluster_body("tiny", connectTimeoutSeconds=1e-9))


BAD_ROUTES: list[tuple[str, Any]] = [
    ("regex", {"type": "regex", "value": "(unclosed"}),
    ("relative prefix", {"type": "prefix", "value": "api"}),
    ("template braces", {"type": "template", "value": "/a/{id"}),
    ("unknown type", {"type": "glob", "value": "/a"}),
]


@pytest.mark.parametrize(("why", "path"), BAD_ROUTES, ids=[b[0] for b in BAD_ROUTES])
async def test_bad_route_match_is_400(client: httpx.AsyncClient, why: str, path: Any) -> None:
    await create(client, "clusters", cluster_body())
    body = route_config_body()
    body["virtualHosts"][0]["routes"][0]["match"]["path"] = path
    err = assert_error(await client.post(f"{N}/route-configs", json=body), 400, "bad_request")
    assert err["details"][0]["field"].startswith("virtualHosts[0].routes[0].match.path")


@pytest.mark.parametrize(
    ("why", "mutate"),
    [
        (
            "two routers",
            lambda b: b["filterChains"][0]["filters"][0].update(
                httpFilters=[{"type": "router"}, {"type": "router"}]
            ),
        ),
        (
            "router not last",
            lambda b: b["filterChains"][0]["filters"][0].update(
                httpFilters=[{"type": "router"}, {"type": "cors"}]
            ),
        ),
        ("no address", lambda b: b.pop("address")),
        ("bad address", lambda b: b.update(address="localhost")),
        ("api listener with port", lambda b: b.update(apiListener=True)),
        (
            "both route sources",
            lambda b: b["filterChains"][0]["filters"][0].update(
                inlineRouteConfig={"virtualHosts": []}
            ),
        ),
        (
            "unknown filter type",
            lambda b: b["filterChains"][0]["filters"].__setitem__(0, {"type": "redis"}),
        ),
        ("no chains", lambda b: b.update(filterChains=[])),
    ],
)
async def test_bad_listener_is_400(
    client: httpx.AsyncClient, core: Core, why: str, mutate: Any
) -> None:
    await create(client, "clusters", cluster_body())
    await create(client, "route-configs", route_config_body())
    body = listener_body()
    mutate(body)
    assert_error(await client.post(f"{N}/listeners", json=body), 400, "bad_request")
    assert await stored_rows(core) == 2


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        f"{N}/clusters", content=b"null", headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "bad_request")
    r = await client.post(
        f"{N}/clusters", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_error(r, 400, "bad_request")["message"]
    r = await client.post(
        f"{N}/clusters", content=b'{"port": NaN}', headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "bad_request")


async def test_deeply_nested_json_is_400(client: httpx.AsyncClient, core: Core) -> None:
    deep = b'{"name": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = await client.post(
        f"{N}/clusters", content=deep, headers={"content-type": "application/json"}
    )
    assert "nested" in assert_error(r, 400, "bad_request")["message"]
    assert await stored_rows(core) == 0
    assert (await client.get("/healthz")).status_code == 200


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    r = await client.post(
        f"{N}/clusters", content=b"name=a", headers={"content-type": "text/plain"}
    )
    assert_error(r, 415, "unsupported_media_type")
    r = await client.post(f"{N}/clusters", content=b"{}")  # no content type at all
    assert_error(r, 415, "unsupported_media_type")


async def test_oversized_body_is_413(client: httpx.AsyncClient, core: Core) -> None:
    big = cluster_body(padding="x" * (core.settings.max_body_bytes + 1))
    assert_error(await client.post(f"{N}/clusters", json=big), 413, "payload_too_large")
    assert await stored_rows(core) == 0


async def test_rename_via_put_is_400(client: httpx.AsyncClient) -> None:
    await create(client, "clusters", cluster_body())
    err = assert_error(
        await client.put(f"{N}/clusters/backend", json=cluster_body("other")), 400, "bad_request"
    )
    assert err["details"][0]["field"] == "name"


async def test_missing_resource_is_404(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        kwargs = {"json": cluster_body("ghost")} if method in ("PUT", "PATCH") else {}
        assert_error(
            await client.request(method, f"{N}/clusters/ghost", **kwargs), 404, "not_found"
        )


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/native/nothing"), 404, "not_found")
    r = await client.request("TRACE", f"{N}/clusters")
    assert r.status_code == 405 and r.json()["error"] == "bad_request"


async def test_storage_failure_is_503_and_changes_nothing(
    client: httpx.AsyncClient, core: Core
) -> None:
    await create(client, "clusters", cluster_body())
    await core.repo.aclose()  # a real fault: the database connection is gone
    r = await client.post(f"{N}/clusters", json=cluster_body("second"))
    assert_error(r, 503, "unavailable")
    assert core.state.get(Kind.CLUSTER, "second") is None
    assert (await client.get("/readyz")).status_code == 503
