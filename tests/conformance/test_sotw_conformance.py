"""State-of-the-world ADS conformance, rule by rule, over real gRPC.

Rule numbers and quotes: ../shared/reference/xds-protocol.md. Every test runs the whole control
plane in-process (`run_plane`: SQLite, actors, grpclib ADS server on loopback), writes through the
REST API and scripts an ADS stream with `flowplane.testing.adsclient`.

Behaviour documented here (not violations):
- EDS: Flowplane puts endpoints inline in the Cluster (`load_assignment`), so it publishes no
  ClusterLoadAssignment; an EDS request is accepted and answered with nothing (a named type: no
  requested name exists, rule 15 — sent if it ever appears).
- An unknown type URL is accepted and never answered (no resources of that type exist); the
  stream keeps serving the other types. A request without `type_url` ends the stream with
  INVALID_ARGUMENT (ADS needs the type on every request).
- Message size (rule 19): grpclib enforces no maximum message size on either side and the server
  sets none, so a > 4 MiB CDS response is delivered to a grpclib client with its defaults. Clients
  with gRPC's usual 4 MiB receive default (grpcio, grpc-go) must raise their limit.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

from flowplane.settings import Settings
from flowplane.testing.adsclient import (
    AdsStreamEnded,
    SotwClient,
    decode,
    delta_client,
    resource_names,
    sotw_client,
)
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import Plane, run_plane
from flowplane.testing.ports import free_port
from flowplane.xds.sotw import SotwStream
from tests.conformance.helpers import (
    CDS,
    EDS,
    LDS,
    MIB,
    QUIET,
    RDS,
    big_settings,
    cluster_ports,
    debounced,
    delete,
    long_host_cluster,
    nacks,
    node_status,
    post,
    put,
    reconnect_storm,
    seed,
)
from tests.helpers import N, ok, plane_settings

# -- helpers ----------------------------------------------------------------------------------


@asynccontextmanager
async def connect(plane: Plane, node_id: str = "conformance") -> AsyncIterator[SotwClient]:
    async with sotw_client("127.0.0.1", plane.xds_port, node_id=node_id) as c:
        yield c


async def subscribe(
    c: SotwClient, type_url: str, names: tuple[str, ...] = (), *, ack: bool = True
) -> DiscoveryResponse:
    """Send the initial request for `type_url`, take its response, ACK it."""
    await c.send(type_url, names)
    resp = await c.recv()
    assert resp.type_url == type_url
    if ack:
        await c.ack(resp, names)
    return resp


def endpoints_of(resp: DiscoveryResponse, cluster: str) -> list[int]:
    for a in resp.resources:
        msg = decode(a)
        assert isinstance(msg, cluster_pb2.Cluster)
        if msg.name == cluster:
            return cluster_ports(msg)
    raise AssertionError(f"cluster {cluster!r} not in the response")


# -- rule 1: transport, types -----------------------------------------------------------------


async def test_rule1_the_served_types_answer(xds_settings: Settings) -> None:
    """Rule 1: "Serve `envoy.service.discovery.v3.AggregatedDiscoveryService`:
    `StreamAggregatedResources` (state of the world, SotW) ... Types: Cluster,
    ClusterLoadAssignment, Listener, RouteConfiguration."

    CDS, LDS and RDS answer with resources of the requested type. EDS is accepted and answered
    with nothing: Flowplane serves endpoints inline in the Cluster, so no ClusterLoadAssignment
    exists (see the module docstring)."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                for type_url, names, expected in (
                    (CDS, (), ["backend"]),
                    (LDS, (), ["edge"]),
                    (RDS, ("routes",), ["routes"]),
                ):
                    resp = await subscribe(c, type_url, names)
                    assert resource_names(resp) == expected
                    assert resp.version_info and resp.nonce
                    assert all(a.type_url == type_url for a in resp.resources)
                    assert resp.version_info == plane.core.hub.snapshot.version(type_url)
                await c.send(EDS, ["backend"])
                await c.expect_quiet(QUIET)
                # the stream is still served after the EDS request
                await put(plane, "clusters", cluster_body("backend", 8081))
                resp = await c.recv()
                assert resp.type_url == CDS and endpoints_of(resp, "backend") == [8081]


