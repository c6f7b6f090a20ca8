"""Valid request bodies for tests, benchmarks and examples (plain JSON, as a client sends)."""

from __future__ import annotations

from typing import Any


def cluster_body(name: str = "backend", port: int = 8080, **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoints": [{"host": "127.0.0.1", "port": port}], **extra}


def route_config_body(
    name: str = "routes", cluster: str = "backend", domains: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "virtualHosts": [
            {
                "name": "default",
                "domains": domains or ["*"],
                "routes": [
                    {
                        "name": "all",
                        "match": {"path": {"type": "prefix", "value": "/"}},
                        "action": {"type": "forward", "cluster": cluster},
                    }
                ],
            }
        ],
        **extra,
    }


def listener_body(
    name: str = "edge",
    route_config: str = "routes",
    port: int = 10000,
    address: str = "0.0.0.0",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "address": address,
        "port": port,
        "filterChains": [
            {
                "filters": [
                    {
                        "type": "httpConnectionManager",
                        "routeConfigName": route_config,
                        "httpFilters": [{"type": "router"}],
                    }
                ]
            }
        ],
        **extra,
    }
