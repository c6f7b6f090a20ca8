"""OpenAPI import (api.md "OpenAPI import"): an OpenAPI 3.0/3.1 document -> an API definition.

`import_openapi` is pure: bytes, content type and the query options in; the JSON of an API
definition (the body of `POST /api/v1/platform/apis`) out, or a FlowplaneError: 413 for a body
over the size limit, 415 for a content type other than JSON or YAML, and otherwise 400 listing
every problem by the JSON pointer of where it is in the document (query options by their name).
Nothing is fetched and nothing is stored; the caller validates the definition like any other
(the model may still refuse it; `ImportResult.route_sources` says where each route came from).

How a document becomes a definition:
- `servers` -> the upstream set "default": one upstream per absolute `http(s)` server URL, server
  variables replaced by their defaults; `https` -> TLS (with SNI: the materialiser's business).
  All servers must share a scheme and a path. A TLS set sends one SNI, so https servers on other
  host names than the first server's are skipped with a warning (servers are mostly
  alternatives: production, sandbox); IP addresses may join it. A relative URL (or no servers)
  says nothing about where the API runs (it is relative to wherever the document is served),
  and neither does a non-HTTP URL: such servers are skipped with a warning, and a document left
  with none -> 400.
- `domain` = the `domain` option, else the host of the first server (an IP address is not a
  domain: pass the option). `basePath` = the path of the first server (if not "/").
- `name` = the `name` option, else `info.title` made into a name (`Swagger Petstore` ->
  `swagger-petstore`).
- Each path x method -> a route for that method; operations of one path whose settings are equal
  share one route (`methods` lists them). Path templates (`/pets/{id}`) are kept as they are.
  A `#fragment` or `?query` in a path (a common way to document variants of one request) is not
  part of the request path: it is dropped, and variants with equal settings share a route (else
  400: a router cannot tell them apart). Paths equal but for their variable names likewise.
- Routes are in document order: the materialiser orders the Native routes most specific first.
- Envoy's URI templates have rules of their own (flowplane.domain.uri_template): a variable name
  Envoy refuses is shortened (`{retention_policy_assignment_id}` -> `{retention_policy}`), and a
  path Envoy cannot match as a template (two variables in one segment, more than five) matches
  each variable segment as `*` (one segment of anything); a warning says so.
- Extensions (api.md; payloads in openapi_extensions): at the document level -> the API's
  `filters`; at the path item level -> the `filters` of each route of that path; at the
  operation level -> the route's `filters`, overriding the path item's per key. `null` at the
  path or operation level -> the route explicitly has none of that filter. An unknown
  `x-flowplane-*` key or an invalid payload -> 400; other `x-` extensions are ignored.
- `servers` on a path item or operation (the operation's win) with other hosts than the
  document's -> an upstream set of their own (`servers-1`, `servers-2`, ... in document order)
  named by the route's `upstream`; with another path than the document's (the `basePath`) -> the
  route's `rewrite`: the upstream path, that path + the route's path (the gateway keeps serving
  the route under the API's domain and basePath).
- Webhooks (requests the API makes) are not routed, and security requirements are not enforced
  (only `x-flowplane-jwt-auth` is): a warning says so.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError

from flowplane.domain.api_definition import ApiRoute, Domain
from flowplane.domain.api_paths import path_pattern
from flowplane.domain.common import NAME_RE, Host, Name, is_ip, problems_from
from flowplane.errors import BadRequest, FieldProblem
from flowplane.platform.openapi_document import (
    ImportLimits,
    check_refs,
    follow,
    load_document,
    pointer,
)
from flowplane.platform.openapi_extensions import EXTENSIONS, PREFIX, payload_problems
from flowplane.platform.openapi_validation import validate

__all__ = ["ImportLimits", "ImportResult", "import_openapi"]

METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DEFAULT_SET: Final = "default"
_VERSION_RE: Final = re.compile(r"^3\.([01])\.\d+$")
_VARIABLE_RE: Final = re.compile(r"\{([^{}]*)\}")
_TEMPLATE_RE: Final = re.compile(r"^([^{}]|\{[^{}/]+\})*$")  # balanced, non-empty, no nesting
_ENVOY_NAME_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,15}$")


@dataclass(frozen=True, slots=True)
class ImportResult:
    definition: dict[str, Any]
    """The API definition JSON (camelCase), ready for the API definition model."""
    warnings: list[str] = field(default_factory=list)
    """What the import skipped or merged, one sentence each."""
    route_sources: list[str] = field(default_factory=list)
    """For each route of `definition["routes"]`, the JSON pointer of its path item."""


def import_openapi(
    body: bytes,
    content_type: str,
    *,
    name: str | None,
    team: str | None,
    domain: str | None,
    listener_isolation: bool,
    port: int | None,
    limits: ImportLimits = ImportLimits(),  # noqa: B008 (frozen: one shared default is fine)
) -> ImportResult:
    """The API definition an OpenAPI document describes (module docstring for the rules).

    Raises UnsupportedMediaType (415), PayloadTooLarge (413) or BadRequest (400) listing every
    problem: options first, then the document's encoding and shape, its `$ref`s, its validity as
    OpenAPI, and last what the import itself requires (servers, paths, extensions)."""
    _check_options(name, team, domain, listener_isolation, port)
    doc = load_document(body, content_type, limits)
    version = _version(doc)
    check_refs(doc, limits)
    items = _path_items(doc, limits)
    problems = _path_problems(items)
    seen = {p.field for p in problems}  # the validator's own word on a bad path says less
    problems += [p for p in validate(doc, version, limits) if p.field not in seen]
    if problems:
        raise _refusal(f"invalid OpenAPI {version} document", problems, limits)
    builder = _Builder(doc, items, limits)
    definition = builder.build(name=name, team=team, domain=domain)
    if builder.problems:
        raise _refusal("cannot import the document", builder.problems, limits)
    if listener_isolation:
        definition["listener"] = {"isolation": True} | ({"port": port} if port else {})
    return ImportResult(definition, builder.warnings, builder.route_sources)


def _count(problems: list[FieldProblem]) -> str:
    return f"{len(problems)} problem(s)"


def _refusal(what: str, problems: list[FieldProblem], limits: ImportLimits) -> BadRequest:
    """A 400 listing the problems; a hostile document's thousands are cut at `max_problems`."""
    if len(problems) < limits.max_problems:
        return BadRequest(f"{what}: {_count(problems)}", problems)
    listed = problems[: limits.max_problems]
    return BadRequest(f"{what}: {len(listed)} or more problems (the first {len(listed)})", listed)


