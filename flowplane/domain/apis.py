"""Stored Platform API definitions, and the rule that keeps the two paths from fighting: what an
API generated belongs to it (api.md "Platform API", Materialisation).

An `ApiRecord` keeps the client's definition (`spec`) and what it generated (`generated`: the
Native specs of the clusters, route configs and listeners it made, and the virtual host it put
into a shared route config). A Native write may add fields to a platform-made resource (they
survive every later Platform update) but may not change or remove a generated one (409 naming the
API), nor delete the resource, nor touch the API's virtual host in the shared gateway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from flowplane.domain import schema
from flowplane.domain.api_definition import ApiDefinition
from flowplane.domain.common import rfc3339
from flowplane.domain.resources import Kind, StoredResource
from flowplane.errors import Conflict, FieldProblem

API_READ_ONLY = ("id", "version", "createdAt", "updatedAt", "generated")

# `generated` keys, by Native kind.
GENERATED_KEYS = {
    Kind.CLUSTER: "clusters",
    Kind.ROUTE_CONFIG: "routeConfigs",
    Kind.LISTENER: "listeners",
}
VHOSTS = "virtualHosts"  # route config name -> the virtual host the API put there
# In the stored `generated` only: the schema version of each Native kind its specs are in (the
# versions current when the API was written; absent in rows older than schema versions: 1).
SCHEMA_VERSIONS = "schemaVersions"


def api_client_spec(data: Any) -> Any:
    """The client's JSON minus what the server manages (a GET can be PUT back)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k not in API_READ_ONLY}
    return data


