"""Incremental (delta) ADS conformance, rule by rule, over real gRPC.

Rule numbers and quotes: ../shared/reference/xds-protocol.md. Like the SotW suite, every test
runs the whole control plane in-process (`run_plane`: SQLite, actors, grpclib ADS server on
loopback), writes through the REST API and scripts a `DeltaAggregatedResources` stream with
`flowplane.testing.adsclient.delta_client`. Node ids carry no `team=` prefix and no metadata, so
every node sees every resource.

Behaviour documented here (decisions of `flowplane.xds.delta`, not violations):
- An empty first request for a type is a legacy wildcard (what Envoy sends for LDS and CDS).
- EDS: Flowplane puts endpoints inline in the Cluster, so no ClusterLoadAssignment exists; a named
  EDS subscription is answered with that name in `removed_resources` (rule 11).
- Reconnect with `initial_resource_versions` all current: *no response at all* for that type
  (rule 12); a fresh first request without initial versions is always answered.
- Answering only the latest of several outstanding responses counts the earlier ones as accepted
  (Envoy may keep one pending ACK per type).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse

from flowplane.settings import Settings
from flowplane.testing.adsclient import DeltaClient, decode, delta_client
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import Plane, run_plane
from flowplane.testing.ports import free_port
from tests.conformance import helpers
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
    post,
    put,
    reconnect_storm,
    seed,
)
from tests.helpers import ok, plane_settings

NODE = "delta-1"


# -- helpers ----------------------------------------------------------------------------------


@asynccontextmanager
async def connect(plane: Plane, node_id: str = NODE) -> AsyncIterator[DeltaClient]:
    async with delta_client("127.0.0.1", plane.xds_port, node_id=node_id) as c:
        yield c


async def subscribe(
    c: DeltaClient,
    type_url: str,
    names: Iterable[str] = (),
    *,
    ack: bool = True,
    initial: Mapping[str, str] | None = None,
) -> DeltaDiscoveryResponse:
    """Send the first request for `type_url` (empty `names`: legacy wildcard), take its
    response, ACK it."""
    await c.send(type_url, subscribe=names, initial_versions=initial)
    resp = await c.recv()
    assert resp.type_url == type_url
    if ack:
        await c.ack(resp)
    return resp


def names_of(resp: DeltaDiscoveryResponse) -> list[str]:
    return [r.name for r in resp.resources]


def versions_of(resp: DeltaDiscoveryResponse) -> dict[str, str]:
    return {r.name: r.version for r in resp.resources}


def removed_of(resp: DeltaDiscoveryResponse) -> list[str]:
    return list(resp.removed_resources)


def summary(resp: DeltaDiscoveryResponse) -> tuple[str, list[str], list[str]]:
    """(short type, resource names, removed names): one response at a glance."""
    return (resp.type_url.rpartition(".")[2], names_of(resp), removed_of(resp))


def ports_of(resp: DeltaDiscoveryResponse, cluster: str) -> list[int]:
    for r in resp.resources:
        if r.name == cluster:
            msg = decode(r.resource)
            assert isinstance(msg, cluster_pb2.Cluster)
            return cluster_ports(msg)
    raise AssertionError(f"cluster {cluster!r} not in the response")


def published(plane: Plane, type_url: str) -> dict[str, str]:
    """name -> version of every resource of `type_url` in the published snapshot."""
    return {n: r.version for n, r in plane.core.hub.snapshot.get(type_url).resources.items()}


async def node_status(plane: Plane, node_id: str = NODE) -> dict[str, Any]:
    return await helpers.node_status(plane, node_id)


async def drain(c: DeltaClient, seconds: float = QUIET) -> list[DeltaDiscoveryResponse]:
    """Every response that arrives within `seconds` (each ACKed)."""
    got: list[DeltaDiscoveryResponse] = []
    with trio.move_on_after(seconds):
        while True:
            resp = await c.recv(timeout=seconds)
            got.append(resp)
            await c.ack(resp)
    return got


# -- rule 1: the delta method and its types -----------------------------------------------------


async def test_rule1_delta_serves_every_type(xds_settings: Settings) -> None:
    """Rule 1: "Serve ... `DeltaAggregatedResources` (incremental). Types: Cluster,
    ClusterLoadAssignment, Listener, RouteConfiguration."

    CDS and LDS (legacy wildcard) and RDS (named) answer with their resources, each carrying its
    name and version. EDS is accepted: no ClusterLoadAssignment exists (endpoints are inline), so
    the named subscription is answered with the name in `removed_resources` (rule 11)."""
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
                    assert names_of(resp) == expected
                    assert versions_of(resp) == published(plane, type_url)
                    assert all(r.resource.type_url == type_url for r in resp.resources)
                    assert resp.nonce and resp.system_version_info
                    assert removed_of(resp) == []
                resp = await subscribe(c, EDS, ("backend",))
                assert summary(resp) == ("ClusterLoadAssignment", [], ["backend"])
                await c.expect_quiet(QUIET)
                status = await node_status(plane)
                assert status["protocol"] == "delta"
                assert set(status["resources"]) == {
                    "Cluster", "Listener", "RouteConfiguration", "ClusterLoadAssignment",
                }  # fmt: skip


# -- rule 2: node ------------------------------------------------------------------------------


async def test_rule2_node_on_the_first_request_only(xds_settings: Settings) -> None:
    """Rule 2: "Only the first request on a stream is guaranteed to carry `node` ... Remember it
    for the stream." Later requests without a node are served, the node shows in
    `GET /api/v1/nodes` as a delta stream, and a later request naming another node changes
    nothing."""
    node = "delta-proxyless-1"
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, node) as c:
                await subscribe(c, CDS)  # carries the node
                assert names_of(await subscribe(c, LDS)) == ["edge"]  # no node
                assert names_of(await subscribe(c, RDS, ("routes",))) == ["routes"]
                assert c.sent == 6
                await c.expect_quiet(QUIET)  # the ACKs have been read
                nodes = ok(await plane.api.get("/api/v1/nodes"), 200)
                assert [(n["id"], n["protocol"]) for n in nodes["items"]] == [(node, "delta")]
                status = await node_status(plane, node)
                assert set(status["resources"]) == {"Cluster", "Listener", "RouteConfiguration"}
                for res in status["resources"].values():
                    assert res["versionAcknowledged"] == res["versionSent"] is not None
                await c.send(CDS, node_id="someone-else")
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
    """Rule 3: nonces "mean nothing across streams": a new stream's first request carrying
    another stream's nonce, or a made-up one, is answered like any first request."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane, "first") as c1:
                first = await subscribe(c1, CDS)
            for nonce in (first.nonce, "not-a-nonce-of-this-stream"):
                async with connect(plane, "second") as c2:
                    await c2.send(CDS, nonce=nonce)
                    resp = await c2.recv()
                    assert versions_of(resp) == versions_of(first)


