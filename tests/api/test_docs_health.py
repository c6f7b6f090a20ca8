"""/openapi.json, /swagger-ui, /healthz, /readyz, /metrics."""

from __future__ import annotations

import re

import httpx

from flowplane.api.native import PATHS


async def test_openapi_lists_every_path_and_schema(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in PATHS.values():
        assert set(paths[f"/api/v1/native/{path}"]) == {"get", "post"}
        assert set(paths[f"/api/v1/native/{path}/{{name}}"]) == {"get", "put", "patch", "delete"}
    for p in ("/healthz", "/readyz", "/metrics"):
        assert p in paths
    schemas = doc["components"]["schemas"]
    for name in ("ClusterResource", "RouteConfigResource", "ListenerResource", "Endpoint", "Route"):
        assert name in schemas, name
    post = paths["/api/v1/native/clusters"]["post"]
    request = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(request["required"]) == {"name", "endpoints"}
    assert "connectTimeoutSeconds" in request["properties"]  # camelCase, as clients send it
    assert request["additionalProperties"] is False
    for code in ("201", "400", "409", "413", "415"):
        assert code in post["responses"], code
    err = post["responses"]["400"]["content"]["application/json"]["schema"]
    assert set(err["properties"]) == {"error", "message", "details"}
    page = paths["/api/v1/native/listeners"]["get"]["responses"]["200"]["content"]
    assert set(page["application/json"]["schema"]["properties"]) == {
        "items",
        "total",
        "limit",
        "offset",
    }
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    for p in ("/api/v1/tokens", "/api/v1/teams", "/api/v1/audit", "/api/v1/nodes",
              "/api/v1/teams/{team}/bootstrap"):  # fmt: skip
        assert p in paths, p
    params = {p["name"] for p in paths["/api/v1/native/listeners"]["get"]["parameters"]}
    assert params == {"limit", "offset", "team"}
    # every $ref resolves
    text = (await client.get("/openapi.json")).text
    for target in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert target in schemas, target


async def test_swagger_ui_renders_from_local_assets(client: httpx.AsyncClient) -> None:
    r = await client.get("/swagger-ui")
    assert r.status_code == 200 and "SwaggerUIBundle" in r.text and "/openapi.json" in r.text
    for asset in re.findall(r'(?:src|href)="(/swagger-ui/static/[^"]+)"', r.text):
        a = await client.get(asset)
        assert a.status_code == 200 and len(a.content) > 1000, asset


async def test_health_ready_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["storage"] is True
    r = await client.get("/metrics")
    assert r.status_code == 200 and "python_info" in r.text
