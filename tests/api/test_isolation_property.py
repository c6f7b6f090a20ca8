"""Property: no token ever reads, lists or changes another team's resource (Native API)."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.testing.factories import cluster_body

N = "/api/v1/native/clusters"
TEAMS = ["a", "b", "c"]

worlds = st.fixed_dictionaries(
    {
        # resource name -> team (None = shared)
        "resources": st.dictionaries(
            st.from_regex(r"r[0-9]{1,3}", fullmatch=True),
            st.sampled_from([*TEAMS, None]),
            min_size=1,
            max_size=6,
        ),
        "token_teams": st.frozensets(st.sampled_from(TEAMS), min_size=1, max_size=2),
        "action": st.sampled_from(["get", "patch", "delete", "move", "list"]),
    }
)


async def test_no_token_crosses_teams(client: httpx.AsyncClient) -> None:
    async def check(world: dict[str, Any]) -> None:
        created = []
        try:
            for name, team in world["resources"].items():
                body = cluster_body(name) if team is None else cluster_body(name, team=team)
                assert (await client.post(N, json=body)).status_code == 201
                created.append(name)
            teams = world["token_teams"]
            r = await client.post(
                "/api/v1/tokens",
                json={"name": "p", "role": "platform-engineer", "teams": sorted(teams)},
            )
            h = {"Authorization": f"Bearer {r.json()['token']}"}
            before = {c["name"]: c for c in (await client.get(N)).json()["items"]}
            if world["action"] == "list":
                seen = {c["name"] for c in (await client.get(N, headers=h)).json()["items"]}
                allowed = {n for n, t in world["resources"].items() if t is None or t in teams}
                assert seen == allowed
            for name, team in world["resources"].items():
                readable = team is None or team in teams
                writable = team is not None and team in teams
                action = world["action"]
                if action == "get":
                    r = await client.get(f"{N}/{name}", headers=h)
                    assert r.status_code == (200 if readable else 404)
                elif action == "patch":
                    r = await client.patch(f"{N}/{name}", json={"http2": True}, headers=h)
                    assert r.status_code == (200 if writable else 403 if readable else 404)
                elif action == "delete":
                    r = await client.delete(f"{N}/{name}", headers=h)
                    assert r.status_code == (204 if writable else 403 if readable else 404)
                elif action == "move":
                    target = next(t for t in TEAMS if t not in teams)
                    r = await client.patch(f"{N}/{name}", json={"team": target}, headers=h)
                    assert r.status_code == (403 if readable else 404)
            after = {c["name"]: c for c in (await client.get(N)).json()["items"]}
            for name, team in world["resources"].items():
                if team is None or team not in teams:  # not this token's: untouched
                    assert after[name] == before[name]
        finally:
            for name in created:
                await client.delete(f"{N}/{name}")

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds)
    def property_(world: dict[str, Any]) -> None:
        trio.from_thread.run(check, world)

    await trio.to_thread.run_sync(property_)
