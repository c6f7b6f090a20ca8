"""Signing keys and the in-memory auth state (tokens, teams, keys).

Tokens are JWTs signed with an Ed25519 key (EdDSA) generated at first start and kept in the
database; the header's `kid` names the key, so keys can be rotated. Only the token's id (`jti`)
is meaningful: scopes, teams, status and expiry are read from the stored record on every request,
so revocation, expiry and scope changes take effect on the next request. The state is changed
only by config-actor transactions (`flowplane.actors.auth`); every edge reads it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flowplane.domain.auth import TeamRecord, TokenRecord
from flowplane.storage.base import Repository, Row

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
