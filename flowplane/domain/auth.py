"""Who may do what: scopes, roles, principals, tokens and teams (pure rules, no I/O).

A scope is `{resource}:{read|write}` or `admin:all`. A role is a named set of scopes. A token
carries scopes (its role's plus any given) and optionally teams; a token bound to teams sees and
changes only those teams' resources, plus shared (team-less) ones read-only. Only `admin:all`
writes shared resources and crosses teams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from flowplane.domain.common import ApiModel, Name, TeamName, rfc3339

RESOURCES = ("clusters", "routes", "listeners", "apis", "tokens", "teams", "audit", "nodes")
SCOPES = frozenset(
    {f"{r}:{a}" for r in RESOURCES for a in ("read", "write")}
    | {"admin:all", "xds:connect", "xds:all"}
)
"""`xds:connect` lets a data plane open an xDS stream; `xds:all` (with no team) lets it be a node
of no team, which receives every team's configuration (an admin's `scope=all` bootstrap)."""
ABOVE_TEAMS = ("teams:write", "xds:all")
"""Scopes that stand above teams: a token bound to teams never holds them."""
_NATIVE = {f"{r}:{a}" for r in ("clusters", "routes", "listeners") for a in ("read", "write")}
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin:all"}),
    "platform-engineer": frozenset(
        _NATIVE | {"apis:read", "apis:write", "nodes:read", "audit:read", "teams:read"}
    ),
    # api.md: the Platform API only, own teams; the Native API is 403 (no clusters:, routes:,
    # listeners:). nodes:read stays: it is not the Native API, and it is how an API developer
    # sees whether their own team's Envoys accepted what their APIs produced.
    "api-developer": frozenset({"apis:read", "apis:write", "nodes:read"}),
    "data-plane": frozenset({"xds:connect"}),
}
Role = Literal["admin", "platform-engineer", "api-developer", "data-plane"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    token_id: str | None
    name: str
    scopes: frozenset[str]
    teams: frozenset[str] = frozenset()  # empty = not bound to teams
    client_address: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def admin(self) -> bool:
        return "admin:all" in self.scopes

    def has(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    @property
    def team_bound(self) -> bool:
        return bool(self.teams) and not self.admin

    def can_read_team(self, team: str | None) -> bool:
        """Shared resources are readable by every principal; team ones by that team's tokens."""
        return team is None or not self.team_bound or team in self.teams

    def can_write_team(self, team: str | None) -> bool:
        """Shared resources are written by admins only; team ones by that team's tokens."""
        if team is None:
            return self.admin
        return not self.team_bound or team in self.teams


SYSTEM = Principal(None, "system", frozenset({"admin:all"}))
"""Flowplane itself (start-up tasks such as the default gateway)."""


def _check_scopes(values: list[str] | None) -> list[str] | None:
    if values is not None:
        unknown = sorted(set(values) - SCOPES)
        if unknown:
            raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    return values


class Quotas(ApiModel):
    max_clusters: Annotated[int, Field(ge=0)] | None = None
    max_route_configs: Annotated[int, Field(ge=0)] | None = None
    max_listeners: Annotated[int, Field(ge=0)] | None = None
    max_apis: Annotated[int, Field(ge=0)] | None = None
    # The bytes of the team's stored JSON (its resources' and APIs' specs, as stored).
    max_storage_bytes: Annotated[int, Field(ge=0)] | None = None
    requests_per_minute: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


class TeamSpec(ApiModel):
    name: TeamName
    description: Annotated[str, Field(max_length=1000)] | None = None
    quotas: Quotas | None = None


class TeamPatch(ApiModel):
    description: Annotated[str, Field(max_length=1000)] | None = None
    quotas: Quotas | None = None


class TokenCreate(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: list[str] | None = None
    role: Role | None = None
    teams: list[Name] | None = None
    expires_at: datetime | None = Field(default=None, strict=False)  # RFC 3339 string

    _scopes = field_validator("scopes")(_check_scopes)

    @model_validator(mode="after")
    def _some_scope(self) -> TokenCreate:
        if not self.role and not self.scopes:
            raise ValueError("give a role or at least one scope")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expiresAt needs a time zone (e.g. 2030-01-01T00:00:00Z)")
        return self


class TokenPatch(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    scopes: list[str] | None = None
    teams: list[Name] | None = None
    expires_at: datetime | None = Field(default=None, strict=False)  # RFC 3339 string

    _scopes = field_validator("scopes")(_check_scopes)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    role: str | None
    scopes: frozenset[str]
    teams: frozenset[str]
    status: str  # active | revoked
    expires_at: datetime | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    version: int
    last_used_at: datetime | None = None

    def principal(self, client_address: str | None = None) -> Principal:
        return Principal(self.id, self.name, self.scopes, self.teams, client_address)

    def active_at(self, now: datetime) -> bool:
        return self.status == "active" and (self.expires_at is None or now < self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "scopes": sorted(self.scopes),
            "teams": sorted(self.teams),
            "status": self.status,
            "expiresAt": _ts(self.expires_at),
            "createdBy": self.created_by,
            "createdAt": _ts(self.created_at),
            "updatedAt": _ts(self.updated_at),
            "lastUsedAt": _ts(self.last_used_at),
            "version": self.version,
        }

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "scopes": sorted(self.scopes),
            "teams": sorted(self.teams),
            "status": self.status,
            "expires_at": self.expires_at,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_used_at": self.last_used_at,
            "version": self.version,
        }

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> TokenRecord:
        return cls(
            id=r["id"],
            name=r["name"],
            role=r["role"],
            scopes=frozenset(r["scopes"]),
            teams=frozenset(r["teams"]),
            status=r["status"],
            expires_at=_dt(r["expires_at"]),
            created_by=r["created_by"],
            created_at=_dt(r["created_at"]),  # type: ignore[arg-type]
            updated_at=_dt(r["updated_at"]),  # type: ignore[arg-type]
            version=r["version"],
            last_used_at=_dt(r["last_used_at"]),
        )


def token_scopes(role: str | None, scopes: list[str] | None) -> frozenset[str]:
    return ROLES.get(role or "", frozenset()) | frozenset(scopes or ())


@dataclass(frozen=True, slots=True)
class TeamRecord:
    name: str
    description: str | None
    quotas: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "quotas": self.quotas,
            "version": self.version,
            "createdAt": _ts(self.created_at),
            "updatedAt": _ts(self.updated_at),
        }

    def row(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "quotas": self.quotas,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> TeamRecord:
        return cls(
            r["name"],
            r["description"],
            r["quotas"] or {},
            r["version"],
            _dt(r["created_at"]),  # type: ignore[arg-type]
            _dt(r["updated_at"]),  # type: ignore[arg-type]
        )


def _ts(t: datetime | None) -> str | None:
    return None if t is None else rfc3339(t)


def _dt(v: str | datetime | None) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(v)
