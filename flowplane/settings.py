"""Settings: the only module that reads environment variables.

Every setting is `FLOWPLANE_<NAME>`; the README lists each with its default. Tracing is the
exception: it reads OpenTelemetry's standard `OTEL_*` variables (README "Observability").
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowplane.errors import ConfigurationError


def split_address(value: str, what: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must look like HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _otel(name: str) -> AliasChoices:
    """An OpenTelemetry variable's name, also accepted as the field's own name (overrides)."""
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWPLANE_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///./flowplane.db"
    api_address: str = "127.0.0.1:8080"
    xds_address: str = "0.0.0.0:18000"
    xds_advertise_address: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    mailbox_size: Annotated[int, Field(ge=1, le=100_000)] = 256
    shutdown_grace_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    snapshot_debounce_seconds: Annotated[float, Field(ge=0, le=10)] = 0.005
    # The deadline of one storage call: a write not committed by then is answered 503 with
    # Retry-After (saying whether it was applied), and readiness answers "not ready".
    storage_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    # PostgreSQL: connections in each process's pool (the config actor writes on one at a time;
    # the others serve reads such as audit queries). Not counting the change feed's and the
    # leader election's dedicated connections.
    database_pool_size: Annotated[int, Field(ge=1, le=1000)] = 4
    api_tls_cert: str | None = None
    api_tls_key: str | None = None
    xds_tls_cert: str | None = None
    xds_tls_key: str | None = None
    xds_tls_client_ca: str | None = None
    # Authenticated by default (issue 17, item 7): "none" hands every team's configuration to
    # anyone who reaches the port, so it must be chosen explicitly (and is warned about at start).
    xds_auth: Literal["none", "token", "mtls"] = "token"
    # HTTP/2 keepalive on xDS connections, both ways: the server PINGs every connection this
    # often and closes it if the PING is not answered within the timeout (a data plane whose host
    # vanished is dropped, not kept as a node forever); bootstraps ask Envoy to do the same, so it
    # notices a vanished control plane and reconnects.
    xds_keepalive_seconds: Annotated[float, Field(ge=0.05, le=7200)] = 30.0
    xds_keepalive_timeout_seconds: Annotated[float, Field(ge=0.05, le=600)] = 10.0
    # Audit rows older than this many days are deleted (checked hourly; issue 11, item 13).
    audit_keep_days: Annotated[int, Field(ge=1, le=36_500)] = 90
    # Versions kept in history per resource and API (the newest; pruned hourly by a background
    # job; api.md "History and rollback").
    history_keep: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    # Resource names a client may send in one xDS request and keep subscribed on one stream
    # (issue 11, item 11): past either the stream ends with RESOURCE_EXHAUSTED.
    xds_max_names_per_request: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    xds_max_names_per_stream: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] = 6000
    # xDS worker processes sharing the xDS port (issue 14): None = one per CPU this process may
    # use; 0 = serve xDS in this process (no workers).
    xds_workers: Annotated[int, Field(ge=0, le=256)] | None = None
    default_gateway: bool = True
    default_gateway_address: str = "0.0.0.0:10000"
    # Tracing: OpenTelemetry's standard variables (no FLOWPLANE_ prefix; the SDK reads the rest
    # of them, e.g. OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER). Off unless an OTLP endpoint
    # or OTEL_TRACES_EXPORTER=otlp is set (README "Observability").
    otel_sdk_disabled: bool = Field(False, validation_alias=_otel("OTEL_SDK_DISABLED"))
    otel_traces_exporter: str | None = Field(None, validation_alias=_otel("OTEL_TRACES_EXPORTER"))
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias=_otel("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, validation_alias=_otel("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    otel_exporter_otlp_protocol: str | None = Field(
        None, validation_alias=_otel("OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    otel_exporter_otlp_traces_protocol: str | None = Field(
        None, validation_alias=_otel("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("api_address", "xds_address", "default_gateway_address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_address(v, "the address")
        return v

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        for what, cert, key in (
            ("API", self.api_tls_cert, self.api_tls_key),
            ("XDS", self.xds_tls_cert, self.xds_tls_key),
        ):
            if (cert is None) != (key is None):
                raise ValueError(
                    f"FLOWPLANE_{what}_TLS_CERT and FLOWPLANE_{what}_TLS_KEY go together"
                )
        if self.xds_tls_client_ca and not self.xds_tls_cert:
            raise ValueError("FLOWPLANE_XDS_TLS_CLIENT_CA needs FLOWPLANE_XDS_TLS_CERT/_KEY")
        if self.xds_auth == "mtls" and not self.xds_tls_client_ca:
            raise ValueError("FLOWPLANE_XDS_AUTH=mtls needs FLOWPLANE_XDS_TLS_CLIENT_CA")
        return self

    @property
    def api_host_port(self) -> tuple[str, int]:
        return split_address(self.api_address, "FLOWPLANE_API_ADDRESS")

    @property
    def xds_host_port(self) -> tuple[str, int]:
        return split_address(self.xds_address, "FLOWPLANE_XDS_ADDRESS")

    def advertised_xds(self, bound_port: int | None = None) -> tuple[str, int]:
        """Where data planes should connect: the advertise setting, else 127.0.0.1 and the xDS
        port (never 0.0.0.0, which is not an address a client can reach)."""
        if self.xds_advertise_address:
            return split_address(self.xds_advertise_address, "FLOWPLANE_XDS_ADVERTISE_ADDRESS")
        return "127.0.0.1", bound_port or self.xds_host_port[1]


def load_settings(**overrides: object) -> Settings:
    """Read the environment (overrides win); bad values raise ConfigurationError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        problems = "; ".join(
            f"{_env_name('_'.join(str(p) for p in e['loc']).upper())}: {e['msg']}"
            for e in err.errors(include_url=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None


def _env_name(loc: str) -> str:
    return loc if loc.startswith("OTEL_") else f"FLOWPLANE_{loc}"
