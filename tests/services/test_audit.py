"""AuditService.query (api.md "Teams, tokens, auth": `GET /api/v1/audit?resourceType=&team=
&actor=&since=`): every change with actor, action, resource, before/after JSON and time, newest
first, as the caller may see it; called directly (no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from flowplane.app import Core, open_core
from flowplane.domain.auth import Principal
from flowplane.domain.resources import Kind
from flowplane.errors import BadRequest, Forbidden, NotFound
from flowplane.services.audit import AuditFilter, entry_json
from flowplane.services.common import Window
from flowplane.settings import Settings
from flowplane.storage.base import AuditRow
from flowplane.testing.factories import cluster_body
from tests.services.helpers import ADMIN, all_but, assert_scope_refused, caller, token_caller


async def query(core: Core, who: Principal = ADMIN, window: Window | None = None,
                **f: object) -> list[AuditRow]:  # fmt: skip
    page = await core.services.audit.query(who, AuditFilter(**f), window or Window())  # type: ignore[arg-type]
    return list(page.items)


def what(rows: list[AuditRow]) -> list[tuple[str, str, str | None]]:
    return [(r.action, r.resource_type, r.resource_name) for r in rows]


async def changes_by_two_teams(core: Core) -> tuple[Principal, Principal]:
    """Cluster changes by a token of team a and one of team b (plus their tokens' creation)."""
    res = core.services.resources
    a, _ = await token_caller(core, role="platform-engineer", teams=["a"])
    b, _ = await token_caller(core, role="platform-engineer", teams=["b"])
    await res.create(a, Kind.CLUSTER, cluster_body("ca"))
    await res.patch(a, Kind.CLUSTER, "ca", {"http2": True})
    await res.create(b, Kind.CLUSTER, cluster_body("cb"))
    await res.delete(a, Kind.CLUSTER, "ca")
    return a, b


async def test_every_change_newest_first_with_who_and_what(core: Core) -> None:
    a, b = await changes_by_two_teams(core)
    rows = await query(core, resource_type="cluster")
    assert what(rows) == [("delete", "cluster", "ca"), ("create", "cluster", "cb"),
                          ("update", "cluster", "ca"), ("create", "cluster", "ca")]  # fmt: skip
    delete, create_b, update, create = rows
    assert [r.team for r in rows] == ["a", "b", "a", "a"]
    assert (create.actor_id, create.actor_name) == (a.token_id, a.name)
    assert create_b.actor_id == b.token_id
    assert create.before is None and create.after == {**cluster_body("ca"), "team": "a"}
    assert "http2" not in update.before and update.after["http2"] is True
    assert delete.before == update.after and delete.after is None
    assert [r.time for r in rows] == sorted((r.time for r in rows), reverse=True)
    assert [r.id for r in rows] == sorted((r.id for r in rows), reverse=True)  # type: ignore[type-var]
    rendered = entry_json(create)
    assert rendered["actor"] == {"tokenId": a.token_id, "name": a.name}
    assert rendered["resourceType"] == "cluster" and rendered["time"].endswith("Z")


async def test_token_and_team_events_are_audited(core: Core) -> None:
    made = await core.services.tokens.create(ADMIN, {"name": "ci", "role": "api-developer"})
    await core.services.tokens.revoke(ADMIN, made.view.record.id)
    await core.services.teams.create(ADMIN, {"name": "t"})
    rows = await query(core, actor=ADMIN.token_id)
    assert what(rows) == [("create", "team", "t"), ("revoke", "token", made.view.record.id),
                          ("create", "token", made.view.record.id)]  # fmt: skip
    assert rows[0].team == "t" and rows[1].after["status"] == "revoked"
    assert "token" not in rows[2].after  # the token string is never audited


async def test_filters_combine(core: Core) -> None:
    a, _ = await changes_by_two_teams(core)
    assert what(await query(core, resource_type="cluster", team="b")) == [
        ("create", "cluster", "cb")
    ]
    by_id = await query(core, actor=a.token_id, resource_type="cluster")
    by_name = await query(core, actor=a.name, resource_type="cluster")
    assert [r.actor_id for r in by_id] == [a.token_id] * 3
    # both callers are named "caller": by name, both match
    assert [r.id for r in by_name] == [r.id for r in await query(core, resource_type="cluster")]
    assert await query(core, actor="nobody") == []
    assert await query(core, resource_type="listener") == []


async def test_since_compares_instants_whatever_the_offset(core: Core) -> None:
    """`since` is an instant (RFC 3339, any offset): the same instant written in UTC, +05:00 or
    -05:00 selects the same entries. (Regression: it was compared as text against the stored
    UTC times, so a non-UTC offset selected by wall-clock digits.)"""
    res = core.services.resources
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("old"))
    (old,) = await query(core, resource_type="cluster")
    cut = old.time + timedelta(microseconds=1)
    await res.create(ADMIN, Kind.CLUSTER, cluster_body("new"))
    for tz in (UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))):
        since = cut.astimezone(tz)
        assert what(await query(core, resource_type="cluster", since=since)) == [
            ("create", "cluster", "new")
        ], since.isoformat()
    assert len(await query(core, resource_type="cluster", since=old.time)) == 2  # inclusive
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await query(core, since=future) == []


async def test_window_pages_with_the_full_total(core: Core) -> None:
    await changes_by_two_teams(core)
    everything = await query(core, resource_type="cluster")
    page = await core.services.audit.query(ADMIN, AuditFilter("cluster"), Window(limit=2, offset=1))
    assert ([r.id for r in page.items], page.total, page.limit, page.offset) == (
        [r.id for r in everything[1:3]], 4, 2, 1,
    )  # fmt: skip
    beyond = await core.services.audit.query(ADMIN, AuditFilter("cluster"), Window(offset=10))
    assert (list(beyond.items), beyond.total) == ([], 4)


async def test_a_team_bound_caller_sees_its_teams_entries_only(core: Core) -> None:
    """One team: implied. Several: the caller must pick one (400). Another team: reported as
    missing (404), like every other team-scoped read."""
    await changes_by_two_teams(core)
    only_a = caller("audit:read", teams=["a"])
    rows = await query(core, only_a)
    assert rows and {r.team for r in rows} == {"a"}
    assert what(rows) == what(await query(core, only_a, team="a"))
    assert what(rows) == what(await query(core, team="a"))  # exactly what an admin sees of a
    with pytest.raises(NotFound, match="team 'b'"):
        await query(core, only_a, team="b")
    both = caller("audit:read", teams=["a", "b"])
    with pytest.raises(BadRequest, match=r"\?team="):
        await query(core, both)
    assert {r.team for r in await query(core, both, team="b")} == {"b"}
    # an admin bound to teams is not team-bound: sees everything
    admin_of_a = caller("admin:all", teams=["a"])
    assert len(await query(core, admin_of_a)) == len(await query(core))


async def test_query_checks_its_scope(core: Core) -> None:
    with pytest.raises(Forbidden) as refused:
        await query(core, all_but("audit:read"))
    assert_scope_refused(refused.value, "audit:read")
    assert await query(core, caller("audit:read"), resource_type="cluster") == []


async def test_entries_are_persisted(settings: Settings) -> None:
    async with open_core(settings) as core:
        await changes_by_two_teams(core)
        before = await query(core)
    async with open_core(settings) as core:
        after = await query(core)
    assert after == before and len(before) >= 6  # + the tokens and the first start's rows
