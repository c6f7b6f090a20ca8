"""`cors` -> envoy.extensions.filters.http.cors.v3: an empty `Cors` as the HCM filter's config,
and a `CorsPolicy` per scope (typed_per_filter_config)."""

from __future__ import annotations

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.cors import CorsConfig, CorsPolicy, OriginMatcher

TYPE = "cors"


def _origin(m: OriginMatcher) -> string_pb2.StringMatcher:
    if m.regex is not None:
        # Envoy's default engine is RE2; ignore_case does not apply to regexes.
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.regex))
    if m.exact is not None:
        return string_pb2.StringMatcher(exact=m.exact, ignore_case=True)
    if m.prefix is not None:
        return string_pb2.StringMatcher(prefix=m.prefix, ignore_case=True)
    assert m.suffix is not None
    return string_pb2.StringMatcher(suffix=m.suffix, ignore_case=True)


def config_to_proto(config: FilterModel) -> cors_pb2.Cors:
    assert isinstance(config, CorsConfig)
    return cors_pb2.Cors()


def override_to_proto(override: FilterModel) -> cors_pb2.CorsPolicy:
    assert isinstance(override, CorsPolicy)
    p = override
    return cors_pb2.CorsPolicy(
        allow_origin_string_match=[_origin(m) for m in p.origins],
        allow_methods=",".join(p.methods or ()),
        allow_headers=",".join(p.headers or ()),
        expose_headers=",".join(p.expose_headers or ()),
        max_age="" if p.max_age is None else str(p.max_age),
        # Always explicit: Envoy would otherwise take it from an enclosing scope's policy.
        allow_credentials=wrappers_pb2.BoolValue(value=p.allow_credentials),
    )
