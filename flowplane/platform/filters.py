"""The Platform filter vocabulary (flowplane.domain.api_filters) as Native filter configs and
per-scope overrides (README "HTTP filters"). Pure: plain dicts in the Native API's JSON shape.

- `rateLimit` -> a `local_rate_limit` override with a token bucket of its own: `requests` tokens,
  refilled to `requests` every `interval`; `keyBy` other than `route` -> the filter's `keyBy`
  (a bucket per client IP / header value).
- `cors` -> the `cors` per-scope policy (exact origins; `*` -> any origin; without `methods`,
  the methods of the route it is on, so a browser may call them).
- `jwtAuth` -> a provider and a requirement of the listener's `jwt_authn` filter, named
  `<api id>.<n>`, and a `{"requirementName"}` override where it applies. The JWKS is fetched
  through a generated cluster per distinct JWKS host and port (`<base>.jwks-<n>`, TLS for
  https). `required: false` -> the requirement also allows a missing token (a bad one still
  fails). The token is forwarded to the upstream (`forward: true`): a service behind the
  gateway may want the caller's claims.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from flowplane.domain.api_definition import ApiDefinition, Cors, JwtAuth, RateLimit
from flowplane.domain.common import is_ip

CORS: Final = "cors"
JWT_AUTHN: Final = "jwt_authn"
LOCAL_RATE_LIMIT: Final = "local_rate_limit"
ROUTER: Final = "router"
_STAT_LABEL_RE = re.compile(r"[^A-Za-z0-9_-]")
# An API id prefixes jwt_authn provider and requirement names (^[a-z0-9][a-z0-9._-]{0,62}$,
# with room for ".<n>").
_API_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,55}$")


def check_api_id(api_id: str) -> str:
    if not _API_ID_RE.fullmatch(api_id):
        raise ValueError(
            f"API id {api_id!r}: 1-56 characters of lowercase letters, digits, '_' and '-' "
            "(e.g. a UUID), starting with a letter or digit"
        )
    return api_id


def stat_prefix(base: str, *suffix: str) -> str:
    """An Envoy stat prefix from a generated name (labels of [A-Za-z0-9_-], at most 128)."""
    labels = [_STAT_LABEL_RE.sub("_", label) for label in (*base.split("."), *suffix) if label]
    return ".".join(labels)[:128].rstrip(".")


def rate_limit_config(rl: RateLimit, prefix: str) -> dict[str, Any]:
    """A `local_rate_limit` config (or override): `requests` per `interval`, per key."""
    out: dict[str, Any] = {
        "tokenBucket": {
            "maxTokens": rl.requests,
            "tokensPerFill": rl.requests,
            "fillIntervalSeconds": rl.interval_seconds,
        },
        "statPrefix": prefix,
    }
    key = rl.key
    if key.kind == "client_ip":
        out["keyBy"] = {"clientIp": True}
    elif key.kind == "header":
        out["keyBy"] = {"header": key.header}
    return out


NO_BUCKET: Final[dict[str, Any]] = {"tokenBucket": None}
"""The listener-level `local_rate_limit` config that limits nothing itself."""


def cors_policy(c: Cors, route_methods: list[str] | None = None) -> dict[str, Any]:
    """The `cors` per-scope policy of a Platform `cors` setting on a route with
    `route_methods` (its default `methods`; None: every method, and Envoy's default)."""
    out: dict[str, Any] = {"origins": [{"exact": o} for o in c.origins]}
    if c.methods or route_methods:
        out["methods"] = list(c.methods or route_methods or ())
    if c.headers:
        out["headers"] = list(c.headers)
    if c.expose_headers:
        out["exposeHeaders"] = list(c.expose_headers)
    if c.max_age_seconds is not None:
        out["maxAge"] = c.max_age_seconds
    out["allowCredentials"] = c.allow_credentials
    return out


@dataclass
class JwtPlan:
    """What an API's jwtAuth settings become: the providers and requirements its listener's
    `jwt_authn` filter needs (the gateway's, in shared mode), and the JWKS clusters."""

    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    requirements: dict[str, dict[str, Any]] = field(default_factory=dict)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    _requirement_of: dict[str, str] = field(default_factory=dict)

    def requirement_for(self, j: JwtAuth) -> str:
        """The requirement name of a jwtAuth setting of the API."""
        return self._requirement_of[_setting_key(j)]

    def filter_config(self) -> dict[str, Any] | None:
        """The `jwt_authn` config holding these providers and requirements (no rules: a route
        needs a token only where its override names a requirement); None if there are none."""
        if not self.providers:
            return None
        return {"providers": dict(self.providers), "requirementMap": dict(self.requirements)}


def _setting_key(j: JwtAuth) -> str:
    return json.dumps([j.issuer, j.audiences, j.jwks_uri, j.required])


def cluster_ref(api: ApiDefinition, name: str) -> str:
    """How the resources an API's routes and filters live in name its cluster `name`: an
    isolated API's own route config and listener are in the API's team (the bare name); the
    shared gateway's are shared, so a team API's cluster is named `<team>/<name>` there."""
    return f"{api.team}/{name}" if api.team and not api.isolated else name


def jwt_plan(api: ApiDefinition, api_id: str) -> JwtPlan:
    """Number the API's distinct providers, requirements and JWKS hosts in the order they first
    appear (listener, API, then routes), so adding a route never renames existing ones."""
    check_api_id(api_id)
    plan = JwtPlan()
    provider_of: dict[str, str] = {}
    cluster_of: dict[tuple[str, int, bool], str] = {}
    requirement_of: dict[tuple[str, bool], str] = {}
    for j in api.jwt_settings():
        parts = urlsplit(j.jwks_uri)
        host = (parts.hostname or "").lower()
        tls = parts.scheme == "https"
        endpoint = (host, parts.port or (443 if tls else 80), tls)
        if endpoint not in cluster_of:
            cluster_of[endpoint] = f"{api.base}.jwks-{len(cluster_of)}"
            plan.clusters.append(_jwks_cluster(api, cluster_of[endpoint], *endpoint))
        pkey = json.dumps([j.issuer, j.audiences, j.jwks_uri])
        if pkey not in provider_of:
            name = provider_of[pkey] = f"{api_id}.{len(provider_of)}"
            provider: dict[str, Any] = {"issuer": j.issuer}
            if j.audiences:
                provider["audiences"] = list(j.audiences)
            provider["remoteJwks"] = {
                "uri": j.jwks_uri,
                "cluster": cluster_ref(api, cluster_of[endpoint]),
            }
            provider["forward"] = True
            plan.providers[name] = provider
        rkey = (provider_of[pkey], j.required)
        if rkey not in requirement_of:
            rname = requirement_of[rkey] = f"{api_id}.{len(requirement_of)}"
            by_provider = {"provider": provider_of[pkey]}
            plan.requirements[rname] = (
                by_provider
                if j.required
                else {"requiresAny": [by_provider, {"allowMissing": True}]}
            )
        plan._requirement_of[_setting_key(j)] = requirement_of[rkey]
    return plan


def _jwks_cluster(api: ApiDefinition, name: str, host: str, port: int, tls: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if api.team:
        out["team"] = api.team
    out["endpoints"] = [{"host": host, "port": port}]
    if tls:
        out["tls"] = {"enabled": True} | ({} if is_ip(host) else {"sni": host})
    return out


def http_filters(
    jwt_config: dict[str, Any] | None, rate_limit: dict[str, Any], *, discovery: bool = False
) -> list[dict[str, Any]]:
    """The Platform chain (api.md "Filters on the shared gateway"): cors (no policy of its
    own), jwt_authn (if any provider), local_rate_limit, router."""
    chain: list[dict[str, Any]] = [{"type": CORS}]
    if discovery:
        # Always there, its config over ECDS: adding, changing or removing providers changes
        # only that extension config, never the listener (whose change would drain it).
        jwt: dict[str, Any] = {"type": JWT_AUTHN, "discovery": True}
        if jwt_config is not None:
            jwt["config"] = jwt_config
        chain.append(jwt)
    elif jwt_config is not None:
        chain.append({"type": JWT_AUTHN, "config": jwt_config})
    chain.append({"type": LOCAL_RATE_LIMIT, "config": rate_limit})
    chain.append({"type": ROUTER})
    return chain
