"""Schema versions and the start-up upgrade (api.md "History and rollback"; issue 12): the
registry of pure upgrades, and a real database written by this release (the committed SQLite
fixture, and the same script run against a fresh schema of the real PostgreSQL) opened by a
"next release" whose cluster model renamed a field (`upgrade_model`): every value is carried
across, in one transaction; `db upgrade --check` writes nothing; a document from a newer release
stops start-up naming it; a process killed midway leaves the old documents and the next start
completes the upgrade."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from flowplane.app import open_core
from flowplane.domain import schema
from flowplane.domain.apis import upgrade_generated
from flowplane.domain.auth import SYSTEM
from flowplane.domain.cluster import Cluster
from flowplane.domain.resources import Kind
from flowplane.domain.schema import SchemaRegistry, TooNew
from flowplane.errors import Conflict, Internal
from flowplane.services.common import Window
from flowplane.services.history import Version
from flowplane.services.upgrade import upgrade_documents
from flowplane.storage import open_repository
from flowplane.storage.base import HistoryKey
from tests.storage import upgrade_model
from tests.storage.conftest import PG, drop_schema
from tests.storage.fixtures.make_release_db import build, settings
from tests.storage.upgrade_model import NEW, OLD, rename

FIXTURE = Path(__file__).parent / "fixtures" / "release-1.db"
BEFORE_HISTORY = Path(__file__).parent / "fixtures" / "release-0.db"  # commit 38facbe's
ROOT = Path(__file__).resolve().parents[2]


# --- the registry (pure) -----------------------------------------------------------------------


def test_a_kind_is_at_version_one_plus_its_upgrades_registered_in_order() -> None:
    reg = SchemaRegistry()
    assert [reg.current(k) for k in schema.KINDS] == [1, 1, 1, 1]
    reg.register("cluster", 1)(rename)
    reg.register("cluster", 2)(lambda d: {**d, "v3": True})
    assert reg.current("cluster") == 3 and reg.current("listener") == 1
    with pytest.raises(ValueError, match="in order"):
        reg.register("cluster", 2)(rename)
    with pytest.raises(ValueError, match="unknown document kind"):
        reg.register("secret", 1)


def test_upgrade_runs_the_steps_from_the_documents_version_and_never_changes_its_input() -> None:
    reg = SchemaRegistry()
    reg.register("cluster", 1)(rename)
    reg.register("cluster", 2)(lambda d: {**d, "v3": True})
    doc = {"name": "a", OLD: 2}
    assert reg.upgrade("cluster", doc, 1, "x") == {"name": "a", NEW: 2, "v3": True}
    assert reg.upgrade("cluster", {"name": "a", NEW: 2}, 2, "x") == {
        "name": "a",
        NEW: 2,
        "v3": True,
    }
    assert reg.upgrade("cluster", doc, 3, "x") is doc  # current: as it is
    assert doc == {"name": "a", OLD: 2}


def test_a_document_from_a_newer_release_is_refused_naming_it() -> None:
    with pytest.raises(TooNew) as info:
        SchemaRegistry().upgrade("listener", {}, 2, "stored listener 'edge'")
    assert "stored listener 'edge'" in info.value.message
    assert "schemaVersion 2" in info.value.message and "newer release" in info.value.message


def test_what_an_api_generated_follows_its_kinds_upgrades(monkeypatch: pytest.MonkeyPatch) -> None:
    """An API row keeps the Native specs it generated, in the shapes of the release that wrote
    it: they are upgraded with their kinds (a virtual host as a route config holding it), from
    the versions recorded with them (absent: 1), and the new versions are recorded."""
    reg = SchemaRegistry()
    reg.register("cluster", 1)(
        lambda d: {**{k: v for k, v in d.items() if k != "endpoints"}, "targets": d["endpoints"]}
    )
    reg.register("route_config", 1)(
        lambda d: {**d, "virtualHosts": [{**vh, "v2": True} for vh in d["virtualHosts"]]}
    )
    monkeypatch.setattr(schema, "REGISTRY", reg)
    gen = {
        "clusters": {"c": {"name": "c", "endpoints": [1]}},
        "virtualHosts": {"rc": {"name": "v"}},
    }
    up = upgrade_generated(gen, "API x")
    assert up == {
        "clusters": {"c": {"name": "c", "targets": [1]}},
        "virtualHosts": {"rc": {"name": "v", "v2": True}},
        "schemaVersions": {"cluster": 2, "route_config": 2, "listener": 1},
    }
    assert gen == {
        "clusters": {"c": {"name": "c", "endpoints": [1]}},
        "virtualHosts": {"rc": {"name": "v"}},
    }
    assert upgrade_generated(up, "API x") is up  # current: nothing to do
    partly = {**gen, "schemaVersions": {"cluster": 2}}  # clusters already v2, the rest v1
    assert upgrade_generated(partly, "API x")["clusters"] == gen["clusters"]
    with pytest.raises(TooNew, match="generated cluster 'c'"):
        upgrade_generated({**gen, "schemaVersions": {"cluster": 3}}, "API x")


def test_this_release_writes_version_one_of_every_kind() -> None:
    """Nothing has changed shape yet: a release that changes a document adds its upgrade."""
    assert [schema.current(k) for k in schema.KINDS] == [1, 1, 1, 1]


# --- real databases ----------------------------------------------------------------------------


@pytest.fixture
async def aio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    async with trio_asyncio.open_loop() as loop:
        yield loop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def release_db(
    request: pytest.FixtureRequest, tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> AsyncIterator[str]:
    """A database written by this release: a copy of the committed SQLite fixture, or the
    fixture's script run against a fresh PostgreSQL schema (dropped afterwards)."""
    if request.param == "sqlite":
        shutil.copy(FIXTURE, tmp_path / "release.db")
        yield f"sqlite:///{tmp_path}/release.db"
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{PG}?schema={name}"
    await build(url)
    try:
        yield url
    finally:
        await drop_schema(name, aio_loop)


