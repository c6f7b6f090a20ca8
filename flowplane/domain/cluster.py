"""The Native API cluster (api.md "Cluster"): an upstream service Envoy load-balances to."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from flowplane.domain.common import (
    ApiModel,
    Host,
    Name,
    Port,
    PositiveSeconds,
    TeamName,
    is_ip,
)

LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"]
DnsLookupFamily = Literal["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"]
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
Count = Annotated[int, Field(ge=0, le=4_294_967_295)]


class Endpoint(ApiModel):
    host: Host
    port: Port
    weight: Annotated[int, Field(ge=1, le=128)] | None = None


class LeastRequest(ApiModel):
    choice_count: Annotated[int, Field(ge=2, le=100)] = 2


class RingHash(ApiModel):
    minimum_ring_size: Annotated[int, Field(ge=1, le=8_388_608)] = 1024
    maximum_ring_size: Annotated[int, Field(ge=1, le=8_388_608)] = 8_388_608

    @model_validator(mode="after")
    def _order(self) -> RingHash:
        if self.minimum_ring_size > self.maximum_ring_size:
            raise ValueError("minimumRingSize must not exceed maximumRingSize")
        return self


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


class Maglev(ApiModel):
    table_size: Annotated[int, Field(ge=2, le=5_000_011)] = 65537

    @model_validator(mode="after")
    def _prime(self) -> Maglev:
        if not _is_prime(self.table_size):
            raise ValueError("tableSize must be a prime number (Envoy requires it)")
        return self


class HealthCheck(ApiModel):
    type: Literal["http", "tcp"]
    path: str | None = None
    host: str | None = None
    method: HttpMethod | None = None
    interval_seconds: PositiveSeconds = 10.0
    timeout_seconds: PositiveSeconds = 5.0
    healthy_threshold: Annotated[int, Field(ge=1, le=1000)] = 1
    unhealthy_threshold: Annotated[int, Field(ge=1, le=1000)] = 3
    expected_statuses: list[Annotated[int, Field(ge=100, le=599)]] | None = None

    @model_validator(mode="after")
    def _shape(self) -> HealthCheck:
        if self.type == "http":
            if not self.path or not self.path.startswith("/"):
                raise ValueError("an http health check needs a path starting with '/'")
            if self.method in {"CONNECT"}:
                raise ValueError("CONNECT cannot be used for health checks")
        elif self.path or self.host or self.method or self.expected_statuses:
            raise ValueError("path, host, method and expectedStatuses apply to http checks only")
        return self


class Thresholds(ApiModel):
    max_connections: Count | None = None
    max_pending_requests: Count | None = None
    max_requests: Count | None = None
    max_retries: Count | None = None


class CircuitBreakers(ApiModel):
    default: Thresholds | None = None
    high: Thresholds | None = None


class OutlierDetection(ApiModel):
    consecutive5xx: Count | None = Field(default=None, alias="consecutive5xx")
    interval_seconds: PositiveSeconds | None = None
    base_ejection_time_seconds: PositiveSeconds | None = None
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    min_hosts: Count | None = None


class UpstreamTls(ApiModel):
    enabled: bool = True
    sni: str | None = None
    ca_cert_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTls:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("clientCertFile and clientKeyFile go together")
        return self


class Cluster(ApiModel):
    name: Name
    team: TeamName | None = None
    endpoints: Annotated[list[Endpoint], Field(min_length=1, max_length=10_000)]
    connect_timeout_seconds: PositiveSeconds = 5.0
    lb_policy: LbPolicy = "ROUND_ROBIN"
    least_request: LeastRequest | None = None
    ring_hash: RingHash | None = None
    maglev: Maglev | None = None
    dns_lookup_family: DnsLookupFamily | None = None
    health_checks: list[HealthCheck] | None = None
    circuit_breakers: CircuitBreakers | None = None
    outlier_detection: OutlierDetection | None = None
    tls: UpstreamTls | None = None
    http2: bool = False

    @model_validator(mode="after")
    def _policy_options(self) -> Cluster:
        for field, policy in (
            ("least_request", "LEAST_REQUEST"),
            ("ring_hash", "RING_HASH"),
            ("maglev", "MAGLEV"),
        ):
            if getattr(self, field) is not None and self.lb_policy != policy:
                alias = {"least_request": "leastRequest", "ring_hash": "ringHash"}.get(field, field)
                raise ValueError(f"{alias} options need lbPolicy {policy}")
        seen: set[tuple[str, int]] = set()
        for ep in self.endpoints:
            key = (ep.host.lower(), ep.port)
            if key in seen:
                raise ValueError(f"endpoint {ep.host}:{ep.port} is listed twice")
            seen.add(key)
        return self

    @property
    def discovery_type(self) -> Literal["STATIC", "STRICT_DNS", "LOGICAL_DNS"]:
        """IP endpoints -> STATIC; hostnames -> STRICT_DNS, or LOGICAL_DNS for a single one."""
        if all(is_ip(ep.host) for ep in self.endpoints):
            return "STATIC"
        return "LOGICAL_DNS" if len(self.endpoints) == 1 else "STRICT_DNS"
