"""`ext_authz`: ask an external authorization service (gRPC or plain HTTP, reached through a
cluster) whether to let each request through (Envoy's ext_authz filter). The per-scope override
adds context extensions to the check request (Envoy's ExtAuthzPerRoute)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from flowplane.domain.common import ApiModel, RefName
from flowplane.domain.filters import FilterModel, FilterSpec
from flowplane.domain.http_status import ErrorStatus

# Lower-case HTTP field names (RFC 9110 token), as HTTP/2 carries them.
_HEADER = r"^[a-z0-9!#$%&'*+.^_`|~-]+$"
# A path prefix: starts with "/", no whitespace, controls, query or fragment.
_PATH_PREFIX = r"^/[^\s?#\x00-\x1f\x7f]*$"




class AuthzService(ApiModel):
    """Where the check goes: `grpc` (envoy.service.auth.v3.Authorization/Check, the cluster must
    speak HTTP/2) or `http` (the request's method, path and allowed headers are replayed to the
    cluster, prefixed by `pathPrefix`; a 200 answer allows, anything else denies)."""

    ref_fields: ClassVar[tuple[str, ...]] = ("cluster",)

    type: Literal["grpc", "http"]
    cluster: RefName
    path_prefix: Annotated[str, Field(max_length=1024, pattern=_PATH_PREFIX)] | None = None
    # Request headers sent to an HTTP service besides those Envoy always sends (host, method,
    # path, content-length, authorization).
    allowed_headers: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=256, pattern=_HEADER)]],
                  Field(max_length=100)] | None
    ) = None  # fmt: skip

    @model_validator(mode="after")
    def _http_only(self) -> AuthzService:
        if self.type == "grpc":
            given = [
                n
                for n, v in (
                    ("pathPrefix", self.path_prefix),
                    ("allowedHeaders", self.allowed_headers),
                )
                if v is not None
            ]
            if given:
                raise ValueError(f"{' and '.join(given)} only apply to an http service")
        return self


class ExtAuthzConfig(FilterModel):
    service: AuthzService
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 0.2
    # true: let requests through when the service fails or cannot be reached (default: deny)
    failure_mode_allow: bool = False
    # the status of a request denied because the service failed (Envoy's default: 403)
    status_on_error: ErrorStatus | None = None

    def clusters(self) -> set[str]:
        return {self.service.cluster}


def _keys(extensions: dict[str, str]) -> dict[str, str]:
    # Checked here rather than per key: pydantic reports a bad key at a path no client wrote.
    bad = [k for k in extensions if not 1 <= len(k) <= 256]
    if bad:
        raise ValueError(f"keys must be 1-256 characters ({len(bad)} are not)")
    return extensions


class ExtAuthzOverride(FilterModel):
    """Per-scope: key/value pairs sent along with the check (CheckRequest context_extensions)."""

    context_extensions: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]],
        Field(min_length=1, max_length=64),
        AfterValidator(_keys),
    ]


SPEC = FilterSpec("ext_authz", ExtAuthzConfig, ExtAuthzOverride)