@pytest.fixture
async def next_release(release_db: str) -> AsyncIterator[None]:
    """This process becomes the release whose cluster model renamed connectTimeoutSeconds
    (once the database was written by this one)."""
    undo = upgrade_model.install()
    try:
        yield
    finally:
        undo()


async def stored(url: str) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    """Every current document as stored: (kind, name) -> (schema_version, spec)."""
    repo = await open_repository(url)
    try:
        out = {(r.kind, r.name): (r.schema_version, r.spec) for r in await repo.load_all()}
        for a in await repo.load_rows("apis"):
            out["api", a["id"]] = (a["schema_version"], a["spec"])
        return out
    finally:
        await repo.aclose()


def expected_after(before: dict[tuple[str, str], tuple[int, dict[str, Any]]]) -> dict[Any, Any]:
    """What the v2 release must store: clusters renamed (every value kept), the rest as is."""
    return {
        (kind, name): (2, rename(copy.deepcopy(spec))) if kind == "cluster" else (v, spec)
        for (kind, name), (v, spec) in before.items()
    }


async def test_the_fixture_holds_every_kind_at_version_one(release_db: str) -> None:
    before = await stored(release_db)
    assert {k for k, _ in before} == {"cluster", "route_config", "listener", "api"}
    assert {v for v, _ in before.values()} == {1}
    assert sum(OLD in spec for (k, _), (_, spec) in before.items() if k == "cluster") >= 4


