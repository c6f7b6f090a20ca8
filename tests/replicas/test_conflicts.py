"""The database decides conflicts between replicas (README "Replicas"): concurrent writes on two
replicas that each pass the replica's own checks give one success and one clear 409/412, never
both, and never a duplicate row."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio

from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from tests.helpers import ok
from tests.replicas.conftest import Replica
from tests.replicas.test_change_feed import N, until_changed, watch

pytestmark = pytest.mark.postgres

PAIRS = 40  # conflicting pairs per kind of conflict (2 x PAIRS concurrent requests)


async def both(a: Replica, b: Replica, request: Any, count: int) -> dict[int, tuple[int, int]]:
    """Run `request(replica, i)` for i < count on A and on B, all at once; i -> (A's status,
    B's status)."""
    out: dict[int, list[int]] = {i: [0, 0] for i in range(count)}

    async def one(side: int, replica: Replica, i: int) -> None:
        out[i][side] = (await request(replica, i)).status_code

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, 0, a, i)
            nursery.start_soon(one, 1, b, i)
    return {i: (s[0], s[1]) for i, s in out.items()}


async def test_concurrent_creates_of_one_name_give_one_winner(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: "concurrent writes on two replicas give one success and one clear 409 ...
    never both": each name created on A and B at once is created once (201), the other create
    is 409; the database holds each name once, at version 1."""
    a, b = replicas
    with trio.fail_after(60):
        statuses = await both(
            a, b, lambda r, i: r.api.post(f"{N}/clusters", json=cluster_body(f"c{i}")), PAIRS
        )
    assert Counter(tuple(sorted(s)) for s in statuses.values()) == {(201, 409): PAIRS}
    assert await a.sql("SELECT count(*) FROM resources WHERE kind = 'cluster'") == PAIRS
    assert await a.sql("SELECT max(version) FROM resources") == 1


async def test_concurrent_updates_with_one_if_match_give_one_winner(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: "If-Match version checks are enforced ... one success and one clear 412": two
    replaces of the same resource with `If-Match: "1"`, one per replica, give one 200 and one
    412; each resource ends at version 2 with the winner's body."""
    a, b = replicas
    seen = watch(b.core)
    with trio.fail_after(60):
        for i in range(PAIRS):
            ok(await a.api.post(f"{N}/clusters", json=cluster_body(f"c{i}")))
        await until_changed(seen, f"c{PAIRS - 1}")

        def put(r: Replica, i: int) -> Any:
            port = 9001 if r is a else 9002
            return r.api.put(
                f"{N}/clusters/c{i}", json=cluster_body(f"c{i}", port), headers={"If-Match": '"1"'}
            )

        statuses = await both(a, b, put, PAIRS)
    assert Counter(tuple(sorted(s)) for s in statuses.values()) == {(200, 412): PAIRS}
    for i, (status_a, _) in statuses.items():
        winner = 9001 if status_a == 200 else 9002
        spec = await a.sql("SELECT spec FROM resources WHERE xds_name = $1", f"c{i}")
        assert f'"port":{winner}' in spec
    assert await a.sql("SELECT count(*) FROM resources WHERE version = 2") == PAIRS


async def test_concurrent_listeners_on_one_port_give_one_winner(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: listener address:port uniqueness holds across replicas: two listeners of
    different names on the same port, created at once on A and on B, give one 201 and one 409;
    the database holds one listener per port."""
    a, b = replicas
    seen = watch(b.core)
    with trio.fail_after(60):
        ok(await a.api.post(f"{N}/clusters", json=cluster_body()))
        ok(await a.api.post(f"{N}/route-configs", json=route_config_body()))
        await until_changed(seen, "routes")

        def create(r: Replica, i: int) -> Any:
            name = f"{'a' if r is a else 'b'}-l{i}"
            return r.api.post(f"{N}/listeners", json=listener_body(name, port=10000 + i))

        statuses = await both(a, b, create, PAIRS)
    assert Counter(tuple(sorted(s)) for s in statuses.values()) == {(201, 409): PAIRS}
    assert await a.sql("SELECT count(*) FROM resources WHERE kind = 'listener'") == PAIRS


async def test_concurrent_creates_within_a_quota_give_one_winner(
    replicas: tuple[Replica, Replica],
) -> None:
    """The rule: quotas hold across replicas: with a team quota of one cluster, two clusters of
    different names created at once on A and on B give one 201 and one 403 quota_exceeded."""
    a, b = replicas
    teams = 10
    seen = watch(b.core)
    with trio.fail_after(60):
        for i in range(teams):
            ok(
                await a.api.post(
                    "/api/v1/teams", json={"name": f"t{i}", "quotas": {"maxClusters": 1}}
                )
            )
        ok(await a.api.post(f"{N}/clusters", json=cluster_body("marker")))
        await until_changed(seen, "marker")  # B has the teams (written before the marker)

        def create(r: Replica, i: int) -> Any:
            body = cluster_body("a" if r is a else "b", team=f"t{i}")
            return r.api.post(f"{N}/clusters", json=body)

        statuses = await both(a, b, create, teams)
    assert Counter(tuple(sorted(s)) for s in statuses.values()) == {(201, 403): teams}
    assert await a.sql("SELECT count(*) FROM resources WHERE team IS NOT NULL") == teams