_NAME: Final[TypeAdapter[str]] = TypeAdapter(Name)
_DOMAIN: Final[TypeAdapter[str]] = TypeAdapter(Domain)
_HOST: Final[TypeAdapter[str]] = TypeAdapter(Host)


def _check_options(
    name: str | None, team: str | None, domain: str | None, isolation: bool, port: int | None
) -> None:
    """The query options, by the API definition's own rules (each problem under its name)."""
    problems = []
    for key, value, adapter in (
        ("name", name, _NAME),
        ("team", team, _NAME),
        ("domain", domain, _DOMAIN),
    ):
        if value is not None:
            try:
                adapter.validate_python(value)
            except ValidationError as err:
                problems += [FieldProblem(key, p.message) for p in problems_from(err)]
    if port is not None and not 1 <= port <= 65535:
        problems.append(FieldProblem("port", "must be a port number (1-65535)"))
    if port is not None and not isolation:
        problems.append(
            FieldProblem("port", "applies to an isolated listener only (listenerIsolation=true)")
        )
    if port is None and isolation:
        problems.append(FieldProblem("port", "an isolated API's listener needs a port"))
    if problems:
        raise BadRequest(f"invalid import options: {_count(problems)}", problems)


def _is_base_path(path: str) -> bool:
    if "*" in path or "{" in path or "}" in path or "//" in path:
        return False
    try:
        path_pattern(path)
    except ValueError:
        return False
    return True


def _is_host(value: str) -> bool:
    try:
        _HOST.validate_python(value)
    except ValidationError:
        return False
    return True