async def test_startup_upgrades_every_document_and_carries_every_value(
    release_db: str, next_release: None, caplog: pytest.LogCaptureFixture
) -> None:
    before = await stored(release_db)
    timeouts = {n: s.get(OLD, 5.0) for (k, n), (_, s) in before.items() if k == "cluster"}
    with caplog.at_level(logging.INFO, logger="flowplane.upgrade"):
        async with open_core(settings(release_db)) as core:
            for name, seconds in timeouts.items():
                model = core.state.require(Kind.CLUSTER, name).model
                assert isinstance(model, Cluster) and model.connect_timeout_seconds == seconds
            # old versions in history are read in the current shape; a rollback stores it
            hist = core.services.history
            raw = await core.repo.history_versions(HistoryKey("cluster", None, "edited"), 1, 1)
            assert raw[0].schema_version == 1 and raw[0].spec is not None and OLD in raw[0].spec
            v1 = await hist.version(SYSTEM, "cluster", "edited", 1)
            assert isinstance(v1, Version) and v1.spec == rename(copy.deepcopy(raw[0].spec))
            back = await hist.rollback(SYSTEM, "cluster", "retired", 1, None)
            assert back.spec[NEW] == 9 and OLD not in back.spec  # type: ignore[union-attr]
    lines = [r.getMessage() for r in caplog.records if "upgraded" in r.getMessage()]
    # the clusters, and the API whose row keeps the cluster it generated (in the cluster shape)
    assert len(lines) == 1 and f"upgraded {len(timeouts) + 1} stored document(s)" in lines[0]
    assert "what it generated: cluster 1 -> 2" in lines[0]
    assert "cluster 'backend': schemaVersion 1 -> 2" in lines[0]
    after = await stored(release_db)
    after.pop(("cluster", "retired"))  # re-created by the rollback above
    assert after == expected_after(before)
    async with open_core(settings(release_db)) as core:
            # what the API generated was upgraded with its cluster: the ownership rule still
            # tells a Native-only field (accepted) from a generated one (409)
            (made,) = next(iter(core.state.apis.values())).owned(Kind.CLUSTER)
            res = core.services.resources
            assert (await res.patch(SYSTEM, Kind.CLUSTER, made, {NEW: 7})).spec[NEW] == 7
            with pytest.raises(Conflict, match="belong to the API"):
                await res.patch(SYSTEM, Kind.CLUSTER, made, {"endpoints": [
                    {"host": "127.0.0.1", "port": 1}]})  # fmt: skip
    # a second start has nothing to do
    repo = await open_repository(release_db)
    try:
        assert await upgrade_documents(repo) == []
    finally:
        await repo.aclose()


async def test_a_database_of_the_release_before_history_keeps_its_versions_as_history(
    tmp_path: Path, aio_loop: asyncio.AbstractEventLoop
) -> None:
    """The release before history (no schema versions, no history table) wrote
    `release-0.db`: migration 0005 marks its documents schemaVersion 1 and makes each one's
    current version the first its history knows, so it can be rolled back to at once."""
    shutil.copy(BEFORE_HISTORY, tmp_path / "old.db")
    url = f"sqlite:///{tmp_path}/old.db"
    with sqlite3.connect(tmp_path / "old.db") as c:
        old = {(k, n): (v, json.loads(s)) for k, n, v, s in
               c.execute("SELECT kind, name, version, spec FROM resources")}  # fmt: skip
    async with open_core(settings(url)) as core:
        hist, res = core.services.history, core.services.resources
        for (kind, name), (version, spec) in old.items():
            page = await hist.list(SYSTEM, kind, name, Window())
            assert [r.version for r in page.items] == [version]
            found = await hist.version(SYSTEM, kind, name, version)
            assert isinstance(found, Version) and found.spec == spec
        await res.patch(SYSTEM, Kind.CLUSTER, "edited", {OLD: 8})
        back = await hist.rollback(SYSTEM, "cluster", "edited", 3, '"4"')
        assert back.spec == old["cluster", "edited"][1] and back.version == 5  # type: ignore[union-attr]
    assert {v for v, _ in (await stored(url)).values()} == {1}