async def test_rule1_unknown_type_is_not_answered_and_stream_keeps_working(
    xds_settings: Settings,
) -> None:
    """Rule 1 (unknown type): a type URL Flowplane does not serve is accepted and never answered
    (it has no resources); the other types on the stream keep working."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                await c.send("type.googleapis.com/envoy.example.v3.Unknown")
                await c.expect_quiet(QUIET)
                resp = await subscribe(c, CDS)
                assert resource_names(resp) == ["backend"]
                await c.expect_quiet(QUIET)
                assert c.end is None


async def test_rule1_request_without_type_url_ends_the_stream_invalid_argument(
    xds_settings: Settings,
) -> None:
    """Rule 1: on an aggregated stream every request must name its type; one without a
    `type_url` ends the stream with INVALID_ARGUMENT (not UNKNOWN, not a silent hang)."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane, connect(plane) as c:
            await c.send("")
            end = await c.wait_end()
            assert end.status is not None and end.status.name == "INVALID_ARGUMENT", end
            with pytest.raises(AdsStreamEnded):
                await c.recv(timeout=0.1)


async def test_rule1_delta_method_is_routed(xds_settings: Settings) -> None:
    """Rule 1: "... and `DeltaAggregatedResources` (incremental)". The method exists on the
    service: either it serves CDS, or (while delta is not implemented) it ends the stream with
    UNIMPLEMENTED — never UNKNOWN or a hang."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with delta_client("127.0.0.1", plane.xds_port, node_id="delta-1") as d:
                resp = None
                with contextlib.suppress(AdsStreamEnded):
                    await d.send(CDS, subscribe=["*"])
                    resp = await d.recv()
                if resp is None:
                    assert d.end is not None and d.end.status is not None, d.end
                    assert d.end.status.name == "UNIMPLEMENTED", d.end
                else:
                    assert resp.type_url == CDS
                    assert resource_names(resp) == ["backend"]
                    assert resp.nonce


# -- rule 2: node ------------------------------------------------------------------------------


async def test_rule2_node_on_the_first_request_only(xds_settings: Settings) -> None:
    """Rule 2: "Only the first request on a stream is guaranteed to carry `node` ... Remember it
    for the stream." Later requests without a node are served, the node shows in
    `GET /api/v1/nodes`, and a later request naming another node does not change it."""
    node = "proxyless-client-1"
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, node) as c:
                await subscribe(c, CDS)  # carries the node
                assert resource_names(await subscribe(c, LDS)) == ["edge"]  # no node
                assert resource_names(await subscribe(c, RDS, ("routes",))) == ["routes"]
                assert c.sent == 6
                await c.expect_quiet(QUIET)  # the ACKs have been read
                nodes = ok(await plane.api.get("/api/v1/nodes"), 200)
                assert [n["id"] for n in nodes["items"]] == [node]
                status = await node_status(plane, node)
                assert set(status["resources"]) == {"Cluster", "Listener", "RouteConfiguration"}
                snap = plane.core.hub.snapshot
                for res in status["resources"].values():
                    assert res["versionAcknowledged"] == snap.version(res["typeUrl"])
                # a node on a later request does not replace the stream's node
                await c.send(CDS, (), "", "", node_id="someone-else")
                await c.expect_quiet(QUIET)
                nodes = ok(await plane.api.get("/api/v1/nodes"), 200)
                assert [n["id"] for n in nodes["items"]] == [node]


# -- rule 3: nonces ----------------------------------------------------------------------------


async def test_rule3_nonces_unique_within_a_stream(xds_settings: Settings) -> None:
    """Rule 3: "Nonces are unique within a stream" — over every type and several pushes."""
    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                got = [
                    await subscribe(c, CDS),
                    await subscribe(c, LDS),
                    await subscribe(c, RDS, ("routes",)),
                ]
                for port in range(9001, 9007):
                    await put(plane, "clusters", cluster_body("backend", port))
                    resp = await c.recv()
                    await c.ack(resp)
                    got.append(resp)
                nonces = [r.nonce for r in got]
                assert all(nonces) and len(set(nonces)) == len(nonces) == 9, nonces


async def test_rule3_nonces_mean_nothing_across_streams(xds_settings: Settings) -> None:
    """Rule 3: nonces "mean nothing across streams": a new stream's first request carrying a
    nonce (and version) from another stream, or a made-up one, is answered, not taken as stale."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, "first") as c1:
                first = await subscribe(c1, CDS)
            for nonce in (first.nonce, "not-a-nonce-of-this-stream"):
                async with connect(plane, "second") as c2:
                    await c2.send(CDS, (), first.version_info, nonce)
                    resp = await c2.recv()
                    assert resource_names(resp) == ["backend"]
                    assert resp.version_info == first.version_info


