"""`jwt_authn` -> envoy.extensions.filters.http.jwt_authn.v3 (JwtAuthentication, and
PerRouteConfig for per-scope overrides)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, http_uri_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.type.matcher.v3 import regex_pb2
from google.protobuf import empty_pb2

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.jwt_authn import (
    JwtAuthnConfig,
    JwtAuthnOverride,
    Provider,
    Requirement,
    Rule,
)
from flowplane.xds.types import duration

TYPE = "jwt_authn"


def _provider(p: Provider) -> jwt_pb2.JwtProvider:
    out = jwt_pb2.JwtProvider(
        issuer=p.issuer,
        audiences=p.audiences or [],
        from_headers=[jwt_pb2.JwtHeader(name=h.name, value_prefix=h.value_prefix or "")
                      for h in p.from_headers or []],
        from_params=p.from_params or [],
        forward=bool(p.forward),
        forward_payload_header=p.forward_payload_header or "",
        claim_to_headers=[jwt_pb2.JwtClaimToHeader(header_name=c.header_name,
                                                   claim_name=c.claim_name)
                          for c in p.claim_to_headers or []],
    )  # fmt: skip
    if p.remote_jwks is not None:
        r = p.remote_jwks
        out.remote_jwks.CopyFrom(jwt_pb2.RemoteJwks(
            http_uri=http_uri_pb2.HttpUri(
                uri=r.uri, cluster=r.cluster, timeout=duration(r.timeout_seconds)
            ),
            cache_duration=duration(r.cache_seconds),
        ))  # fmt: skip
    else:
        assert p.local_jwks is not None  # the domain requires exactly one source
        out.local_jwks.CopyFrom(base_pb2.DataSource(inline_string=p.local_jwks.inline))
    return out


def _requirement(r: Requirement) -> jwt_pb2.JwtRequirement:
    out = jwt_pb2.JwtRequirement()
    if r.provider is not None:
        out.provider_name = r.provider
    elif r.requires_any is not None:
        out.requires_any.requirements.extend(_requirement(c) for c in r.requires_any)
    elif r.requires_all is not None:
        out.requires_all.requirements.extend(_requirement(c) for c in r.requires_all)
    elif r.allow_missing:
        out.allow_missing.CopyFrom(empty_pb2.Empty())
    else:
        out.allow_missing_or_failed.CopyFrom(empty_pb2.Empty())
    return out


def _rule(rule: Rule) -> jwt_pb2.RequirementRule:
    m = rule.match
    match = rc_pb2.RouteMatch()
    if m.prefix is not None:
        match.prefix = m.prefix
    elif m.path is not None:
        match.path = m.path
    else:
        assert m.regex is not None
        # No engine given: Envoy's default is Google RE2 (as in translate_route).
        match.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=m.regex))
    out = jwt_pb2.RequirementRule(match=match)
    if rule.requires is not None:  # unset: the path needs no token
        out.requires.CopyFrom(_requirement(rule.requires))
    return out


def config_to_proto(config: FilterModel) -> jwt_pb2.JwtAuthentication:
    assert isinstance(config, JwtAuthnConfig)
    out = jwt_pb2.JwtAuthentication(rules=[_rule(r) for r in config.rules])
    for name, p in config.providers.items():
        out.providers[name].CopyFrom(_provider(p))
    for name, req in config.requirement_map.items():
        out.requirement_map[name].CopyFrom(_requirement(req))
    return out


def override_to_proto(override: FilterModel) -> jwt_pb2.PerRouteConfig:
    assert isinstance(override, JwtAuthnOverride)
    return jwt_pb2.PerRouteConfig(requirement_name=override.requirement_name)
