"""Property (issue 12, "Field preservation across paths"; api.md "Materialisation" and "History
and rollback"): a resource edited on both paths keeps every field that either path set. Random
sequences of Native writes (setting and removing Native-only fields of a platform-made cluster),
Platform re-imports of an OpenAPI document (same document, or its upstream moved), rollbacks of
the cluster (Native) and of the API (re-materialised), each on a core of its own. After every
step the cluster is exactly what the model says: the fields the API generates now, plus the
Native-only fields as last explicitly set (by a Native write or a rollback of the cluster) — so
no field value that was not explicitly changed is ever lost — and a refused step changes
nothing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowplane.app import Core, open_core
from flowplane.domain.auth import SYSTEM
from flowplane.domain.resources import Kind
from flowplane.errors import Conflict
from flowplane.services.platform import ImportOptions
from flowplane.settings import load_settings

TEAM, NAME, DOMAIN = "t", "pets", "pets.example.com"
NATIVE = {  # Native-only fields of a cluster (the API generates none of them), with values
    "circuitBreakers": st.builds(lambda n: {"default": {"maxConnections": n}}, st.integers(1, 9)),
    "outlierDetection": st.builds(lambda n: {"consecutive5xx": n}, st.integers(1, 9)),
    "connectTimeoutSeconds": st.integers(1, 9),
}
PORTS = st.integers(8001, 8003)

step = st.one_of(
    st.tuples(st.just("native_set"), st.sampled_from(sorted(NATIVE))).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), NATIVE[t[1]])
    ),
    st.tuples(st.just("native_unset"), st.sampled_from(sorted(NATIVE))),
    st.tuples(st.just("reimport"), PORTS),
    st.tuples(st.just("rollback_cluster"), st.integers(0, 50)),
    st.tuples(st.just("rollback_api"), st.integers(0, 50)),
)


def document(port: int) -> bytes:
    return json.dumps({
        "openapi": "3.0.3", "info": {"title": "Pets", "version": "1"},
        "servers": [{"url": f"http://127.0.0.1:{port}"}],
        "paths": {"/pets": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }).encode()  # fmt: skip


class Model:
    """What the cluster must be: the API's generated fields plus `native` (the Native-only
    fields as last explicitly set); and every version seen, to know what a rollback brings."""

    def __init__(self, core: Core, api_id: str, cluster: str) -> None:
        self.core, self.api_id, self.cluster = core, api_id, cluster
        self.native: dict[str, Any] = {}
        self.cluster_versions: dict[int, dict[str, Any]] = {}
        self.api_versions: dict[int, int] = {}  # API version -> its upstream port
        self.port = 0

    def generated(self) -> dict[str, Any]:
        return dict(self.core.state.apis[self.api_id].owned(Kind.CLUSTER)[self.cluster])

    def actual(self) -> tuple[int, dict[str, Any]]:
        res = self.core.state.get(Kind.CLUSTER, f"{TEAM}/{self.cluster}")  # its key
        assert res is not None
        return res.version, res.spec

    def check(self, why: str) -> None:
        version, spec = self.actual()
        gen = self.generated()
        assert set(self.core.state.apis[self.api_id].owned(Kind.CLUSTER)) == {self.cluster}
        assert gen["endpoints"] == [{"host": "127.0.0.1", "port": self.port}], why
        assert spec == {**gen, **self.native}, why
        self.cluster_versions[version] = spec
        api = self.core.state.apis[self.api_id]
        self.api_versions[api.version] = self.port

    async def run(self, op: tuple[Any, ...]) -> None:
        res, hist = self.core.services.resources, self.core.services.history
        kind = op[0]
        if kind == "native_set":
            await res.patch(SYSTEM, Kind.CLUSTER, self.cluster, {op[1]: op[2]})
            self.native[op[1]] = op[2]
        elif kind == "native_unset":
            await res.patch(SYSTEM, Kind.CLUSTER, self.cluster, {op[1]: None})
            self.native.pop(op[1], None)
        elif kind == "reimport":
            await self.reimport(op[1])
        elif kind == "rollback_cluster":
            versions = sorted(self.cluster_versions)
            target = versions[op[1] % len(versions)]
            old = self.cluster_versions[target]
            gen = self.generated()
            if any(old.get(k) != v for k, v in gen.items()):
                # it would change what the API generated: 409 naming the API, nothing changes
                before = self.actual()
                with pytest.raises(Conflict, match=NAME):
                    await hist.rollback(SYSTEM, Kind.CLUSTER.value, self.cluster, target, None)
                assert self.actual() == before
                return
            await hist.rollback(SYSTEM, Kind.CLUSTER.value, self.cluster, target, None)
            self.native = {k: v for k, v in old.items() if k not in gen}
        elif kind == "rollback_api":
            versions = sorted(self.api_versions)
            target = versions[op[1] % len(versions)]
            await hist.rollback(SYSTEM, "api", self.api_id, target, None)
            self.port = self.api_versions[target]  # the Native-only fields stay as they are

    async def reimport(self, port: int) -> None:
        options = ImportOptions(team=TEAM, name=NAME, domain=DOMAIN)
        out = await self.core.services.platform.import_openapi(
            SYSTEM, document(port), "application/json", options
        )
        assert out.outcome.api is not None
        self.port = port


async def check(tmp: Path, steps: list[tuple[Any, ...]]) -> None:
    settings_ = load_settings(
        database_url=f"sqlite:///{tmp}/{uuid.uuid4().hex}.db", api_address="127.0.0.1:0",
        default_gateway=True, default_gateway_address="127.0.0.1:10000",
    )  # fmt: skip
    with trio.fail_after(60):
        async with open_core(settings_) as core:
            await core.services.teams.create(SYSTEM, {"name": TEAM})
            options = ImportOptions(team=TEAM, name=NAME, domain=DOMAIN)
            made = await core.services.platform.import_openapi(
                SYSTEM, document(8001), "application/json", options
            )
            api = made.outcome.api
            assert api is not None
            (cluster,) = api.owned(Kind.CLUSTER)
            model = Model(core, api.id, cluster)
            model.port = 8001
            model.check("created")
            for n, op in enumerate(steps):
                await model.run(op)
                model.check(f"after step {n}: {op}")


async def test_no_field_is_lost_across_native_and_platform_writes_and_rollbacks(
    tmp_path: Path,
) -> None:
    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(steps=st.lists(step, min_size=1, max_size=10))
    def property_(steps: list[tuple[Any, ...]]) -> None:
        trio.from_thread.run(check, tmp_path, steps)

    await trio.to_thread.run_sync(property_)