# -- rule 4: ACK / NACK ------------------------------------------------------------------------


async def test_rule4_ack_echoes_version_and_nonce(xds_settings: Settings) -> None:
    """Rule 4: "`version_info` is per type. An ACK echoes the version and nonce just sent." The
    ACK is recorded: `versionAcknowledged` equals what was sent, per type."""
    node = "ack-node"
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, node) as c:
                cds = await subscribe(c, CDS, ack=False)
                lds = await subscribe(c, LDS, ack=False)
                assert cds.version_info != lds.version_info  # per type
                res = (await node_status(plane, node))["resources"]
                assert res["Cluster"]["versionSent"] == cds.version_info
                assert res["Cluster"]["versionAcknowledged"] is None
                await c.ack(cds)
                await c.ack(lds)
                await c.expect_quiet(QUIET)  # an ACK is answered with nothing (rule 7)
                res = (await node_status(plane, node))["resources"]
                assert res["Cluster"]["versionAcknowledged"] == cds.version_info
                assert res["Listener"]["versionAcknowledged"] == lds.version_info
                assert res["Cluster"]["lastRejection"] is None


async def test_rule4_nack_detected_by_error_detail_not_by_version(
    xds_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Rule 4: "a NACK carries `error_detail` (and the previous good version). Detect a NACK by
    `error_detail`, not by comparing versions." A NACK that (wrongly) echoes the new version is
    still a NACK; it is recorded with the message and the resource names (rule 5) and logged."""
    caplog.set_level(logging.WARNING)
    node = "nack-node"
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, node) as c:
                good = await subscribe(c, CDS)
                await post(plane, "clusters", cluster_body("extra", 9100))
                bad = await c.recv()
                assert resource_names(bad) == ["backend", "extra"]
                # the version field says "the new one", error_detail says "rejected"
                await c.nack(bad, "cluster extra: bad thing", version=bad.version_info)
                await c.expect_quiet(QUIET)
                res = (await node_status(plane, node))["resources"]["Cluster"]
                assert res["versionSent"] == bad.version_info
                assert res["versionAcknowledged"] == good.version_info
                rej = res["lastRejection"]
                assert rej is not None
                assert rej["errorDetail"] == "cluster extra: bad thing"
                assert rej["version"] == bad.version_info
                assert rej["resourceNames"] == ["backend", "extra"]
                assert rej["time"]
                assert any(
                    node in r.getMessage() and "cluster extra: bad thing" in r.getMessage()
                    for r in caplog.records
                ), [r.getMessage() for r in caplog.records]


# -- rule 5: no resend after a NACK ------------------------------------------------------------


async def test_rule5_no_resend_after_nack_until_the_content_changes(
    xds_settings: Settings,
) -> None:
    """Rule 5: "After a NACK do **not** resend the same content ... send again only when the
    content changes. Record the rejection ... and expose it (API, metrics, logs). One team's
    rejected resource must not hold back other teams." """
    node = "nacker"

    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, node) as c, connect(plane, "other-node") as other:
                await subscribe(c, CDS)
                await subscribe(other, CDS)
                before = nacks()
                await put(plane, "clusters", cluster_body("backend", 9201))
                bad = await c.recv()
                await c.nack(bad, "rejected by the test")
                await c.expect_quiet(QUIET)  # no resend loop
                assert nacks() == before + 1
                rej = (await node_status(plane, node))["resources"]["Cluster"]["lastRejection"]
                assert rej["errorDetail"] == "rejected by the test"
                # the other node is not held back by this one's rejection
                seen = await other.recv()
                assert seen.version_info == bad.version_info
                await other.ack(seen)
                # a change to another type does not resend the rejected CDS content
                await post(plane, "route-configs", route_config_body("more-routes", "backend"))
                await c.expect_quiet(QUIET)
                # new content is sent, and accepted
                await put(plane, "clusters", cluster_body("backend", 9202))
                fixed = await c.recv()
                assert fixed.version_info != bad.version_info
                assert endpoints_of(fixed, "backend") == [9202]
                await c.ack(fixed)
                await c.expect_quiet(QUIET)
                res = (await node_status(plane, node))["resources"]["Cluster"]
                assert res["versionAcknowledged"] == fixed.version_info
                assert (await other.recv()).version_info == fixed.version_info


