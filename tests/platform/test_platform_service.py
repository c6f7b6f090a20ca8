"""`PlatformService` without HTTP (issue 9: every REST operation has a service-level test): each
operation called with a caller value, on a real core with the default gateway on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from flowplane.services.common import Window
from flowplane.services.platform import ImportOptions
from tests.services.helpers import ADMIN, caller

DEV_A = caller("apis:read", "apis:write", teams=["a"], name="dev-a")
DEV_B = caller("apis:read", "apis:write", teams=["b"], name="dev-b")


def api(**extra: Any) -> dict[str, Any]:
    return {
        "name": "pets", "domain": "pets.test",
        "upstreams": [{"host": "127.0.0.1", "port": 8001}],
        "routes": [{"path": "/pets", "methods": ["GET"]}], **extra,
    }  # fmt: skip


@pytest.fixture
async def teams(gw_core: Core) -> Core:
    for name in ("a", "b"):
        await gw_core.services.teams.create(ADMIN, {"name": name})
    return gw_core


async def test_create_get_list_and_delete(teams: Core) -> None:
    platform = teams.services.platform
    outcome = await platform.create(DEV_A, api())
    assert outcome.created and outcome.api is not None and outcome.api.team == "a"
    assert {(c.action, c.kind) for c in outcome.changes} == {
        ("create", Kind.CLUSTER), ("update", Kind.ROUTE_CONFIG)}  # fmt: skip
    api_id = outcome.api.id
    assert platform.get(DEV_A, api_id).name == "pets"
    assert [a.id for a in platform.list(DEV_A, Window()).items] == [api_id]
    assert platform.list(DEV_B, Window()).items == []
    with pytest.raises(NotFound):
        platform.get(DEV_B, api_id)
    with pytest.raises(NotFound):  # another team's API is missing to it, for writes too
        await platform.delete(DEV_B, api_id)
    await platform.delete(DEV_A, api_id)
    with pytest.raises(NotFound):
        platform.get(DEV_A, api_id)
    assert not [r for r in teams.state.all() if r.owner == api_id]


async def test_replace_patch_and_append_route_keep_if_match(teams: Core) -> None:
    platform = teams.services.platform
    created = (await platform.create(DEV_A, api())).api
    assert created is not None
    replaced = (await platform.replace(DEV_A, created.id, api(), '"1"')).api
    assert replaced is not None and replaced.version == 2
    with pytest.raises(PreconditionFailed):
        await platform.patch(DEV_A, created.id, {"basePath": "/v1"}, '"1"')
    patched = (await platform.patch(DEV_A, created.id, {"basePath": "/v1"}, '"2"')).api
    assert patched is not None and patched.spec["basePath"] == "/v1"
    appended = (await platform.append_route(DEV_A, created.id, {"path": "/owners"})).api
    assert appended is not None and appended.spec["routes"][-1] == {"path": "/owners"}


async def test_team_rules_and_scopes(teams: Core) -> None:
    platform = teams.services.platform
    with pytest.raises(Forbidden):
        await platform.create(DEV_A, api(team="b"))
    with pytest.raises(Forbidden, match="apis:write"):
        await platform.create(caller("apis:read", teams=["a"]), api())
    await platform.create(DEV_A, api())
    with pytest.raises(Conflict, match="domain"):
        await platform.create(DEV_B, api(name="other"))


async def test_import_dry_run_then_import_then_reimport(teams: Core) -> None:
    platform = teams.services.platform
    doc = json.dumps({
        "openapi": "3.0.3", "info": {"title": "Shop", "version": "1"},
        "servers": [{"url": "http://127.0.0.1:8001"}],
        "paths": {"/items": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }).encode()  # fmt: skip
    options = ImportOptions(domain="shop.test")
    dry = await platform.import_openapi(DEV_A, doc, "application/json",
                                        ImportOptions(domain="shop.test", dry_run=True))  # fmt: skip
    assert dry.outcome.changes and platform.list(DEV_A, Window()).items == []
    first = await platform.import_openapi(DEV_A, doc, "application/json", options)
    assert first.outcome.created and first.outcome.api is not None
    again = await platform.import_openapi(DEV_A, doc, "application/json", options)
    assert again.outcome.api is not None and again.outcome.api.id == first.outcome.api.id
    assert not again.outcome.created and again.outcome.changes == ()


async def test_endpoint_and_service_views(teams: Core) -> None:
    platform = teams.services.platform
    made = (await platform.create(DEV_A, api())).api
    assert made is not None
    (cluster,) = made.owned(Kind.CLUSTER)
    assert platform.endpoint(DEV_A, cluster).owner == made.id
    assert cluster in [r.name for r in platform.endpoints(DEV_A, Window()).items]
    assert cluster not in [r.name for r in platform.endpoints(DEV_B, Window()).items]
    with pytest.raises(NotFound):
        platform.endpoint(DEV_B, cluster)
    gateway = platform.service(DEV_A, "default-gateway")
    assert gateway.name in [r.name for r in platform.services(DEV_A, Window()).items]
