"""The default gateway: a listener every installation starts with (unless switched off).

`default-gateway` listens on FLOWPLANE_DEFAULT_GATEWAY_ADDRESS (0.0.0.0:10000) with an HTTP
connection manager whose routes come over RDS from `default-gateway-routes`, empty but valid at
first. Shared-mode Platform APIs add their virtual hosts there. While the setting is on, both are
ensured at every start and cannot be deleted (409).
"""

from __future__ import annotations

import logging
from typing import Any

from flowplane.actors.config import Command, ConfigActor, Protect
from flowplane.domain.resources import Kind, Ref
from flowplane.platform.materialise import gateway_http_filters
from flowplane.settings import Settings, split_address

log = logging.getLogger(__name__)

LISTENER = "default-gateway"
ROUTES = "default-gateway-routes"
WHY = "it is the default gateway (set FLOWPLANE_DEFAULT_GATEWAY=false to manage it yourself)"


def gateway_bodies(address: str) -> tuple[dict[str, Any], dict[str, Any]]:
    host, port = split_address(address, "FLOWPLANE_DEFAULT_GATEWAY_ADDRESS")
    routes = {"name": ROUTES, "virtualHosts": []}
    listener = {
        "name": LISTENER,
        "address": host,
        "port": port,
        "filterChains": [
            {
                "filters": [
                    {
                        "type": "httpConnectionManager",
                        "routeConfigName": ROUTES,
                        # The Platform layer's chain from the start (api.md "Filters on the
                        # shared gateway"), so the first API does not rewrite the listener.
                        "httpFilters": gateway_http_filters([]),
                    }
                ]
            }
        ],
    }
    return routes, listener


async def ensure_default_gateway(settings: Settings, actor: ConfigActor) -> None:
    if not settings.default_gateway:
        return
    state = actor.state
    routes, listener = gateway_bodies(settings.default_gateway_address)
    if state.get(Kind.ROUTE_CONFIG, ROUTES) is None:
        await actor.submit(Command("create", Kind.ROUTE_CONFIG, body=routes))
        log.info("created the default gateway route config %r", ROUTES)
    if state.get(Kind.LISTENER, LISTENER) is None:
        await actor.submit(Command("create", Kind.LISTENER, body=listener))
        log.info("created the default gateway listener %r on %s", LISTENER, listener["port"])
    await actor.submit(
        Protect({Ref(Kind.ROUTE_CONFIG, ROUTES): WHY, Ref(Kind.LISTENER, LISTENER): WHY})
    )