# -- rule 6: stale nonces ----------------------------------------------------------------------


async def test_rule6_stale_nonce_is_ignored(xds_settings: Settings) -> None:
    """Rule 6: "SotW: a request whose `response_nonce` is stale (not the latest sent for that
    type) is ignored." A request with an old nonce that changes the subscription gets no
    response; the same request with the latest nonce does."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "route-configs", route_config_body("r2", "backend"))
            async with connect(plane) as c:
                first = await subscribe(c, RDS, ("routes",))
                await put(
                    plane, "route-configs", route_config_body("routes", "backend", ["a.example"])
                )
                latest = await c.recv()
                assert latest.nonce != first.nonce
                # answering the superseded response, asking for more: ignored
                await c.send(RDS, ["routes", "r2"], first.version_info, first.nonce)
                await c.expect_quiet(QUIET)
                # the same with the latest nonce: r2 is sent
                await c.send(RDS, ["routes", "r2"], latest.version_info, latest.nonce)
                resp = await c.recv()
                assert "r2" in resource_names(resp)


# -- rule 7: never respond more than necessary ---------------------------------------------------


async def test_rule7_never_respond_more_than_necessary(xds_settings: Settings) -> None:
    """Rule 7: "Send only when something changed for that stream, or a newly requested name must
    be delivered. Never push an unchanged version." ACKs, a repeated request, a change to another
    type or to an unrequested route config, and a write that does not change content (PUT of the
    same body) produce nothing."""
    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "route-configs", route_config_body("unrequested", "backend"))
            async with connect(plane) as c:
                cds = await subscribe(c, CDS)
                rds = await subscribe(c, RDS, ("routes",))
                await c.expect_quiet(QUIET)  # ACKs are not answered
                await c.ack(cds)  # the same ACK again
                await c.ack(rds)
                await c.expect_quiet(QUIET)
                # a cluster change: one CDS response, nothing for RDS
                await post(plane, "clusters", cluster_body("unrelated", 9300))
                resp = await c.recv()
                assert resp.type_url == CDS
                await c.ack(resp)
                await c.expect_quiet(QUIET)
                # a route config the stream did not request
                await put(plane, "route-configs", route_config_body("unrequested", "unrelated"))
                await c.expect_quiet(QUIET)
                # writes that change nothing
                await put(plane, "clusters", cluster_body("unrelated", 9300))
                await put(plane, "route-configs", route_config_body("routes", "backend"))
                await c.expect_quiet(QUIET)


# -- rule 8: content-hash versions survive a restart ------------------------------------------


async def test_rule8_restart_gives_the_same_versions(db_url: str) -> None:
    """Rule 8: "Versions are content hashes, so a restart ... produces the same versions for the
    same content; a reconnecting client then receives ... the same version (SotW)." """
    port = free_port()
    settings = plane_settings(db_url, port)
    held: dict[str, DiscoveryResponse] = {}
    with trio.fail_after(30):
        async with run_plane(settings) as plane:
            await seed(plane)
            async with connect(plane, "restarter") as c:
                held[CDS] = await subscribe(c, CDS)
                held[LDS] = await subscribe(c, LDS)
                held[RDS] = await subscribe(c, RDS, ("routes",))
        async with run_plane(settings) as plane:
            assert plane.xds_port == port
            async with connect(plane, "restarter") as c:
                for type_url, names in ((CDS, ()), (LDS, ()), (RDS, ("routes",))):
                    old = held[type_url]
                    await c.send(type_url, names, old.version_info, old.nonce)
                    resp = await c.recv()
                    assert resp.version_info == old.version_info
                    assert resp.resources == old.resources  # byte-identical content
                    await c.ack(resp, names)
                await c.expect_quiet(QUIET)


