"""Tokens and teams are shared state too (README "Replicas"): a token issued on one replica
works on the other, and revoking it on one ends it on the other; a team's quota set on one
replica limits creates on the other."""

from __future__ import annotations

import pytest
import trio

from flowplane.auth.keys import AuthState
from flowplane.testing.factories import cluster_body
from tests.helpers import ok
from tests.replicas.conftest import Replica
from tests.replicas.test_change_feed import N

pytestmark = pytest.mark.postgres

T = "/api/v1"


async def until(auth: AuthState, check: object) -> None:
    """Wait until `check()` holds, re-checked whenever the token state changes."""
    changed = trio.Event()

    def listener() -> None:
        changed.set()

    auth.token_listeners.append(listener)
    try:
        while not check():  # type: ignore[operator]
            await changed.wait()
            changed = trio.Event()
    finally:
        auth.token_listeners.remove(listener)


async def test_token_issued_and_revoked_on_a_holds_on_b(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: a token is the same on every replica: issued on A it is accepted by B;
    revoked on A, B refuses it (401)."""
    a, b = replicas
    with trio.fail_after(10):
        issued = ok(
            await a.api.post(f"{T}/tokens", json={"name": "ci", "scopes": ["clusters:read"]})
        )
        tid, bearer = issued["id"], {"Authorization": f"Bearer {issued['token']}"}
        await until(b.core.auth, lambda: tid in b.core.auth.tokens)
        assert (await b.api.get(f"{N}/clusters", headers=bearer)).status_code == 200
        ok(await a.api.delete(f"{T}/tokens/{tid}"), 204)
        await until(b.core.auth, lambda: b.core.auth.tokens[tid].status == "revoked")
        assert (await b.api.get(f"{N}/clusters", headers=bearer)).status_code == 401


async def test_quota_set_on_a_limits_creates_on_b(replicas: tuple[Replica, Replica]) -> None:
    """The rule: quotas hold across replicas: team t's cluster quota of 1, set on A, refuses
    B's second cluster of team t (403 quota_exceeded), even when the first was created on A."""
    a, b = replicas
    with trio.fail_after(10):
        ok(await a.api.post(f"{T}/teams", json={"name": "t", "quotas": {"maxClusters": 1}}))
        ok(await a.api.post(f"{N}/clusters", json=cluster_body("one", team="t")))
        await until(b.core.auth, lambda: "t" in b.core.state.team_quotas)
        r = await b.api.post(f"{N}/clusters", json=cluster_body("two", team="t"))
    assert r.status_code == 403 and r.json()["error"] == "quota_exceeded", r.text
    assert await a.sql("SELECT count(*) FROM resources WHERE team = 't'") == 1
