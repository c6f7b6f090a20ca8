"""An API definition -> the Native resources it is made of (api.md "Platform API",
"Materialisation"). Pure: no I/O; the bodies are plain dicts exactly as a client would POST them
to /api/v1/native, and the same input always gives the same bodies (same keys, same order), so a
re-import leaves unchanged resources byte-identical (and their versions alone).

Names (`base` = `<team>.<name>`, or `<name>` for a shared API):
- one cluster per upstream set: `<base>.<set>` (endpoints weighted; `https` -> TLS with SNI);
- one cluster per distinct JWKS host:port: `<base>.jwks-<n>`;
- the virtual host `<base>` for the API's domain (and `<domain>:*`, so a Host header with a
  port matches too); in shared mode the caller puts it into `default-gateway-routes`;
- isolated: a route config `<base>` holding that virtual host, and a listener
  (`listener.name` or `<base>`) on `listener.address` (0.0.0.0) : `listener.port` whose HTTP
  filters are the Platform chain (cors, jwt_authn, local_rate_limit, router);
- jwt_authn providers and requirements `<api id>.<n>` (flowplane.platform.filters).

Routes: each Platform route becomes a Native route (path per flowplane.domain.api_paths, with
`basePath` prepended; `methods` as the `:method` matcher; `upstream` -> its set's cluster;
`timeoutSeconds`; `rewrite` -> `prefixRewrite` or `templateRewrite`). Routes with the same path
and the same settings become one route with all their methods. Envoy takes the first route that
matches, so routes are ordered most specific first: more segments first, then literal segments
before variables, then definition order.

Filters are resolved per route (route > API > isolated listener; an explicit null means none)
and set on each route, so every route has exactly its own settings: a rate limit is a bucket per
route (`keyBy: route`), and a route's CORS policy never inherits fields from another scope's.
A listener-level `rateLimit` is the exception: one bucket for the whole listener, set on the
listener's filter (a route whose setting is null disables it there). A route with CORS and
methods gets a preflight route before it (OPTIONS with Access-Control-Request-Method naming one
of its methods), since a preflight must match a route for Envoy's CORS filter to answer it; a
CORS policy without `methods` allows the route's methods.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flowplane.domain.api_definition import (
    ApiDefinition,
    ApiRoute,
    Cors,
    FilterKey,
    FilterValue,
    JwtAuth,
    RateLimit,
    full_path,
    path_pattern,
)
from flowplane.domain.common import is_ip
from flowplane.domain.filters import DISABLED
from flowplane.platform.filters import (
    CORS,
    JWT_AUTHN,
    LOCAL_RATE_LIMIT,
    NO_BUCKET,
    JwtPlan,
    check_api_id,
    cluster_ref,
    cors_policy,
    http_filters,
    jwt_plan,
    rate_limit_config,
    stat_prefix,
)

DEFAULT_LISTENER_ADDRESS = "0.0.0.0"  # a gateway listens on every interface
PREFLIGHT_HEADER = "access-control-request-method"


@dataclass(frozen=True)
class Materialised:
    """The Native bodies one API definition becomes. `route_config` and `listener` are set for
    an isolated API only; a shared API's `virtual_host` goes into the default gateway's route
    config, and its JWT providers into the gateway's filter (`gateway_http_filters`)."""

    clusters: tuple[dict[str, Any], ...]
    virtual_host: dict[str, Any]
    route_config: dict[str, Any] | None
    listener: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "clusters": list(self.clusters),
            "virtualHost": self.virtual_host,
            "routeConfig": self.route_config,
            "listener": self.listener,
        }