# -- rule 9: subscriptions ---------------------------------------------------------------------


async def test_rule9_newly_requested_names_are_sent_even_if_unchanged(
    xds_settings: Settings,
) -> None:
    """Rule 9: "SotW `resource_names` is the full desired set. Names newly added to the set must
    be sent even if unchanged." """
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "route-configs", route_config_body("r2", "backend"))
            await plane.settled()
            async with connect(plane) as c:
                first = await subscribe(c, RDS, ("routes",))
                assert resource_names(first) == ["routes"]
                await c.send(RDS, ["routes", "r2"], first.version_info, first.nonce)
                resp = await c.recv()
                assert "r2" in resource_names(resp)
                # dropping a name and asking for it again sends it again
                await c.ack(resp, ["routes", "r2"])
                await c.send(RDS, ["routes"], resp.version_info, resp.nonce)
                await c.expect_quiet(QUIET)  # dropping a name needs no response
                await c.send(RDS, ["routes", "r2"], resp.version_info, resp.nonce)
                again = await c.recv()
                assert "r2" in resource_names(again)


async def test_rule9_empty_list_is_wildcard_for_cds_and_lds(xds_settings: Settings) -> None:
    """Rule 9: "Empty list = wildcard only if the stream never named a resource for that type
    (legacy wildcard) ... Envoy uses wildcard for LDS and CDS." New resources are pushed."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "clusters", cluster_body("second", 9400))
            async with connect(plane) as c:
                assert resource_names(await subscribe(c, CDS)) == ["backend", "second"]
                assert resource_names(await subscribe(c, LDS)) == ["edge"]
                await post(plane, "clusters", cluster_body("third", 9401))
                resp = await c.recv()
                assert resource_names(resp) == ["backend", "second", "third"]
                await c.ack(resp)
                await post(plane, "listeners", listener_body("edge2", "routes", port=10002))
                resp = await c.recv()
                assert resp.type_url == LDS and resource_names(resp) == ["edge", "edge2"]


async def test_rule9_star_is_the_explicit_wildcard(xds_settings: Settings) -> None:
    """Rule 9: "`*` is the explicit wildcard" — alone, or together with explicit names."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "clusters", cluster_body("second", 9400))
            async with connect(plane, "star") as c, connect(plane, "star-plus") as c2:
                assert resource_names(await subscribe(c, CDS, ("*",))) == ["backend", "second"]
                both = await subscribe(c2, CDS, ("*", "backend"))
                assert resource_names(both) == ["backend", "second"]
                await post(plane, "clusters", cluster_body("third", 9401))
                for client in (c, c2):
                    resp = await client.recv()
                    assert resource_names(resp) == ["backend", "second", "third"]


