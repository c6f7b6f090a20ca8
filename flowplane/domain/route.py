"""The Native API route configuration (api.md "Route config")."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from flowplane.domain import uri_template
from flowplane.domain.cluster import HttpMethod
from flowplane.domain.common import (
    ApiModel,
    Name,
    PositiveSeconds,
    RefName,
    Regex,
    TeamName,
    check_regex,
)
from flowplane.domain.filters import check_overrides

OVERRIDES_MARKER = "x-flowplane-filter-overrides"


def _overrides(value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    check_overrides(value)
    return value


# Per-scope filter overrides: filter name -> `{"disabled": true}` or the override config of the
# filter type the name stands for (flowplane.domain.filters). Stored exactly as given.
FilterOverrides = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=253)], dict[str, Any]],
    AfterValidator(_overrides),
    # typed per filter type in the OpenAPI document (flowplane/api/openapi.py swaps this marker
    # for a reference to its FilterOverrides schema)
    WithJsonSchema({"type": "object", OVERRIDES_MARKER: True}),
]

_RETRY_ON = {
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
}  # fmt: skip
MAX_DIRECT_BODY = 4096  # Envoy's default max_direct_response_body_size_bytes


def template_variables(template: str) -> list[str]:
    """The variables of a (valid) match template, in order."""
    return uri_template.match_variables(template)


def _check_template(value: str) -> None:
    """Envoy's URI templates: `/a/{id}`, `/{p=**}`, `/{v=a/*}`, by Envoy's own rules
    (flowplane.domain.uri_template)."""
    uri_template.match_variables(value)


class PathMatch(ApiModel):
    type: Literal["exact", "prefix", "regex", "template"]
    value: Annotated[str, Field(min_length=1, max_length=4096)]

    @model_validator(mode="after")
    def _value(self) -> PathMatch:
        if self.type in ("exact", "prefix") and not self.value.startswith("/"):
            raise ValueError(f"a {self.type} path must start with '/'")
        if self.type == "regex":
            check_regex(self.value)
        if self.type == "template":
            _check_template(self.value)
        return self


def _exactly_one(model: ApiModel, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        raise ValueError(f"{what} needs exactly one of: {', '.join(fields)}")


class HeaderMatch(ApiModel):
    name: Annotated[
        str, Field(min_length=1, max_length=256, pattern=r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    ]
    exact: str | None = None
    prefix: Annotated[str, Field(min_length=1)] | None = None
    regex: Regex | None = None
    present: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        _exactly_one(self, ("exact", "prefix", "regex", "present"), "a header matcher")
        return self


class QueryParameterMatch(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    exact: str | None = None
    regex: Regex | None = None
    present: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> QueryParameterMatch:
        _exactly_one(self, ("exact", "regex", "present"), "a query parameter matcher")
        if self.present is False:
            # Envoy's QueryParameterMatcher has no "absent" form (no invert_match).
            raise ValueError("present: false is not supported for query parameters")
        return self


class RouteMatch(ApiModel):
    path: PathMatch
    headers: list[HeaderMatch] | None = None
    query_parameters: list[QueryParameterMatch] | None = None
    methods: list[HttpMethod] | None = None

    @model_validator(mode="after")
    def _methods(self) -> RouteMatch:
        if self.methods is not None:
            if not self.methods:
                raise ValueError("methods, when given, lists at least one method")
            if len(set(self.methods)) != len(self.methods):
                raise ValueError("methods lists a method twice")
        return self


class Retry(ApiModel):
    attempts: Annotated[int, Field(ge=0, le=10)] = 1
    retry_on: Annotated[str, Field(min_length=1)] = "5xx"
    per_try_timeout_seconds: PositiveSeconds | None = None

    @model_validator(mode="after")
    def _conditions(self) -> Retry:
        unknown = [c for c in self.retry_on.split(",") if c.strip() not in _RETRY_ON]
        if unknown:
            raise ValueError(f"unknown retryOn condition(s): {', '.join(unknown)}")
        return self


class ForwardAction(ApiModel):
    ref_fields: ClassVar[tuple[str, ...]] = ("cluster",)

    type: Literal["forward"]
    cluster: RefName
    timeout_seconds: Annotated[float, Field(ge=0, le=315_576_000_000)] | None = None
    prefix_rewrite: str | None = None
    template_rewrite: str | None = None
    retry: Retry | None = None

    @model_validator(mode="after")
    def _rewrites(self) -> ForwardAction:
        if self.prefix_rewrite is not None and self.template_rewrite is not None:
            raise ValueError("prefixRewrite and templateRewrite cannot be combined")
        if self.template_rewrite is not None:
            uri_template.rewrite_variables(self.template_rewrite)
        return self


class WeightedCluster(ApiModel):
    ref_fields: ClassVar[tuple[str, ...]] = ("name",)

    name: RefName
    weight: Annotated[int, Field(ge=0, le=1_000_000)]


class WeightedAction(ApiModel):
    type: Literal["weighted"]
    clusters: Annotated[list[WeightedCluster], Field(min_length=1, max_length=100)]
    timeout_seconds: Annotated[float, Field(ge=0, le=315_576_000_000)] | None = None

    @model_validator(mode="after")
    def _weights(self) -> WeightedAction:
        if sum(c.weight for c in self.clusters) <= 0:
            raise ValueError("the weights must add up to more than 0")
        names = [c.name for c in self.clusters]
        if len(set(names)) != len(names):
            raise ValueError("a weighted action names a cluster twice")
        return self


class RedirectAction(ApiModel):
    type: Literal["redirect"]
    host: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    path: Annotated[str, Field(min_length=1, pattern=r"^/")] | None = None
    response_code: Literal[301, 302, 303, 307, 308] | None = None


class DirectResponseAction(ApiModel):
    type: Literal["directResponse"]
    status: Annotated[int, Field(ge=200, le=599)]
    body: Annotated[str, Field(max_length=MAX_DIRECT_BODY)] | None = None

    @model_validator(mode="after")
    def _size(self) -> DirectResponseAction:
        if self.body is not None and len(self.body.encode()) > MAX_DIRECT_BODY:
            raise ValueError(f"body is limited to {MAX_DIRECT_BODY} bytes (Envoy's limit)")
        return self


Action = Annotated[
    ForwardAction | WeightedAction | RedirectAction | DirectResponseAction,
    Field(discriminator="type"),
]


class Route(ApiModel):
    # per-scope filter overrides keyed `<listener>/<filter>` name a listener (naming.py)
    ref_keys: ClassVar[tuple[str, ...]] = ("filters",)

    name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    match: RouteMatch
    action: Action
    filters: FilterOverrides | None = None

    @model_validator(mode="after")
    def _template_rewrite(self) -> Route:
        if isinstance(self.action, ForwardAction) and self.action.template_rewrite is not None:
            if self.match.path.type != "template":
                raise ValueError("templateRewrite needs a template path match")
            known = set(template_variables(self.match.path.value))
            missing = set(uri_template.rewrite_variables(self.action.template_rewrite)) - known
            if missing:
                raise ValueError(f"templateRewrite uses unknown variable(s): {sorted(missing)}")
        return self


def _check_domain(domain: str) -> None:
    if domain == "*":
        return
    core = domain
    if domain.startswith("*"):
        core = domain[1:]
    elif domain.endswith("*"):
        core = domain[:-1]
    if not core or "*" in core or any(c.isspace() or not c.isprintable() for c in core):
        raise ValueError(
            f"domain {domain!r}: a domain is a host[:port], '*', '*suffix' or 'prefix*'"
        )


class VirtualHost(ApiModel):
    # per-scope filter overrides keyed `<listener>/<filter>` name a listener (naming.py)
    ref_keys: ClassVar[tuple[str, ...]] = ("filters",)

    name: Annotated[str, Field(min_length=1, max_length=253)]
    domains: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=253)]], Field(min_length=1)
    ]
    routes: Annotated[list[Route], Field(max_length=10_000)]
    filters: FilterOverrides | None = None

    @model_validator(mode="after")
    def _domains(self) -> VirtualHost:
        for d in self.domains:
            _check_domain(d)
        return self


def check_virtual_hosts(vhosts: list[VirtualHost]) -> None:
    """Envoy refuses a route configuration with duplicate virtual host names or domains."""
    names: set[str] = set()
    domains: dict[str, str] = {}
    for vh in vhosts:
        if vh.name in names:
            raise ValueError(f"virtual host name {vh.name!r} is used twice")
        names.add(vh.name)
        for d in vh.domains:
            key = d.lower()
            if key in domains:
                raise ValueError(
                    f"domain {d!r} appears in virtual hosts {domains[key]!r} and {vh.name!r}"
                )
            domains[key] = vh.name


class InlineRouteConfig(ApiModel):
    """A route configuration embedded in a listener's HTTP connection manager."""

    # per-scope filter overrides keyed `<listener>/<filter>` name a listener (naming.py)
    ref_keys: ClassVar[tuple[str, ...]] = ("filters",)

    name: Name | None = None
    virtual_hosts: list[VirtualHost]
    filters: FilterOverrides | None = None

    @model_validator(mode="after")
    def _vhosts(self) -> InlineRouteConfig:
        check_virtual_hosts(self.virtual_hosts)
        return self


class RouteConfig(ApiModel):
    # per-scope filter overrides keyed `<listener>/<filter>` name a listener (naming.py)
    ref_keys: ClassVar[tuple[str, ...]] = ("filters",)

    name: Name
    team: TeamName | None = None
    virtual_hosts: Annotated[list[VirtualHost], Field(max_length=10_000)]
    filters: FilterOverrides | None = None

    @model_validator(mode="after")
    def _vhosts(self) -> RouteConfig:
        check_virtual_hosts(self.virtual_hosts)
        return self


def clusters_of_vhosts(vhosts: list[VirtualHost]) -> set[str]:
    out: set[str] = set()
    for vh in vhosts:
        for r in vh.routes:
            if isinstance(r.action, ForwardAction):
                out.add(r.action.cluster)
            elif isinstance(r.action, WeightedAction):
                out.update(c.name for c in r.action.clusters)
    return out
