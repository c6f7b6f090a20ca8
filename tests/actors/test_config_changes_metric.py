"""`flowplane_config_changes_total` counts every committed configuration change (issue 9, bug 2).

The config actor counts a change when it publishes it — after the transaction committed — under
the labels kind (cluster|route_config|listener), action (create|update|delete) and source (the
API path: native|platform). A refused write (400, 404, 409, 412) or a failed commit changed
nothing, so it counts nothing. The registry is process-wide: tests compare before and after.
"""

from __future__ import annotations

import itertools

import httpx
from prometheus_client import REGISTRY

from flowplane.actors.config import Command
from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.errors import StorageError
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from tests.actors.test_group_commit import submit_all

N = "/api/v1/native"
KINDS = ("cluster", "route_config", "listener")
ACTIONS = ("create", "update", "delete")


def counts() -> dict[tuple[str, str], float]:
    """(kind, action) -> the counter's value for changes made through the Native API."""
    return {
        (kind, action): REGISTRY.get_sample_value(
            "flowplane_config_changes_total",
            {"kind": kind, "action": action, "source": "native", "team": "-"},
        )
        or 0.0
        for kind, action in itertools.product(KINDS, ACTIONS)
    }


def delta(before: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """What changed since `before`, without the zeros."""
    return {k: v - before[k] for k, v in counts().items() if v != before[k]}


async def test_committed_rest_writes_are_counted_by_kind_and_action(
    client: httpx.AsyncClient,
) -> None:
    before = counts()
    assert (await client.post(f"{N}/clusters", json=cluster_body("backend"))).status_code == 201
    r = await client.patch(f"{N}/clusters/backend", json={"http2": True})
    assert r.status_code == 200
    r = await client.put(f"{N}/clusters/backend", json=cluster_body("backend", 9090))
    assert r.status_code == 200
    r = await client.post(f"{N}/route-configs", json=route_config_body("routes", "backend"))
    assert r.status_code == 201
    assert (await client.post(f"{N}/listeners", json=listener_body("edge"))).status_code == 201
    assert (await client.delete(f"{N}/listeners/edge")).status_code == 204
    assert delta(before) == {
        ("cluster", "create"): 1,
        ("cluster", "update"): 2,  # PATCH and PUT are both updates
        ("route_config", "create"): 1,
        ("listener", "create"): 1,
        ("listener", "delete"): 1,
    }


async def test_refused_writes_are_not_counted(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{N}/clusters", json=cluster_body("backend"))).status_code == 201
    r = await client.post(f"{N}/route-configs", json=route_config_body("routes", "backend"))
    assert r.status_code == 201
    before = counts()
    refused = {
        "invalid body": (await client.post(f"{N}/clusters", json={"name": "x"}), 400),
        "name taken": (await client.post(f"{N}/clusters", json=cluster_body("backend")), 409),
        "still referenced": (await client.delete(f"{N}/clusters/backend"), 409),
        "missing cluster": (
            await client.post(f"{N}/route-configs", json=route_config_body("r2", "nope")),
            400,
        ),
        "stale If-Match": (
            await client.patch(
                f"{N}/clusters/backend", json={"http2": True}, headers={"If-Match": '"99"'}
            ),
            412,
        ),
        "no such listener": (await client.delete(f"{N}/listeners/nope"), 404),
    }
    got = {why: r.status_code for why, (r, _) in refused.items()}
    assert got == {why: status for why, (_, status) in refused.items()}
    assert delta(before) == {}


async def test_exposed_at_metrics_with_its_labels(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{N}/clusters", json=cluster_body("backend"))).status_code == 201
    text = (await client.get("/metrics")).text
    assert (
        'flowplane_config_changes_total{action="create",kind="cluster",source="native",team="-"}'
        in text
    )


async def test_group_commit_counts_each_committed_command(core: Core) -> None:
    """Commands committed in one transaction count one each; the one refused counts nothing."""
    before = counts()
    results = await submit_all(
        core,
        [Command("create", Kind.CLUSTER, body=cluster_body(f"c{i}")) for i in range(3)]
        + [Command("create", Kind.CLUSTER, body=cluster_body("c0"))],  # name taken: refused
    )
    assert [getattr(r, "status", None) for r in results[3:]] == [409]
    assert delta(before) == {("cluster", "create"): 3}


async def test_a_failed_commit_is_not_counted(core: Core) -> None:
    before = counts()
    await core.repo.aclose()  # a real fault: the database is gone
    results = await submit_all(
        core, [Command("create", Kind.CLUSTER, body=cluster_body(f"c{i}")) for i in range(3)]
    )
    assert all(isinstance(r, StorageError) for r in results)
    assert delta(before) == {}