async def test_rule9_empty_list_after_names_is_not_wildcard(xds_settings: Settings) -> None:
    """Rule 9: "Empty list = wildcard only if the stream never named a resource for that type."
    A stream that named clusters and then sends [] has unsubscribed from everything: whatever it
    is sent carries no clusters, and a new cluster is not pushed to it."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "clusters", cluster_body("second", 9400))
            async with connect(plane) as c:
                first = await subscribe(c, CDS, ("backend",))
                assert resource_names(first) == ["backend"]
                await c.send(CDS, [], first.version_info, first.nonce)
                # an (empty) full-state answer is allowed; all clusters are not
                with trio.move_on_after(QUIET):
                    while True:
                        resp = await c.recv(timeout=QUIET)
                        assert resource_names(resp) == [], resource_names(resp)
                        await c.ack(resp, [])
                await post(plane, "clusters", cluster_body("third", 9401))
                await c.expect_quiet(QUIET)


# -- rule 10: full state vs requested names ----------------------------------------------------


async def test_rule10_cds_and_lds_carry_the_full_state(xds_settings: Settings) -> None:
    """Rule 10: "SotW LDS and CDS responses carry the full state (absence = deletion)." """
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "clusters", cluster_body("doomed", 9500))
            await post(plane, "listeners", listener_body("doomed-listener", "routes", port=10003))
            async with connect(plane) as c:
                assert resource_names(await subscribe(c, CDS)) == ["backend", "doomed"]
                assert resource_names(await subscribe(c, LDS)) == ["doomed-listener", "edge"]
                await delete(plane, "clusters", "doomed")
                resp = await c.recv()
                assert resp.type_url == CDS and resource_names(resp) == ["backend"]
                await c.ack(resp)
                await delete(plane, "listeners", "doomed-listener")
                resp = await c.recv()
                assert resp.type_url == LDS and resource_names(resp) == ["edge"]
                await c.ack(resp)
                await c.expect_quiet(QUIET)


async def test_rule10_rds_carries_only_the_requested_names(xds_settings: Settings) -> None:
    """Rule 10: "RDS and EDS responses carry the requested names." """
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "route-configs", route_config_body("r2", "backend"))
            async with connect(plane) as c:
                assert resource_names(await subscribe(c, RDS, ("routes",))) == ["routes"]
                await put(plane, "route-configs", route_config_body("r2", "backend", ["b.example"]))
                await c.expect_quiet(QUIET)
                await put(
                    plane, "route-configs", route_config_body("routes", "backend", ["a.example"])
                )
                resp = await c.recv()
                assert resource_names(resp) == ["routes"]


# -- rule 14: make before break ------------------------------------------------------------------


async def test_rule14_clusters_before_the_routes_that_name_them(db_url: str) -> None:
    """Rule 14: "Make before break: CDS → EDS → LDS → RDS ... A route must never name a cluster
    the Envoy has not received." A new cluster and a route switched to it, published in one
    snapshot, reach the client CDS first."""
    with trio.fail_after(20):
        async with run_plane(debounced(db_url)) as plane:
            await seed(plane)
            async with connect(plane) as c:
                await subscribe(c, CDS)
                await subscribe(c, LDS)
                await subscribe(c, RDS, ("routes",))
                published = plane.core.hub.published
                await post(plane, "clusters", cluster_body("fresh", 9600))
                await put(plane, "route-configs", route_config_body("routes", "fresh"))
                await plane.settled()
                assert plane.core.hub.published == published + 1, "not one snapshot"
                first, second = await c.recv(), await c.recv()
                assert (first.type_url, second.type_url) == (CDS, RDS)
                assert "fresh" in resource_names(first)
                await c.ack(first)
                await c.ack(second)
                await c.expect_quiet(QUIET)


async def test_rule14_removals_go_last(db_url: str) -> None:
    """Rule 14: "... then removals." Replacing a cluster in one snapshot (add `new`, route to
    it, delete `old`): the client gets CDS with both, then RDS, then CDS without `old` — at no
    moment does the route it holds name a cluster it lacks."""
    with trio.fail_after(20):
        async with run_plane(debounced(db_url)) as plane:
            await post(plane, "clusters", cluster_body("backend"))
            await post(plane, "clusters", cluster_body("old", 9601))
            await post(plane, "route-configs", route_config_body("routes", "old"))
            await plane.settled()
            async with connect(plane) as c:
                await subscribe(c, CDS)
                await subscribe(c, RDS, ("routes",))
                published = plane.core.hub.published
                await post(plane, "clusters", cluster_body("new", 9602))
                await put(plane, "route-configs", route_config_body("routes", "new"))
                await delete(plane, "clusters", "old")
                await plane.settled()
                assert plane.core.hub.published == published + 1, "not one snapshot"
                got = [await c.recv() for _ in range(3)]
                assert [r.type_url for r in got] == [CDS, RDS, CDS]
                assert resource_names(got[0]) == ["backend", "new", "old"]
                assert resource_names(got[2]) == ["backend", "new"]
                assert got[2].version_info == plane.core.hub.snapshot.version(CDS)
                for r in got:
                    await c.ack(r)
                await c.expect_quiet(QUIET)


# -- rule 15: never hold a response for missing names ------------------------------------------


async def test_rule15_known_names_now_missing_names_later(xds_settings: Settings) -> None:
    """Rule 15: "Do not *hold* a response waiting for every name to be requested ... send what is
    known and remember pending names." """
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                now = await subscribe(c, RDS, ("routes", "later"))
                assert resource_names(now) == ["routes"]
                await c.expect_quiet(QUIET)
                await post(plane, "route-configs", route_config_body("later", "backend"))
                resp = await c.recv()
                assert "later" in resource_names(resp)


