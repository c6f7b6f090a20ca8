"""The Envoy/upstream test harness in `flowplane.testing` works against a real Envoy 1.40."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from flowplane.testing.envoy import (
    EnvoyStartError,
    ads_bootstrap,
    parse_stats,
    rejection_stats,
    run_envoy,
    validate_bootstrap,
)
from flowplane.testing.ports import HIGH_PORT, LOW_PORT, free_port
from flowplane.testing.upstream import run_upstream

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def static_bootstrap(listener_port: int, upstream_port: int) -> dict[str, Any]:
    """Envoy with no xDS: listener on 127.0.0.1:listener_port routes everything to one upstream."""
    hcm = {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}],
                }
            ],
        },
        "http_filters": [ROUTER],
    }
    socket_address = {"address": "127.0.0.1", "port_value": upstream_port}
    endpoint = {"address": {"socket_address": socket_address}}
    return {
        "node": {"id": "static-1", "cluster": "harness"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listener_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "up",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "up",
                        "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
                    },
                }
            ],
        },
    }


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_free_port_is_low_and_distinct() -> None:
    ports = {free_port() for _ in range(50)}
    assert len(ports) == 50
    assert all(LOW_PORT <= p < HIGH_PORT for p in ports)


def test_stats_parsing_and_rejection_filter() -> None:
    text = "\n".join(
        [
            "cluster_manager.cds.update_rejected: 2",
            'cluster_manager.cds.version_text: "v1"',
            "listener_manager.lds.update_rejected: 0",
            "http.ingress.rds.local_route.update_rejected: 1",
            "cluster.svc.eds.update_rejected: 3",
            "cluster.svc.upstream_rq_total: 7",
            "server.initialization_time_ms: No recorded values",
            "server.state: 0",
        ]
    )
    stats = parse_stats(text)
    assert stats["server.state"] == 0
    assert "cluster_manager.cds.version_text" not in stats
    assert "server.initialization_time_ms" not in stats
    assert rejection_stats(stats) == {
        "cluster_manager.cds.update_rejected": 2,
        "listener_manager.lds.update_rejected": 0,
        "http.ingress.rds.local_route.update_rejected": 1,
        "cluster.svc.eds.update_rejected": 3,
    }


async def test_upstream_answers_and_keeps_alive() -> None:
    with trio.fail_after(10):
        async with (
            run_upstream("alpha") as up,
            httpx.AsyncClient(trust_env=False) as client,
        ):
            first = await client.get(f"{up.url}/hello", headers={"x-test": "1"})
            second = await client.post(f"{up.url}/form?q=1", content=b"payload")
    assert first.status_code == 200
    assert first.text == "alpha GET /hello"
    assert first.headers["x-upstream"] == "alpha"
    assert second.text == "alpha POST /form?q=1"
    assert [(r.method, r.path) for r in up.requests] == [("GET", "/hello"), ("POST", "/form?q=1")]
    assert up.requests[0].headers["x-test"] == "1"
    assert up.requests[1].body == b"payload"
    assert up.connections == 1  # keep-alive: both requests on one connection


@pytest.mark.e2e
async def test_static_envoy_proxies_to_upstream_and_is_killed(tmp_path: Path) -> None:
    listener_port = free_port()
    with trio.fail_after(30):
        async with run_upstream("alpha") as up:
            boot = static_bootstrap(listener_port, up.port)
            async with run_envoy(boot, tmp_dir=tmp_path, wait="ready") as envoy:
                pid = envoy.pid
                status, headers, body = await envoy.request(
                    listener_port, "/through", host="example.test", headers={"x-probe": "yes"}
                )
                stats = await envoy.stats()
                rejected = await envoy.rejected_counts()
                versions = await envoy.dynamic_versions()
    assert status == 200
    assert body == b"alpha GET /through"
    assert headers["x-upstream"] == "alpha"
    assert up.requests[-1].headers["host"] == "example.test"
    assert up.requests[-1].headers["x-probe"] == "yes"
    assert stats["http.ingress.downstream_rq_2xx"] == 1
    assert stats["cluster.up.upstream_rq_total"] == 1
    assert stats["server.state"] == 0  # LIVE
    assert rejected == {}  # no xDS at all
    assert versions == {
        "listeners": set(),
        "clusters": set(),
        "route_configs": set(),
        "endpoints": set(),
    }
    assert envoy.returncode == 0  # SIGTERM is a clean shutdown for Envoy
    assert_gone(pid)


@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.e2e
async def test_ads_bootstrap_passes_envoy_validate(tmp_path: Path, *, delta: bool) -> None:
    boot = ads_bootstrap(
        "team=demo/dp-1", "127.0.0.1", 18000, delta=delta, cluster="demo",
        metadata={"team": "demo"}, keepalive=(30.0, 0.25),
    )  # fmt: skip
    api_type = boot["dynamic_resources"]["ads_config"]["api_type"]
    assert api_type == ("DELTA_GRPC" if delta else "GRPC")
    with trio.fail_after(30):
        await validate_bootstrap(boot, tmp_dir=tmp_path)


@pytest.mark.e2e
async def test_ads_envoy_without_server_answers_admin_but_is_not_ready(tmp_path: Path) -> None:
    # Nothing listens on the xDS port: Envoy keeps retrying and stays initializing.
    boot = ads_bootstrap("dp-1", "127.0.0.1", free_port())
    with trio.fail_after(30):
        async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
            pid = envoy.pid
            ready = await envoy.admin_get("/ready")
            rejected = await envoy.rejected_counts()
            versions = await envoy.resource_versions()
            with pytest.raises(TimeoutError, match="/ready == 200"):
                await envoy.wait_ready(timeout=0.3)
    assert ready.status_code == 503
    assert rejected == {
        "listener_manager.lds.update_rejected": 0,
        "cluster_manager.cds.update_rejected": 0,
    }
    assert versions["listeners"] == {}
    assert versions["clusters"] == {}
    assert_gone(pid)


@pytest.mark.e2e
async def test_bad_bootstrap_raises_with_log_tail(tmp_path: Path) -> None:
    boot = ads_bootstrap("dp-1", "127.0.0.1", 18000)
    boot["node"]["no_such_field"] = 1
    with trio.fail_after(30), pytest.raises(EnvoyStartError) as info:
        async with run_envoy(boot, tmp_dir=tmp_path):
            pytest.fail("envoy must not start")
    message = str(info.value)
    assert "no_such_field" in message  # Envoy's own complaint, from the log tail
    assert "exited with 1" in message


@pytest.mark.e2e
async def test_several_envoys_at_once_all_die_on_cancel(tmp_path: Path) -> None:
    pids: list[int] = []

    async def one(i: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        boot = ads_bootstrap(f"dp-{i}", "127.0.0.1", free_port())
        async with run_envoy(boot, tmp_dir=tmp_path / str(i)) as envoy:
            pids.append(envoy.pid)
            task_status.started()
            await trio.sleep_forever()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(4):
                await nursery.start(one, i)
            assert len(set(pids)) == 4
            nursery.cancel_scope.cancel()
    for pid in pids:
        assert_gone(pid)


def _hcm(route_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            **route_spec,
            "http_filters": [ROUTER],
        },
    }


def _write_response(path: Path, version: str, type_name: str, resources: list[Any]) -> None:
    """A DiscoveryResponse file for a filesystem subscription, swapped in atomically (Envoy
    watches for a rename into place)."""
    url = f"type.googleapis.com/{type_name}"
    body = {"version_info": version, "resources": [{"@type": url, **r} for r in resources]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


@pytest.mark.e2e
async def test_dynamic_versions_and_rejections_from_file_subscriptions(tmp_path: Path) -> None:
    # Filesystem xDS exercises the same config_dump/stat shapes as ADS, without a server.
    listener_port = free_port()
    files = {kind: tmp_path / f"{kind}.json" for kind in ("lds", "cds", "rds", "eds")}

    def source(kind: str) -> dict[str, Any]:
        return {"path_config_source": {"path": str(files[kind])}, "resource_api_version": "V3"}

    def listener(port: int) -> dict[str, Any]:
        rds = {"rds": {"route_config_name": "routes", "config_source": source("rds")}}
        return {
            "name": "ingress",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [_hcm(rds)]}],
        }

    with trio.fail_after(30):
        async with run_upstream("beta") as up:
            _write_response(
                files["lds"], "l1", "envoy.config.listener.v3.Listener", [listener(listener_port)]
            )
            cluster = {
                "name": "up",
                "type": "EDS",
                "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": source("eds")},
            }
            _write_response(files["cds"], "c1", "envoy.config.cluster.v3.Cluster", [cluster])
            routes = {
                "name": "routes",
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "up"}}],
                    }
                ],
            }
            _write_response(
                files["rds"], "r1", "envoy.config.route.v3.RouteConfiguration", [routes]
            )
            socket_address = {"address": "127.0.0.1", "port_value": up.port}
            cla = {
                "cluster_name": "up",
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": socket_address}}}
                        ]
                    }
                ],
            }
            _write_response(
                files["eds"], "e1", "envoy.config.endpoint.v3.ClusterLoadAssignment", [cla]
            )
            boot = {
                "node": {"id": "files-1", "cluster": "harness"},
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
                "dynamic_resources": {"lds_config": source("lds"), "cds_config": source("cds")},
            }
            async with run_envoy(boot, tmp_dir=tmp_path / "envoy", wait="ready") as envoy:
                status, _, body = await envoy.request(listener_port, "/dyn")
                versions = await envoy.dynamic_versions()
                by_name = await envoy.resource_versions()
                clean = await envoy.rejected_counts()

                # An invalid listener (port out of range) must be NACKed, visible in the stats.
                _write_response(
                    files["lds"], "l2", "envoy.config.listener.v3.Listener", [listener(70000)]
                )

                async def lds_rejected() -> bool:
                    return await envoy.stat("listener_manager.lds.update_rejected") == 1

                await envoy.wait_for(lds_rejected, 10, what="LDS NACK")
                after = await envoy.dynamic_versions()
    assert status == 200
    assert body == b"beta GET /dyn"
    assert versions == {
        "listeners": {"l1"},
        "clusters": {"c1"},
        "route_configs": {"r1"},
        "endpoints": set(),  # Envoy 1.40 leaves version_info out of EDS dumps,
    }
    assert by_name == {
        "listeners": {"ingress": "l1"},
        "clusters": {"up": "c1"},
        "route_configs": {"routes": "r1"},
        "endpoints": {"up": ""},
    }
    assert clean == {
        "listener_manager.lds.update_rejected": 0,
        "cluster_manager.cds.update_rejected": 0,
        "http.ingress.rds.routes.update_rejected": 0,
        "cluster.up.update_rejected": 0,  # EDS
    }
    assert after["listeners"] == {"l1"}  # the rejected version never became current


@pytest.mark.e2e
async def test_envoy_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    boot = ads_bootstrap("dp-stuck", "127.0.0.1", free_port())
    with trio.fail_after(30):
        async with run_envoy(boot, tmp_dir=tmp_path, term_timeout=0.2) as envoy:
            pid = envoy.pid
            os.kill(pid, signal.SIGSTOP)  # a stopped process leaves SIGTERM pending
    assert envoy.returncode == -signal.SIGKILL
    assert_gone(pid)