@dataclass(frozen=True)
class ApiRecord:
    id: str
    name: str
    team: str | None
    version: int
    spec: dict[str, Any]
    generated: dict[str, dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    model: ApiDefinition = field(compare=False, repr=False)

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @property
    def label(self) -> str:
        return f"API {self.name!r}" + ("" if self.team is None else f" of team {self.team!r}")

    def owned(self, kind: Kind) -> Mapping[str, dict[str, Any]]:
        """Native name -> the spec this API generated for it."""
        return self.generated.get(GENERATED_KEYS[kind], {})

    def vhosts(self) -> Mapping[str, dict[str, Any]]:
        """Shared route config name -> the virtual host this API put there."""
        return self.generated.get(VHOSTS, {})

    def to_json(self) -> dict[str, Any]:
        out = dict(self.spec)
        out.update(
            id=self.id,
            name=self.name,
            team=self.team,
            version=self.version,
            createdAt=rfc3339(self.created_at, "microseconds"),
            updatedAt=rfc3339(self.updated_at, "microseconds"),
            generated={GENERATED_KEYS[k]: sorted(self.owned(k)) for k in GENERATED_KEYS}
            | {VHOSTS: {rc: vh.get("name") for rc, vh in sorted(self.vhosts().items())}},
        )
        return out

    @cached_property
    def spec_bytes(self) -> int:
        """The size of the stored definition (what a team's maxStorageBytes quota counts)."""
        return len(json.dumps(self.spec, separators=(",", ":")).encode())

    def row_values(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "team": self.team,
            "version": self.version,
            "spec": self.spec,
            "generated": {**self.generated, SCHEMA_VERSIONS: generated_versions()},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "schema_version": schema.current("api"),
        }


def generated_versions() -> dict[str, int]:
    """The schema version of each Native kind this release writes generated specs in."""
    return {kind.value: schema.current(kind.value) for kind in GENERATED_KEYS}


def upgrade_generated(generated: dict[str, Any], what: str) -> dict[str, Any]:
    """A stored `generated` (what an API made, in the Native shapes of the release that wrote
    it) in this release's shapes, with the versions recorded: each spec through its kind's
    upgrades, each virtual host through the route config's (as a route config holding only
    it). Unchanged (the same object) when it already is current."""
    current = generated_versions()
    versions = {k: generated.get(SCHEMA_VERSIONS, {}).get(k, 1) for k in current}
    if versions == current:
        return generated
    reg = schema.REGISTRY
    out: dict[str, Any] = {k: v for k, v in generated.items() if k != SCHEMA_VERSIONS}
    for kind, key in GENERATED_KEYS.items():
        v = versions[kind.value]
        if key in out:
            out[key] = {
                name: reg.upgrade(kind.value, spec, v, f"{what}: generated {kind.label} {name!r}")
                for name, spec in out[key].items()
            }
    if VHOSTS in out:
        v = versions[Kind.ROUTE_CONFIG.value]
        out[VHOSTS] = {
            rc: reg.upgrade(
                Kind.ROUTE_CONFIG.value, {"name": rc, "virtualHosts": [vh]}, v,
                f"{what}: its virtual host in route config {rc!r}",
            )["virtualHosts"][0]
            for rc, vh in out[VHOSTS].items()
        }  # fmt: skip
    out[SCHEMA_VERSIONS] = current
    return out


def _changed_fields(generated: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    return sorted(k for k, v in generated.items() if spec.get(k) != v)


def check_native_write(
    apis: Mapping[str, ApiRecord], before: StoredResource, after_spec: Mapping[str, Any] | None
) -> None:
    """409 if a Native write (`after_spec` None: a delete) changes what an API generated: the
    resource's own owner (by `before.owner`, no search), and for a route config the virtual
    hosts APIs put into it (a shared route config has no owner)."""
    api = apis.get(before.owner) if before.owner is not None else None
    gen = api.owned(before.kind).get(before.name) if api is not None else None
    if api is not None and gen is not None:
        if after_spec is None:
            raise Conflict(
                f"{before.kind.label} {before.name!r} was made by {api.label} (id {api.id}):"
                " delete or change the API instead"
            )
        bad = _changed_fields(gen, after_spec)
        if bad:
            raise Conflict(
                f"{before.kind.label} {before.name!r} was made by {api.label} (id {api.id});"
                f" these fields belong to the API: {', '.join(bad)}",
                [FieldProblem(f, f"owned by {api.label}") for f in bad],
            )
    if before.kind is not Kind.ROUTE_CONFIG or before.team is not None:
        return  # APIs put virtual hosts only into the shared gateway's (shared) route config
    kept = (after_spec or {}).get("virtualHosts", [])
    for api in apis.values():
        vhost = api.vhosts().get(before.name)
        if vhost is not None and vhost not in kept:
            raise Conflict(
                f"virtual host {vhost.get('name')!r} of route config {before.name!r} belongs"
                f" to {api.label} (id {api.id}): change the API instead",
                [FieldProblem("virtualHosts", f"{vhost.get('name')!r} is owned by {api.label}")],
            )


def without_apis(res: StoredResource, hidden: Iterable[ApiRecord]) -> StoredResource:
    """`res` without what the `hidden` APIs put into it, for a caller that may not see them.

    A shared-mode API lives partly in shared resources: its virtual host in the gateway's route
    config, its jwt_authn providers and requirements (`<api id>.<n>`) in the gateway listener.
    A team-bound token may read those shared resources, but not another team's API (api.md: a
    token bound to teams sees only those teams' resources), so its view leaves those parts out.
    Views only: writes to shared resources are the admins', who see everything."""
    hidden = list(hidden)
    if res.team is not None or not hidden:
        return res
    spec = res.spec
    if res.kind is Kind.ROUTE_CONFIG and "virtualHosts" in spec:
        theirs = [vh for api in hidden if (vh := api.vhosts().get(res.name)) is not None]
        spec = {**spec, "virtualHosts": [v for v in spec["virtualHosts"] if v not in theirs]}
    elif res.kind is Kind.LISTENER:
        prefixes = tuple(f"{api.id}." for api in hidden)
        spec = {**spec, "filterChains": [
            {**chain, "filters": [_without_providers(f, prefixes)
                                  for f in chain.get("filters", [])]}
            for chain in spec.get("filterChains", [])
        ]} if "filterChains" in spec else spec  # fmt: skip
    return res if spec == res.spec else replace(res, spec=spec)


def _without_providers(hcm: Any, prefixes: tuple[str, ...]) -> Any:
    """An HTTP connection manager filter without the jwt_authn providers and requirements
    whose names start with one of `prefixes`."""
    if not isinstance(hcm, dict) or not isinstance(hcm.get("httpFilters"), list):
        return hcm
    filters = []
    for f in hcm["httpFilters"]:
        config = f.get("config") if isinstance(f, dict) else None
        if f.get("type") == "jwt_authn" and isinstance(config, dict):
            config = {
                k: {n: v for n, v in m.items() if not n.startswith(prefixes)}
                if k in ("providers", "requirementMap") and isinstance(m, dict) else m
                for k, m in config.items()
            }  # fmt: skip
            f = {**f, "config": config}
        filters.append(f)
    return {**hcm, "httpFilters": filters}
