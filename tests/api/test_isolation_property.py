"""Property: no token ever reads, lists or changes another team's resource (Native API), and
nothing it does tells it what another team has (issue 11 item 9).

api.md Conventions: "Names are unique within a team ... two teams may each have a cluster
`backend`, and a name taken by another team is never an error, so nothing reveals what other
teams have. ... On `.../{name}` paths, `?team=` selects the team; it is required only when the
caller can see that name in more than one team (400 listing them)."
"""

from __future__ import annotations

from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.testing.factories import cluster_body

N = "/api/v1/native/clusters"
TEAMS = ["a", "b", "c"]
Key = tuple[str, str | None]  # (name, team); team None = shared

worlds = st.fixed_dictionaries(
    {
        # (name, team) pairs: few names, so that teams often share one
        "resources": st.sets(
            st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.sampled_from([*TEAMS, None])),
            min_size=1,
            max_size=8,
        ),
        "token_teams": st.frozensets(st.sampled_from(TEAMS), min_size=1, max_size=2),
        "action": st.sampled_from(["get", "patch", "delete", "move", "list", "create"]),
        "qualified": st.booleans(),  # name the team with ?team= on `.../{name}` paths
    }
)


def label(team: str | None) -> str:
    return "shared" if team is None else team


def body(name: str, team: str | None, port: int = 8080) -> dict[str, Any]:
    return cluster_body(name, port) if team is None else cluster_body(name, port, team=team)


async def everything(client: httpx.AsyncClient) -> dict[Key, dict[str, Any]]:
    items = (await client.get(f"{N}?limit=1000")).json()["items"]
    return {(c["name"], c["team"]): c for c in items}


async def test_no_token_crosses_teams(client: httpx.AsyncClient) -> None:
    async def check(world: dict[str, Any]) -> None:
        resources: set[Key] = world["resources"]
        teams: frozenset[str] = world["token_teams"]
        action, qualified = world["action"], world["qualified"]
        foreign = set(TEAMS) - teams
        try:
            for name, team in sorted(resources, key=str):
                r = await client.post(N, json=body(name, team))
                assert r.status_code == 201, r.text  # same names in other teams: never an error
            r = await client.post(
                "/api/v1/tokens",
                json={"name": "p", "role": "platform-engineer", "teams": sorted(teams)},
            )
            h = {"Authorization": f"Bearer {r.json()['token']}"}
            before = await everything(client)
            said: list[str] = []  # every body the token was answered
            if action == "list":
                r = await client.get(f"{N}?limit=1000", headers=h)
                said.append(r.text)
                seen = {(c["name"], c["team"]) for c in r.json()["items"]}
                assert seen == {(n, t) for n, t in resources if t is None or t in teams}
            elif action == "create":
                # the token creates every name in one of its teams: 409 only for a name that
                # team has, whatever other teams have
                mine = min(teams)
                for name in ("r1", "r2", "r3"):
                    r = await client.post(N, json=body(name, mine, 9090), headers=h)
                    said.append(r.text)
                    assert r.status_code == (409 if (name, mine) in resources else 201), r.text
            else:
                for name, team in sorted(resources, key=str):
                    readable = team is None or team in teams
                    writable = team is not None and team in teams
                    visible = {t for n, t in resources if n == name and (t is None or t in teams)}
                    url = f"{N}/{name}" + (f"?team={label(team)}" if qualified else "")
                    if not qualified and len(visible) > 1:
                        r = await client.get(url, headers=h)  # which one? 400 listing them
                        said.append(r.text)
                        assert r.status_code == 400, r.text
                        assert r.json()["details"] == [
                            {"field": "team",
                             "message": "one of " + ", ".join(sorted(map(label, visible)))}
                        ]  # fmt: skip
                        continue
                    if not qualified:  # the name alone finds the one the token can see
                        readable = writable = False
                        if visible:
                            (only,) = visible
                            readable, writable = True, only is not None and only in teams
                            if only != team:
                                continue  # checked under its own (name, team)
                    if action == "get":
                        r = await client.get(url, headers=h)
                        assert r.status_code == (200 if readable else 404), r.text
                    elif action == "patch":
                        r = await client.patch(url, json={"http2": True}, headers=h)
                        assert r.status_code == (200 if writable else 403 if readable else 404)
                    elif action == "delete":
                        r = await client.delete(url, headers=h)
                        assert r.status_code == (204 if writable else 403 if readable else 404)
                    elif action == "move" and foreign:
                        target = min(foreign)
                        r = await client.patch(url, json={"team": target}, headers=h)
                        assert r.status_code == (400 if readable else 404), r.text
                    said.append(r.text)
            after = await everything(client)
            for key in resources:
                if key[1] is None or key[1] not in teams:  # not this token's: untouched
                    assert after[key] == before[key]
            # No answer names a team the token cannot see, except where the token asked for it
            # (`?team=b` -> "does not exist in team 'b'" echoes the request, nothing more).
            for text in said:
                for other in foreign:
                    leaked = f"team '{other}'" in text or f'"team":"{other}"' in text
                    assert not leaked or (qualified and "does not exist" in text), text
        finally:
            for name, team in await everything(client):
                await client.delete(f"{N}/{name}?team={label(team)}")

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds)
    def property_(world: dict[str, Any]) -> None:
        trio.from_thread.run(check, world)

    await trio.to_thread.run_sync(property_)