# -- rules 4 and 5: ACK, NACK, no resend -------------------------------------------------------


async def test_rule4_ack_is_recorded(xds_settings: Settings) -> None:
    """Rule 4: "`version_info` is per type. An ACK echoes the version and nonce just sent." In
    delta the ACK is the nonce without `error_detail`; it is recorded per type
    (`versionAcknowledged` = the `system_version_info` sent) and answered with nothing."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                cds = await subscribe(c, CDS, ack=False)
                lds = await subscribe(c, LDS, ack=False)
                assert cds.system_version_info != lds.system_version_info  # per type
                status = await node_status(plane)
                assert status["protocol"] == "delta"
                res = status["resources"]
                assert res["Cluster"]["versionSent"] == cds.system_version_info
                assert res["Cluster"]["versionAcknowledged"] is None
                await c.ack(cds)
                await c.ack(lds)
                await c.expect_quiet(QUIET)  # an ACK is answered with nothing (rule 7)
                res = (await node_status(plane))["resources"]
                assert res["Cluster"]["versionAcknowledged"] == cds.system_version_info
                assert res["Listener"]["versionAcknowledged"] == lds.system_version_info
                assert res["Cluster"]["lastRejection"] is None


async def test_rule4_nack_by_error_detail_is_recorded_with_protocol_delta(
    xds_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Rule 4: "a NACK carries `error_detail` ... Detect a NACK by `error_detail`." Rule 5:
    "Record the rejection (node, type, names, message, time) and expose it (API, metrics, logs)."
    `GET /api/v1/nodes/{id}` shows it on the delta stream; the acknowledged version stays the
    last good one."""
    caplog.set_level(logging.WARNING)

    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                good = await subscribe(c, CDS)
                before = nacks()
                await post(plane, "clusters", cluster_body("extra", 9100))
                bad = await c.recv()
                assert summary(bad) == ("Cluster", ["extra"], [])  # only what changed
                await c.nack(bad, "cluster extra: bad thing")
                await c.expect_quiet(QUIET)
                assert nacks() == before + 1
                status = await node_status(plane)
                assert status["protocol"] == "delta"
                res = status["resources"]["Cluster"]
                assert res["versionSent"] == bad.system_version_info
                assert res["versionAcknowledged"] == good.system_version_info
                rej = res["lastRejection"]
                assert rej is not None
                assert rej["errorDetail"] == "cluster extra: bad thing"
                assert rej["version"] == bad.system_version_info
                assert rej["resourceNames"] == ["extra"]
                assert rej["time"]
                assert any(
                    NODE in r.getMessage() and "cluster extra: bad thing" in r.getMessage()
                    for r in caplog.records
                ), [r.getMessage() for r in caplog.records]


