"""Route configuration (domain) -> `envoy.config.route.v3.RouteConfiguration` (RDS).

Sans-I/O and deterministic: the order of virtual hosts, routes and matchers is the client's
(Envoy matches routes in order), and maps are serialized sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.path.match.uri_template.v3 import uri_template_match_pb2
from envoy.extensions.path.rewrite.uri_template.v3 import uri_template_rewrite_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf.message import Message

from flowplane.domain.filters import override_target, parse_override
from flowplane.domain.route import (
    DirectResponseAction,
    ForwardAction,
    HeaderMatch,
    InlineRouteConfig,
    QueryParameterMatch,
    RedirectAction,
    Retry,
    Route,
    RouteConfig,
    RouteMatch,
    VirtualHost,
    WeightedAction,
)
from flowplane.xds.filters import override_config
from flowplane.xds.types import (
    URI_TEMPLATE_MATCH,
    URI_TEMPLATE_REWRITE,
    duration,
    http_filter_name,
    pack,
    u32,
)

_REDIRECT_CODES = {
    301: rc_pb2.RedirectAction.MOVED_PERMANENTLY,
    302: rc_pb2.RedirectAction.FOUND,
    303: rc_pb2.RedirectAction.SEE_OTHER,
    307: rc_pb2.RedirectAction.TEMPORARY_REDIRECT,
    308: rc_pb2.RedirectAction.PERMANENT_REDIRECT,
}


def route_config_to_proto(
    rc: RouteConfig | InlineRouteConfig, name: str
) -> route_pb2.RouteConfiguration:
    """The Envoy route configuration called `name` for `rc` (standalone or listener-inline)."""
    out = route_pb2.RouteConfiguration(
        name=name, virtual_hosts=[_virtual_host(vh) for vh in rc.virtual_hosts]
    )
    _per_filter_config(out.typed_per_filter_config, rc.filters)
    return out


def _virtual_host(vh: VirtualHost) -> rc_pb2.VirtualHost:
    out = rc_pb2.VirtualHost(
        name=vh.name, domains=list(vh.domains), routes=[_route(r) for r in vh.routes]
    )
    _per_filter_config(out.typed_per_filter_config, vh.filters)
    return out


def _per_filter_config(target: Any, overrides: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Per-scope filter overrides -> `typed_per_filter_config`, keyed by the filter's Envoy name
    (`http_filter_name`, as the HCM names it). `{"disabled": true}` becomes a `FilterConfig`
    with `disabled` (Envoy honours it without knowing the filter's config type); a typed
    override becomes the filter type's per-route message (`flowplane.xds.filters`).
    """
    for key, override in (overrides or {}).items():
        listener, filter_name = override_target(key)
        typed = parse_override(key, dict(override))
        if typed is None:
            msg: Message = rc_pb2.FilterConfig(disabled=True)
        else:
            msg = override_config(filter_name, typed)
        name = http_filter_name(filter_name)
        # A filter delivered over ECDS is named (and its per-route config keyed) per listener.
        target[name if listener is None else f"{listener}/{name}"].CopyFrom(pack(msg))


def _route(r: Route) -> rc_pb2.Route:
    out = rc_pb2.Route(match=_match(r.match))
    if r.name is not None:
        out.name = r.name
    action = r.action
    if isinstance(action, ForwardAction):
        out.route.CopyFrom(_forward(action))
    elif isinstance(action, WeightedAction):
        out.route.weighted_clusters.clusters.extend(
            rc_pb2.WeightedCluster.ClusterWeight(name=c.name, weight=u32(c.weight))
            for c in action.clusters
        )
        if action.timeout_seconds is not None:
            out.route.timeout.CopyFrom(duration(action.timeout_seconds))
    elif isinstance(action, RedirectAction):
        out.redirect.CopyFrom(_redirect(action))
    else:
        out.direct_response.CopyFrom(_direct_response(action))
    _per_filter_config(out.typed_per_filter_config, r.filters)
    return out


def _regex(value: str) -> regex_pb2.RegexMatcher:
    # No engine given: Envoy's default engine is Google RE2 (setting `google_re2` explicitly is
    # deprecated).
    return regex_pb2.RegexMatcher(regex=value)


