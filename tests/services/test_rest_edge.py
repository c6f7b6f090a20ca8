"""The REST edge and the services agree: every authenticated REST endpoint is an adapter over
one service operation that enforces the scope the edge's rule table names (so another edge
calling the service directly is just as strict), and every operation of those services is
reachable over REST. A new endpoint without an entry here, hence without a service-level test,
fails `test_every_rest_endpoint_maps_to_a_service_operation`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from flowplane.api.auth import PUBLIC, RULES
from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.errors import FlowplaneError, Forbidden
from flowplane.services.audit import AuditFilter
from flowplane.services.common import Window
from flowplane.services.dataplanes import BootstrapOptions
from flowplane.services.platform import ImportOptions
from flowplane.settings import Settings, load_settings
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from tests.services.helpers import all_but, assert_scope_refused, caller, run

Args = Callable[[], tuple[Any, ...]]


@pytest.fixture
def settings(db_url: str) -> Settings:
    """xDS auth `none`: a bootstrap then needs exactly its rule's scope. Under token auth (the
    default) it also mints a data-plane token, which needs tokens:write on top; that is tested
    in tests/services/test_dataplanes.py."""
    return load_settings(database_url=db_url, default_gateway=False, xds_auth="none")
_BODY = {Kind.CLUSTER: cluster_body, Kind.ROUTE_CONFIG: route_config_body,
         Kind.LISTENER: listener_body}  # fmt: skip


def _native() -> dict[str, tuple[str, str, Args]]:
    out: dict[str, tuple[str, str, Args]] = {}
    for kind in Kind:
        body = _BODY[kind]
        out |= {
            f"native.{kind.value}_list": ("resources", "list", lambda k=kind: (k, Window())),
            f"native.{kind.value}_get": ("resources", "get", lambda k=kind: (k, "x")),
            f"native.{kind.value}_create": (
                "resources", "create", lambda k=kind, b=body: (k, b("x", team="t")),
            ),
            f"native.{kind.value}_put": (
                "resources", "replace", lambda k=kind, b=body: (k, "x", b("x", team="t")),
            ),
            f"native.{kind.value}_patch": ("resources", "patch", lambda k=kind: (k, "x", {})),
            f"native.{kind.value}_delete": ("resources", "delete", lambda k=kind: (k, "x")),
        }  # fmt: skip
    return out


def _history() -> dict[str, tuple[str, str, Args]]:
    out: dict[str, tuple[str, str, Args]] = {}
    for kind in [*(k.value for k in Kind), "api"]:
        out |= {
            f"history.{kind}_history": ("history", "list", lambda k=kind: (k, "x", Window())),
            f"history.{kind}_history_version": ("history", "version", lambda k=kind: (k, "x", 1)),
            f"history.{kind}_rollback": ("history", "rollback", lambda k=kind: (k, "x", 1, None)),
        }  # fmt: skip
    return out


# REST endpoint -> (service on `core.services`, operation, arguments after the caller)
OPERATIONS: dict[str, tuple[str, str, Args]] = {
    **_native(),
    **_history(),
    "dataplanes.list_nodes": ("dataplanes", "list_nodes", lambda: ()),
    "dataplanes.get_node": ("dataplanes", "get_node", lambda: ("team=t/dp-1",)),
    "dataplanes.bootstrap": ("dataplanes", "bootstrap", lambda: ("t", BootstrapOptions())),
    "security.list_tokens": ("tokens", "list", lambda: (Window(),)),
    "security.create_token": (
        "tokens",
        "create",
        lambda: ({"name": "n", "scopes": ["tokens:write"], "teams": ["t"]},),
    ),
    "security.get_token": ("tokens", "get", lambda: ("no-such-id",)),
    "security.patch_token": ("tokens", "patch", lambda: ("no-such-id", {"name": "n"})),
    "security.revoke_token": ("tokens", "revoke", lambda: ("no-such-id",)),
    "security.rotate_token": ("tokens", "rotate", lambda: ("no-such-id",)),
    "security.list_teams": ("teams", "list", lambda: (Window(),)),
    "security.create_team": ("teams", "create", lambda: ({"name": "t"},)),
    "security.get_team": ("teams", "get", lambda: ("t",)),
    "security.patch_team": ("teams", "patch", lambda: ("t", {"description": "d"})),
    "security.delete_team": ("teams", "delete", lambda: ("t",)),
    "security.list_audit": ("audit", "query", lambda: (AuditFilter(), Window())),
    "platform.list_apis": ("platform", "list", lambda: (Window(),)),
    "platform.create_api": ("platform", "create", lambda: ({"name": "a"},)),
    "platform.get_api": ("platform", "get", lambda: ("no-such-id",)),
    "platform.put_api": ("platform", "replace", lambda: ("no-such-id", {"name": "a"})),
    "platform.patch_api": ("platform", "patch", lambda: ("no-such-id", {})),
    "platform.delete_api": ("platform", "delete", lambda: ("no-such-id",)),
    "platform.append_route": ("platform", "append_route", lambda: ("no-such-id", {"path": "/"})),
    "platform.import_openapi": (
        "platform",
        "import_openapi",
        lambda: (b"{}", "application/json", ImportOptions(domain="x.example.com")),
    ),
    "platform.list_endpoints": ("platform", "endpoints", lambda: (Window(),)),
    "platform.get_endpoint": ("platform", "endpoint", lambda: ("x",)),
    "platform.list_services": ("platform", "services", lambda: (Window(),)),
    "platform.get_service": ("platform", "service", lambda: ("x",)),
}

AUTHENTICATED = sorted(endpoint for endpoint, scope in RULES.items() if scope != PUBLIC)


def test_every_rest_endpoint_maps_to_a_service_operation() -> None:
    assert sorted(OPERATIONS) == AUTHENTICATED, (
        "a REST endpoint (flowplane/api/auth.py RULES) needs its service operation here, and "
        "service-level tests in tests/services/"
    )


async def test_every_operation_of_the_rest_services_is_reachable_over_rest(core: Core) -> None:
    mapped = {(service, op) for service, op, _ in OPERATIONS.values()}
    for service in {service for service, _, _ in OPERATIONS.values()}:
        obj = getattr(core.services, service)
        public = {n for n, _ in inspect.getmembers(obj, inspect.ismethod) if not n.startswith("_")}
        assert public == {op for s, op in mapped if s == service}, service


async def _call(core: Core, endpoint: str, who: Any) -> object:
    service, op, args = OPERATIONS[endpoint]
    return await run(getattr(getattr(core.services, service), op)(who, *args()))


async def _outcome(core: Core, endpoint: str, who: Any) -> object:
    """What the operation answers: its value, or the error it refused with."""
    try:
        return await _call(core, endpoint, who)
    except FlowplaneError as err:
        return err


@pytest.mark.parametrize("endpoint", AUTHENTICATED)
async def test_the_service_enforces_the_scope_the_rest_rule_names(
    core: Core, endpoint: str
) -> None:
    """Without the rule's scope: 403 from the service itself. With only that scope: whatever
    the operation answers (a value, 404, ...), it is not a refusal."""
    scope = RULES[endpoint]
    with pytest.raises(Forbidden) as refused:
        await _call(core, endpoint, all_but(scope))
    assert_scope_refused(refused.value, scope)
    # Team records are managed from above the teams (admin business): those operations are
    # tried with an unbound caller; every other one with a caller of team t.
    teams = [] if endpoint.endswith("_team") and RULES[endpoint] == "teams:write" else ["t"]
    answer = await _outcome(core, endpoint, caller(scope, teams=teams))
    assert not isinstance(answer, Forbidden), answer.message
