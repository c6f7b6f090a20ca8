"""Names unique per team (issue 11 item 9), over REST and into the snapshot.

api.md Conventions: "Names are unique within a team (shared resources: among shared ones): two
teams may each have a cluster `backend`, and a name taken by another team is never an error ...
In xDS a team's resources are named `<team>/<name>`; shared ones keep the bare name. A
reference resolves inside the referring resource's team; a reference to a shared resource is
explicit (e.g. `shared/<name>`), so creating a same-named team resource never re-points an
existing reference. Listener address:port and API domains are physical and unique across teams:
a conflict with something the caller cannot see is a 409 that does not name it. On
`.../{name}` paths, `?team=` selects the team; it is required only when the caller can see
that name in more than one team (400 listing them)."
"""

from __future__ import annotations

import httpx
import trio
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from flowplane.app import Core
from flowplane.domain.resources import Kind
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.xds.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.api.test_auth import as_, new_token

N = "/api/v1/native"


async def _two_teams(client: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, str]]:
    a = as_(client, await new_token(client, name="a", role="platform-engineer", teams=["a"]))
    b = as_(client, await new_token(client, name="b", role="platform-engineer", teams=["b"]))
    return a, b


async def test_two_teams_each_have_a_backend(client: httpx.AsyncClient, core: Core) -> None:
    """The same names in two teams are two resources; neither create tells a team anything
    about the other; xDS names them `<team>/<name>` and each route config's cluster resolves
    inside its own team."""
    a, b = await _two_teams(client)
    for h, port in ((a, 8001), (b, 8002)):
        r = await client.post(f"{N}/clusters", json=cluster_body(port=port), headers=h)
        assert r.status_code == 201, r.text
        assert (await client.post(f"{N}/route-configs", json=route_config_body(), headers=h)).status_code == 201
    r = await client.post(f"{N}/clusters", json=cluster_body(port=8003), headers=a)
    assert r.status_code == 409 and "team 'a'" in r.json()["message"]  # its own name: taken
    assert r.headers.get("location") is None
    # each token finds its own by the name alone; the admin must say which
    for h, team, port in ((a, "a", 8001), (b, "b", 8002)):
        got = (await client.get(f"{N}/clusters/backend", headers=h)).json()
        assert (got["team"], got["endpoints"][0]["port"]) == (team, port)
    r = await client.get(f"{N}/clusters/backend")
    assert r.status_code == 400 and r.json()["details"] == [{"field": "team", "message": "one of a, b"}]
    assert (await client.get(f"{N}/clusters/backend?team=b")).json()["team"] == "b"
    assert (await client.get(f"{N}/clusters/backend?team=shared")).status_code == 404
    assert (await client.get(f"{N}/clusters/backend?team=b", headers=a)).status_code == 404
    r = await client.get(f"{N}/clusters?limit=10")
    assert [(c["name"], c["team"]) for c in r.json()["items"]] == [("backend", "a"), ("backend", "b")]
    # a PATCH by name alone reaches the caller's own; the other team's is untouched
    assert (await client.patch(f"{N}/clusters/backend", json={"http2": True}, headers=b)).status_code == 200
    assert "http2" not in (await client.get(f"{N}/clusters/backend?team=a")).json()

    with trio.fail_after(5):
        await core.snapshots.caught_up(core.state.serial)
    snap = core.hub.snapshot
    assert {"a/backend", "b/backend"} <= set(snap.resources(CLUSTER_TYPE))
    for team in ("a", "b"):
        resource = snap.get(ROUTE_TYPE).get(f"{team}/routes")
        assert resource is not None
        rc = route_pb2.RouteConfiguration()
        assert any_pb2.Any.FromString(resource.any_bytes).Unpack(rc)
        assert rc.name == f"{team}/routes"
        assert {r.route.cluster for vh in rc.virtual_hosts for r in vh.routes} == {f"{team}/backend"}


