"""`ext_authz` -> envoy.extensions.filters.http.ext_authz.v3 (ExtAuthz, and ExtAuthzPerRoute for
per-scope overrides)."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, http_uri_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import http_status_pb2

from flowplane.domain.filters import FilterModel
from flowplane.domain.filters.ext_authz import ExtAuthzConfig, ExtAuthzOverride
from flowplane.xds.types import duration

TYPE = "ext_authz"


def config_to_proto(config: FilterModel) -> ext_authz_pb2.ExtAuthz:
    assert isinstance(config, ExtAuthzConfig)
    svc, timeout = config.service, duration(config.timeout_seconds)
    out = ext_authz_pb2.ExtAuthz(
        transport_api_version=config_source_pb2.ApiVersion.V3,
        failure_mode_allow=config.failure_mode_allow,
    )
    if svc.type == "grpc":
        out.grpc_service.CopyFrom(grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=svc.cluster),
            timeout=timeout,
        ))  # fmt: skip
    else:
        out.http_service.CopyFrom(ext_authz_pb2.HttpService(
            # The authority is only the Host of the check request; the cluster picks the host.
            server_uri=http_uri_pb2.HttpUri(
                uri=f"http://{svc.cluster}", cluster=svc.cluster, timeout=timeout
            ),
            path_prefix=svc.path_prefix or "",
        ))  # fmt: skip
        if svc.allowed_headers:
            # ExtAuthz.allowed_headers, not the deprecated AuthorizationRequest.allowed_headers.
            out.allowed_headers.CopyFrom(string_pb2.ListStringMatcher(
                patterns=[string_pb2.StringMatcher(exact=h) for h in svc.allowed_headers]
            ))  # fmt: skip
    if config.status_on_error is not None:
        out.status_on_error.CopyFrom(http_status_pb2.HttpStatus(code=config.status_on_error))
    return out


def override_to_proto(override: FilterModel) -> ext_authz_pb2.ExtAuthzPerRoute:
    assert isinstance(override, ExtAuthzOverride)
    return ext_authz_pb2.ExtAuthzPerRoute(
        check_settings=ext_authz_pb2.CheckSettings(
            context_extensions=dict(sorted(override.context_extensions.items()))
        )
    )
