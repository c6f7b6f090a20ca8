"""TokenService (api.md "Teams, tokens, auth"): list, get, create, patch, revoke and rotate,
called directly with an explicit caller (no HTTP). A token made here is proven by
authenticating it the way every edge does (`Authenticator.authenticate`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowplane.app import Core, open_core
from flowplane.domain.auth import ROLES, SYSTEM, Principal
from flowplane.errors import BadRequest, FlowplaneError, Forbidden, NotFound, Unauthorized
from flowplane.services.common import Window
from flowplane.settings import Settings
from tests.services.helpers import (
    ADMIN,
    all_but,
    assert_scope_refused,
    authenticate,
    caller,
    run,
    token_caller,
)

LATER = datetime(2100, 1, 1, tzinfo=UTC)


def ids(page_items: Any) -> list[str]:
    return [v.record.id for v in page_items]


# --- create -----------------------------------------------------------------------------------


async def test_create_issues_a_token_that_authenticates_as_its_record(core: Core) -> None:
    tokens = core.services.tokens
    body = {"name": "ci", "role": "platform-engineer", "scopes": ["tokens:read"],
            "teams": ["a"], "expiresAt": "2100-01-01T00:00:00Z"}  # fmt: skip
    issued = await tokens.create(ADMIN, body)
    rec = issued.view.record
    assert (rec.name, rec.role, rec.teams, rec.status, rec.expires_at, rec.version) == (
        "ci", "platform-engineer", frozenset({"a"}), "active", LATER, 1,
    )  # fmt: skip
    assert rec.scopes == ROLES["platform-engineer"] | {"tokens:read"}
    assert rec.created_by == ADMIN.token_id and issued.replaces is None
    who = authenticate(core, issued.token)
    assert (who.token_id, who.name, who.scopes, who.teams) == (rec.id, "ci", rec.scopes, rec.teams)
    # shown only this once: reads return the record, never the string
    assert tokens.get(ADMIN, rec.id).record == rec
    assert "token" not in tokens.get(ADMIN, rec.id).to_json()
    assert issued.to_json()["token"] == issued.token


@pytest.mark.parametrize(
    ("sent", "field"),
    [
        ({"name": "x"}, "(body)"),  # neither role nor scopes
        ({"name": "x", "scopes": ["clusters:fly"]}, "scopes"),
        ({"name": "x", "role": "emperor"}, "role"),
        ({"name": "", "role": "admin"}, "name"),
        ({"name": "x", "role": "admin", "teams": ["Not A Team"]}, "teams[0]"),
        ({"name": "x", "role": "admin", "expiresAt": "2030-01-01T00:00:00"}, "(body)"),
    ],
)
async def test_create_with_a_bad_body_is_400_with_field_details(
    core: Core, sent: dict[str, Any], field: str
) -> None:
    tokens = core.services.tokens
    before = tokens.list(ADMIN, Window()).total
    with pytest.raises(BadRequest) as refused:
        await tokens.create(ADMIN, sent)
    assert [d.field for d in refused.value.details] == [field]
    assert tokens.list(ADMIN, Window()).total == before


async def test_create_in_the_past_is_400(core: Core) -> None:
    with pytest.raises(BadRequest, match="in the past"):
        await core.services.tokens.create(
            ADMIN, {"name": "x", "role": "admin", "expiresAt": "2001-01-01T00:00:00Z"}
        )


async def test_create_grants_nothing_beyond_the_callers_own(core: Core) -> None:
    """No scope the caller lacks, no team outside the caller's (403); within them, fine."""
    tokens = core.services.tokens
    dev, _ = await token_caller(core, scopes=["tokens:write", "tokens:read", "clusters:read"],
                                teams=["a"])  # fmt: skip
    for sent in (
        {"name": "x", "role": "admin", "teams": ["a"]},
        {"name": "x", "scopes": ["clusters:write"], "teams": ["a"]},
        {"name": "x", "scopes": ["clusters:read"], "teams": ["b"]},
        {"name": "x", "scopes": ["clusters:read"]},  # unbound = every team
    ):
        with pytest.raises(Forbidden):
            await tokens.create(dev, sent)
    made = await tokens.create(dev, {"name": "x", "scopes": ["clusters:read"], "teams": ["a"]})
    assert made.view.record.created_by == dev.token_id
    assert [v.record.name for v in tokens.list(dev, Window()).items] == ["caller", "x"]