async def test_rule5_no_resend_after_nack_until_the_content_changes(
    xds_settings: Settings,
) -> None:
    """Rule 5: "After a NACK do **not** resend the same content (that is a resend loop); send
    again only when the content changes ... One team's rejected resource must not hold back
    other teams." A change to another cluster or another type does not resend the rejected
    resource; a change to its content is sent."""
    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c, connect(plane, "delta-other") as other:
                await subscribe(c, CDS)
                await subscribe(other, CDS)
                await put(plane, "clusters", cluster_body("backend", 9201))
                bad = await c.recv()
                assert summary(bad) == ("Cluster", ["backend"], [])
                await c.nack(bad, "rejected by the test")
                await c.expect_quiet(QUIET)  # no resend loop
                # the other node is not held back by this one's rejection
                seen = await other.recv()
                assert versions_of(seen) == versions_of(bad)
                await other.ack(seen)
                # a change to another cluster carries that cluster only, not the rejected one
                await post(plane, "clusters", cluster_body("unrelated", 9203))
                resp = await c.recv()
                assert summary(resp) == ("Cluster", ["unrelated"], [])
                await c.ack(resp)
                # a change to another type does not resend the rejected CDS content either
                await post(plane, "route-configs", route_config_body("more-routes", "backend"))
                await c.expect_quiet(QUIET)
                # new content is sent, and accepted
                await put(plane, "clusters", cluster_body("backend", 9202))
                fixed = await c.recv()
                assert summary(fixed) == ("Cluster", ["backend"], [])
                assert ports_of(fixed, "backend") == [9202]
                await c.ack(fixed)
                await c.expect_quiet(QUIET)  # nothing more is sent; the ACK has been read
                res = (await node_status(plane))["resources"]["Cluster"]
                assert res["versionAcknowledged"] == fixed.system_version_info


