"""Authentication and authorisation for every `/api/v1` request, in one place.

`RULES` maps every endpoint of the app to the scope it requires (or `PUBLIC`); a test walks the
app's URL map and fails if any endpoint is missing. `Authenticator` turns an `Authorization:
Bearer <jwt>` header into a `Principal`: signature (EdDSA, key chosen by `kid`), expiry, and a
known, active token id — checked on every request against the stored record, so revocation takes
effect at once. Verified signatures are cached per token string (bounded), which keeps
authentication to microseconds; the record checks are never cached.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
import trio

from flowplane.actors.auth import ALGORITHM, ISSUER, AuthState
from flowplane.actors.config import audit_row
from flowplane.domain.auth import Principal
from flowplane.errors import Forbidden, RateLimited, Unauthorized
from flowplane.storage.base import AuditRow

log = logging.getLogger(__name__)

PUBLIC = "public"
_NATIVE_RESOURCE = {"cluster": "clusters", "route_config": "routes", "listener": "listeners"}


def _native_rules() -> dict[str, str]:
    out = {}
    for kind, resource in _NATIVE_RESOURCE.items():
        for op in ("list", "get"):
            out[f"native.{kind}_{op}"] = f"{resource}:read"
        for op in ("create", "put", "patch", "delete"):
            out[f"native.{kind}_{op}"] = f"{resource}:write"
    return out


RULES: dict[str, str] = {
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    "metrics": PUBLIC,
    "openapi": PUBLIC,
    "swagger_ui": PUBLIC,
    "swagger_static": PUBLIC,
    "static": PUBLIC,
    **_native_rules(),
    "dataplanes.list_nodes": "nodes:read",
    "dataplanes.get_node": "nodes:read",
    "dataplanes.bootstrap": "listeners:read",
    "security.list_tokens": "tokens:read",
    "security.create_token": "tokens:write",
    "security.get_token": "tokens:read",
    "security.patch_token": "tokens:write",
    "security.revoke_token": "tokens:write",
    "security.rotate_token": "tokens:write",
    "security.list_teams": "teams:read",
    "security.create_team": "teams:write",
    "security.get_team": "teams:read",
    "security.patch_team": "teams:write",
    "security.delete_team": "teams:write",
    "security.list_audit": "audit:read",
}


@dataclass
class _Bucket:
    tokens: float
    updated: float


class Authenticator:
    def __init__(
        self,
        auth: AuthState,
        *,
        default_rate_per_minute: int = 6000,
        cache_size: int = 10_000,
    ) -> None:
        self.auth = auth
        self.default_rate = default_rate_per_minute
        self._verified: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._cache_size = cache_size
        self._buckets: dict[str, _Bucket] = {}
        self._failures: list[AuditRow] = []
        self.failures_ready = trio.Event()
        self.last_used: dict[str, datetime] = {}
        self.reload_requested = trio.Event()

    # -- authentication -------------------------------------------------------------------
    def verify(self, token: str) -> str:
        """The token id (`jti`) of a validly signed, unexpired token; raises Unauthorized."""
        hit = self._verified.get(token)
        now = time.time()
        if hit is not None:
            jti, exp = hit
            if exp is not None and now >= exp:
                raise Unauthorized("the token has expired")
            return jti
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is not a valid JWT") from None
        key = self.auth.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthorized("the token was not signed by a key this server knows")
        try:
            claims = jwt.decode(
                token, key.public, algorithms=[ALGORITHM], issuer=ISSUER,
                options={"require": ["jti", "iat", "iss"]},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.PyJWTError as err:
            raise Unauthorized(f"the token is not valid: {err}") from None
        jti = str(claims["jti"])
        exp = claims.get("exp")
        self._verified[token] = (jti, float(exp) if exp is not None else None)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return jti

    def authenticate(
        self, header: str | None, client_address: str | None, *, record: bool = True
    ) -> Principal:
        """The principal for an `Authorization` header value; raises Unauthorized (401) and,
        if `record`, queues an audit row for the failure."""
        try:
            if not header:
                raise Unauthorized("missing Authorization: Bearer <token>")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("the Authorization header must be 'Bearer <token>'")
            jti = self.verify(token.strip())
            tok = self.auth.tokens.get(jti)
            if tok is None:
                # Signed by our key but not in memory: made by `flowplane token create` against
                # the database while this server runs. Ask for a reload; a retry will pass.
                self.reload_requested.set()
                raise Unauthorized("unknown token")
            now = datetime.now(UTC)
            if tok.status != "active":
                raise Unauthorized("the token has been revoked")
            if not tok.active_at(now):
                raise Unauthorized("the token has expired")
        except Unauthorized as err:
            if record:
                self._record_failure(err.message, client_address)
            err.headers.setdefault("WWW-Authenticate", 'Bearer realm="flowplane"')
            raise
        self.last_used[jti] = (
            now  # kept in memory and flushed periodically, not written per request
        )
        return tok.principal(client_address)

    def _record_failure(self, message: str, client_address: str | None) -> None:
        if len(self._failures) < 1000:  # bounded: a flood of bad tokens cannot grow memory
            anonymous = Principal(None, "anonymous", frozenset(), client_address=client_address)
            self._failures.append(
                audit_row(
                    anonymous,
                    "authentication_failed",
                    "auth",
                    None,
                    None,
                    None,
                    {"reason": message},
                )
            )
            self.failures_ready.set()

    def take_failures(self) -> list[AuditRow]:
        rows, self._failures = self._failures, []
        self.failures_ready = trio.Event()
        return rows

    # -- authorisation ----------------------------------------------------------------------
    def authorize(self, principal: Principal, scope: str) -> None:
        if not principal.has(scope):
            raise Forbidden(f"this token lacks the scope {scope}")
        self._rate_limit(principal)

    def _rate_limit(self, principal: Principal) -> None:
        if principal.token_id is None:
            return
        rate = self.default_rate
        for team in principal.teams:
            team_rate = self.auth.teams.get(team)
            limit = team_rate.quotas.get("requestsPerMinute") if team_rate else None
            if limit is not None:
                rate = min(rate, int(limit))
        per_second = rate / 60.0
        now = time.monotonic()
        bucket = self._buckets.get(principal.token_id)
        if bucket is None:
            bucket = self._buckets[principal.token_id] = _Bucket(float(rate), now)
        bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.updated) * per_second)
        bucket.updated = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / per_second)
            raise RateLimited(
                f"rate limit of {rate} requests per minute exceeded",
                headers={"Retry-After": str(max(1, wait))},
            )
        bucket.tokens -= 1.0
