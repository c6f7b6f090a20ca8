"""Which scope every REST endpoint requires, in one place.

`RULES` maps every endpoint of the app to the scope it requires (or `PUBLIC`); a test walks the
app's URL map and fails if any endpoint is missing. Authentication itself lives in
`flowplane.auth` (shared with the xDS edge); the services check the same scopes again, so an edge
that skips this table (a future MCP tool) still cannot do more than the caller may.
"""

from __future__ import annotations

from flowplane.domain.resources import Kind

PUBLIC = "public"


def _native_rules() -> dict[str, str]:
    out = {}
    for kind in Kind:
        for op in ("list", "get"):
            out[f"native.{kind.value}_{op}"] = kind.scope("read")
        for op in ("create", "put", "patch", "delete"):
            out[f"native.{kind.value}_{op}"] = kind.scope("write")
    return out


def _history_rules() -> dict[str, str]:
    """History reads need the read scope of what they are the history of; rollback its write."""
    out = {}
    for kind, read, write in [
        *((k.value, k.scope("read"), k.scope("write")) for k in Kind),
        ("api", "apis:read", "apis:write"),
    ]:
        out[f"history.{kind}_history"] = read
        out[f"history.{kind}_history_version"] = read
        out[f"history.{kind}_rollback"] = write
    return out


RULES: dict[str, str] = {
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    "metrics": PUBLIC,
    "openapi": PUBLIC,
    "swagger_ui": PUBLIC,
    "swagger_static": PUBLIC,
    "static": PUBLIC,
    **_native_rules(),
    **_history_rules(),
    "platform.list_apis": "apis:read",
    "platform.create_api": "apis:write",
    "platform.get_api": "apis:read",
    "platform.put_api": "apis:write",
    "platform.patch_api": "apis:write",
    "platform.delete_api": "apis:write",
    "platform.append_route": "apis:write",
    "platform.import_openapi": "apis:write",
    "platform.list_endpoints": "apis:read",
    "platform.get_endpoint": "apis:read",
    "platform.list_services": "apis:read",
    "platform.get_service": "apis:read",
    "dataplanes.list_nodes": "nodes:read",
    "dataplanes.get_node": "nodes:read",
    "dataplanes.bootstrap": "listeners:read",
    "security.list_tokens": "tokens:read",
    "security.create_token": "tokens:write",
    "security.get_token": "tokens:read",
    "security.patch_token": "tokens:write",
    "security.revoke_token": "tokens:write",
    "security.rotate_token": "tokens:write",
    "security.list_teams": "teams:read",
    "security.create_team": "teams:write",
    "security.get_team": "teams:read",
    "security.patch_team": "teams:write",
    "security.delete_team": "teams:write",
    "security.list_audit": "audit:read",
}