def _version(doc: dict[str, Any]) -> str:
    """ "3.0" or "3.1"; anything else -> 400 (a Swagger 2.0 document gets a clear message)."""
    if "swagger" in doc:
        raise BadRequest(
            "only OpenAPI 3.0 and 3.1 documents can be imported",
            [
                FieldProblem(
                    "/swagger",
                    f"a Swagger (OpenAPI) {doc['swagger']} document: only OpenAPI 3.0 and 3.1 "
                    "are supported; convert it to OpenAPI 3 first",
                )
            ],
        )
    version = doc.get("openapi")
    if not isinstance(version, str):
        message = (
            "is missing: not an OpenAPI document"
            if version is None
            else "must be a string such as '3.1.0' (in YAML, quote it)"
        )
        raise BadRequest(
            "only OpenAPI 3.0 and 3.1 documents can be imported",
            [FieldProblem("/openapi", message)],
        )
    match = _VERSION_RE.fullmatch(version)
    if not match:
        raise BadRequest(
            "only OpenAPI 3.0 and 3.1 documents can be imported",
            [
                FieldProblem(
                    "/openapi", f"OpenAPI {version}: only OpenAPI 3.0 and 3.1 are supported"
                )
            ],
        )
    return f"3.{match.group(1)}"


@dataclass(frozen=True, slots=True)
class _PathItem:
    url: str  # the key in `paths`
    item: dict[str, Any]  # the Path Item Object, `$ref` followed
    where: str  # its pointer (where the referenced item is, if it is a reference)


def _path_items(doc: dict[str, Any], limits: ImportLimits) -> list[_PathItem]:
    """The path items, references followed (check_refs has vetted them); more than
    `max_operations` operations -> 400 before the (slow) validation."""
    paths = doc.get("paths")
    if not isinstance(paths, dict):
        return []
    items = []
    operations = 0
    for url, item in paths.items():
        where = pointer("paths", url)
        if isinstance(item, dict) and isinstance(item.get("$ref"), str):
            item, target = follow(doc, item["$ref"], limits)
            where = target
        if isinstance(item, dict):
            operations += sum(1 for method in METHODS if method in item)
            items.append(_PathItem(url, item, where))
    if operations > limits.max_operations:
        raise BadRequest(
            "the document has too many operations",
            [
                FieldProblem(
                    "/paths",
                    f"{operations} operations; at most {limits.max_operations} can be imported",
                )
            ],
        )
    return items


@dataclass(frozen=True, slots=True)
class _Server:
    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int | None
    path: str  # "" or "/v1" (no trailing "/")
    where: str

    @property
    def endpoint(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port or (443 if self.scheme == "https" else 80))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port else "")


@dataclass(frozen=True, slots=True)
class _Target:
    upstream: str | None  # the upstream set (None: the default one)
    path: str  # the servers' path: the upstream path is this + the route's path


@dataclass(slots=True)
class _Route:
    path: str
    where: str
    methods: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """method -> (the operation's pointer, its route settings)"""