async def test_rule5_each_types_rejection_keeps_its_own_time(xds_settings: Settings) -> None:
    """Rule 5: "Record the rejection (node, type, names, message, time) and expose it." A CDS
    NACK and a later LDS NACK on the same stream: `lastRejection.time` of Cluster stays the time
    of the CDS NACK (it must not become the LDS NACK's time)."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                await subscribe(c, CDS)
                await subscribe(c, LDS)
                await put(plane, "clusters", cluster_body("backend", 9001))
                await c.nack(await c.recv(), "cds rejected")
                await c.expect_quiet(0.1)
                cds_rej = (await node_status(plane))["resources"]["Cluster"]["lastRejection"]
                assert cds_rej is not None and cds_rej["errorDetail"] == "cds rejected"
                await trio.sleep(0.05)  # the two NACKs are apart in time
                await post(plane, "listeners", listener_body("edge2", "routes", port=10002))
                await c.nack(await c.recv(), "lds rejected")
                await c.expect_quiet(0.1)
                res = (await node_status(plane))["resources"]
                assert res["Listener"]["lastRejection"]["errorDetail"] == "lds rejected"
                assert res["Listener"]["lastRejection"]["time"] > cds_rej["time"]
                assert res["Cluster"]["lastRejection"] == cds_rej


async def test_rule5_after_a_nack_the_client_is_brought_back_to_current_content(
    xds_settings: Settings,
) -> None:
    """Rule 5 (what the client holds after a NACK): a NACK undoes only the rejected response.
    Here the client applies one response without answering it, NACKs the next two, and the
    content then goes back to what it held *before* the first: the server must send it (the
    client holds the first response's content, not the original)."""
    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                await subscribe(c, CDS)  # backend:8080
                await put(plane, "clusters", cluster_body("backend", 9001))
                applied = await c.recv()  # applied, not answered (Envoy may answer only the last)
                assert ports_of(applied, "backend") == [9001]
                await post(plane, "clusters", cluster_body("extra", 9100))
                second = await c.recv()
                assert summary(second) == ("Cluster", ["extra"], [])
                await c.nack(second, "extra rejected")
                await put(plane, "clusters", cluster_body("backend", 9002))
                third = await c.recv()
                assert ports_of(third, "backend") == [9002]
                await c.nack(third, "backend:9002 rejected")
                # back to what the client holds (backend:9001): nothing to send
                await put(plane, "clusters", cluster_body("backend", 9001))
                await c.expect_quiet(QUIET)
                # back to the original (backend:8080), which the client no longer holds
                await put(plane, "clusters", cluster_body("backend", 8080))
                resp = await c.recv()
                assert summary(resp) == ("Cluster", ["backend"], [])
                assert ports_of(resp, "backend") == [8080]


# -- rule 6: stale nonces ----------------------------------------------------------------------


async def test_rule6_subscription_changes_on_a_stale_nonce_are_honoured(
    xds_settings: Settings,
) -> None:
    """Rule 6: "Delta: subscription changes on a stale-nonce request are still honoured." A
    subscribe carrying an already answered nonce, and an unsubscribe carrying a made-up one, are
    both applied."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "route-configs", route_config_body("r2", "backend"))
            async with connect(plane) as c:
                first = await subscribe(c, RDS, ("routes",))  # answered: its nonce is now stale
                await put(
                    plane, "route-configs", route_config_body("routes", "backend", ["a.example"])
                )
                latest = await c.recv()
                assert latest.nonce != first.nonce
                await c.send(RDS, subscribe=["r2"], nonce=first.nonce)
                resp = await c.recv()
                assert summary(resp) == ("RouteConfiguration", ["r2"], [])
                await c.ack(latest)
                await c.ack(resp)
                await c.send(RDS, unsubscribe=["routes"], nonce="made-up")
                await put(
                    plane, "route-configs", route_config_body("routes", "backend", ["b.example"])
                )
                await c.expect_quiet(QUIET)  # `routes` was unsubscribed
                await put(
                    plane, "route-configs", route_config_body("r2", "backend", ["r2.example"])
                )
                assert names_of(await c.recv()) == ["r2"]


# -- rule 7: never respond more than necessary ---------------------------------------------------


async def test_rule7_never_respond_more_than_necessary(xds_settings: Settings) -> None:
    """Rule 7: "Send only when something changed for that stream, or a newly requested name must
    be delivered. Never push an unchanged version." ACKs (also repeated) get nothing; a PUT of
    the same body gets nothing; a change to one cluster sends exactly that one resource and no
    other type; a change to a route config the stream did not subscribe to gets nothing."""
    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "clusters", cluster_body("second", 9301))
            await post(plane, "route-configs", route_config_body("unrequested", "backend"))
            async with connect(plane) as c:
                cds = await subscribe(c, CDS)
                assert names_of(cds) == ["backend", "second"]
                await subscribe(c, LDS)
                rds = await subscribe(c, RDS, ("routes",))
                await c.ack(cds)  # the same ACKs again
                await c.ack(rds)
                await c.expect_quiet(QUIET)
                # writes that change nothing
                await put(plane, "clusters", cluster_body("second", 9301))
                await put(plane, "route-configs", route_config_body("routes", "backend"))
                await put(plane, "listeners", listener_body("edge", "routes", port=10001))
                # a route config the stream did not subscribe to
                await put(plane, "route-configs", route_config_body("unrequested", "second"))
                await c.expect_quiet(QUIET)
                # one cluster changes: exactly that resource, nothing else
                await put(plane, "clusters", cluster_body("second", 9302))
                resp = await c.recv()
                assert summary(resp) == ("Cluster", ["second"], [])
                assert versions_of(resp) == {"second": published(plane, CDS)["second"]}
                await c.ack(resp)
                await c.expect_quiet(QUIET)


async def test_a_change_to_one_resource_sends_exactly_one_resource_to_each_subscribed_node(
    xds_settings: Settings,
) -> None:
    """Rules 7 and 13: a change to one resource sends exactly that resource (resources list of
    length 1, the right name and new version, nothing removed) to each node subscribed to it,
    and nothing to a node that is not."""
    with trio.fail_after(20):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            for i in range(5):
                await post(plane, "clusters", cluster_body(f"c{i}", 9400 + i))
            await plane.settled()
            async with (
                connect(plane, "delta-a") as a,
                connect(plane, "delta-b") as b,
                connect(plane, "delta-named") as named,
                connect(plane, "delta-elsewhere") as elsewhere,
            ):
                for c in (a, b):
                    assert len((await subscribe(c, CDS)).resources) == 6
                assert names_of(await subscribe(named, CDS, ("c3", "c4"))) == ["c3", "c4"]
                assert names_of(await subscribe(elsewhere, CDS, ("c1",))) == ["c1"]
                await put(plane, "clusters", cluster_body("c3", 9999))
                await plane.settled()
                version = published(plane, CDS)["c3"]
                for c in (a, b, named):
                    resp = await c.recv()
                    assert resp.type_url == CDS
                    assert len(resp.resources) == 1
                    assert (resp.resources[0].name, resp.resources[0].version) == ("c3", version)
                    assert removed_of(resp) == []
                    assert ports_of(resp, "c3") == [9999]
                    await c.ack(resp)
                for c in (a, b, named, elsewhere):
                    await c.expect_quiet(0.1 if c is not elsewhere else QUIET)


# -- rule 11: subscriptions --------------------------------------------------------------------


async def test_rule11_subscribe_and_unsubscribe_are_changes(xds_settings: Settings) -> None:
    """Rule 11: "`resource_names_subscribe` / `_unsubscribe` are changes; ignore unknown
    unsubscribes." Subscribing one more name sends just that name; unsubscribing needs no
    answer and stops pushes for that name; an unknown unsubscribe changes nothing."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "route-configs", route_config_body("r2", "backend"))
            async with connect(plane) as c:
                assert names_of(await subscribe(c, RDS, ("routes",))) == ["routes"]
                await c.send(RDS, subscribe=["r2"])
                resp = await c.recv()
                assert summary(resp) == ("RouteConfiguration", ["r2"], [])  # not `routes` again
                await c.ack(resp)
                await c.send(RDS, unsubscribe=["routes"])
                await c.send(RDS, unsubscribe=["never-subscribed"])  # ignored
                await c.expect_quiet(QUIET)
                await put(plane, "route-configs", route_config_body("routes", "backend", ["x"]))
                await c.expect_quiet(QUIET)
                await put(plane, "route-configs", route_config_body("r2", "backend", ["y"]))
                resp = await c.recv()
                assert summary(resp) == ("RouteConfiguration", ["r2"], [])
                assert c.end is None


async def test_rule11_subscribing_a_name_the_client_holds_is_answered(
    xds_settings: Settings,
) -> None:
    """Rule 11: "a subscribe for something the client supposedly has must still be answered" —
    on a named type and under a wildcard."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                rds = await subscribe(c, RDS, ("routes",))
                await c.send(RDS, subscribe=["routes"])
                again = await c.recv()
                assert versions_of(again) == versions_of(rds)
                await c.ack(again)
                await subscribe(c, CDS)  # legacy wildcard: holds `backend`
                await c.send(CDS, subscribe=["backend"])
                resp = await c.recv()
                assert summary(resp) == ("Cluster", ["backend"], [])
                await c.ack(resp)


async def test_rule11_missing_name_is_removed_and_sent_when_it_appears(
    xds_settings: Settings,
) -> None:
    """Rule 11: "A name that does not exist goes into `removed_resources`; if it appears later,
    send it." """
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            async with connect(plane) as c:
                resp = await subscribe(c, RDS, ("routes", "later"))
                assert summary(resp) == ("RouteConfiguration", ["routes"], ["later"])
                await c.send(RDS, subscribe=["also-missing"])
                resp = await c.recv()
                assert summary(resp) == ("RouteConfiguration", [], ["also-missing"])
                await c.ack(resp)
                await post(plane, "route-configs", route_config_body("later", "backend"))
                resp = await c.recv()
                assert summary(resp) == ("RouteConfiguration", ["later"], [])
                await c.ack(resp)
                # deleted again: it goes back into removed_resources
                await delete(plane, "route-configs", "later")
                resp = await c.recv()
                assert summary(resp) == ("RouteConfiguration", [], ["later"])


async def test_rule11_wildcard_plus_name_unsubscribing_the_name_keeps_it(
    xds_settings: Settings,
) -> None:
    """Rule 11: "With wildcard plus an explicit name, unsubscribing the name keeps it (still
    covered by the wildcard)." It is never reported removed, and its changes still arrive."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "clusters", cluster_body("second", 9401))
            async with connect(plane) as c:
                assert names_of(await subscribe(c, CDS)) == ["backend", "second"]
                await c.send(CDS, subscribe=["backend"])
                await c.ack(await c.recv())
                await c.send(CDS, unsubscribe=["backend"])
                # the server may confirm `backend` again; it must not remove it
                for resp in await drain(c):
                    assert "backend" not in removed_of(resp), summary(resp)
                    assert set(names_of(resp)) <= {"backend"}, summary(resp)
                await put(plane, "clusters", cluster_body("backend", 9402))
                resp = await c.recv()
                assert summary(resp) == ("Cluster", ["backend"], [])
                await c.ack(resp)
                await post(plane, "clusters", cluster_body("third", 9403))
                assert names_of(await c.recv()) == ["third"]  # the wildcard is still in force


async def test_rule11_star_is_the_explicit_wildcard(xds_settings: Settings) -> None:
    """Rule 11 (and 9: "`*` is the explicit wildcard"): subscribing `*` sends everything and
    every new resource; with an explicit name too, unsubscribing `*` leaves only that name."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            await post(plane, "clusters", cluster_body("second", 9401))
            async with connect(plane, "delta-star") as c, connect(plane, "delta-star-plus") as c2:
                assert names_of(await subscribe(c, CDS, ("*",))) == ["backend", "second"]
                assert names_of(await subscribe(c2, CDS, ("*", "backend"))) == ["backend", "second"]
                await post(plane, "clusters", cluster_body("third", 9402))
                for client in (c, c2):
                    resp = await client.recv()
                    assert summary(resp) == ("Cluster", ["third"], [])
                    await client.ack(resp)
                await c2.send(CDS, unsubscribe=["*"])
                for resp in await drain(c2):  # nothing new may be sent; only what it dropped
                    assert names_of(resp) == [], summary(resp)
                    assert "backend" not in removed_of(resp)
                await post(plane, "clusters", cluster_body("fourth", 9403))
                await put(plane, "clusters", cluster_body("second", 9404))
                assert names_of(await c.recv()) == ["fourth"]
                assert names_of(await c.recv()) == ["second"]
                await c2.expect_quiet(QUIET)
                await put(plane, "clusters", cluster_body("backend", 9405))
                assert names_of(await c2.recv()) == ["backend"]


# -- rule 12: reconnect with initial_resource_versions ------------------------------------------


async def test_rule12_reconnect_sends_only_what_differs(xds_settings: Settings) -> None:
    """Rule 12: "`initial_resource_versions` lists what the client holds. Send only what
    differs, and put resources deleted meanwhile into `removed_resources`." A resource the
    client holds at a wrong version is sent; one it holds current is not."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            for name in ("a", "b", "c"):
                await post(plane, "clusters", cluster_body(name, 9500))
            await plane.settled()
            async with connect(plane, "delta-away") as c:
                held = versions_of(await subscribe(c, CDS))
                assert set(held) == {"backend", "a", "b", "c"}
            # while the client is away: a changes, b is deleted, d is added
            await put(plane, "clusters", cluster_body("a", 9501))
            await delete(plane, "clusters", "b")
            await post(plane, "clusters", cluster_body("d", 9502))
            await plane.settled()
            initial = {**held, "c": "not-the-current-version"}
            async with connect(plane, "delta-away") as c:
                resp = await subscribe(c, CDS, initial=initial)
                assert summary(resp) == ("Cluster", ["a", "c", "d"], ["b"])
                current = published(plane, CDS)
                assert versions_of(resp) == {n: current[n] for n in ("a", "c", "d")}
                await c.expect_quiet(QUIET)


async def test_rule12_reconnect_with_everything_current_receives_nothing(
    xds_settings: Settings,
) -> None:
    """Rule 12 / rule 8: "a reconnecting client then receives nothing new (delta)". A client
    reconnecting with current `initial_resource_versions` for CDS, LDS and RDS gets zero
    resources (no response at all); the stream then works as usual."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            held: dict[str, dict[str, str]] = {}
            async with connect(plane) as c:
                held[CDS] = versions_of(await subscribe(c, CDS))
                held[LDS] = versions_of(await subscribe(c, LDS))
                held[RDS] = versions_of(await subscribe(c, RDS, ("routes",)))
            async with connect(plane) as c:
                await c.send(CDS, initial_versions=held[CDS])
                await c.send(LDS, initial_versions=held[LDS])
                await c.send(RDS, subscribe=["routes"], initial_versions=held[RDS])
                await c.expect_quiet(QUIET)
                assert c.responses == []
                await put(plane, "clusters", cluster_body("backend", 9601))
                resp = await c.recv()
                assert summary(resp) == ("Cluster", ["backend"], [])


# -- rule 13: per-resource versions are content hashes --------------------------------------------


async def test_rule13_resource_versions_are_content_hashes_equal_across_a_restart(
    db_url: str,
) -> None:
    """Rule 13: "Per-resource versions in delta are the content hash of that resource." Each
    version is the hash of the resource's bytes; a restarted plane on the same database sends
    the same versions and bytes, and a client reconnecting with them receives nothing (rule 8)."""
    port = free_port()
    settings = plane_settings(db_url, port)
    first: dict[str, DeltaDiscoveryResponse] = {}
    subs: tuple[tuple[str, tuple[str, ...]], ...] = ((CDS, ()), (LDS, ()), (RDS, ("routes",)))
    with trio.fail_after(30):
        async with run_plane(settings) as plane:
            await seed(plane)
            async with connect(plane, "delta-restarter") as c:
                for type_url, names in subs:
                    first[type_url] = resp = await subscribe(c, type_url, names)
                    for r in resp.resources:
                        digest = hashlib.sha256(r.resource.SerializeToString()).hexdigest()
                        assert r.version == digest[:16]
        async with run_plane(settings) as plane:
            assert plane.xds_port == port
            async with connect(plane, "delta-fresh") as c:
                for type_url, names in subs:
                    resp = await subscribe(c, type_url, names)
                    assert versions_of(resp) == versions_of(first[type_url])
                    assert list(resp.resources) == list(first[type_url].resources)
                    assert resp.system_version_info == first[type_url].system_version_info
            async with connect(plane, "delta-restarter") as c:
                for type_url, names in subs:
                    await c.send(
                        type_url, subscribe=names, initial_versions=versions_of(first[type_url])
                    )
                await c.expect_quiet(QUIET)


# -- rule 14: make before break ------------------------------------------------------------------


async def test_rule14_clusters_before_the_routes_that_name_them(db_url: str) -> None:
    """Rule 14: "Make before break: CDS → EDS → LDS → RDS ... A route must never name a cluster
    the Envoy has not received." A new cluster and a route switched to it, published in one
    snapshot, reach the client CDS first; each response carries only what changed."""
    with trio.fail_after(20):
        async with run_plane(debounced(db_url)) as plane:
            await seed(plane)
            async with connect(plane) as c:
                await subscribe(c, CDS)
                await subscribe(c, LDS)
                await subscribe(c, RDS, ("routes",))
                before = plane.core.hub.published
                await post(plane, "clusters", cluster_body("fresh", 9700))
                await put(plane, "route-configs", route_config_body("routes", "fresh"))
                await plane.settled()
                assert plane.core.hub.published == before + 1, "not one snapshot"
                got = [await c.recv(), await c.recv()]
                assert [summary(r) for r in got] == [
                    ("Cluster", ["fresh"], []),
                    ("RouteConfiguration", ["routes"], []),
                ]
                for r in got:
                    await c.ack(r)
                await c.expect_quiet(QUIET)


async def test_rule14_removals_go_last(db_url: str) -> None:
    """Rule 14: "... then removals." Replacing a cluster in one snapshot (add `new`, route to
    it, delete `old`): CDS adds `new`, then RDS switches the route, and only then does CDS
    remove `old` — the route the client holds never names a cluster it lacks. A listener and
    its route config removed together go listener first."""
    with trio.fail_after(20):
        async with run_plane(debounced(db_url)) as plane:
            await post(plane, "clusters", cluster_body("backend"))
            await post(plane, "clusters", cluster_body("old", 9701))
            await post(plane, "route-configs", route_config_body("routes", "old"))
            await post(plane, "route-configs", route_config_body("doomed-routes", "backend"))
            await post(plane, "listeners", listener_body("doomed", "doomed-routes", port=10002))
            await plane.settled()
            async with connect(plane) as c:
                await subscribe(c, CDS)
                await subscribe(c, LDS)
                await subscribe(c, RDS, ("routes", "doomed-routes"))
                before = plane.core.hub.published
                await post(plane, "clusters", cluster_body("new", 9702))
                await put(plane, "route-configs", route_config_body("routes", "new"))
                await delete(plane, "clusters", "old")
                await plane.settled()
                assert plane.core.hub.published == before + 1, "not one snapshot"
                got = [await c.recv() for _ in range(3)]
                assert [summary(r) for r in got] == [
                    ("Cluster", ["new"], []),
                    ("RouteConfiguration", ["routes"], []),
                    ("Cluster", [], ["old"]),
                ]
                for r in got:
                    await c.ack(r)
                await c.expect_quiet(QUIET)
                before = plane.core.hub.published
                await delete(plane, "listeners", "doomed")
                await delete(plane, "route-configs", "doomed-routes")
                await plane.settled()
                assert plane.core.hub.published == before + 1, "not one snapshot"
                got = [await c.recv() for _ in range(2)]
                assert [summary(r) for r in got] == [
                    ("Listener", [], ["doomed"]),
                    ("RouteConfiguration", [], ["doomed-routes"]),
                ]


# -- rule 15: never hold a response for missing names ------------------------------------------


async def test_rule15_send_what_exists_do_not_hold(xds_settings: Settings) -> None:
    """Rule 15: "Do not *hold* a response waiting for every name to be requested ... send what is
    known and remember pending names." With nothing configured, wildcard CDS and LDS are
    answered at once with an empty response (Envoy's initialization waits for them). An RDS
    subscription made before any CDS/LDS request, naming one existing and one missing route
    config, is answered at once with what exists; the missing one arrives when it is created."""
    with trio.fail_after(15):
        async with run_plane(xds_settings) as plane:
            async with connect(plane, "delta-empty") as c:
                for type_url in (CDS, LDS):
                    assert summary(await subscribe(c, type_url))[1:] == ([], [])
            await seed(plane)
            async with connect(plane) as c:
                now = await subscribe(c, RDS, ("routes", "pending"))
                assert names_of(now) == ["routes"]
                await c.expect_quiet(QUIET)
                await post(plane, "route-configs", route_config_body("pending", "backend"))
                resp = await c.recv()
                assert summary(resp) == ("RouteConfiguration", ["pending"], [])


# -- rule 17: slow clients are coalesced --------------------------------------------------------


async def test_rule17_slow_client_gets_the_latest_content_not_a_queue(db_url: str) -> None:
    """Rule 17: "Every stream has bounded outbound state: if an Envoy is slow, coalesce to the
    latest version per type instead of queueing versions."

    The client stops reading while a ~1.6 MB cluster changes CHANGES times (each change is a
    ~1.6 MB delta response), so the server's writes block once grpclib's 4 MiB HTTP/2 window is
    full. Guaranteed: before blocking the server can have written at most window // size whole
    responses (plus the one the paused reader was already receiving), plus one in progress, plus
    — once the client reads again — one for the latest content. A server that queued versions
    would send all `changes`."""
    changes = 6
    with trio.fail_after(40):
        async with run_plane(big_settings(db_url)) as plane:
            await post(plane, "clusters", long_host_cluster("big", 6000))
            await post(plane, "clusters", cluster_body("small", 1))
            await plane.settled()
            async with connect(plane, "delta-slow") as c:
                first = await subscribe(c, CDS)
                assert names_of(first) == ["big", "small"]
                c.pause_reading()
                for port in range(1, 1 + changes):
                    await put(plane, "clusters", long_host_cluster("big", 6000, port))
                    await plane.settled()
                final = published(plane, CDS)
                await trio.sleep(0.2)  # let the server write what the window allows
                c.resume_reading()
                got: list[DeltaDiscoveryResponse] = []
                holds = versions_of(first)
                while holds != final:
                    resp = await c.recv(timeout=10)
                    got.append(resp)
                    holds.update(versions_of(resp))
                await c.ack(got[-1])
                await c.expect_quiet(QUIET)
                size = max(r.ByteSize() for r in got)
                assert size > 1.5 * MIB
                window = 4 * MIB  # grpclib's default HTTP/2 stream and connection window
                # + 3: the response the paused reader was already receiving (it is read and
                # acknowledged), the one in progress when the window closed, the latest.
                assert len(got) <= window // size + 3 < changes, [summary(r) for r in got]
                assert ports_of(got[-1], "big")[0] == changes
                sent_big = [r.version for resp in got for r in resp.resources if r.name == "big"]
                assert len(set(sent_big)) == len(sent_big)  # never the same content twice


# -- rule 18: reconnect storms -----------------------------------------------------------------


async def test_rule18_two_hundred_delta_streams_at_once_are_all_served(
    xds_settings: Settings,
) -> None:
    """Rule 18: "after a control-plane restart every Envoy reconnects at once. Throttle new
    streams' initial responses if needed, but never reject them." 200 delta streams (each its
    own connection) open at once; every one gets its initial CDS response."""
    streams = 200
    with trio.fail_after(45):
        async with run_plane(xds_settings) as plane:
            await seed(plane)
            expected = published(plane, CDS)
            got, ended, nodes, deadline = await reconnect_storm(
                plane, connect, "delta-storm-", streams, versions_of
            )
            assert not deadline.cancelled_caught
            assert not ended, ended[:3]
            assert len(got) == streams and all(v == expected for v in got.values())
            assert nodes["total"] == streams
            assert {n["protocol"] for n in nodes["items"]} == {"delta"}