def _match(m: RouteMatch) -> rc_pb2.RouteMatch:
    out = rc_pb2.RouteMatch()
    path = m.path
    if path.type == "exact":
        out.path = path.value
    elif path.type == "prefix":
        out.prefix = path.value
    elif path.type == "regex":
        out.safe_regex.CopyFrom(_regex(path.value))
    else:
        out.path_match_policy.CopyFrom(
            extension_pb2.TypedExtensionConfig(
                name=URI_TEMPLATE_MATCH,
                typed_config=pack(
                    uri_template_match_pb2.UriTemplateMatchConfig(path_template=path.value)
                ),
            )
        )
    out.headers.extend(_header(h) for h in m.headers or ())
    if m.methods:
        out.headers.append(_methods(m.methods))
    out.query_parameters.extend(_query_parameter(q) for q in m.query_parameters or ())
    return out


def _header(h: HeaderMatch) -> rc_pb2.HeaderMatcher:
    out = rc_pb2.HeaderMatcher(name=h.name)
    if h.exact is not None:
        out.string_match.exact = h.exact
    elif h.prefix is not None:
        out.string_match.prefix = h.prefix
    elif h.regex is not None:
        out.string_match.safe_regex.CopyFrom(_regex(h.regex))
    else:
        # present: true -> the header must be there; false -> it must be absent (Envoy's
        # semantics of present_match without invert_match).
        out.present_match = bool(h.present)
    return out


def _methods(methods: Iterable[str]) -> rc_pb2.HeaderMatcher:
    """Methods become a `:method` header matcher: exact for one, an anchored regex for several."""
    listed = list(methods)
    if len(listed) == 1:
        return rc_pb2.HeaderMatcher(
            name=":method", string_match=string_pb2.StringMatcher(exact=listed[0])
        )
    regex = "^(" + "|".join(listed) + ")$"
    return rc_pb2.HeaderMatcher(
        name=":method", string_match=string_pb2.StringMatcher(safe_regex=_regex(regex))
    )


def _query_parameter(q: QueryParameterMatch) -> rc_pb2.QueryParameterMatcher:
    out = rc_pb2.QueryParameterMatcher(name=q.name)
    if q.exact is not None:
        out.string_match.exact = q.exact
    elif q.regex is not None:
        out.string_match.safe_regex.CopyFrom(_regex(q.regex))
    else:
        # Envoy can only require a query parameter's presence (the domain refuses present: false).
        out.present_match = True
    return out


def _forward(a: ForwardAction) -> rc_pb2.RouteAction:
    out = rc_pb2.RouteAction(cluster=a.cluster)
    if a.timeout_seconds is not None:
        out.timeout.CopyFrom(duration(a.timeout_seconds))
    if a.prefix_rewrite is not None:
        out.prefix_rewrite = a.prefix_rewrite
    if a.template_rewrite is not None:
        out.path_rewrite_policy.CopyFrom(
            extension_pb2.TypedExtensionConfig(
                name=URI_TEMPLATE_REWRITE,
                typed_config=pack(
                    uri_template_rewrite_pb2.UriTemplateRewriteConfig(
                        path_template_rewrite=a.template_rewrite
                    )
                ),
            )
        )
    if a.retry is not None:
        out.retry_policy.CopyFrom(_retry(a.retry))
    return out


def _retry(r: Retry) -> rc_pb2.RetryPolicy:
    # The domain accepts "5xx, reset"; Envoy compares each comma-separated token verbatim.
    retry_on = ",".join(c.strip() for c in r.retry_on.split(",") if c.strip())
    out = rc_pb2.RetryPolicy(retry_on=retry_on, num_retries=u32(r.attempts))
    if r.per_try_timeout_seconds is not None:
        out.per_try_timeout.CopyFrom(duration(r.per_try_timeout_seconds))
    return out


def _redirect(a: RedirectAction) -> rc_pb2.RedirectAction:
    out = rc_pb2.RedirectAction()
    if a.host is not None:
        out.host_redirect = a.host
    if a.path is not None:
        out.path_redirect = a.path
    if a.response_code is not None:
        out.response_code = _REDIRECT_CODES[a.response_code]
    return out


def _direct_response(a: DirectResponseAction) -> rc_pb2.DirectResponseAction:
    out = rc_pb2.DirectResponseAction(status=a.status)
    if a.body is not None:
        out.body.CopyFrom(base_pb2.DataSource(inline_string=a.body))
    return out


__all__ = ["route_config_to_proto"]
