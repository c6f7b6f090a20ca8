"""The Platform API's API definition (api.md "Platform API"): the body of
`POST /api/v1/platform/apis`, which `flowplane.platform.materialise` turns into Native resources.

    {"name": "petstore", "team": "payments", "domain": "petstore.example.com", "basePath": "/v1",
     "upstreams": [{"name": "default", "url": "https://pets.internal:8443", "weight": 1},
                   {"host": "10.0.0.7", "port": 8080, "tls": false}],
     "routes": [{"path": "/pets/{id}", "methods": ["GET", "DELETE"], "upstream": "default",
                 "timeoutSeconds": 15, "rewrite": "/api/pets/{id}", "filters": {...}}],
     "filters": {...},
     "listener": {"isolation": false, "name": null, "address": "0.0.0.0", "port": 10001,
                  "filters": {...}}}

Validation is field by field, each problem at its JSON path (`routes[2].methods[0]`); a route
naming a path and method another route already has is a conflict (409), checked by
`parse_api_definition` after the field checks. Rules worth knowing:

- `upstreams`: `url` (http/https, host[:port], nothing after) or `host` + `port`; `name`
  (default "default") groups upstreams into a *set*, one cluster with weighted endpoints; a set
  is all TLS or all plain. A route's `upstream` names a set (default: "default").
- `routes[].path` (api.md "Path patterns"): `/a/b` -> a prefix match; `/a/{id}` -> an Envoy URI
  template (matches `/a/42`, not `/a/42/x`); a `*` segment -> an anchored RE2 regex (`*` is one
  segment). `basePath` is prepended. `rewrite` replaces the matched prefix (prefix paths) or is a
  template using the path's variables (template paths); a `*` path cannot be rewritten.
- `filters` (API level, route level, isolated listener level): `rateLimit`, `jwtAuth`, `cors`,
  the payloads of the OpenAPI extensions (api.md "OpenAPI import"). A route-level entry replaces
  the API-level one of the same key; an explicit `null` means "none here".
- `listener`: shared mode (default) puts the API on the default gateway; `isolation: true` gives
  it its own listener (`port` required) and route config. `name`, `address`, `port` and
  `filters` only apply to an isolated API.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from flowplane.domain import uri_template
from flowplane.domain.api_filters import (
    FILTER_KEYS,
    Cors,
    FilterKey,
    Filters,
    FilterValue,
    JwtAuth,
    KeyBy,
    RateLimit,
    distinct,
    parse_key_by,
)
from flowplane.domain.api_paths import PathPattern, full_path, path_pattern
from flowplane.domain.cluster import HttpMethod
from flowplane.domain.common import (
    NAME_RE,
    ApiModel,
    Host,
    IpAddress,
    Name,
    NestedProblems,
    Port,
    TeamName,
    is_ip,
    parse,
)
from flowplane.errors import Conflict, FieldProblem

__all__ = [
    "FILTER_KEYS",
    "ApiDefinition",
    "ApiListener",
    "ApiRoute",
    "Cors",
    "FilterKey",
    "FilterValue",
    "Filters",
    "JwtAuth",
    "KeyBy",
    "PathPattern",
    "RateLimit",
    "Upstream",
    "full_path",
    "parse_api_definition",
    "parse_key_by",
    "path_pattern",
    "route_conflicts",
]

MAX_UPSTREAMS: Final = 64
MAX_ROUTES: Final = 500
DEFAULT_SET: Final = "default"
MAX_JWT_SETTINGS: Final = 20  # distinct jwtAuth settings per API (each is an Envoy provider)
_JWKS_SET_RE = re.compile(r"^jwks-[0-9]+$")  # reserved: the generated JWKS clusters' names
_HOST_ADAPTER: TypeAdapter[str] = TypeAdapter(Host)


def _problem(field: str, message: str) -> NestedProblems:
    return NestedProblems([FieldProblem(field, message)])


def _base_path(value: str) -> str:
    if value == "/" or not value.startswith("/") or value.endswith("/"):
        raise ValueError("a base path starts with '/' and does not end with one (e.g. '/v1')")
    if any(c in value for c in "{}*"):
        raise ValueError("a base path is literal: no {variables} or '*'")
    path_pattern(value)
    return value


def _domain(value: str) -> str:
    if value != value.lower():
        raise ValueError("must be lower-case")
    host = value[2:] if value.startswith("*.") else value
    if "*" in host or (is_ip(host) and value != host):
        raise ValueError('a domain is a host name or "*.<host name>" (e.g. "*.example.com")')
    try:
        _HOST_ADAPTER.validate_python(host)
    except ValidationError:
        raise ValueError("must be a host name (or *.<host name>)") from None
    return value


def _path(value: str) -> str:
    path_pattern(value)
    return value


Path = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_path)]
BasePath = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_base_path)]
Domain = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_domain)]


# -- upstreams -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool


class Upstream(ApiModel):
    """One endpoint of the upstream set `name`: `url`, or `host` + `port` (+ `tls`)."""

    name: Name = DEFAULT_SET
    url: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    host: Host | None = None
    port: Port | None = None
    weight: Annotated[int, Field(ge=1, le=128)] | None = None
    tls: bool | None = None

    @model_validator(mode="after")
    def _shape(self) -> Upstream:
        if _JWKS_SET_RE.fullmatch(self.name):
            raise _problem("name", "jwks-<n> names the generated JWKS clusters; choose another")
        if self.url is None:
            if self.host is None or self.port is None:
                raise ValueError("give url, or host and port")
            return self
        if self.host is not None or self.port is not None:
            raise ValueError("give url, or host and port, not both")
        _url_endpoint(self.url, self.tls)  # raises NestedProblems at url / tls
        return self

    @property
    def endpoint(self) -> Endpoint:
        if self.url is not None:
            return _url_endpoint(self.url, self.tls)
        assert self.host is not None  # validated
        assert self.port is not None
        return Endpoint(self.host.lower(), self.port, bool(self.tls))


def _url_endpoint(url: str, tls: bool | None) -> Endpoint:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise _problem("url", f"is not a valid URL: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _problem("url", "must be an http:// or https:// URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in url or "#" in url:
        raise _problem("url", "has no path, query or fragment: host[:port] only")
    if parts.username is not None or parts.password is not None:
        raise _problem("url", "must not carry credentials")
    try:
        _HOST_ADAPTER.validate_python(parts.hostname)
    except ValidationError:
        raise _problem("url", f"{parts.hostname!r} is not a host name or IP address") from None
    https = parts.scheme == "https"
    if tls is not None and tls != https:
        raise _problem("tls", f"contradicts the url's scheme ({parts.scheme})")
    return Endpoint(parts.hostname, port or (443 if https else 80), https)


# -- routes, listener, the definition ------------------------------------------------------------


class ApiRoute(ApiModel):
    """One path (and methods) of the API; see the module docstring for paths and rewrites."""

    path: Path
    methods: (
        Annotated[list[HttpMethod], Field(min_length=1, max_length=9), AfterValidator(distinct)]
        | None
    ) = None
    upstream: Name | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] | None = None
    rewrite: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    filters: Filters | None = None
    # A path without variables or '*' matches as a prefix unless `exact` (the OpenAPI import
    # sets it: an OpenAPI path names one path, and nothing below it should reach the upstream).
    exact: bool = False

    @model_validator(mode="after")
    def _rewrite(self) -> ApiRoute:
        if self.rewrite is None:
            return self
        pattern = self.pattern
        try:
            if pattern.kind == "regex":
                raise ValueError("a path with a '*' segment cannot be rewritten; use {variables}")
            if pattern.kind == "template":
                uri_template.check_rewrite(self.rewrite, pattern.variables)
            elif not self.rewrite.startswith("/") or not all(
                uri_template.is_literal(s) for s in self.rewrite.split("/")[1:] if s
            ):
                raise ValueError(
                    "replaces the matched path prefix: a literal path starting with '/' "
                    "(letters, digits, -._~%!$&'()+,;:@=)"
                )
        except ValueError as err:
            raise _problem("rewrite", str(err)) from None
        return self

    @property
    def pattern(self) -> PathPattern:
        return path_pattern(self.path)

    @property
    def upstream_set(self) -> str:
        return self.upstream or DEFAULT_SET


class ApiListener(ApiModel):
    """Shared mode (default): the default gateway. `isolation: true`: a listener of its own."""

    isolation: bool = False
    name: Name | None = None
    address: IpAddress | None = None
    port: Port | None = None
    filters: Filters | None = None

    @model_validator(mode="after")
    def _isolated_only(self) -> ApiListener:
        if not self.isolation:
            extra = [k for k in ("name", "address", "port", "filters") if getattr(self, k)]
            if extra:
                message = "applies to an isolated API only (isolation: true)"
                raise NestedProblems([FieldProblem(k, message) for k in extra])
        elif self.port is None:
            raise _problem("port", "an isolated API's listener needs a port")
        return self


class ApiDefinition(ApiModel):
    """An API definition; `parse_api_definition` is how a request body becomes one."""

    name: Name
    team: TeamName | None = None
    domain: Domain
    base_path: BasePath | None = None
    upstreams: Annotated[list[Upstream], Field(min_length=1, max_length=MAX_UPSTREAMS)]
    routes: Annotated[list[ApiRoute], Field(min_length=1, max_length=MAX_ROUTES)]
    filters: Filters | None = None
    listener: ApiListener | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ApiDefinition:
        problems = self._set_problems() + self._name_problems()
        sets = self.upstream_sets()
        for i, r in enumerate(self.routes):
            if r.upstream_set not in sets:
                known = ", ".join(sets)
                what = "upstream" if r.upstream else 'upstream (default "default")'
                problems.append(
                    FieldProblem(
                        f"routes[{i}].upstream",
                        f"{what}: no upstream set {r.upstream_set!r} (sets: {known})",
                    )
                )
        jwts = {_jwt_key(j) for j in self.jwt_settings()}
        if len(jwts) > MAX_JWT_SETTINGS:
            problems.append(
                FieldProblem(
                    "(body)", f"at most {MAX_JWT_SETTINGS} distinct jwtAuth settings per API"
                )
            )
        if problems:
            raise NestedProblems(problems)
        return self

    def _set_problems(self) -> list[FieldProblem]:
        problems: list[FieldProblem] = []
        first: dict[str, int] = {}
        seen: set[tuple[str, str, int]] = set()
        for i, up in enumerate(self.upstreams):
            ep = up.endpoint
            if (up.name, ep.host, ep.port) in seen:
                problems.append(
                    FieldProblem(
                        f"upstreams[{i}]", f"{ep.host}:{ep.port} is in set {up.name!r} twice"
                    )
                )
            seen.add((up.name, ep.host, ep.port))
            j = first.setdefault(up.name, i)
            other = self.upstreams[j].endpoint
            if other.tls != ep.tls:
                problems.append(
                    FieldProblem(
                        f"upstreams[{i}]",
                        f"set {up.name!r} mixes TLS and plain upstreams (upstreams[{j}]); "
                        "one set is all one or the other",
                    )
                )
            elif ep.tls and not is_ip(ep.host) and not is_ip(other.host) and ep.host != other.host:
                problems.append(
                    FieldProblem(
                        f"upstreams[{i}]",
                        f"TLS set {up.name!r} names hosts {other.host!r} and {ep.host!r}: one "
                        "cluster sends one SNI, so a TLS set has one host name (use two sets)",
                    )
                )
        return problems

    def _name_problems(self) -> list[FieldProblem]:
        """The generated Native names must be valid names (1-253 characters)."""
        longest = max([len(s) for s in self.upstream_sets()] + [len(f"jwks-{MAX_JWT_SETTINGS}")])
        if len(self.base) + 1 + longest > 253 or not NAME_RE.fullmatch(self.base):
            return [
                FieldProblem(
                    "name",
                    "team, name and upstream set names make the generated resource names "
                    "(<team>.<name>.<set>), which must fit in 253 characters",
                )
            ]
        return []

    @property
    def base(self) -> str:
        """The base of every generated Native name: `<team>.<name>`, or `<name>` if shared."""
        return f"{self.team}.{self.name}" if self.team else self.name

    @property
    def isolated(self) -> bool:
        return self.listener is not None and self.listener.isolation

    def upstream_sets(self) -> dict[str, list[Upstream]]:
        """Set name -> its upstreams, in the order the sets first appear."""
        out: dict[str, list[Upstream]] = {}
        for up in self.upstreams:
            out.setdefault(up.name, []).append(up)
        return out

    def scopes(self) -> list[Filters]:
        """Every filters scope: the listener's, the API's, then each route's, in that order."""
        out = [self.listener.filters] if self.listener and self.listener.filters else []
        out += [self.filters] if self.filters else []
        return out + [r.filters for r in self.routes if r.filters]

    def jwt_settings(self) -> list[JwtAuth]:
        """Every jwtAuth setting, in the order of `scopes()` (repeats included)."""
        return [s.jwt_auth for s in self.scopes() if s.jwt_auth is not None]


