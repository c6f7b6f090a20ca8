"""The config-actor transactions that change tokens, teams and signing keys (each commits with
its audit row, like every other write). The state they change is `flowplane.auth.keys.AuthState`.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from flowplane.actors.config import MemoryTxn, PlanContext, Txn, TxnPlan
from flowplane.auth.audit import audit_row
from flowplane.auth.keys import SigningKey, load_auth
from flowplane.domain.auth import (
    ABOVE_TEAMS,
    SYSTEM,
    Principal,
    TeamPatch,
    TeamRecord,
    TeamSpec,
    TokenCreate,
    TokenPatch,
    TokenRecord,
    token_scopes,
)
from flowplane.domain.common import parse
from flowplane.errors import BadRequest, Conflict, FieldProblem, Forbidden, NotFound
from flowplane.storage.base import DeleteRow, Repository, Row, Write


def _no_escalation(principal: Principal, scopes: frozenset[str], teams: frozenset[str]) -> None:
    """A caller can only hand out what it has: its scopes, within its teams."""
    if principal.admin:
        return
    extra = sorted(s for s in scopes if not principal.has(s))
    if extra:
        raise Forbidden(f"cannot grant scopes this token does not have: {', '.join(extra)}")
    if principal.team_bound and (not teams or not teams <= principal.teams):
        raise Forbidden("a team-bound token can only create tokens for its own teams")


def _no_team_management_in_teams(scopes: frozenset[str], teams: frozenset[str]) -> None:
    """Scopes that stand above teams (`ABOVE_TEAMS`) never go with teams: team records (quotas,
    rate limits) are managed from above, so no token can widen its own team's limits; and
    `xds:all` (a node of no team, receiving every team's configuration) in a team's hands would
    undo xDS team isolation."""
    if not teams or "admin:all" in scopes:
        return
    above = [s for s in ABOVE_TEAMS if s in scopes]
    if above:
        raise BadRequest(
            f"a token bound to teams cannot hold {', '.join(above)} (these stand above teams)",
            [FieldProblem("scopes", f"{s} is not allowed with teams") for s in above],
        )


def visible_token(principal: Principal, tok: TokenRecord) -> bool:
    if principal.admin or tok.id == principal.token_id or tok.created_by == principal.token_id:
        return True
    return principal.team_bound and bool(tok.teams) and tok.teams <= principal.teams


class EnsureSigningKey(Txn):
    def plan(self, ctx: PlanContext) -> TxnPlan:
        auth = ctx.auth
        if any(k.active for k in auth.keys.values()):
            return TxnPlan([], lambda: None)
        key = SigningKey.generate()
        return TxnPlan(
            [key.row(), audit_row(SYSTEM, "create", "signing_key", key.kid, None)],
            lambda: auth.keys.__setitem__(key.kid, key),
        )


class CreateToken(Txn):
    """Create a token; the result is (record, token string) — the string is shown only once."""

    logged = True

    def describe(self) -> str:
        name = self.body.get("name") if isinstance(self.body, dict) else None
        return f"create token {str(name)[:100]!r} by {self.principal.name}"

    def __init__(self, body: Any, principal: Principal = SYSTEM, *, replaces: str | None = None):
        super().__init__()
        self.body, self.principal, self.replaces = body, principal, replaces

    def plan(self, ctx: PlanContext) -> TxnPlan:
        auth = ctx.auth
        spec = parse(TokenCreate, self.body, "token")
        scopes = token_scopes(spec.role, spec.scopes)
        teams = frozenset(spec.teams or ())
        _no_escalation(self.principal, scopes, teams)
        _no_team_management_in_teams(scopes, teams)
        now = datetime.now(UTC)
        if spec.expires_at is not None and spec.expires_at <= now:
            raise BadRequest("expiresAt is in the past")
        record = TokenRecord(
            id=str(uuid.uuid4()), name=spec.name, role=spec.role, scopes=scopes, teams=teams,
            status="active", expires_at=spec.expires_at, created_by=self.principal.token_id,
            created_at=now, updated_at=now, version=1,
        )  # fmt: skip
        token = auth.sign(record)
        writes: list[Write] = [
            Row("tokens", record.id, record.row()),
            audit_row(self.principal, "create", "token", record.id, None, None, record.to_json()),
        ]
        old = auth.tokens.get(self.replaces) if self.replaces else None
        revoked = None
        if old is not None:
            revoked = replace(old, status="revoked", updated_at=now, version=old.version + 1)
            writes += [
                Row("tokens", old.id, revoked.row()),
                audit_row(self.principal, "rotate", "token", old.id, None, old.to_json(),
                          revoked.to_json()),
            ]  # fmt: skip

        def apply() -> None:
            auth.tokens[record.id] = record
            if revoked is not None:
                auth.tokens[revoked.id] = revoked
                for listener in auth.token_listeners:
                    listener()

        return TxnPlan(writes, apply, (record, token))


class ChangeToken(Txn):
    """PATCH (`body`, a merge patch) or revoke (`revoke`) a token. Revocation is its own flag,
    never inferred from the body: a client's JSON `null` is a bad patch, not a revocation."""

    logged = True

    def describe(self) -> str:
        what = "revoke" if self.revoke else "change"
        return f"{what} token {self.token_id} by {self.principal.name}"

    def __init__(
        self, token_id: str, body: Any, principal: Principal, *, revoke: bool = False
    ) -> None:
        super().__init__()
        self.token_id, self.body, self.principal = token_id, body, principal
        self.revoke = revoke

    def plan(self, ctx: PlanContext) -> TxnPlan:
        auth = ctx.auth
        old = auth.tokens.get(self.token_id)
        if old is None or not visible_token(self.principal, old):
            raise NotFound(f"token {self.token_id!r} does not exist")
        now = datetime.now(UTC)
        if self.revoke:
            new = replace(old, status="revoked", updated_at=now, version=old.version + 1)
            action = "revoke"
        else:
            patch = parse(TokenPatch, self.body, "token patch")
            scopes = frozenset(patch.scopes) if patch.scopes is not None else old.scopes
            teams = frozenset(patch.teams) if patch.teams is not None else old.teams
            _no_escalation(self.principal, scopes, teams)
            _no_team_management_in_teams(scopes, teams)
            new = replace(
                old, name=patch.name or old.name, scopes=scopes, teams=teams,
                expires_at=patch.expires_at if "expires_at" in patch.model_fields_set
                else old.expires_at,
                updated_at=now, version=old.version + 1,
            )  # fmt: skip
            action = "update"
        writes: list[Write] = [
            Row("tokens", new.id, new.row()),
            audit_row(self.principal, action, "token", new.id, None, old.to_json(), new.to_json()),
        ]

        def apply() -> None:
            auth.tokens[new.id] = new
            for listener in auth.token_listeners:
                listener()  # e.g. wake xDS streams so one on a revoked token ends

        return TxnPlan(writes, apply, new)


class ChangeTeam(Txn):
    """Create (`create`), patch (`body`), or delete (`delete`) a team. Deletion is its own flag,
    never inferred from the body: a client's JSON `null` is a bad patch, not a deletion."""

    logged = True

    def describe(self) -> str:
        what = "create" if self.create else ("delete" if self.delete else "change")
        name = self.name
        if name is None and isinstance(self.body, dict):
            name = str(self.body.get("name"))[:100]
        return f"{what} team {name!r} by {self.principal.name}"

    def __init__(
        self,
        name: str | None,
        body: Any,
        principal: Principal,
        *,
        create: bool = False,
        delete: bool = False,
    ) -> None:
        super().__init__()
        self.name, self.body, self.principal = name, body, principal
        self.create, self.delete = create, delete

    def plan(self, ctx: PlanContext) -> TxnPlan:
        auth = ctx.auth
        cfg = ctx.state
        now = datetime.now(UTC)
        if self.create:
            spec = parse(TeamSpec, self.body, "team")
            if spec.name in auth.teams:
                raise Conflict(f"team {spec.name!r} already exists")
            quotas = spec.quotas.model_dump(by_alias=True, exclude_none=True) if spec.quotas else {}
            new: TeamRecord | None = TeamRecord(spec.name, spec.description, quotas, 1, now, now)
            old = None
            name = spec.name
        else:
            assert self.name is not None
            name = self.name
            old = auth.teams.get(name)
            if old is None or not self.principal.can_read_team(name):
                raise NotFound(f"team {name!r} does not exist")
            if self.delete:
                apis = [a for a in cfg.apis.values() if a.team == name]
                if apis:
                    raise Conflict(
                        f"team {name!r} still owns {len(apis)} API(s), e.g. {apis[0].name!r}"
                    )
                users = [r for r in cfg.all() if r.team == name]
                if users:
                    raise Conflict(
                        f"team {name!r} still owns {len(users)} resource(s), e.g. "
                        f"{users[0].kind.label} {users[0].name!r}"
                    )
                new = None
            else:
                patch = parse(TeamPatch, self.body, "team patch")
                quotas = old.quotas
                if "quotas" in patch.model_fields_set:
                    quotas = (
                        patch.quotas.model_dump(by_alias=True, exclude_none=True)
                        if patch.quotas else {}
                    )  # fmt: skip
                desc = (
                    patch.description if "description" in patch.model_fields_set
                    else old.description
                )  # fmt: skip
                new = replace(old, description=desc, quotas=quotas, version=old.version + 1,
                              updated_at=now)  # fmt: skip
        action = "create" if old is None else ("delete" if new is None else "update")
        writes: list[Write] = [
            Row("teams", name, new.row()) if new is not None else DeleteRow("teams", name),
            audit_row(self.principal, action, "team", name, name,
                      old.to_json() if old else None, new.to_json() if new else None),
        ]  # fmt: skip

        def apply() -> None:
            if new is None:
                auth.teams.pop(name, None)
                cfg.team_quotas.pop(name, None)
            else:
                auth.teams[name] = new
                cfg.team_quotas[name] = new.quotas

        return TxnPlan(writes, apply, new)


class RecordAudit(Txn):
    """Append audit rows that are not part of a change (e.g. failed authentications)."""

    def __init__(self, rows: list[Write]) -> None:
        super().__init__()
        self.rows = rows

    def plan(self, ctx: PlanContext) -> TxnPlan:
        return TxnPlan(list(self.rows), lambda: None)


class ReloadTokens(MemoryTxn):
    """Add tokens (and keys) that exist in the database but not in memory. Runs inside the
    actor so it cannot interleave with a token change."""

    async def run(self, ctx: PlanContext, repo: Repository) -> None:
        fresh = await load_auth(repo)
        auth = ctx.auth
        for kid, key in fresh.keys.items():
            auth.keys.setdefault(kid, key)
        for tid, tok in fresh.tokens.items():
            auth.tokens.setdefault(tid, tok)
