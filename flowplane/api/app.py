"""The quart-trio application factory: routes, error mapping, docs, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Response, g, request, send_from_directory
from quart_schema import QuartSchema, document_response, hide
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from flowplane.api.auth import PUBLIC, RULES
from flowplane.api.dataplanes import dataplanes_blueprint
from flowplane.api.history import history_blueprint
from flowplane.api.http import BODY_LIMIT_KEY, error_response, json_response
from flowplane.api.native import native_blueprint
from flowplane.api.openapi import FlowplaneOpenAPI
from flowplane.api.platform import platform_blueprint
from flowplane.api.schemas import HealthOut
from flowplane.api.security import security_blueprint
from flowplane.auth.authenticator import Authenticator
from flowplane.errors import (
    BadRequest,
    FlowplaneError,
    Forbidden,
    Internal,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from flowplane.observability.asgi import set_caller, set_route
from flowplane.observability.metrics import count_auth_failure
from flowplane.platform.openapi_document import ImportLimits
from flowplane.services.audit import AuditService
from flowplane.services.dataplanes import DataPlaneService
from flowplane.services.history import HistoryService
from flowplane.services.platform import PlatformService
from flowplane.services.resources import ResourceService
from flowplane.services.security import TeamService, TokenService

log = logging.getLogger(__name__)
# Swagger UI's dist files (5.x: renders the OpenAPI 3.1 document quart-schema makes; 4.x could
# not), served from the swagger-ui-py package so the page needs no CDN. Only its static files
# are used: the page itself is quart-schema's, pointed at them below.
SWAGGER_DIR = Path(str(files("swagger_ui") / "static"))


@dataclass
class Readiness:
    """What /readyz reports: storage reachable and (once xDS exists) the first snapshot built."""

    checks: dict[str, bool] = field(default_factory=dict)

    def set(self, name: str, ok: bool) -> None:
        self.checks[name] = ok

    @property
    def ready(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


def _client(scope: Any) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _http_error(err: HTTPException) -> FlowplaneError:
    code = err.code or 500
    if code == 404:
        return NotFound("no such endpoint")
    if code == 405:
        # RFC 9110 §15.5.6: a 405 lists the methods the resource does support.
        allowed = sorted(getattr(err, "valid_methods", None) or ())
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        return MethodNotAllowed("method not allowed on this endpoint", headers=headers)
    if code == 413:
        return PayloadTooLarge("the body is too large")
    if code == 415:
        return UnsupportedMediaType(err.description or "unsupported media type")
    if 400 <= code < 500:
        return BadRequest(err.description or "bad request")
    return Internal("internal error")


@dataclass(frozen=True, slots=True)
class RestServices:
    """What the REST edge calls: the services, and how to authenticate a request."""

    resources: ResourceService
    tokens: TokenService
    teams: TeamService
    audit: AuditService
    dataplanes: DataPlaneService
    platform: PlatformService
    authenticator: Authenticator
    history: HistoryService


def create_app(
    services: RestServices,
    readiness: Readiness,
    ping_storage: Callable[[], Awaitable[None]],
    *,
    max_body_bytes: int,
) -> QuartTrio:
    # werkzeug answers a path with `//` by a 308 to the merged path, with an HTML body, and Quart
    # returns routing redirects as they are (no error handler sees them). Without merging, such
    # a path is the JSON 404; no route here ends in `/` (the other redirect, strict_slashes).
    # No static folder: Quart's `/static/<path:filename>` rule would be added before the setting.
    app = QuartTrio("flowplane", static_folder=None)
    app.url_map.merge_slashes = False
    # Two body limits: `max_body_bytes` for JSON bodies (json_body enforces it), and the OpenAPI
    # import's own document limit, which real documents need (Box's is 1.7 MB against a 1 MiB
    # default). Quart reads every body under one cap, so the cap is the larger of the two.
    app.config[BODY_LIMIT_KEY] = max_body_bytes
    app.config["MAX_CONTENT_LENGTH"] = max(max_body_bytes, ImportLimits().max_bytes)
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = "/swagger-ui/static/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = "/swagger-ui/static/swagger-ui.css"
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path="/swagger-ui",
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "Flowplane", "version": "0.1.0",
              "description": "Envoy control plane: Native and Platform REST APIs."},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
        security=[{"bearer": []}],
        openapi_provider_class=FlowplaneOpenAPI,
    )  # fmt: skip

    authenticator = services.authenticator

    @app.before_request
    async def _authorize() -> None:
        """Every endpoint's scope comes from RULES; an endpoint without a rule is refused
        (fail closed). Unknown paths fall through to the 404 handler."""
        endpoint = request.endpoint
        if request.url_rule is None or endpoint is None:
            return
        set_route(request.url_rule.rule)  # the template, for metrics and the access log
        scope = RULES.get(endpoint)
        if scope is None:
            log.error("endpoint %s has no authorisation rule", endpoint)
            raise Forbidden("this endpoint has no authorisation rule")
        if scope == PUBLIC:
            return
        try:
            principal = await authenticator.authenticate_fresh(
                request.headers.get("Authorization"), _client(request.scope)
            )
            authenticator.authorize(principal, scope)
        except FlowplaneError as err:
            count_auth_failure("rest", err)
            raise
        set_caller(principal.token_id, principal.teams)
        g.principal = principal

    @app.errorhandler(FlowplaneError)
    async def _flowplane_error(err: FlowplaneError) -> Response:
        return error_response(err)

    @app.errorhandler(HTTPException)
    async def _werkzeug_error(err: HTTPException) -> Response:
        return error_response(_http_error(err))

    @app.errorhandler(Exception)
    async def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error in a request")
        return error_response(Internal("internal error; the change, if any, was not applied"))

    @app.get("/healthz")
    @document_response(HealthOut)
    async def healthz() -> Response:
        """The process is alive."""
        return json_response({"status": "ok", "checks": {}})

    @app.get("/readyz")
    @document_response(HealthOut)
    @document_response(HealthOut, 503)
    async def readyz() -> Response:
        """Storage reachable and the first snapshot built."""
        try:
            await ping_storage()
            readiness.set("storage", True)
        except FlowplaneError:
            readiness.set("storage", False)
        ok = readiness.ready
        body = {"status": "ready" if ok else "not ready", "checks": dict(readiness.checks)}
        return json_response(body, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/swagger-ui/static/<path:filename>")
    @hide
    async def swagger_static(filename: str) -> Any:
        return await send_from_directory(SWAGGER_DIR, filename)

    app.register_blueprint(native_blueprint(services.resources))
    app.register_blueprint(platform_blueprint(services.platform))
    app.register_blueprint(history_blueprint(services.history))
    app.register_blueprint(dataplanes_blueprint(services.dataplanes))
    app.register_blueprint(security_blueprint(services.tokens, services.teams, services.audit))
    return app
