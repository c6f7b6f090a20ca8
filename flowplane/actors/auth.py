"""Tokens, teams and signing keys: their in-memory state and the config-actor transactions that
change them (each commits with its audit row, like every other write).

Tokens are JWTs signed with an Ed25519 key (EdDSA) generated at first start and kept in the
database; the header's `kid` names the key, so keys can be rotated. Only the token's id (`jti`)
is meaningful: scopes, teams, status and expiry are read from the stored record on every request,
so revocation, expiry and scope changes take effect on the next request.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flowplane.actors.config import ConfigActor, MemoryTxn, Txn, TxnPlan, audit_row
from flowplane.domain.auth import (
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
from flowplane.errors import BadRequest, Conflict, Forbidden, NotFound
from flowplane.storage.base import DeleteRow, Repository, Row, Write

ISSUER = "flowplane"
ALGORITHM = "EdDSA"


@dataclass
class SigningKey:
    kid: str
    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    created_at: datetime
    active: bool

    @classmethod
    def generate(cls) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        return cls(f"k-{secrets.token_hex(6)}", private, private.public_key(), datetime.now(UTC),
                   True)  # fmt: skip

    def row(self) -> Row:
        return Row(
            "signing_keys",
            self.kid,
            {
                "algorithm": ALGORITHM,
                "private_pem": self.private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
                "public_pem": self.public.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ).decode(),
                "created_at": self.created_at,
                "active": int(self.active),
            },
        )

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> SigningKey:
        private = serialization.load_pem_private_key(r["private_pem"].encode(), password=None)
        assert isinstance(private, Ed25519PrivateKey)
        return cls(r["kid"], private, private.public_key(),
                   datetime.fromisoformat(r["created_at"]), bool(r["active"]))  # fmt: skip


@dataclass
class AuthState:
    """Tokens, teams and keys in memory; changed only by config-actor transactions."""

    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    teams: dict[str, TeamRecord] = field(default_factory=dict)
    keys: dict[str, SigningKey] = field(default_factory=dict)
    token_listeners: list[Callable[[], None]] = field(default_factory=list)

    @property
    def active_key(self) -> SigningKey:
        return max((k for k in self.keys.values() if k.active), key=lambda k: k.created_at)

    def sign(self, record: TokenRecord) -> str:
        key = self.active_key
        claims: dict[str, Any] = {
            "jti": record.id,
            "sub": record.name,
            "iss": ISSUER,
            "iat": int(record.created_at.timestamp()),
        }
        if record.expires_at is not None:
            claims["exp"] = int(record.expires_at.timestamp())
        return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})


async def load_auth(repo: Repository) -> AuthState:
    state = AuthState()
    for r in await repo.load_rows("signing_keys"):
        key = SigningKey.from_row(r)
        state.keys[key.kid] = key
    for r in await repo.load_rows("tokens"):
        tok = TokenRecord.from_row(r)
        state.tokens[tok.id] = tok
    for r in await repo.load_rows("teams"):
        team = TeamRecord.from_row(r)
        state.teams[team.name] = team
    return state


def _no_escalation(principal: Principal, scopes: frozenset[str], teams: frozenset[str]) -> None:
    """A caller can only hand out what it has: its scopes, within its teams."""
    if principal.admin:
        return
    extra = sorted(s for s in scopes if not principal.has(s))
    if extra:
        raise Forbidden(f"cannot grant scopes this token does not have: {', '.join(extra)}")
    if principal.team_bound and (not teams or not teams <= principal.teams):
        raise Forbidden("a team-bound token can only create tokens for its own teams")


def visible_token(principal: Principal, tok: TokenRecord) -> bool:
    if principal.admin or tok.id == principal.token_id or tok.created_by == principal.token_id:
        return True
    return principal.team_bound and bool(tok.teams) and tok.teams <= principal.teams


class EnsureSigningKey(Txn):
    def plan(self, actor: ConfigActor) -> TxnPlan:
        auth: AuthState = actor.auth
        if any(k.active for k in auth.keys.values()):
            return TxnPlan([], lambda: None)
        key = SigningKey.generate()
        return TxnPlan(
            [key.row(), audit_row(SYSTEM, "create", "signing_key", key.kid, None)],
            lambda: auth.keys.__setitem__(key.kid, key),
        )


class CreateToken(Txn):
    """Create a token; the result is (record, token string) — the string is shown only once."""

    def __init__(self, body: Any, principal: Principal = SYSTEM, *, replaces: str | None = None):
        super().__init__()
        self.body, self.principal, self.replaces = body, principal, replaces

    def plan(self, actor: ConfigActor) -> TxnPlan:
        auth: AuthState = actor.auth
        spec = parse(TokenCreate, self.body, "token")
        scopes = token_scopes(spec.role, spec.scopes)
        teams = frozenset(spec.teams or ())
        _no_escalation(self.principal, scopes, teams)
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

    def __init__(
        self, token_id: str, body: Any, principal: Principal, *, revoke: bool = False
    ) -> None:
        super().__init__()
        self.token_id, self.body, self.principal = token_id, body, principal
        self.revoke = revoke

    def plan(self, actor: ConfigActor) -> TxnPlan:
        auth: AuthState = actor.auth
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

    def plan(self, actor: ConfigActor) -> TxnPlan:
        auth: AuthState = actor.auth
        cfg = actor.state
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

    def plan(self, actor: ConfigActor) -> TxnPlan:
        return TxnPlan(list(self.rows), lambda: None)


class ReloadTokens(MemoryTxn):
    """Add tokens (and keys) that exist in the database but not in memory. Runs inside the
    actor so it cannot interleave with a token change."""

    async def run(self, actor: ConfigActor) -> None:
        fresh = await load_auth(actor.repo)
        auth: AuthState = actor.auth
        for kid, key in fresh.keys.items():
            auth.keys.setdefault(kid, key)
        for tid, tok in fresh.tokens.items():
            auth.tokens.setdefault(tid, tok)
