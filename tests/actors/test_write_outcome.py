"""The config actor when a commit's outcome is unknown (issue 11, item 1): "outcome unknown
(connection lost during COMMIT) -> find out before answering"; if the repository still cannot
tell, the caller gets a 503 saying so, and the actor asks again until the database answers, then
makes memory match it before planning the next command.

The repository is the real SQLite one behind a wrapper that loses the answer of one commit
(after committing it, or without committing it) and cannot look it up for the first tries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import trio

from flowplane.actors.config import Command
from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.errors import StorageError
from flowplane.storage.base import Write, WriteOutcomeUnknown
from flowplane.testing.factories import cluster_body
from tests.actors.test_group_commit import submit_all


class LostAnswer:
    """The real repository, except that the next write's answer is lost."""

    def __init__(self, repo: Any, *, commits: bool, unknown_for: int) -> None:
        self.repo, self.commits, self.unknown_for = repo, commits, unknown_for
        self.armed, self.lookups = True, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repo, name)

    async def write(self, writes: Sequence[Write]) -> None:
        if not self.armed:
            return await self.repo.write(writes)  # type: ignore[no-any-return]
        self.armed = False
        if self.commits:
            await self.repo.write(writes)
        raise WriteOutcomeUnknown("the outcome of the write is unknown (test)", "lost")

    async def write_outcome(self, write_id: str) -> bool | None:
        assert write_id == "lost"
        self.lookups += 1
        return None if self.lookups <= self.unknown_for else self.commits


@pytest.mark.parametrize("commits", [True, False])
async def test_unknown_outcome_is_answered_as_such_and_settled_before_the_next_command(
    core: Core, commits: bool, autojump_clock: object
) -> None:
    await core.actor.submit(Command("create", Kind.CLUSTER, body=cluster_body("a", port=1)))
    core.actor.repo = LostAnswer(core.repo, commits=commits, unknown_for=3)  # type: ignore[assignment]
    lost = Command("replace", Kind.CLUSTER, "a", cluster_body("a", port=2), if_match='"1"')
    [answer] = await submit_all(core, [lost])
    assert isinstance(answer, WriteOutcomeUnknown)
    assert answer.status == 503 and "unknown" in answer.message
    # Answered before the outcome was found. A command arriving while the actor asks is
    # refused at once (not applied), not left waiting for a database that does not answer.
    with pytest.raises(StorageError, match="not applied") as exc:
        await core.actor.submit(Command("patch", Kind.CLUSTER, "a", {"connectTimeoutSeconds": 3}))
    assert exc.value.headers["Retry-After"] == "1"
    while True:  # once the outcome is known, commands are served again
        try:
            after = Command("patch", Kind.CLUSTER, "a", {"connectTimeoutSeconds": 2})
            results = [answer, await core.actor.submit(after)]
            break
        except StorageError:
            await trio.sleep(1)
    assert core.actor.repo.lookups == 4  # type: ignore[attr-defined]
    # The next command was planned against the settled state: on top of the lost write if it
    # committed, on top of version 1 if it did not.
    assert results[1].version == (3 if commits else 2)
    assert results[1].model.endpoints[0].port == (2 if commits else 1)
    stored = {r.name: r for r in await core.repo.load_all()}
    assert stored["a"].version == results[1].version
    assert core.state.get(Kind.CLUSTER, "a").version == stored["a"].version  # type: ignore[union-attr]