# --- list and get -------------------------------------------------------------------------------


async def test_list_shows_what_the_caller_may_see_oldest_first(core: Core) -> None:
    """Admins see all; others their own token, the ones they created, and (team-bound) those
    bound within their teams; `team` keeps those bound to that team; the window pages."""
    tokens = core.services.tokens
    everyone = ids(tokens.list(ADMIN, Window()).items)  # the initial admin token
    a, a_tok = await token_caller(core, scopes=["tokens:read", "tokens:write"], teams=["a"])
    _, b_tok = await token_caller(core, role="platform-engineer", teams=["b"])
    _, a2_tok = await token_caller(core, role="platform-engineer", teams=["a"])
    mine = await tokens.create(a, {"name": "mine", "scopes": ["tokens:read"], "teams": ["a"]})
    made = [a_tok, b_tok, a2_tok, mine]
    every = tokens.list(ADMIN, Window())
    assert ids(every.items) == everyone + [t.view.record.id for t in made]
    assert ids(tokens.list(a, Window()).items) == [t.view.record.id for t in (a_tok, a2_tok, mine)]
    assert ids(tokens.list(ADMIN, Window(), team="b").items) == [b_tok.view.record.id]
    page = tokens.list(ADMIN, Window(limit=2, offset=1))
    assert (ids(page.items), page.total, page.limit, page.offset) == (
        ids(every.items)[1:3], every.total, 2, 1,
    )  # fmt: skip


async def test_get_another_teams_token_is_404(core: Core) -> None:
    tokens = core.services.tokens
    a, a_tok = await token_caller(core, scopes=["tokens:read"], teams=["a"])
    _, b_tok = await token_caller(core, role="platform-engineer", teams=["b"])
    assert tokens.get(a, a_tok.view.record.id).record == a_tok.view.record  # its own
    for hidden in (b_tok.view.record.id, "no-such-id"):
        with pytest.raises(NotFound, match="does not exist"):
            tokens.get(a, hidden)


async def test_get_shows_the_last_use(core: Core) -> None:
    tokens = core.services.tokens
    _, issued = await token_caller(core, role="platform-engineer")
    tid = issued.view.record.id
    assert tokens.get(ADMIN, tid).last_used_at is not None  # token_caller authenticated it
    assert tokens.get(ADMIN, tid).to_json()["lastUsedAt"].endswith("Z")


# --- patch, revoke, rotate ----------------------------------------------------------------------


async def test_patch_changes_the_record_and_the_next_authentication(core: Core) -> None:
    tokens = core.services.tokens
    _, issued = await token_caller(core, role="platform-engineer", teams=["a"])
    tid = issued.view.record.id
    view = await tokens.patch(ADMIN, tid, {"name": "renamed", "scopes": ["clusters:read"],
                                           "teams": ["a", "b"]})  # fmt: skip
    rec = view.record
    assert (rec.name, rec.scopes, rec.teams, rec.version) == (
        "renamed", frozenset({"clusters:read"}), frozenset({"a", "b"}), 2,
    )  # fmt: skip
    who = authenticate(core, issued.token)  # takes effect on the token's next request
    assert (who.name, who.scopes, who.teams) == ("renamed", rec.scopes, rec.teams)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await tokens.patch(ADMIN, tid, {"expiresAt": past})
    with pytest.raises(Unauthorized, match="expired"):
        authenticate(core, issued.token)
    cleared = await tokens.patch(ADMIN, tid, {"expiresAt": None})
    assert cleared.record.expires_at is None
    assert authenticate(core, issued.token).token_id == tid