async def test_check_lists_what_would_change_and_writes_nothing(release_db: str) -> None:
    """`flowplane db upgrade --check` (the real command, as the next release): one line per
    document with its RFC 6902 change; the database is untouched."""
    before = await stored(release_db)
    out = await run_driver("cli", "db", "upgrade", "--check", "--database-url", release_db)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    clusters = sorted(n for k, n in before if k == "cluster")
    assert sorted(ln.split("'")[1] for ln in lines if ln.startswith("cluster ")) == clusters
    assert f'"path":"/{NEW}"' in out.stdout.decode()  # each change as RFC 6902 operations
    assert (
        f"{len(clusters) + 1} document(s) would be upgraded (nothing was written)"
        in out.stdout.decode()
    )
    assert await stored(release_db) == before
    done = await run_driver("cli", "db", "upgrade", "--database-url", release_db)
    assert done.returncode == 0
    assert f"upgraded {len(clusters) + 1} document(s)" in done.stdout.decode()
    assert await stored(release_db) == expected_after(before)


async def test_a_document_from_a_newer_release_stops_startup_and_changes_nothing(
    release_db: str, next_release: None
) -> None:
    """A listener stored with schemaVersion 5 (unknown here): start-up refuses, naming it, and
    the clusters it would otherwise upgrade stay as they were (one transaction)."""
    await set_schema_version(release_db, "listener", "web", 5)
    before = await stored(release_db)
    with pytest.raises(TooNew) as info:
        async with open_core(settings(release_db)):
            pass
    assert "listener 'web'" in info.value.message and "schemaVersion 5" in info.value.message
    assert await stored(release_db) == before


async def test_an_upgrade_whose_result_does_not_validate_changes_nothing(release_db: str) -> None:
    """An upgrade step that produces an invalid document: start-up refuses naming it, and the
    documents upgraded before it in the same transaction are rolled back."""
    undo = upgrade_model.install(lambda d: {**rename(d), "bogus": 1})
    try:
        before = await stored(release_db)
        with pytest.raises(Internal, match="does not validate after its upgrade"):
            async with open_core(settings(release_db)):
                pass
        assert await stored(release_db) == before
    finally:
        undo()


@pytest.mark.e2e
async def test_a_killed_upgrade_leaves_the_old_documents_and_the_next_start_completes_it(
    release_db: str,
) -> None:
    """SIGKILL while the upgrade transaction is open (the first cluster already rewritten in
    it): every document is still v1 as it was; the next run upgrades them all."""
    before = await stored(release_db)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.storage.upgrade_driver", release_db, "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = b""
        with trio.fail_after(30):
            while b"upgrading" not in seen:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    pytest.fail(f"the upgrade ended before it was killed: {seen!r}")
                seen += chunk
        proc.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            assert await proc.wait() == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
    assert await stored(release_db) == before
    done = await run_driver(release_db)
    assert done.returncode == 0, done.stderr
    assert await stored(release_db) == expected_after(before)


async def run_driver(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "tests.storage.upgrade_driver", *args],
            cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip


async def set_schema_version(url: str, kind: str, name: str, version: int) -> None:
    """Mark one stored document as written by another release (straight SQL)."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as c:
            c.execute(
                "UPDATE resources SET schema_version = ? WHERE kind = ? AND name = ?",
                (version, kind, name),
            )
        return
    dsn, _, query = url.partition("?schema=")

    async def update() -> None:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": query})
        try:
            await conn.execute(
                "UPDATE resources SET schema_version = $1 WHERE kind = $2 AND name = $3",
                version, kind, name,
            )  # fmt: skip
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(update)()


@pytest.mark.e2e
async def test_flowplane_serve_refuses_a_newer_document_in_one_line(tmp_path: Path) -> None:
    """The real `flowplane serve`: exit code 2 and one line naming the document, no traceback
    (the refusal is raised inside the server's nurseries)."""
    shutil.copy(FIXTURE, tmp_path / "newer.db")
    url = f"sqlite:///{tmp_path}/newer.db"
    await set_schema_version(url, "cluster", "backend", 3)
    env = {**os.environ, "FLOWPLANE_API_ADDRESS": "127.0.0.1:0",
           "FLOWPLANE_XDS_ADDRESS": "127.0.0.1:0"}  # fmt: skip
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "flowplane.cli.main", "serve", "--database-url", url],
            capture_stdout=True, capture_stderr=True, check=False, env=env,
        )  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err
    assert "flowplane: stored cluster 'backend' has schemaVersion 3" in err