# -- rule 16: consistency before publishing ----------------------------------------------------


async def test_rule16_inconsistent_writes_are_refused_and_nothing_is_pushed(
    xds_settings: Settings,
) -> None:
    """Rule 16: "every route config a listener names exists, every cluster a route names exists.
    An inconsistent snapshot is never published; the API rejects the write that would cause it
    (409/400)." """
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                await subscribe(c, CDS)
                await subscribe(c, LDS)
                await subscribe(c, RDS, ("routes",))
                snap = plane.core.hub.snapshot
                api = plane.api
                refused = [
                    await api.post(f"{N}/route-configs", json=route_config_body("r9", "missing")),
                    await api.put(
                        f"{N}/route-configs/routes", json=route_config_body("routes", "missing")
                    ),
                    await api.post(
                        f"{N}/listeners", json=listener_body("l9", "missing", port=10009)
                    ),
                    await api.put(
                        f"{N}/listeners/edge", json=listener_body("edge", "missing", port=10001)
                    ),
                    await api.delete(f"{N}/clusters/backend"),
                    await api.delete(f"{N}/route-configs/routes"),
                ]
                assert [r.status_code in (400, 409) for r in refused] == [True] * 6, [
                    (r.status_code, r.text) for r in refused
                ]
                await plane.settled()
                assert plane.core.hub.snapshot is snap
                await c.expect_quiet(QUIET)


# -- rule 17: slow clients are coalesced --------------------------------------------------------


async def test_rule17_slow_client_gets_the_latest_version_not_a_queue(db_url: str) -> None:
    """Rule 17: "Every stream has bounded outbound state: if an Envoy is slow, coalesce to the
    latest version per type instead of queueing versions."

    The client stops reading; each CDS response is ~1.6 MB (a big cluster is part of the full
    state), so the server's writes block once grpclib's 4 MiB HTTP/2 window is full. Meanwhile
    CHANGES versions are published. What is guaranteed: before blocking the server can have
    written at most window // size whole responses (plus the one the paused reader was already
    receiving), plus one in progress, plus — once the client reads again — one for the latest
    version. A server that queued versions would send all `changes`."""
    changes = 8
    with trio.fail_after(40):
        async with run_plane(big_settings(db_url)) as plane:
            await post(plane, "clusters", long_host_cluster("big", 6000))
            await post(plane, "clusters", cluster_body("small", 1))
            await plane.settled()
            async with connect(plane, "slow") as c:
                first = await subscribe(c, CDS)
                size = first.ByteSize()
                assert size > 1.5 * MIB
                c.pause_reading()
                for port in range(2, 2 + changes):
                    await put(plane, "clusters", cluster_body("small", port))
                    await plane.settled()
                final = plane.core.hub.snapshot.version(CDS)
                await trio.sleep(0.2)  # let the server write what the window allows
                c.resume_reading()
                got: list[DiscoveryResponse] = []
                while not got or got[-1].version_info != final:
                    got.append(await c.recv(timeout=10))
                await c.ack(got[-1])
                await c.expect_quiet(QUIET)
                window = 4 * MIB  # grpclib's default HTTP/2 stream and connection window
                # + 3: the response the paused reader was already receiving (it is read and
                # acknowledged), the one in progress when the window closed, the latest.
                assert len(got) <= window // size + 3 < changes, len(got)
                assert endpoints_of(got[-1], "small") == [1 + changes]
                versions = [r.version_info for r in got]
                assert len(set(versions)) == len(versions)  # never the same version twice


