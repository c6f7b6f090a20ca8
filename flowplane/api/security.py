"""Tokens, teams and the audit log (api.md "Teams, tokens, auth"): thin adapters over
`flowplane.services.security` and `flowplane.services.audit`."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import Field, field_validator
from quart import Blueprint, Response, g
from quart_schema import document_querystring, document_request, tag

from flowplane.api.http import json_body, json_response, page_response, query
from flowplane.api.schemas import ListQuery, _Out
from flowplane.domain.auth import TeamSpec, TokenCreate
from flowplane.services.audit import AuditFilter, AuditService, entry_json
from flowplane.services.common import Window
from flowplane.services.security import IssuedToken, TeamService, TokenService


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


def _issued(t: IssuedToken) -> Response:
    return json_response(t.to_json(), 201, {"Location": f"/api/v1/tokens/{t.view.record.id}"})


def security_blueprint(tokens: TokenService, teams: TeamService, audit: AuditService) -> Blueprint:
    bp = Blueprint("security", __name__, url_prefix="/api/v1")

    # -- tokens ---------------------------------------------------------------------------
    @bp.get("/tokens")
    @tag(["tokens"])
    @document_querystring(ListQuery)
    async def list_tokens() -> Response:
        """Tokens this caller may see (admins: all)."""
        q = query(ListQuery)
        page = tokens.list(g.principal, Window(q.limit, q.offset), team=q.team)
        return page_response(page, lambda t: t.to_json())

    @bp.post("/tokens")
    @tag(["tokens"])
    @document_request(TokenCreate)
    async def create_token() -> Response:
        """Create a token. The response carries `token`, shown only this once."""
        return _issued(await tokens.create(g.principal, await json_body()))

    @bp.get("/tokens/<token_id>")
    @tag(["tokens"])
    async def get_token(token_id: str) -> Response:
        """One token's record (never its string)."""
        return json_response(tokens.get(g.principal, token_id).to_json())

    @bp.patch("/tokens/<token_id>")
    @tag(["tokens"])
    async def patch_token(token_id: str) -> Response:
        """Change name, scopes, teams or expiry; takes effect on the token's next request."""
        view = await tokens.patch(g.principal, token_id, await json_body())
        return json_response(view.to_json())

    @bp.delete("/tokens/<token_id>")
    @tag(["tokens"])
    async def revoke_token(token_id: str) -> Response:
        """Revoke a token: its next request gets 401."""
        await tokens.revoke(g.principal, token_id)
        return Response(b"", status=204)

    @bp.post("/tokens/<token_id>/rotate")
    @tag(["tokens"])
    async def rotate_token(token_id: str) -> Response:
        """Issue a new token with the same name, scopes, teams and expiry; revoke the old one."""
        return _issued(await tokens.rotate(g.principal, token_id))

    # -- teams ----------------------------------------------------------------------------
    @bp.get("/teams")
    @tag(["teams"])
    @document_querystring(ListQuery)
    async def list_teams() -> Response:
        """Teams this caller belongs to (admins: all)."""
        q = query(ListQuery)
        page = teams.list(g.principal, Window(q.limit, q.offset))
        return page_response(page, lambda t: t.to_json())

    @bp.post("/teams")
    @tag(["teams"])
    @document_request(TeamSpec)
    async def create_team() -> Response:
        """Create a team with optional quotas."""
        team = await teams.create(g.principal, await json_body())
        return json_response(team.to_json(), 201, {"Location": f"/api/v1/teams/{team.name}"})

    @bp.get("/teams/<team>")
    @tag(["teams"])
    async def get_team(team: str) -> Response:
        """One team."""
        return json_response(teams.get(g.principal, team).to_json())

    @bp.patch("/teams/<team>")
    @tag(["teams"])
    async def patch_team(team: str) -> Response:
        """Change a team's description or quotas."""
        return json_response((await teams.patch(g.principal, team, await json_body())).to_json())

    @bp.delete("/teams/<team>")
    @tag(["teams"])
    async def delete_team(team: str) -> Response:
        """Delete a team that owns no resources (409 otherwise)."""
        await teams.delete(g.principal, team)
        return Response(b"", status=204)

    # -- audit ----------------------------------------------------------------------------
    @bp.get("/audit")
    @tag(["audit"])
    @document_querystring(AuditQueryIn)
    async def list_audit() -> Response:
        """Every change, token event and failed authentication, newest first."""
        q = query(AuditQueryIn)
        f = AuditFilter(q.resource_type, q.team, q.actor, q.since)
        page = await audit.query(g.principal, f, Window(q.limit, q.offset))
        return page_response(page, entry_json)

    return bp
