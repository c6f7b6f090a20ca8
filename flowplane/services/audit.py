"""The audit log (api.md "Teams, tokens, auth"): every change, token event and failed
authentication, newest first, as the caller may see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowplane.domain.auth import Principal
from flowplane.domain.common import rfc3339
from flowplane.errors import BadRequest, NotFound
from flowplane.services.common import Page, Window, require_scope
from flowplane.storage.base import AuditQuery, AuditRow, Repository


@dataclass(frozen=True, slots=True)
class AuditFilter:
    resource_type: str | None = None
    team: str | None = None
    actor: str | None = None  # token id or name
    since: datetime | None = None


def entry_json(r: AuditRow) -> dict[str, Any]:
    return {
        "id": r.id, "time": rfc3339(r.time, "microseconds"),
        "actor": {"tokenId": r.actor_id, "name": r.actor_name}, "action": r.action,
        "resourceType": r.resource_type, "resourceName": r.resource_name, "team": r.team,
        "before": r.before, "after": r.after, "clientAddress": r.client_address,
    }  # fmt: skip


class AuditService:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def query(self, caller: Principal, f: AuditFilter, window: Window) -> Page[AuditRow]:
        """Team-bound callers see their team's entries only: one team implied, several must
        name one (400); another team is reported as missing (404)."""
        require_scope(caller, "audit:read")
        team = f.team
        if caller.team_bound:
            if team is not None and team not in caller.teams:
                raise NotFound(f"team {team!r} does not exist")
            if team is None:
                if len(caller.teams) != 1:
                    raise BadRequest("a token of several teams must pick one: ?team=")
                team = next(iter(caller.teams))
        rows, total = await self._repo.query_audit(
            AuditQuery(f.resource_type, team, f.actor, f.since, window.limit, window.offset)
        )
        return Page(rows, total, window.limit, window.offset)