def materialise(
    api: ApiDefinition, *, api_id: str, gateway_listener: str | None = None
) -> Materialised:
    """The Native resources of `api` (a valid definition, see `parse_api_definition`). `api_id`
    is the API's stable id (e.g. a UUID: lowercase letters, digits, '-', '_'); it names the
    jwt_authn providers and requirements. ValueError if `api_id` is not such an id.
    `gateway_listener`: the shared gateway a shared-mode API joins; its jwt_authn comes over
    ECDS, which Envoy names (and keys per-route configs of) per listener, so the API's routes
    key their jwt_authn overrides `<gateway_listener>/jwt_authn`."""
    check_api_id(api_id)
    plan = jwt_plan(api, api_id)
    clusters = [_cluster(api, name, ups) for name, ups in api.upstream_sets().items()]
    clusters += plan.clusters
    shared_gateway = gateway_listener is not None and not api.isolated
    jwt_key = f"{gateway_listener}/{JWT_AUTHN}" if shared_gateway else JWT_AUTHN
    vhost = _virtual_host(api, plan, jwt_key)
    if not api.isolated:
        return Materialised(tuple(clusters), vhost, None, None)
    listener = api.listener
    assert listener is not None  # isolated
    route_config = _with_team(api, {"name": api.base}) | {"virtualHosts": [vhost]}
    rate_limit = listener.filters.rate_limit if listener.filters else None
    lrl = (
        rate_limit_config(rate_limit, stat_prefix(api.base, "listener"))
        if rate_limit is not None
        else NO_BUCKET
    )
    hcm = {
        "type": "httpConnectionManager",
        "routeConfigName": api.base,
        "httpFilters": http_filters(plan.filter_config(), lrl),
    }
    native_listener = _with_team(api, {"name": listener.name or api.base}) | {
        "address": listener.address or DEFAULT_LISTENER_ADDRESS,
        "port": listener.port,
        "filterChains": [{"filters": [hcm]}],
    }
    return Materialised(tuple(clusters), vhost, route_config, native_listener)


def gateway_http_filters(apis: Sequence[tuple[str, ApiDefinition]]) -> list[dict[str, Any]]:
    """The default gateway listener's `httpFilters` for its shared-mode APIs ((api id,
    definition) pairs; isolated ones are skipped): cors (no policy), jwt_authn with every API's
    providers and requirements (no rules), delivered over ECDS so that the listener never
    changes with them (overrides for it are keyed `<gateway listener>/jwt_authn`: see
    `materialise`'s `gateway_listener`), local_rate_limit with
    no bucket (it limits nothing at the listener), router. The same APIs in any order give the
    same list. ValueError on a repeated or invalid api id."""
    ids = [api_id for api_id, _ in apis]
    if len(set(ids)) != len(ids):
        raise ValueError("an api id is listed twice")
    providers: dict[str, Any] = {}
    requirements: dict[str, Any] = {}
    for api_id, api in sorted(apis, key=lambda pair: pair[0]):
        if api.isolated:
            continue
        config = jwt_plan(api, api_id).filter_config()
        if config is not None:
            providers |= config["providers"]
            requirements |= config["requirementMap"]
    jwt = {"providers": providers, "requirementMap": requirements} if providers else None
    return http_filters(jwt, NO_BUCKET, discovery=True)


def _with_team(api: ApiDefinition, body: dict[str, Any]) -> dict[str, Any]:
    return body | ({"team": api.team} if api.team else {})


def _cluster(api: ApiDefinition, set_name: str, upstreams: list[Any]) -> dict[str, Any]:
    """The cluster of an upstream set (validated: all TLS or none, one TLS host name)."""
    endpoints = []
    for up in upstreams:
        ep = up.endpoint
        endpoints.append(
            {"host": ep.host, "port": ep.port} | ({"weight": up.weight} if up.weight else {})
        )
    body = _with_team(api, {"name": f"{api.base}.{set_name}"}) | {"endpoints": endpoints}
    first = upstreams[0].endpoint
    if first.tls:
        names = [up.endpoint.host for up in upstreams if not is_ip(up.endpoint.host)]
        body["tls"] = {"enabled": True} | ({"sni": names[0]} if names else {})
    return body


def _virtual_host(api: ApiDefinition, plan: JwtPlan, jwt_key: str) -> dict[str, Any]:
    domains = [api.domain] if api.domain.startswith("*") else [api.domain, f"{api.domain}:*"]
    return {"name": api.base, "domains": domains, "routes": _routes(api, plan, jwt_key)}


@dataclass
class _Group:
    """Platform routes with the same path and settings: one Native route."""

    first: int
    path: str
    methods: list[str] | None
    action: dict[str, Any]
    filters: dict[str, Any]
    cors: Cors | None
    exact: bool = False