async def test_a_shared_reference_is_explicit_and_never_re_pointed(
    client: httpx.AsyncClient, core: Core
) -> None:
    """`shared/backend` names the shared cluster; a team cluster `backend` created afterwards
    does not change what the route config uses (in memory and in xDS)."""
    a, _ = await _two_teams(client)
    assert (await client.post(f"{N}/clusters", json=cluster_body())).status_code == 201  # shared
    body = route_config_body(cluster="shared/backend")
    r = await client.post(f"{N}/route-configs", json=body, headers=a)
    assert r.status_code == 201 and r.json()["virtualHosts"] == body["virtualHosts"]  # as sent
    assert (await client.post(f"{N}/clusters", json=cluster_body(port=9), headers=a)).status_code == 201
    assert [str(ref) for ref in core.state.get(Kind.ROUTE_CONFIG, "a/routes").refs] == [  # type: ignore[union-attr]
        "cluster 'backend'"
    ]
    # deleting the shared cluster is refused while a's route config uses it
    r = await client.delete(f"{N}/clusters/backend?team=shared")
    assert r.status_code == 409 and "a/routes" in r.json()["message"]
    # the bare name inside team a means a's own
    r = await client.put(f"{N}/route-configs/routes", json=route_config_body(), headers=a)
    assert r.status_code == 200
    assert [str(ref) for ref in core.state.get(Kind.ROUTE_CONFIG, "a/routes").refs] == [  # type: ignore[union-attr]
        "cluster 'a/backend'"
    ]
    # another team's name, qualified or not, does not exist for team a
    for target in ("b/backend", "nope"):
        r = await client.post(f"{N}/route-configs", json=route_config_body("x", cluster=target), headers=a)
        assert r.status_code == 400 and f"'{target}' does not exist" in r.text


async def test_a_taken_port_does_not_name_what_the_caller_cannot_see(
    client: httpx.AsyncClient,
) -> None:
    """Listener address:port is physical, unique across teams: 409 for team b, without the
    name or team of a's listener; the admin (who can read it) is told which one."""
    a, b = await _two_teams(client)
    for h in (a, b):
        await client.post(f"{N}/clusters", json=cluster_body(), headers=h)
        await client.post(f"{N}/route-configs", json=route_config_body(), headers=h)
    lis = listener_body("secret-edge", port=10080)
    assert (await client.post(f"{N}/listeners", json=lis, headers=a)).status_code == 201
    r = await client.post(f"{N}/listeners", json=listener_body("mine", port=10080), headers=b)
    assert r.status_code == 409
    assert "secret-edge" not in r.text and "'a'" not in r.text
    assert r.json()["details"] == [{"field": "port", "message": "0.0.0.0:10080 is taken"}]
    r = await client.post(f"{N}/listeners", json=listener_body("mine", port=10080, team="b"))
    assert r.status_code == 409 and "'secret-edge' of team 'a'" in r.json()["message"]
    # the same listener name on another port: fine
    assert (await client.post(f"{N}/listeners", json=listener_body("secret-edge", port=10081), headers=b)).status_code == 201
    assert (await client.get(f"{N}/listeners/secret-edge", headers=b)).json()["port"] == 10081


async def test_team_resources_cannot_be_moved_and_shared_is_no_team_name(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/api/v1/teams", json={"name": "shared"})
    assert r.status_code == 400 and "reserved" in r.text
    r = await client.post(f"{N}/clusters", json=cluster_body(team="shared"))
    assert r.status_code == 400 and "reserved" in r.text
    assert (await client.get(f"{N}/clusters")).json()["total"] == 0
    assert (await client.post(f"{N}/clusters", json=cluster_body(team="a"))).status_code == 201
    r = await client.put(f"{N}/clusters/backend", json=cluster_body(team="b"))
    assert r.status_code == 400 and r.json()["details"] == [{"field": "team", "message": "must be 'a'"}]
    r = await client.put(f"{N}/clusters/backend", json=cluster_body(port=1))  # no team: stays a's
    assert r.status_code == 200 and r.json()["team"] == "a"
    r = await client.get(f"{N}/clusters/backend?team=Not_A_Team")
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "team"


async def test_a_team_listener_is_named_by_team_in_lds(client: httpx.AsyncClient, core: Core) -> None:
    """LDS: `<team>/<name>` for the listener, and its HTTP connection manager asks RDS for the
    team's route config by its xDS name."""
    a, _ = await _two_teams(client)
    await client.post(f"{N}/clusters", json=cluster_body(), headers=a)
    await client.post(f"{N}/route-configs", json=route_config_body(), headers=a)
    assert (await client.post(f"{N}/listeners", json=listener_body(), headers=a)).status_code == 201
    with trio.fail_after(5):
        await core.snapshots.caught_up(core.state.serial)
    listeners = core.hub.snapshot.get(LISTENER_TYPE)
    resource = listeners.get("a/edge")
    assert resource is not None and b"a/routes" in resource.any_bytes