async def test_patch_refusals(core: Core) -> None:
    tokens = core.services.tokens
    dev, own = await token_caller(core, scopes=["tokens:write", "tokens:read"], teams=["a"])
    _, b_tok = await token_caller(core, role="platform-engineer", teams=["b"])
    tid = own.view.record.id
    for not_an_object in (None, [], "x"):
        with pytest.raises(BadRequest):
            await tokens.patch(dev, tid, not_an_object)
    with pytest.raises(BadRequest) as bad:
        await tokens.patch(dev, tid, {"scopes": ["nope:x"]})
    assert [d.field for d in bad.value.details] == ["scopes"]
    with pytest.raises(Forbidden, match="admin:all"):
        await tokens.patch(dev, tid, {"scopes": ["admin:all"]})
    with pytest.raises(Forbidden, match="own teams"):
        await tokens.patch(dev, tid, {"teams": ["b"]})
    with pytest.raises(NotFound):
        await tokens.patch(dev, b_tok.view.record.id, {"name": "mine now"})
    assert tokens.get(ADMIN, tid).record == own.view.record  # nothing changed
    assert tokens.get(ADMIN, b_tok.view.record.id).record == b_tok.view.record


async def test_revoke_ends_the_token(core: Core) -> None:
    tokens = core.services.tokens
    _, issued = await token_caller(core, role="platform-engineer")
    tid = issued.view.record.id
    assert await tokens.revoke(ADMIN, tid) is None
    rec = tokens.get(ADMIN, tid).record
    assert (rec.status, rec.version) == ("revoked", 2)
    with pytest.raises(Unauthorized, match="revoked"):
        authenticate(core, issued.token)


async def test_revoke_of_an_unseen_token_is_404(core: Core) -> None:
    tokens = core.services.tokens
    a, _ = await token_caller(core, scopes=["tokens:write"], teams=["a"])
    _, b_tok = await token_caller(core, role="platform-engineer", teams=["b"])
    for hidden in (b_tok.view.record.id, "no-such-id"):
        with pytest.raises(NotFound):
            await tokens.revoke(a, hidden)
    assert tokens.get(ADMIN, b_tok.view.record.id).record.status == "active"


async def test_rotate_issues_the_same_token_anew_and_revokes_the_old(core: Core) -> None:
    tokens = core.services.tokens
    _, old = await token_caller(core, role="platform-engineer", scopes=["tokens:read"],
                                teams=["a"], expiresAt="2100-01-01T00:00:00Z")  # fmt: skip
    new = await tokens.rotate(ADMIN, old.view.record.id)
    was, now = old.view.record, new.view.record
    assert new.replaces == was.id and now.id != was.id and new.token != old.token
    assert (now.name, now.scopes, now.teams, now.expires_at, now.status) == (
        was.name, was.scopes, was.teams, was.expires_at, "active",
    )  # fmt: skip
    assert new.to_json()["replaces"] == was.id
    assert authenticate(core, new.token).token_id == now.id
    with pytest.raises(Unauthorized, match="revoked"):
        authenticate(core, old.token)
    assert tokens.get(ADMIN, was.id).record.status == "revoked"


async def test_rotate_refusals(core: Core) -> None:
    tokens = core.services.tokens
    a, _ = await token_caller(core, scopes=["tokens:write", "clusters:read"], teams=["a"])
    _, b_tok = await token_caller(core, role="platform-engineer", teams=["b"])
    _, wider = await token_caller(core, role="platform-engineer", teams=["a"])
    with pytest.raises(NotFound):
        await tokens.rotate(a, b_tok.view.record.id)
    # visible (bound within a's teams) but carrying scopes `a` lacks: no escalation by rotation
    with pytest.raises(Forbidden, match="cannot grant"):
        await tokens.rotate(a, wider.view.record.id)
    for tok in (b_tok, wider):
        assert tokens.get(ADMIN, tok.view.record.id).record.status == "active"


