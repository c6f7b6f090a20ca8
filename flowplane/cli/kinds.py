"""The resource kinds the CLI manages, as the REST API names and addresses them.

A kind knows its path, how a record is addressed (by name, or by server-made id), which fields
of a record the server makes (dropped to get the *spec*: what a client sends), and its table
columns. A resource's identity is (kind, team, name); `team` None is a shared resource.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from flowplane.cli.client import ApiError, Client, CliError
from flowplane.cli.output import Column


@dataclass(frozen=True)
class Kind:
    kind: str  # the `kind:` of a document, e.g. "Cluster"
    command: str  # the command group, e.g. "clusters"
    label: str  # in messages: "cluster"
    path: str  # collection path under the server URL
    readonly: frozenset[str]  # record fields the server makes
    columns: tuple[Column, ...]
    by_id: bool = False  # addressed by a server-made id, found by (team, name)
    etag: bool = True  # GET gives an ETag, writes honour If-Match
    replace: str = "PUT"  # how `apply`/`edit` write a whole spec (teams: PATCH)
    team_scoped: bool = True  # records carry a team (teams and tokens do not)

    def spec(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """What a client sends for `record`: the record minus server-made fields; a shared
        resource's `team: null` and a team's empty description/quotas are left out, so a
        document that never mentions them compares equal."""
        spec = {k: v for k, v in record.items() if k not in self.readonly}
        if spec.get("team", 0) is None:
            del spec["team"]
        if self.kind == "Team":
            if spec.get("description") is None:
                spec.pop("description", None)
            if not spec.get("quotas"):
                spec.pop("quotas", None)
        return spec

    @staticmethod
    def merge_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
        """The RFC 7386 merge patch from spec `before` to spec `after` at the top level: the
        changed fields, and null for each one removed (teams and tokens have no PUT)."""
        removed = {k: None for k in before if k not in after}
        return removed | {k: v for k, v in after.items() if before.get(k) != v}

    def item_path(self, key: str) -> str:
        return f"{self.path}/{key}"

    def find(self, client: Client, name: str, team: str | None) -> dict[str, Any]:
        """The record named `name` (in `team` when given); 404 as the server words it."""
        if not self.by_id:
            params = {"team": team} if team and self.team_scoped else {}
            r = client.request("GET", self.item_path(name), params=params)
            record = dict(r.json())
            record["_etag"] = r.headers.get("ETag")
            return record
        try:  # an id works as it is
            r = client.request("GET", self.item_path(name))
            return dict(r.json()) | {"_etag": r.headers.get("ETag")}
        except ApiError as err:
            if err.status not in (400, 404):
                raise
        matches = [
            r
            for r in client.list_all(self.path, **({"team": team} if team else {}))
            if r.get("name") == name
        ]
        if not matches:
            where = f" in team {team!r}" if team else ""
            raise ApiError(404, "not_found", f"{self.label} {name!r}{where} does not exist", [])
        if len(matches) > 1:
            teams = ", ".join(sorted(str(m.get("team")) for m in matches))
            raise CliError(f"{self.label} {name!r} exists in several teams ({teams}): use --team")
        return matches[0] | {"_etag": f'"{matches[0].get("version")}"'}

    def key_of(self, record: Mapping[str, Any]) -> str:
        return str(record["id"] if self.by_id else record["name"])


def _endpoints(r: dict[str, Any]) -> str:
    return ",".join(f"{e.get('host')}:{e.get('port')}" for e in r.get("endpoints", []))


def _routes(r: dict[str, Any]) -> int:
    return sum(len(vh.get("routes", [])) for vh in r.get("virtualHosts", []))


def _address(r: dict[str, Any]) -> str:
    return "api listener" if r.get("apiListener") else f"{r.get('address')}:{r.get('port')}"


def _route_configs(r: dict[str, Any]) -> list[str]:
    return [
        f.get("routeConfigName") or "inline"
        for chain in r.get("filterChains", [])
        for f in chain.get("filters", [])
        if f.get("type") == "httpConnectionManager"
    ]


def _get(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r.get(key)


_NATIVE_RO: Final = frozenset({"version", "source", "createdAt", "updatedAt", "owner"})
NAME, TEAM, VERSION, SOURCE = (
    ("NAME", _get("name")),
    ("TEAM", _get("team")),
    ("VERSION", _get("version")),
    ("SOURCE", _get("source")),
)

CLUSTER: Final = Kind(
    "Cluster", "clusters", "cluster", "/api/v1/native/clusters", _NATIVE_RO,
    (NAME, TEAM, ("ENDPOINTS", _endpoints), ("LB", _get("lbPolicy")), VERSION, SOURCE),
)  # fmt: skip
ROUTE_CONFIG: Final = Kind(
    "RouteConfig", "route-configs", "route config", "/api/v1/native/route-configs", _NATIVE_RO,
    (NAME, TEAM, ("VIRTUAL HOSTS", lambda r: len(r.get("virtualHosts", []))),
     ("ROUTES", _routes), VERSION, SOURCE),
)  # fmt: skip
LISTENER: Final = Kind(
    "Listener", "listeners", "listener", "/api/v1/native/listeners", _NATIVE_RO,
    (NAME, TEAM, ("ADDRESS", _address), ("ROUTE CONFIGS", _route_configs), VERSION, SOURCE),
)  # fmt: skip
API: Final = Kind(
    "Api", "apis", "API", "/api/v1/platform/apis",
    frozenset({"id", "version", "source", "createdAt", "updatedAt", "generated"}),
    (NAME, TEAM, ("DOMAIN", _get("domain")), ("ROUTES", lambda r: len(r.get("routes", []))),
     ("ISOLATED", lambda r: bool((r.get("listener") or {}).get("isolation"))), VERSION,
     ("ID", _get("id"))),
    by_id=True,
)  # fmt: skip
TEAM_KIND: Final = Kind(
    "Team", "teams", "team", "/api/v1/teams", frozenset({"version", "createdAt", "updatedAt"}),
    (NAME, ("DESCRIPTION", _get("description")), ("QUOTAS", _get("quotas")), VERSION),
    etag=False, replace="PATCH", team_scoped=False,
)  # fmt: skip
TOKEN: Final = Kind(
    "Token", "tokens", "token", "/api/v1/tokens",
    frozenset({"id", "status", "createdBy", "createdAt", "updatedAt", "lastUsedAt", "version",
               "token"}),
    (("ID", _get("id")), NAME, ("ROLE", _get("role")), ("TEAMS", _get("teams")),
     ("STATUS", _get("status")), ("EXPIRES", _get("expiresAt")),
     ("LAST USED", _get("lastUsedAt"))),
    by_id=True, etag=False, replace="PATCH", team_scoped=False,
)  # fmt: skip

# Declarative kinds in the order they are created and updated (a referent before its
# referrers; an API's generated clusters may be named by a native route config); deletes run
# in the reverse order.
DECLARATIVE: Final = (TEAM_KIND, CLUSTER, API, ROUTE_CONFIG, LISTENER)
BY_KIND: Final = {k.kind: k for k in DECLARATIVE}
ALL: Final = (*DECLARATIVE, TOKEN)
