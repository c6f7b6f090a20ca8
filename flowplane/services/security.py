"""Tokens and teams (api.md "Teams, tokens, auth"): who may see and change which.

Token strings are shown once, on create and rotate (`IssuedToken`); afterwards only records.
A caller sees its own tokens, the ones it created, and (team-bound) those of its teams; admins
see all. Team records: admins see all, team-bound tokens their own teams.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowplane.actors.auth import ChangeTeam, ChangeToken, CreateToken, visible_token
from flowplane.actors.config import ConfigActor
from flowplane.auth.authenticator import Authenticator
from flowplane.auth.keys import AuthState
from flowplane.domain.auth import Principal, TeamRecord, TokenRecord
from flowplane.domain.common import rfc3339
from flowplane.errors import Forbidden, NotFound
from flowplane.services.common import Page, Window, require_scope


@dataclass(frozen=True, slots=True)
class TokenView:
    """A token's record as a caller sees it: never its string; its last use if known."""

    record: TokenRecord
    last_used_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.record.to_json()
        if self.last_used_at is not None:
            out["lastUsedAt"] = rfc3339(self.last_used_at)
        return out


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: its record and the token string, which is shown only this once."""

    view: TokenView
    token: str
    replaces: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {**self.view.to_json(), "token": self.token}
        if self.replaces is not None:
            out["replaces"] = self.replaces
        return out


class TokenService:
    def __init__(self, auth: AuthState, actor: ConfigActor, authenticator: Authenticator) -> None:
        self._auth = auth
        self._actor = actor
        self._authenticator = authenticator

    def _view(self, tok: TokenRecord) -> TokenView:
        return TokenView(tok, self._authenticator.last_used_at(tok.id))

    def list(
        self, caller: Principal, window: Window, *, team: str | None = None
    ) -> Page[TokenView]:
        """Tokens `caller` may see, oldest first; `team` keeps those bound to that team."""
        require_scope(caller, "tokens:read")
        items = sorted(
            (t for t in self._auth.tokens.values() if visible_token(caller, t)),
            key=lambda t: (t.created_at, t.id),
        )
        if team:
            items = [t for t in items if team in t.teams]
        return Page.of([self._view(t) for t in items], window)

    def _find(self, caller: Principal, token_id: str) -> TokenRecord:
        tok = self._auth.tokens.get(token_id)
        if tok is None or not visible_token(caller, tok):
            raise NotFound(f"token {token_id!r} does not exist")
        return tok

    def get(self, caller: Principal, token_id: str) -> TokenView:
        require_scope(caller, "tokens:read")
        return self._view(self._find(caller, token_id))

    async def create(self, caller: Principal, body: Any) -> IssuedToken:
        """`body` is `{name, role?, scopes?, teams?, expiresAt?}`; no scope or team beyond the
        caller's own can be granted (403)."""
        require_scope(caller, "tokens:write")
        record, token = await self._actor.submit(CreateToken(body, caller))
        return IssuedToken(self._view(record), token)

    async def patch(self, caller: Principal, token_id: str, body: Any) -> TokenView:
        """Change name, scopes, teams or expiry; takes effect on the token's next request."""
        require_scope(caller, "tokens:write")
        return self._view(await self._actor.submit(ChangeToken(token_id, body, caller)))

    async def revoke(self, caller: Principal, token_id: str) -> None:
        """The token's next request (and any xDS stream it holds) gets 401."""
        require_scope(caller, "tokens:write")
        await self._actor.submit(ChangeToken(token_id, None, caller, revoke=True))

    async def rotate(self, caller: Principal, token_id: str) -> IssuedToken:
        """A new token with the same name, scopes, teams and expiry; the old one revoked (in
        the same transaction)."""
        require_scope(caller, "tokens:write")
        old = self._find(caller, token_id)
        body: dict[str, Any] = {
            "name": old.name, "scopes": sorted(old.scopes), "teams": sorted(old.teams),
        }  # fmt: skip
        if old.expires_at is not None:
            body["expiresAt"] = old.expires_at.isoformat()
        record, token = await self._actor.submit(CreateToken(body, caller, replaces=old.id))
        return IssuedToken(self._view(record), token, replaces=old.id)


def _manages_teams(caller: Principal) -> None:
    """Team records (and so quotas, rate limits included) are managed by callers that stand
    above teams (api.md: the teams endpoints are admin business): `teams:write` and not bound
    to teams. A team-bound token could otherwise raise its own team's quotas."""
    require_scope(caller, "teams:write")
    if caller.team_bound:
        raise Forbidden("a token bound to teams cannot create, change or delete team records")


class TeamService:
    def __init__(self, auth: AuthState, actor: ConfigActor) -> None:
        self._auth = auth
        self._actor = actor

    def list(self, caller: Principal, window: Window) -> Page[TeamRecord]:
        """Teams `caller` belongs to (admins: all), by name."""
        require_scope(caller, "teams:read")
        items = [t for n, t in sorted(self._auth.teams.items()) if caller.can_read_team(n)]
        return Page.of(items, window)

    def get(self, caller: Principal, name: str) -> TeamRecord:
        require_scope(caller, "teams:read")
        rec = self._auth.teams.get(name)
        if rec is None or not caller.can_read_team(name):
            raise NotFound(f"team {name!r} does not exist")
        return rec

    async def create(self, caller: Principal, body: Any) -> TeamRecord:
        """`body` is `{name, description?, quotas?}`; 409 if the name is taken."""
        _manages_teams(caller)
        rec: TeamRecord = await self._actor.submit(ChangeTeam(None, body, caller, create=True))
        return rec

    async def patch(self, caller: Principal, name: str, body: Any) -> TeamRecord:
        _manages_teams(caller)
        rec: TeamRecord = await self._actor.submit(ChangeTeam(name, body, caller))
        return rec

    async def delete(self, caller: Principal, name: str) -> None:
        """409 while the team owns resources."""
        _manages_teams(caller)
        await self._actor.submit(ChangeTeam(name, None, caller, delete=True))
