"""Leader election for the singleton jobs (README "Replicas"): one replica holds the advisory
lock and runs them; when its lock connection dies another replica takes over."""

from __future__ import annotations

import pytest
import trio

from tests.replicas.conftest import Replica

pytestmark = pytest.mark.postgres


async def test_one_leader_and_fail_over_when_its_connection_dies(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: "Singleton jobs ... run on one elected replica" (api.md Operations), "with
    fail-over when the leader's connection dies" (issue 13): A (started first) leads and B does
    not; once the server ends A's lock connection (pg_terminate_backend), A stops leading and B
    is elected and runs the singleton jobs (its change-log retention deletes an old row)."""
    a, b = replicas
    la, lb = a.core.leader, b.core.leader
    assert la is not None and lb is not None
    with trio.fail_after(30):
        if not la.leading:
            await la.elected.wait()
        assert la.leading and not lb.leading and la.session_pid is not None
        la.retry = 3600.0  # A does not seek leadership again within this test
        b_elected = lb.elected
        await a.sql("INSERT INTO change_log (origin, entries, created_at)"
                    " VALUES ('old', '[]', now() - interval '8 days')")  # fmt: skip
        assert await a.sql("SELECT pg_terminate_backend($1)", la.session_pid)
        await b_elected.wait()  # B retries every 5 s
        # B's change-log retention job runs at once: it deletes the row older than 7 days.
        while await a.sql("SELECT count(*) FROM change_log WHERE origin = 'old'"):  # noqa: ASYNC110 -- a database row, no event to wait on
            await trio.sleep(0.05)
    assert lb.leading and not la.leading
    assert la.terms == 1 and lb.terms == 1