def _jwt_key(j: JwtAuth) -> str:
    return json.dumps([j.issuer, j.audiences, j.jwks_uri])


def route_conflicts(api: ApiDefinition) -> list[FieldProblem]:
    """Routes that name a path (by shape: `{id}` and `{petId}` are the same) and a method an
    earlier route already has; a route without methods has every method."""
    problems = []
    taken: dict[tuple[str, str | None], int] = {}
    for i, r in enumerate(api.routes):
        shape = r.pattern.shape
        methods: list[str | None] = [*r.methods] if r.methods else [None]
        for m in methods:
            clash = [
                j
                for key, j in taken.items()
                if key[0] == shape and (m is None or key[1] is None or key[1] == m)
            ]
            if clash:
                what = f"{m} {r.path}" if m else f"{r.path} (every method)"
                problems.append(
                    FieldProblem(f"routes[{i}]", f"{what} is already routes[{clash[0]}]")
                )
                break
        for m in methods:
            taken.setdefault((shape, m), i)
    return problems


def parse_api_definition(data: Any) -> ApiDefinition:
    """Validate a request body as an API definition: BadRequest (400) listing every field
    problem, then Conflict (409) if two routes share a path and a method."""
    api = parse(ApiDefinition, data, "API definition")
    conflicts = route_conflicts(api)
    if conflicts:
        raise Conflict(
            f"{len(conflicts)} route(s) repeat a path and method of another route", conflicts
        )
    return api