def _routes(api: ApiDefinition, plan: JwtPlan, jwt_key: str) -> list[dict[str, Any]]:
    groups: dict[str, _Group] = {}
    for i, route in enumerate(api.routes):
        path = full_path(api.base_path, route.path)
        action = _action(api, route, path)
        effective = _effective(api, route)
        filters = _route_filters(api, effective, plan, jwt_key)
        key = json.dumps([path, route.exact, action, filters], sort_keys=True)
        group = groups.get(key)
        if group is None:
            cors = effective.get("cors")
            assert cors is None or isinstance(cors, Cors)
            groups[key] = _Group(
                i, path, list(route.methods or []) or None, action, filters, cors, route.exact
            )
        elif group.methods is not None and route.methods:
            group.methods += route.methods  # no repeats: conflicts were refused
    out: list[dict[str, Any]] = []
    for group in sorted(groups.values(), key=_specificity):
        if group.cors is not None:  # its methods default to the route's (known once grouped)
            group.filters[CORS] = cors_policy(group.cors, group.methods)
        match: dict[str, Any] = {"path": _path_match(group.path, exact=group.exact)}
        if group.cors is not None and group.methods and "OPTIONS" not in group.methods:
            out.append(_preflight(group, match))
        if group.methods:
            match = match | {"methods": group.methods}
        native: dict[str, Any] = {"name": _name(group.methods, group.path), "match": match}
        native["action"] = group.action
        if group.filters:
            native["filters"] = group.filters
        out.append(native)
    return out


def _specificity(group: _Group) -> tuple[int, tuple[int, ...], int]:
    """Sort key: more segments first; per segment, literal (0) before text with a variable (1)
    before a variable or `*` (2) before a trailing '/' (3: a prefix ending in '/' matches any
    next segment); then definition order."""
    segments = path_pattern(group.path).segments

    def rank(segment: str) -> int:
        if not segment:
            return 3
        if segment == "{}":
            return 2
        return 1 if "{}" in segment else 0

    return (-len(segments), tuple(rank(s) for s in segments), group.first)


def _path_match(path: str, *, exact: bool = False) -> dict[str, str]:
    pattern = path_pattern(path)
    if exact and pattern.kind == "prefix":
        return {"type": "exact", "value": pattern.value}
    return {"type": pattern.kind, "value": pattern.value}


def _action(api: ApiDefinition, route: ApiRoute, path: str) -> dict[str, Any]:
    cluster = cluster_ref(api, f"{api.base}.{route.upstream_set}")
    action: dict[str, Any] = {"type": "forward", "cluster": cluster}
    if route.timeout_seconds is not None:
        t = route.timeout_seconds
        action["timeoutSeconds"] = int(t) if t.is_integer() else t  # 15 stays 15, not 15.0
    if route.rewrite is not None:
        kind = path_pattern(path).kind
        action["templateRewrite" if kind == "template" else "prefixRewrite"] = route.rewrite
    return action


def _effective(api: ApiDefinition, route: ApiRoute) -> dict[FilterKey, FilterValue | None]:
    """The route's filters, outer scopes first and each inner one replacing what it states."""
    out: dict[FilterKey, FilterValue | None] = {}
    scopes = [api.listener.filters if api.isolated and api.listener else None]
    for scope in [*scopes, api.filters, route.filters]:
        if scope is not None:
            out.update(scope.given())
    return out


def _route_filters(
    api: ApiDefinition,
    effective: dict[FilterKey, FilterValue | None],
    plan: JwtPlan,
    jwt_key: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cors = effective.get("cors")
    if isinstance(cors, Cors):
        out[CORS] = cors_policy(cors)
    jwt = effective.get("jwtAuth")
    if isinstance(jwt, JwtAuth):
        out[jwt_key] = {"requirementName": plan.requirement_for(jwt)}
    listener_rl = (
        api.listener.filters.rate_limit
        if api.isolated and api.listener and api.listener.filters
        else None
    )
    rate_limit = effective.get("rateLimit")
    if isinstance(rate_limit, RateLimit) and rate_limit is not listener_rl:
        out[LOCAL_RATE_LIMIT] = rate_limit_config(rate_limit, stat_prefix(api.base))
    elif rate_limit is None and "rateLimit" in effective and listener_rl is not None:
        out[LOCAL_RATE_LIMIT] = dict(DISABLED)  # explicit null: not even the listener's bucket
    return out


def _preflight(group: _Group, match: dict[str, Any]) -> dict[str, Any]:
    """A route for the CORS preflights of `group` (OPTIONS + the methods it may ask for)."""
    methods = group.methods or []
    header: dict[str, Any] = {"name": PREFLIGHT_HEADER}
    if len(methods) == 1:
        header["exact"] = methods[0]
    else:
        header["regex"] = "^(" + "|".join(methods) + ")$"
    return {
        "name": _name(["OPTIONS"], group.path, "preflight "),
        "match": match | {"headers": [header], "methods": ["OPTIONS"]},
        "action": group.action,
        "filters": {CORS: group.filters[CORS]},
    }


def _name(methods: list[str] | None, path: str, prefix: str = "") -> str:
    return f"{prefix}{','.join(methods) if methods else '*'} {path}"[:253]
