"""Group commit in the config actor: commands waiting together share one transaction."""

from __future__ import annotations

from typing import Any

from flowplane.actors.config import Command
from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.errors import BadRequest, FlowplaneError, StorageError
from flowplane.storage.base import AuditQuery
from flowplane.testing.factories import cluster_body, route_config_body


class CountingRepo:
    """The real repository, counting transactions (a spy, not a mock)."""

    def __init__(self, repo: Any) -> None:
        self.repo, self.transactions = repo, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def write(self, writes: Any) -> None:
        self.transactions += 1
        await self.repo.write(writes)


async def submit_all(core: Core, cmds: list[Command]) -> list[Any]:
    """Queue `cmds` in this order before the actor runs again, then collect the outcomes."""
    mailbox = core.actor._mailbox
    assert mailbox is not None
    for cmd in cmds:
        mailbox.send_nowait(cmd)
    results: list[Any] = []
    for cmd in cmds:
        try:
            results.append(await cmd.wait())
        except FlowplaneError as err:
            results.append(err)
    return results


async def test_waiting_commands_commit_together_in_order(core: Core) -> None:
    spy = CountingRepo(core.repo)
    core.actor.repo = spy  # type: ignore[assignment]
    cmds = [
        Command("create", Kind.CLUSTER, body=cluster_body("c1")),
        Command("create", Kind.ROUTE_CONFIG, body=route_config_body("r1", cluster="c1")),
        Command("create", Kind.CLUSTER, body={"name": "Bad"}),  # fails alone
        Command("delete", Kind.CLUSTER, "c1"),  # refused: r1 (same group) references it
        Command("create", Kind.CLUSTER, body=cluster_body("c2")),
    ]
    results = await submit_all(core, cmds)
    assert spy.transactions == 1  # one transaction for the four that passed validation
    assert results[0].name == "c1" and results[1].name == "r1" and results[4].name == "c2"
    assert isinstance(results[2], BadRequest)
    assert isinstance(results[3], FlowplaneError) and results[3].status == 409
    stored = {(r.kind, r.name) for r in await core.repo.load_all()}
    assert stored == {("cluster", "c1"), ("route_config", "r1"), ("cluster", "c2")}
    assert core.state.serial == 3  # one change event per committed command
    rows, _ = await core.repo.query_audit(AuditQuery(resource_type="cluster"))
    assert [(r.action, r.resource_name) for r in rows] == [("create", "c2"), ("create", "c1")]


async def test_a_failed_group_commit_changes_nothing(core: Core) -> None:
    await core.actor.submit(Command("create", Kind.CLUSTER, body=cluster_body("keep")))
    before = core.state.serial
    await core.repo.aclose()  # a real fault: the database is gone
    results = await submit_all(
        core,
        [Command("create", Kind.CLUSTER, body=cluster_body(f"c{i}")) for i in range(5)]
        + [Command("delete", Kind.CLUSTER, "keep")],
    )
    assert all(isinstance(r, StorageError) for r in results)
    assert core.state.serial == before
    assert [r.name for r in core.state.list_resources(Kind.CLUSTER)] == ["keep"]