class _Builder:
    """Builds the definition from a valid document, collecting every problem and warning."""

    def __init__(self, doc: dict[str, Any], items: list[_PathItem], limits: ImportLimits):
        self.doc = doc
        self.items = items
        self.limits = limits
        self.problems: list[FieldProblem] = []
        self.warnings: list[str] = []
        self.route_sources: list[str] = []
        self.upstreams: list[dict[str, Any]] = []
        self.base_path = ""
        self.sets: dict[tuple[tuple[str, str, int], ...], str] = {}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(FieldProblem(where, message))

    def build(self, *, name: str | None, team: str | None, domain: str | None) -> dict[str, Any]:
        servers = self._servers(self.doc.get("servers"), pointer("servers"))
        if servers:
            first = servers[0]
            self.base_path = first.path
            self._add_set(DEFAULT_SET, servers)
            if domain is None:
                if is_ip(first.host):
                    self.problem(
                        pointer_join(first.where, "url"),
                        f"the first server's host {first.host} is an IP address, not a domain; "
                        "pass the domain option",
                    )
                domain = first.host
        definition: dict[str, Any] = {
            "name": name if name is not None else self._name(),
            "team": team,
            "domain": domain,
        }
        if self.base_path:
            definition["basePath"] = self.base_path
        definition["upstreams"] = self.upstreams
        definition["routes"] = self._routes()
        filters = {k: v for k, v in self._extensions(self.doc, "").items() if v is not None}
        if filters:
            definition["filters"] = filters
        self._warn_unrouted(definition)
        return definition

    # --- servers ----------------------------------------------------------------------------

    def _servers(self, servers: Any, where: str) -> list[_Server]:
        """The usable servers of a `servers` list (skipped ones warned about); none -> 400."""
        usable: list[_Server] = []
        before = len(self.problems)
        for i, server in enumerate(servers or []):
            parsed = self._server(server, pointer_join(where, i))
            if parsed is not None:
                usable.append(parsed)
        if not usable:
            if len(self.problems) == before:  # else those problems say it better
                self.problem(
                    where,
                    "needs at least one absolute http:// or https:// server URL (a relative URL is "
                    "relative to wherever the document is served, which an import cannot know)",
                )
            return []
        schemes = sorted({s.scheme for s in usable})
        if len(schemes) > 1:
            self.problem(where, f"servers mix {' and '.join(schemes)}: all must share a scheme")
        for server in usable[1:]:
            if server.path != usable[0].path:
                self.problem(
                    pointer_join(server.where, "url"),
                    f"path {server.path or '/'!r} differs from {usable[0].path or '/'!r}, the "
                    "first server's: one route path cannot reach both",
                )
        unique: dict[tuple[str, str, int], _Server] = {}
        first = usable[0]
        for server in usable:
            key = server.endpoint
            if key in unique:
                self.warnings.append(
                    f"{server.where}: the same upstream as {unique[key].where}; used once"
                )
            elif (
                server.scheme == "https"
                and server.host != first.host
                and not is_ip(server.host)
                and not is_ip(first.host)
            ):
                # One cluster sends one SNI: a TLS set has one host name. Servers are mostly
                # alternatives (production, sandbox), so the first one's host is the API's.
                self.warnings.append(
                    f"{server.where}: skipped: host {server.host} is not {first.host}, the "
                    "first server's (a TLS upstream set sends one SNI, so it has one host name)"
                )
            else:
                unique[key] = server
        return list(unique.values())

    def _server(self, server: dict[str, Any], where: str) -> _Server | None:
        url_at = pointer_join(where, "url")
        variables = server.get("variables") or {}

        undefined = []

        def substitute(match: re.Match[str]) -> str:
            var = variables.get(match.group(1))
            if not isinstance(var, dict) or not isinstance(var.get("default"), str):
                undefined.append(match.group(0))
                return ""
            return str(var["default"])

        url = _VARIABLE_RE.sub(substitute, str(server.get("url", "")))
        if undefined:
            self.problem(url_at, f"uses the variable(s) {', '.join(undefined)}, not defined")
            return None
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            self.problem(url_at, f"{url!r} is not a valid URL: {err}")
            return None
        if not parts.scheme:
            self.warnings.append(f"{url_at}: the relative server URL {url!r} is skipped")
            return None
        if parts.scheme.lower() not in ("http", "https"):
            self.warnings.append(f"{url_at}: the non-HTTP server URL {url!r} is skipped")
            return None
        host = (parts.hostname or "").lower()
        if not host or not _is_host(host):
            self.problem(url_at, f"{url!r} has no valid host (IP address or DNS name)")
            return None
        if parts.username is not None or parts.query or parts.fragment:
            self.problem(url_at, f"{url!r}: a server URL has no user, query or fragment")
            return None
        path = parts.path.rstrip("/")
        if path and not _is_base_path(path):
            self.problem(
                url_at,
                f"{url!r}: the path must be literal: letters, digits, -._~%!$&'()+,;:@= "
                "(percent-encode anything else)",
            )
            return None
        return _Server(parts.scheme.lower(), host, port, path, where)

    def _add_set(self, name: str, servers: list[_Server]) -> None:
        self.sets[tuple(sorted(s.endpoint for s in servers))] = name
        self.upstreams.extend({"name": name, "url": s.url} for s in servers)

    def _target(self, servers: Any, where: str) -> _Target | None:
        """Where a path item's or operation's own `servers` send its requests (None: they are
        not given). Servers other than the document's become an upstream set of their own; a
        path other than the basePath becomes the route's `rewrite`."""
        if not servers:
            return None
        usable = self._servers(servers, where)
        if not usable:
            return None
        key = tuple(sorted(s.endpoint for s in usable))
        if key not in self.sets:
            self._add_set(f"servers-{len(self.sets)}", usable)
        name = self.sets[key]
        return _Target(None if name == DEFAULT_SET else name, usable[0].path)

    # --- name ------------------------------------------------------------------------------

    def _name(self) -> str:
        title = self.doc.get("info", {}).get("title", "")
        ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
        slug = re.sub(r"[^a-z0-9.]+", "-", ascii_title.lower())
        slug = re.sub(r"[.-]*-[.-]*", "-", slug).strip(".-")[:253].strip(".-")
        if not NAME_RE.fullmatch(slug):
            self.problem(
                pointer("info", "title"),
                f"cannot make an API name from {title!r}: pass the name option",
            )
        return slug

    # --- extensions ------------------------------------------------------------------------

    def _extensions(self, obj: dict[str, Any], where: str) -> dict[str, Any]:
        """The `filters` entries of an object's `x-flowplane-*` keys (a null stays null)."""
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not key.lower().startswith(PREFIX):
                continue
            at = pointer_join(where, key)
            if key not in EXTENSIONS:
                known = ", ".join(EXTENSIONS)
                self.problem(at, f"unknown Flowplane extension (known: {known})")
                continue
            filter_key, model = EXTENSIONS[key]
            if value is not None:
                problems = payload_problems(model, value)
                for inside, message in problems:
                    self.problem(pointer_join(at, *inside), message)
                if problems:
                    continue
            out[filter_key] = copy.deepcopy(value)
        return out

    # --- routes ----------------------------------------------------------------------------

    def _routes(self) -> list[dict[str, Any]]:
        routes: dict[str, _Route] = {}
        for entry in self.items:
            path = self._route_path(entry)
            path_filters = self._extensions(entry.item, entry.where)
            path_target = self._target(
                entry.item.get("servers"), pointer_join(entry.where, "servers")
            )
            key = path_pattern(path).shape  # paths of one shape match the same requests
            route = routes.setdefault(key, _Route(path, entry.where))
            if route.path != path:
                self.warnings.append(
                    f"{pointer('paths', entry.url)} is the same route as {route.where} "
                    f"({route.path}): its variable names differ"
                )
            for method in (m for m in entry.item if m in METHODS):
                op = entry.item[method]
                op_at = pointer_join(entry.where, method)
                target = self._target(op.get("servers"), pointer_join(op_at, "servers"))
                target = target or path_target or _Target(None, self.base_path)
                filters = path_filters | self._extensions(op, op_at)
                settings: dict[str, Any] = {}
                if target.upstream is not None:
                    settings["upstream"] = target.upstream
                if target.path != self.base_path:
                    settings["rewrite"] = self._rewrite(target.path + route.path, route, op_at)
                if filters:
                    settings["filters"] = filters
                if method in route.methods:
                    earlier, earlier_settings = route.methods[method]
                    if earlier_settings != settings:
                        self.problem(
                            op_at,
                            f"routes the same requests as {earlier} (a path's #fragment, "
                            "?query and variable names are not part of the request path) with "
                            "different x-flowplane settings or servers",
                        )
                    else:
                        self.warnings.append(f"{op_at} shares the route of {earlier}")
                    continue
                route.methods[method] = (op_at, settings)
        out: list[dict[str, Any]] = []
        for route in (r for r in routes.values() if r.methods):
            groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
            for method, (_, settings) in route.methods.items():
                key = json.dumps(settings, sort_keys=True)
                groups.setdefault(key, (settings, []))[1].append(method.upper())
            for settings, methods in groups.values():
                # An OpenAPI path names one path: a literal one matches exactly (a prefix would
                # let every path below it reach the upstream).
                exact = {} if "{" in route.path or "*" in route.path else {"exact": True}
                out.append({"path": route.path, "methods": methods, **exact, **settings})
                self.route_sources.append(route.where)
        if not out and not self.problems:
            self.problem("/paths", "has no operations: there is nothing to route")
        elif len(out) > self.limits.max_routes:
            self.problem(
                "/paths", f"makes {len(out)} routes; an API has at most {self.limits.max_routes}"
            )
        return out

    def _route_path(self, entry: _PathItem) -> str:
        """The definition's path for a `paths` key (checked by `_path_problems` already)."""
        where = pointer("paths", entry.url)
        path = _request_path(entry.url)
        if path != entry.url:
            self.warnings.append(
                f"{where}: {entry.url[len(path) :]!r} is not part of the request path; "
                f"routed as {path}"
            )
        routed, notes = _envoy_path(path)
        self.warnings += [f"{where}: {note}" for note in notes]
        return routed

    def _rewrite(self, rewrite: str, route: _Route, where: str) -> str:
        """`rewrite` if the definition can have it for `route` (else a problem at `where`)."""
        try:
            ApiRoute.model_validate({"path": route.path, "rewrite": rewrite})
        except ValidationError as err:
            message = "; ".join(p.message for p in problems_from(err))
            self.problem(where, f"its servers' path needs the rewrite {rewrite}, but {message}")
        return rewrite

    def _warn_unrouted(self, definition: dict[str, Any]) -> None:
        if self.doc.get("webhooks"):
            self.warnings.append(
                "/webhooks: webhooks are requests the API makes, not routes; not imported"
            )
        secured = bool(self.doc.get("security")) or any(
            isinstance(op, dict) and op.get("security")
            for entry in self.items
            for method, op in entry.item.items()
            if method in METHODS
        )
        has_jwt = "jwtAuth" in definition.get("filters", {}) or any(
            (r.get("filters") or {}).get("jwtAuth") for r in definition["routes"]
        )
        if secured and not has_jwt:
            self.warnings.append(
                "the document's security requirements are not enforced by the gateway; "
                "add x-flowplane-jwt-auth to enforce JWT authentication"
            )


