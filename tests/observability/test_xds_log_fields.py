"""xDS events carry the stream's identity as log fields (README "Observability", Logs): with
FLOWPLANE_XDS_AUTH=token, the connect, NACK and disconnect lines of a team's data plane name its
node, team, protocol and the data-plane token's id."""

from __future__ import annotations

import logging

import pytest

from flowplane.testing.adsclient import sotw_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import run_plane
from flowplane.xds.types import CLUSTER_TYPE
from tests.helpers import N, plane_settings


async def test_connect_nack_and_disconnect_name_the_token_and_team(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowplane.grpc")
    async with run_plane(plane_settings(db_url, xds_auth="token")) as plane:
        api = plane.api
        assert (await api.post("/api/v1/teams", json={"name": "obs"})).status_code == 201
        for path, body in (("clusters", cluster_body(team="obs")),
                           ("route-configs", route_config_body(team="obs")),
                           ("listeners", listener_body(port=10998, team="obs"))):  # fmt: skip
            assert (await api.post(f"{N}/{path}", json=body)).status_code == 201
        r = await api.post("/api/v1/tokens", json={"name": "dp", "role": "data-plane",
                                                    "teams": ["obs"]})  # fmt: skip
        assert r.status_code == 201, r.text
        token, token_id = r.json()["token"], r.json()["id"]
        await plane.settled()
        async with sotw_client("127.0.0.1", plane.xds_port, node_id="dp-7",
                               metadata={"authorization": f"Bearer {token}"}) as c:  # fmt: skip
            await c.send(CLUSTER_TYPE)
            resp = await c.recv()
            await c.nack(resp, "no thanks")
            await c.expect_quiet(0.2)
    # run_plane stopped the xDS server, which waited for the stream handler: all lines are in
    events = [r for r in caplog.records if getattr(r, "node", None) == "dp-7"]
    kinds = {
        "connect": [r for r in events if " connected" in r.getMessage()],
        "nack": [r for r in events if getattr(r, "error_detail", None) == "no thanks"],
        "disconnect": [r for r in events if "disconnected" in r.getMessage()],
    }
    for kind, found in kinds.items():
        assert len(found) == 1, (kind, [r.getMessage() for r in events])
        fields = vars(found[0])
        assert fields["token_id"] == token_id and fields["team"] == "obs", (kind, fields)
        assert fields["protocol"] == "sotw", (kind, fields)
