"""Authentication and per-token rate limiting, for every edge (REST and xDS).

`Authenticator` turns an `Authorization: Bearer <jwt>` header into a `Principal`: signature
(EdDSA, key chosen by `kid`), expiry, and a known, active token id — checked on every request
against the stored record, so revocation takes effect at once. Verified signatures are cached per
token string (bounded), which keeps authentication to microseconds; the record checks are never
cached. What it learns per request (failed attempts for the audit log, tokens' last use, ids it
does not know) is kept in memory and handed to the background flush through explicit methods
(`wait_failures`/`take_failures`, `take_last_used`, `wait_reload_request`), never written per
request.

Failed authentications are aggregated (issue 11, item 13: 10,000 bad-token requests once made
10,000 audit rows): per (source address, reason) one count, so a flush writes one row per pair
however many requests failed in its interval. The source is the client's host without its port
(every new connection has a new port). At most `MAX_FAILURE_KEYS` pairs are kept between
flushes; failures past that are counted in one overflow row.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import jwt
import trio

from flowplane.auth.audit import audit_row
from flowplane.auth.keys import ALGORITHM, ISSUER, AuthState
from flowplane.domain.auth import Principal
from flowplane.errors import Forbidden, RateLimited, Unauthorized
from flowplane.storage.base import AuditRow

log = logging.getLogger(__name__)


MAX_FAILURE_KEYS = 1000
"""Distinct (source, reason) pairs of failed authentications kept between two flushes."""
OVERFLOW_REASON = "(further sources and reasons, not itemised: too many distinct ones)"


@dataclass
class _Failures:
    """The failed authentications of one (source, reason) since the last flush."""

    count: int
    first: datetime
    last: datetime


def source_of(client_address: str | None) -> str | None:
    """The host of a `host:port` client address (IPv6 hosts too); other values unchanged."""
    if client_address is None:
        return None
    host, sep, port = client_address.rpartition(":")
    return host.strip("[]") if sep and host and port.isdigit() else client_address


class UnknownToken(Unauthorized):
    """A validly signed token whose id this process does not know (yet)."""


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
        self._failures: dict[tuple[str | None, str], _Failures] = {}
        self._failures_ready = trio.Event()
        self._last_used: dict[str, datetime] = {}  # token id -> last use seen (shown by the API)
        self._flushed: dict[str, datetime] = {}  # token id -> the last use written to storage
        self._reload_requested = trio.Event()
        self._reloaded = trio.Event()  # set (and replaced) after each reload from storage
        self.reload_wait = 2.0  # seconds a request with an unknown token id waits for one

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
                # the database while this server runs. Ask for a reload (`authenticate_fresh`
                # waits for it).
                self._reload_requested.set()
                raise UnknownToken("unknown token")
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
        self._last_used[jti] = now  # kept in memory and flushed periodically

        return tok.principal(client_address)

    async def authenticate_fresh(self, header: str | None, client_address: str | None) -> Principal:
        """`authenticate`, except that a validly signed token whose id is not in memory waits
        (at most `reload_wait` seconds) for the next reload of tokens from storage and is then
        checked again: a token made by `flowplane token create` while the server runs works on
        its first use. Bounded: reloads happen at most once per RELOAD_EVERY_SECONDS for every
        such request together, so random ids cannot make each request read the database."""
        try:
            return self.authenticate(header, client_address, record=False)
        except UnknownToken:
            reloaded = self._reloaded
            with trio.move_on_after(self.reload_wait):
                await reloaded.wait()
        except Unauthorized:
            pass
        return self.authenticate(header, client_address)  # records the failure if refused

    def reload_done(self) -> None:
        """Tokens were reloaded from storage: wake the requests waiting in `authenticate_fresh`."""
        reloaded, self._reloaded = self._reloaded, trio.Event()
        reloaded.set()

    def _record_failure(self, message: str, client_address: str | None) -> None:
        now = datetime.now(UTC)
        key = (source_of(client_address), message)
        seen = self._failures.get(key)
        if seen is None and len(self._failures) >= MAX_FAILURE_KEYS:
            # bounded: a flood from many sources cannot grow memory, but is still counted
            key = (None, OVERFLOW_REASON)
            seen = self._failures.get(key)
        if seen is None:
            self._failures[key] = _Failures(1, now, now)
        else:
            seen.count += 1
            seen.last = now
        self._failures_ready.set()

    # -- what the background flush collects -------------------------------------------------
    async def wait_failures(self) -> None:
        """Return once at least one failed authentication is waiting to be recorded."""
        await self._failures_ready.wait()

    def take_failures(self) -> list[AuditRow]:
        """The failed authentications since the last call, as audit rows (then forgotten): one
        per (source, reason), timed at its first failure, with `after` = {"reason", "count",
        "firstAt", "lastAt"} and the source as the client address."""
        failures, self._failures = self._failures, {}
        self._failures_ready = trio.Event()
        rows = []
        for (source, reason), seen in failures.items():
            anonymous = Principal(None, "anonymous", frozenset(), client_address=source)
            row = audit_row(
                anonymous, "authentication_failed", "auth", None, None, None,
                {"reason": reason, "count": seen.count, "firstAt": seen.first.isoformat(),
                 "lastAt": seen.last.isoformat()},
            )  # fmt: skip
            rows.append(replace(row, time=seen.first))
        return rows

    def last_used_at(self, token_id: str) -> datetime | None:
        """When `token_id` last authenticated, as far as this process has seen."""
        return self._last_used.get(token_id)

    def take_last_used(self) -> dict[str, datetime]:
        """Tokens' last use that is newer than what was last flushed (`mark_flushed`)."""
        return {j: w for j, w in self._last_used.items() if self._flushed.get(j) != w}

    def mark_flushed(self, written: Mapping[str, datetime]) -> None:
        """`written` is in the database now: the next `take_last_used` leaves it out."""
        self._flushed.update(written)

    async def wait_reload_request(self) -> None:
        """Return once a request carried a validly signed token id that is not in memory (made
        by `flowplane token create` against the database); the request is then forgotten."""
        await self._reload_requested.wait()
        self._reload_requested = trio.Event()

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