# -- rule 18: reconnect storms -----------------------------------------------------------------


async def test_rule18_reconnect_storm_every_stream_is_served(xds_settings: Settings) -> None:
    """Rule 18: "after a control-plane restart every Envoy reconnects at once. Throttle new
    streams' initial responses if needed, but never reject them." 200 streams (each its own
    connection) open at once; every one gets its initial CDS response within the deadline."""
    streams = 200
    with trio.fail_after(45):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            version = plane.core.hub.snapshot.version(CDS)
            got, ended, nodes, deadline = await reconnect_storm(
                plane, connect, "storm-", streams, lambda resp: resp.version_info
            )
            assert not deadline.cancelled_caught
            assert not ended, ended[:3]
            assert len(got) == streams and set(got.values()) == {version}
            assert nodes["total"] == streams


# -- rule 19: message size -----------------------------------------------------------------------


async def test_rule19_cds_response_over_4_mib_is_delivered(db_url: str) -> None:
    """Rule 19: "large RDS/CDS responses can pass 4 MiB; set limits deliberately on both
    sides." A ~4.8 MB CDS response reaches a grpclib client using its defaults, intact. (grpclib
    has no message size limit on either side and the server sets none.)"""
    with trio.fail_after(40):
        async with run_plane(big_settings(db_url)) as plane:
            await post(plane, "clusters", long_host_cluster("big-a", 9000))
            await post(plane, "clusters", long_host_cluster("big-b", 9000))
            await plane.settled()
            async with connect(plane, "large") as c:
                resp = await subscribe(c, CDS)
                assert resp.ByteSize() > 4 * MIB
                assert resource_names(resp) == ["big-a", "big-b"]
                assert resp.version_info == plane.core.hub.snapshot.version(CDS)
                assert len(endpoints_of(resp, "big-a")) == len(endpoints_of(resp, "big-b")) == 9000
                await c.expect_quiet(QUIET)


async def test_rule19_oversized_request_is_refused(xds_settings: Settings) -> None:
    """Rule 19: "set limits deliberately on both sides." A DiscoveryRequest over gRPC's usual
    4 MiB receive limit should end the stream with RESOURCE_EXHAUSTED."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane, connect(plane, "huge-request") as c:
            names = [f"route-{i:06d}-{'x' * 80}" for i in range(60_000)]  # ~5.6 MB
            with contextlib.suppress(AdsStreamEnded):  # the server may reset while we send
                await c.send(RDS, names)
            end = await c.wait_end(timeout=1.5)
            assert end.status is not None and end.status.name == "RESOURCE_EXHAUSTED", end


# -- stream actor crashes ----------------------------------------------------------------------


async def test_stream_actor_crash_ends_that_stream_internal_and_is_logged(
    xds_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """DESIGN.md §1: a stream actor "must report crashes ... (grpclib swallows handler exceptions
    as gRPC UNKNOWN)". A bug in one stream's state machine ends that stream with INTERNAL, is
    logged with the node id, and other streams on the server keep working."""
    original = SotwStream.outbound

    def outbound(self: SotwStream, snap: Any) -> Any:
        if self.node_id == "crash-me":
            raise RuntimeError("injected fault")
        return original(self, snap)

    monkeypatch.setattr(SotwStream, "outbound", outbound)
    caplog.set_level(logging.ERROR)
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, "healthy") as ok_client, connect(plane, "crash-me") as bad:
                await subscribe(ok_client, CDS)
                await bad.send(CDS)
                end = await bad.wait_end()
                assert end.status is not None and end.status.name == "INTERNAL", end
                crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
                assert any("crash-me" in r.getMessage() for r in crashes), crashes
                assert any(r.exc_info and "injected fault" in str(r.exc_info[1]) for r in crashes)
                # the other stream is unaffected
                await put(plane, "clusters", cluster_body("backend", 9700))
                resp = await ok_client.recv()
                assert endpoints_of(resp, "backend") == [9700]
                nodes = ok(await plane.api.get("/api/v1/nodes"), 200)
                assert [n["id"] for n in nodes["items"]] == ["healthy"]