def _request_path(url: str) -> str:
    """A `paths` key without the `#fragment` or `?query` some documents add to name variants."""
    return re.split(r"[#?]", url, maxsplit=1)[0]


def _path_problems(items: list[_PathItem]) -> list[FieldProblem]:
    """Every path is a URL path with well-formed {variables} that Envoy can match (the validator
    does not check this: it merely fails on a malformed template)."""
    problems = []
    for entry in items:
        path = _request_path(entry.url)
        where = pointer("paths", entry.url)
        if not path.startswith("/"):
            continue  # the validator says so
        if not _TEMPLATE_RE.fullmatch(path):
            problems.append(
                FieldProblem(where, "the path's {variables} are unbalanced, empty or span a '/'")
            )
            continue
        try:
            _envoy_path(path)
        except ValueError as err:
            problems.append(FieldProblem(where, f"cannot be routed: {err}"))
    return problems


def _envoy_path(path: str) -> tuple[str, list[str]]:
    """The definition path for an OpenAPI path, and notes on what changed: a variable name Envoy
    refuses (over 16 characters, or not `[A-Za-z][A-Za-z0-9_]*`) is shortened (names matter only
    to rewrites, which the import writes itself); a template Envoy cannot match (more than five
    variables, two in one segment) matches each of its variable segments as `*` (any one
    segment: the definition's regex paths). ValueError if neither works."""
    notes: list[str] = []
    used: set[str] = set()

    def rename(match: re.Match[str]) -> str:
        name = match.group(1)
        new = name if _ENVOY_NAME_RE.fullmatch(name) and name not in used else _short(name, used)
        used.add(new)
        if new != name:
            notes.append(f"{{{name}}} is {{{new}}} (Envoy's rules for variable names)")
        return "{" + new + "}"

    renamed = _VARIABLE_RE.sub(rename, path)
    try:
        path_pattern(renamed)
    except ValueError as err:
        starred = "/".join("*" if "{" in seg else seg for seg in renamed.split("/"))
        try:
            path_pattern(starred)
        except ValueError:
            raise err from None
        return starred, [f"matched as {starred}: {err}"]
    return renamed, notes


def _short(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    base = (base if base[:1].isalpha() else "v" + base)[:16]
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base[: 16 - len(str(n)) - 1]}_{n}"
    return candidate


def pointer_join(base: str, *parts: str | int) -> str:
    return base + pointer(*parts)
