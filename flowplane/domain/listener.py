"""The Native API listener (api.md "Listener"), including gRPC's proxyless API listeners."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from flowplane.domain.common import (
    ApiModel,
    IpAddress,
    Name,
    NestedProblems,
    Port,
    RefName,
    TeamName,
)
from flowplane.domain.filters import ROUTER, SPECS, FilterModel, parse_config
from flowplane.domain.route import InlineRouteConfig, clusters_of_vhosts
from flowplane.errors import FieldProblem


class HttpFilter(ApiModel):
    """One HTTP filter of the listener's HTTP connection manager. `config` is typed by `type`
    (each type's schema is in this document); it is stored exactly as sent."""

    type: Annotated[
        str,
        Field(
            min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$",
            json_schema_extra={"enum": sorted(SPECS)},
        ),
    ]  # fmt: skip
    name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    optional: bool | None = None
    disabled: bool | None = None
    # Deliver this filter's config over ECDS (extension config discovery) instead of inline: a
    # change of the config then changes no listener, so Envoy keeps the listener's connections
    # (a listener change drains them). Envoy names the filter `<listener>/<filter's name>`, so
    # per-scope overrides for it are keyed `<listener>/<type>`. A discovered jwt_authn may have
    # no config (it checks nothing until providers come).
    discovery: bool | None = None
    config: dict[str, Any] | None = None

    # `typed_config` may name clusters: flowplane.domain.naming resolves them there.
    ref_views: ClassVar[dict[str, str]] = {"typed_config": "config"}  # view -> its JSON field

    @model_validator(mode="after")
    def _typed(self) -> HttpFilter:
        if self.type not in SPECS:
            known = ", ".join(sorted(SPECS))
            raise NestedProblems(
                [FieldProblem("type", f"unknown filter type {self.type!r} (known: {known})")]
            )
        if self.name is not None and self.name in SPECS and self.name != self.type:
            # Per-scope overrides keyed by a type name are typed as that type: a filter of
            # another type must not answer to it.
            raise NestedProblems(
                [FieldProblem("name", f"{self.name!r} is the name of another filter type")]
            )
        self.typed_config  # noqa: B018 -- parse now, so a bad config is refused here
        return self

    @cached_property
    def typed_config(self) -> FilterModel:
        """`config` parsed by the model of `type` (validated when the filter was)."""
        return parse_config(self.type, self.config, discovered=bool(self.discovery))


class AccessLog(ApiModel):
    path: Annotated[str, Field(min_length=1, max_length=4096)] = "/dev/stdout"
    format: Annotated[str, Field(min_length=1, max_length=8192)] | None = None


class Tracing(ApiModel):
    ref_fields: ClassVar[tuple[str, ...]] = ("collector_cluster",)

    provider: Literal["zipkin", "opentelemetry"]
    collector_cluster: RefName
    sample_percent: Annotated[float, Field(ge=0, le=100)] = 100.0


class HttpConnectionManager(ApiModel):
    ref_fields: ClassVar[tuple[str, ...]] = ("route_config_name",)

    type: Literal["httpConnectionManager"]
    stat_prefix: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    route_config_name: RefName | None = None
    inline_route_config: InlineRouteConfig | None = None
    http_filters: list[HttpFilter] = Field(default_factory=list)
    access_log: AccessLog | None = None
    tracing: Tracing | None = None

    @model_validator(mode="after")
    def _shape(self) -> HttpConnectionManager:
        if (self.route_config_name is None) == (self.inline_route_config is None):
            raise ValueError("give exactly one of routeConfigName and inlineRouteConfig")
        routers = [i for i, f in enumerate(self.http_filters) if f.type == ROUTER]
        if len(routers) > 1:
            raise ValueError("httpFilters has more than one router (it is appended automatically)")
        if routers and routers[0] != len(self.http_filters) - 1:
            raise ValueError("the router must be the last HTTP filter")
        names = [f.name or f.type for f in self.http_filters]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"httpFilters names {sorted(dup)} more than once; give each a name")
        return self


class TcpProxy(ApiModel):
    ref_fields: ClassVar[tuple[str, ...]] = ("cluster",)

    type: Literal["tcpProxy"]
    cluster: RefName
    stat_prefix: Annotated[str, Field(min_length=1, max_length=253)] | None = None


NetworkFilter = Annotated[HttpConnectionManager | TcpProxy, Field(discriminator="type")]


class DownstreamTls(ApiModel):
    cert_chain_file: Annotated[str, Field(min_length=1)]
    private_key_file: Annotated[str, Field(min_length=1)]
    ca_cert_file: Annotated[str, Field(min_length=1)] | None = None
    require_client_certificate: bool | None = None

    @model_validator(mode="after")
    def _client(self) -> DownstreamTls:
        if self.require_client_certificate and not self.ca_cert_file:
            raise ValueError("requireClientCertificate needs caCertFile")
        return self


class FilterChain(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    server_names: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = None
    tls: DownstreamTls | None = None
    # One terminal network filter per chain (an HCM or a TCP proxy), as Envoy requires.
    filters: Annotated[list[NetworkFilter], Field(min_length=1, max_length=1)]


class Listener(ApiModel):
    name: Name
    team: TeamName | None = None
    address: IpAddress | None = None
    port: Port | None = None
    api_listener: bool = False
    filter_chains: Annotated[list[FilterChain], Field(min_length=1, max_length=1000)]

    @model_validator(mode="after")
    def _shape(self) -> Listener:
        if self.api_listener:
            if self.address is not None or self.port is not None:
                raise ValueError("an API listener has no address or port")
            if len(self.filter_chains) != 1 or not isinstance(
                self.filter_chains[0].filters[0], HttpConnectionManager
            ):
                raise ValueError(
                    "an API listener has one filter chain with one HTTP connection manager"
                )
        elif self.address is None or self.port is None:
            raise ValueError("a listener needs an address and a port (unless apiListener is true)")
        names = [fc.name for fc in self.filter_chains if fc.name is not None]
        if len(set(names)) != len(names):
            raise ValueError("two filter chains share a name")
        matches = [tuple(sorted(fc.server_names or [])) for fc in self.filter_chains]
        if len(set(matches)) != len(matches):
            raise ValueError("two filter chains have the same serverNames (Envoy refuses that)")
        return self

    def http_managers(self) -> list[HttpConnectionManager]:
        return [
            f
            for fc in self.filter_chains
            for f in fc.filters
            if isinstance(f, HttpConnectionManager)
        ]

    def route_config_names(self) -> set[str]:
        return {h.route_config_name for h in self.http_managers() if h.route_config_name}

    def cluster_names(self) -> set[str]:
        out: set[str] = set()
        for fc in self.filter_chains:
            for f in fc.filters:
                if isinstance(f, TcpProxy):
                    out.add(f.cluster)
                else:
                    if f.inline_route_config is not None:
                        out |= clusters_of_vhosts(f.inline_route_config.virtual_hosts)
                    if f.tracing is not None:
                        out.add(f.tracing.collector_cluster)
                    for hf in f.http_filters:
                        out |= hf.typed_config.clusters()
        return out