# --- scopes -------------------------------------------------------------------------------------

TokenOp = Callable[[Core, Principal, str], Awaitable[object] | object]
OPERATIONS: dict[str, tuple[str, TokenOp]] = {
    "list": ("tokens:read", lambda c, p, _: c.services.tokens.list(p, Window())),
    "get": ("tokens:read", lambda c, p, tid: c.services.tokens.get(p, tid)),
    "create": (
        "tokens:write",
        lambda c, p, _: c.services.tokens.create(p, {"name": "n", "scopes": ["nodes:read"]}),
    ),
    "patch": ("tokens:write", lambda c, p, tid: c.services.tokens.patch(p, tid, {"name": "n"})),
    "revoke": ("tokens:write", lambda c, p, tid: c.services.tokens.revoke(p, tid)),
    "rotate": ("tokens:write", lambda c, p, tid: c.services.tokens.rotate(p, tid)),
}


@pytest.mark.parametrize("name", OPERATIONS)
async def test_every_operation_checks_its_scope(core: Core, name: str) -> None:
    scope, op = OPERATIONS[name]
    tokens = core.services.tokens
    # made by a caller of the same identity as the one below, so that one may see it
    target = await tokens.create(caller("tokens:write", "nodes:read"),
                                 {"name": "target", "scopes": ["nodes:read"]})  # fmt: skip
    before = tokens.list(ADMIN, Window())
    with pytest.raises(FlowplaneError) as refused:
        await run(op(core, all_but(scope), target.view.record.id))
    assert_scope_refused(refused.value, scope)
    after = tokens.list(ADMIN, Window())
    assert [v.record for v in after.items] == [v.record for v in before.items]
    # the scope (with what the operation hands out) is enough
    await run(op(core, caller(scope, "nodes:read"), target.view.record.id))


# --- persistence --------------------------------------------------------------------------------


async def test_token_changes_are_persisted(settings: Settings) -> None:
    async with open_core(settings) as core:
        tokens = core.services.tokens
        kept = await tokens.create(SYSTEM, {"name": "kept", "role": "api-developer",
                                            "teams": ["a"]})  # fmt: skip
        await tokens.patch(SYSTEM, kept.view.record.id, {"name": "kept-renamed"})
        gone = await tokens.create(SYSTEM, {"name": "gone", "role": "api-developer"})
        await tokens.revoke(SYSTEM, gone.view.record.id)
        rotated = await tokens.rotate(SYSTEM, kept.view.record.id)
        records = [v.record for v in tokens.list(SYSTEM, Window()).items]
    async with open_core(settings) as core:
        tokens = core.services.tokens
        assert [v.record for v in tokens.list(SYSTEM, Window()).items] == records
        assert authenticate(core, rotated.token).name == "kept-renamed"
        for dead in (kept.token, gone.token):
            with pytest.raises(Unauthorized, match="revoked"):
                authenticate(core, dead)


async def test_a_team_bound_token_can_never_hold_teams_write(core: Core) -> None:
    """Issue 11 item 10: team management is admin-only, so a token bound to teams can never hold
    teams:write — neither when it is made nor by a later change."""
    tokens = core.services.tokens
    await core.services.teams.create(ADMIN, {"name": "a"})
    with pytest.raises(BadRequest, match="teams:write"):
        await tokens.create(ADMIN, {"name": "x", "scopes": ["teams:write"], "teams": ["a"]})
    made = await tokens.create(ADMIN, {"name": "y", "scopes": ["teams:write"]})
    with pytest.raises(BadRequest, match="teams:write"):
        await tokens.patch(ADMIN, made.view.record.id, {"teams": ["a"]})
    assert tokens.get(ADMIN, made.view.record.id).record.teams == frozenset()
