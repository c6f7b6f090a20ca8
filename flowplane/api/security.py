"""Tokens, teams and the audit log (api.md "Teams, tokens, auth")."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from quart import Blueprint, Response, g
from quart_schema import document_querystring, document_request, tag

from flowplane.actors.auth import ChangeTeam, ChangeToken, CreateToken, visible_token
from flowplane.api.http import json_body, json_response, query
from flowplane.api.schemas import ListQuery, _Out
from flowplane.domain.auth import Principal, TeamSpec, TokenCreate, TokenRecord
from flowplane.errors import BadRequest, NotFound
from flowplane.storage.base import AuditQuery

if TYPE_CHECKING:
    from flowplane.app import Core


class AuditQueryIn(_Out):
    resource_type: str | None = None
    team: str | None = None
    actor: str | None = None
    since: datetime | None = None
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)

    @field_validator("since", mode="before")
    @classmethod
    def _rfc3339(cls, v: object) -> object:
        # pydantic would read "0.5" as a Unix timestamp; the contract is an RFC 3339 time.
        if isinstance(v, str) and not _DATE.match(v):
            raise ValueError("must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
        return v


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _page(items: list[Any], q: Any) -> dict[str, Any]:
    return {"items": items[q.offset : q.offset + q.limit], "total": len(items),
            "limit": q.limit, "offset": q.offset}  # fmt: skip


def security_blueprint(core: Core) -> Blueprint:
    bp = Blueprint("security", __name__, url_prefix="/api/v1")
    auth = core.auth

    def principal() -> Principal:
        p: Principal = g.principal
        return p

    def token_json(tok: TokenRecord) -> dict[str, Any]:
        out = tok.to_json()
        used = core.authenticator.last_used.get(tok.id)
        if used is not None:
            out["lastUsedAt"] = used.isoformat(timespec="seconds").replace("+00:00", "Z")
        return out

    # -- tokens ---------------------------------------------------------------------------
    @bp.get("/tokens")
    @tag(["tokens"])
    @document_querystring(ListQuery)
    async def list_tokens() -> Response:
        """Tokens this caller may see (admins: all)."""
        q = query(ListQuery)
        items = sorted(
            (t for t in auth.tokens.values() if visible_token(principal(), t)),
            key=lambda t: (t.created_at, t.id),
        )
        if q.team:
            items = [t for t in items if q.team in t.teams]
        return json_response(_page([token_json(t) for t in items], q))

    @bp.post("/tokens")
    @tag(["tokens"])
    @document_request(TokenCreate)
    async def create_token() -> Response:
        """Create a token. The response carries `token`, shown only this once."""
        record, token = await core.actor.submit(CreateToken(await json_body(), principal()))
        return json_response({**token_json(record), "token": token}, 201,
                             {"Location": f"/api/v1/tokens/{record.id}"})  # fmt: skip

    def find(token_id: str) -> TokenRecord:
        tok = auth.tokens.get(token_id)
        if tok is None or not visible_token(principal(), tok):
            raise NotFound(f"token {token_id!r} does not exist")
        return tok

    @bp.get("/tokens/<token_id>")
    @tag(["tokens"])
    async def get_token(token_id: str) -> Response:
        """One token's record (never its string)."""
        return json_response(token_json(find(token_id)))

    @bp.patch("/tokens/<token_id>")
    @tag(["tokens"])
    async def patch_token(token_id: str) -> Response:
        """Change name, scopes, teams or expiry; takes effect on the token's next request."""
        new = await core.actor.submit(ChangeToken(token_id, await json_body(), principal()))
        return json_response(token_json(new))

    @bp.delete("/tokens/<token_id>")
    @tag(["tokens"])
    async def revoke_token(token_id: str) -> Response:
        """Revoke a token: its next request gets 401."""
        await core.actor.submit(ChangeToken(token_id, None, principal(), revoke=True))
        return Response(b"", status=204)

    @bp.post("/tokens/<token_id>/rotate")
    @tag(["tokens"])
    async def rotate_token(token_id: str) -> Response:
        """Issue a new token with the same name, scopes, teams and expiry; revoke the old one."""
        old = find(token_id)
        body = {"name": old.name, "scopes": sorted(old.scopes), "teams": sorted(old.teams)}
        if old.expires_at is not None:
            body["expiresAt"] = old.expires_at.isoformat()
        record, token = await core.actor.submit(CreateToken(body, principal(), replaces=old.id))
        return json_response({**token_json(record), "token": token, "replaces": old.id}, 201,
                             {"Location": f"/api/v1/tokens/{record.id}"})  # fmt: skip

    # -- teams ----------------------------------------------------------------------------
    @bp.get("/teams")
    @tag(["teams"])
    @document_querystring(ListQuery)
    async def list_teams() -> Response:
        """Teams this caller belongs to (admins: all)."""
        q = query(ListQuery)
        p = principal()
        items = [t.to_json() for n, t in sorted(auth.teams.items()) if p.can_read_team(n)]
        return json_response(_page(items, q))

    @bp.post("/teams")
    @tag(["teams"])
    @document_request(TeamSpec)
    async def create_team() -> Response:
        """Create a team with optional quotas."""
        team = await core.actor.submit(ChangeTeam(None, await json_body(), principal(),
                                                  create=True))  # fmt: skip
        return json_response(team.to_json(), 201, {"Location": f"/api/v1/teams/{team.name}"})

    @bp.get("/teams/<team>")
    @tag(["teams"])
    async def get_team(team: str) -> Response:
        """One team."""
        rec = auth.teams.get(team)
        if rec is None or not principal().can_read_team(team):
            raise NotFound(f"team {team!r} does not exist")
        return json_response(rec.to_json())

    @bp.patch("/teams/<team>")
    @tag(["teams"])
    async def patch_team(team: str) -> Response:
        """Change a team's description or quotas."""
        rec = await core.actor.submit(ChangeTeam(team, await json_body(), principal()))
        return json_response(rec.to_json())

    @bp.delete("/teams/<team>")
    @tag(["teams"])
    async def delete_team(team: str) -> Response:
        """Delete a team that owns no resources (409 otherwise)."""
        await core.actor.submit(ChangeTeam(team, None, principal(), delete=True))
        return Response(b"", status=204)

    # -- audit ----------------------------------------------------------------------------
    @bp.get("/audit")
    @tag(["audit"])
    @document_querystring(AuditQueryIn)
    async def list_audit() -> Response:
        """Every change, token event and failed authentication, newest first."""
        q = query(AuditQueryIn)
        p = principal()
        team = q.team
        if p.team_bound:
            if team is not None and team not in p.teams:
                raise NotFound(f"team {team!r} does not exist")
            if team is None:
                if len(p.teams) != 1:
                    raise BadRequest("a token of several teams must pick one: ?team=")
                team = next(iter(p.teams))
        rows, total = await core.repo.query_audit(
            AuditQuery(q.resource_type, team, q.actor, q.since, q.limit, q.offset)
        )
        items = [
            {"id": r.id, "time": r.time.isoformat().replace("+00:00", "Z"),
             "actor": {"tokenId": r.actor_id, "name": r.actor_name}, "action": r.action,
             "resourceType": r.resource_type, "resourceName": r.resource_name, "team": r.team,
             "before": r.before, "after": r.after, "clientAddress": r.client_address}
            for r in rows
        ]  # fmt: skip
        return json_response({"items": items, "total": total, "limit": q.limit,
                              "offset": q.offset})  # fmt: skip

    return bp
