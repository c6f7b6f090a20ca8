"""The config actor's supervision rule (flowplane/actors/config.py):

"an unexpected exception while handling a command is a bug. It is logged with the command that
caused it, counted in `flowplane_actor_failures_total{actor="config"}`, and answered to that
caller as a 500; nothing of the command was applied (a plan is applied to memory only after its
transaction committed), and the actor keeps serving the next command."

The bugs are real exceptions raised by commands whose planning goes wrong after they have checked
the change (so a committable plan existed); the actor, its SQLite repository and its state are
the real ones (`core` fixture).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from flowplane.actors.auth import ChangeTeam
from flowplane.actors.config import Command, PlanContext, Txn, TxnPlan
from flowplane.app import Core
from flowplane.domain.auth import SYSTEM
from flowplane.domain.resources import Kind
from flowplane.errors import Internal
from flowplane.storage.base import AuditQuery
from flowplane.testing.factories import cluster_body
from tests.actors.test_group_commit import CountingRepo, submit_all


class CommandBug(Command):
    """A resource command (joins group commits) whose planning raises after checking."""

    def plan(self, ctx: PlanContext) -> TxnPlan:
        super().plan(ctx)
        raise RuntimeError("bug while planning (internal detail)")


class TeamBug(ChangeTeam):
    """A command handled on its own (not a resource `Command`) whose planning raises."""

    def plan(self, ctx: PlanContext) -> TxnPlan:
        super().plan(ctx)
        raise RuntimeError("bug while planning (internal detail)")


def failures() -> float:
    return REGISTRY.get_sample_value("flowplane_actor_failures_total", {"actor": "config"}) or 0.0


async def everything(core: Core) -> dict[str, Any]:
    """What a command could have changed, in memory and in storage."""
    _, audit_rows = await core.repo.query_audit(AuditQuery(limit=1))
    return {
        "serial": core.state.serial,
        "resources": sorted((r.kind, r.name, r.version) for r in core.state.all()),
        "teams": sorted(core.auth.teams),
        "stored resources": sorted((r.kind, r.name) for r in await core.repo.load_all()),
        "stored teams": sorted(r["name"] for r in await core.repo.load_rows("teams")),
        "audit rows": audit_rows,
        "snapshot": core.snapshots.current,
    }


def bug_reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "flowplane.actors.config"]


@pytest.mark.parametrize(
    "bug",
    [
        pytest.param(
            lambda: CommandBug("create", Kind.CLUSTER, body=cluster_body("c1")), id="command"
        ),
        pytest.param(lambda: TeamBug(None, {"name": "payments"}, SYSTEM, create=True), id="txn"),
    ],
)
async def test_a_bug_in_a_plan_is_a_500_logged_with_the_command_and_changes_nothing(
    core: Core, caplog: pytest.LogCaptureFixture, bug: Any
) -> None:
    before, bugs = await everything(core), failures()
    cmd: Txn = bug()
    with pytest.raises(Internal) as raised:
        await core.actor.submit(cmd)
    assert raised.value.status == 500
    assert "internal detail" not in raised.value.message  # the caller gets no internals
    assert failures() == bugs + 1
    [report] = bug_reports(caplog)
    assert report.levelno == logging.ERROR
    assert cmd.describe() in report.getMessage()
    assert report.exc_info is not None and isinstance(report.exc_info[1], RuntimeError)
    assert await everything(core) == before  # nothing applied, nothing stored, no audit row

    # The actor keeps serving: the same change, planned without the bug, commits.
    await core.actor.submit(Command("create", Kind.CLUSTER, body=cluster_body("c1")))
    await core.actor.submit(ChangeTeam(None, {"name": "payments"}, SYSTEM, create=True))
    assert [r.name for r in core.state.list_resources(Kind.CLUSTER)] == ["c1"]
    assert "payments" in core.auth.teams
    assert failures() == bugs + 1


async def test_a_bug_in_one_plan_of_a_group_commit_fails_that_command_alone(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    """Commands waiting together commit in one transaction; the one whose plan raises is
    answered 500, logged by name and counted, the others commit."""
    spy = CountingRepo(core.repo)
    core.actor.repo = spy  # type: ignore[assignment]
    serial, bugs = core.state.serial, failures()
    cmds = [
        Command("create", Kind.CLUSTER, body=cluster_body("c1")),
        CommandBug("create", Kind.CLUSTER, body=cluster_body("c2", 9002)),
        Command("create", Kind.CLUSTER, body=cluster_body("c3", 9003)),
    ]
    results = await submit_all(core, cmds)
    assert spy.transactions == 1
    assert [r.name for r in (results[0], results[2])] == ["c1", "c3"]
    assert isinstance(results[1], Internal) and results[1].status == 500
    assert failures() == bugs + 1
    [report] = bug_reports(caplog)
    assert cmds[1].describe() in report.getMessage()
    assert "c2" in report.getMessage()  # which of three alike creates hit the bug
    assert {"c1", "c3"}.isdisjoint(report.getMessage().split())
    assert core.state.serial == serial + 2
    assert [r.name for r in core.state.list_resources(Kind.CLUSTER)] == ["c1", "c3"]
    stored = sorted(r.name for r in await core.repo.load_all())
    assert stored == ["c1", "c3"]

    await core.actor.submit(Command("create", Kind.CLUSTER, body=cluster_body("c2", 9002)))
    assert sorted(r.name for r in await core.repo.load_all()) == ["c1", "c2", "c3"]


class ApplyBug(Txn):
    """A plan that commits (an audit row) but whose `apply` raises: memory would be half
    changed, so serving on is not allowed."""

    def plan(self, ctx: PlanContext) -> TxnPlan:
        def apply() -> None:
            raise RuntimeError("bug while applying")

        return TxnPlan([], apply)


async def test_a_bug_while_applying_a_committed_plan_stops_the_actor(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    """"if applying a plan to memory itself raises, memory may no longer match storage, and the
    actor stops the process (`InconsistentState`, non-zero exit) rather than serve from it"."""
    import trio

    from flowplane.actors.config import ConfigActor, InconsistentState

    actor = ConfigActor(core.repo, core.state, core.auth)
    bugs = failures()
    with pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012 - the nursery re-raises
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            with pytest.raises(Internal):
                await actor.submit(ApplyBug())
    leaf = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        (leaf,) = leaf.exceptions
    assert isinstance(leaf, InconsistentState)
    assert failures() == bugs + 1
    assert any(r.levelno == logging.CRITICAL and "ApplyBug" in r.getMessage()
               for r in bug_reports(caplog))  # fmt: skip
