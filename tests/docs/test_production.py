"""docs/production.md run as written (tests/docs/harness.py): PostgreSQL role and database,
openssl certificates, TLS on the REST API and xDS, token-authenticated xDS, a team with its own
token and its own Envoy (traffic through it), isolation from another team, pg_dump/pg_restore,
and SQLite's online backup and restore; plus its settings table (and the README's) checked
against flowplane/settings.py so they cannot rot.

Issue 17 acceptance: "A new user following only README + production guide gets a team-scoped,
TLS-protected, PostgreSQL-backed Flowplane serving a real Envoy; the guide's commands are run by
a test." Only the ports and the PostgreSQL role/database names are changed (per run, so runs and
other users of the shared server do not collide); they are dropped afterwards."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowplane.settings import Settings
from tests.docs.harness import ROOT, DocShell, doctest_blocks

GUIDE = (ROOT / "docs" / "production.md").read_text()
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-v", "ON_ERROR_STOP=1"]


# -- the settings tables ---------------------------------------------------------------------------


def _rows(markdown: str) -> dict[str, str]:
    """`FLOWPLANE_X` -> its Default cell, from every table row naming variables in column 1."""
    out = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith(("`FLOWPLANE_", "`OTEL_")):
            for var in re.findall(r"`((?:FLOWPLANE|OTEL)_[A-Z0-9_]+)`", cells[0]):
                out[var] = cells[1]
    return out


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("doc", ["docs/production.md", "README.md"])
def test_settings_table_matches_settings(doc: str) -> None:
    """Every setting of flowplane/settings.py has a row, with its real default (a described
    default such as `127.0.0.1:<xds port>` stands for unset), and no row names a setting that
    does not exist."""
    rows = _rows((ROOT / doc).read_text())
    fields = {  # OpenTelemetry's standard variables keep their own names (no FLOWPLANE_)
        name.upper() if name.startswith("otel_") else f"FLOWPLANE_{name.upper()}": f.default
        for name, f in Settings.model_fields.items()
    }
    assert sorted(rows) == sorted(fields), f"{doc}: rows and settings differ"
    for var, default in fields.items():
        cell = rows[var].strip("`")
        if default is None and "<" in cell:
            continue
        assert cell == _shown(default), f"{doc}: {var} says {rows[var]}, settings.py {default!r}"


# -- the guide, run -----------------------------------------------------------------------------


def _postgres_up() -> bool:
    try:
        return subprocess.run([*PSQL, "-c", "select 1"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def guide_shell(tmp_path: Path) -> Iterator[DocShell]:
    import os

    if not _postgres_up():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is required in CI")
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable")
    run = uuid.uuid4().hex[:10]
    names = {"flowplane_db": f"fp_db_{run}", "flowplane_restore": f"fp_restore_{run}",
             "flowplane_user": f"fp_user_{run}"}  # fmt: skip
    with DocShell(tmp_path / "work") as sh:
        sh.names = names
        try:
            yield sh
        finally:
            sh.close()  # the server first: it holds connections to the database
            drops = [f"DROP DATABASE IF EXISTS {names[d]} WITH (FORCE)"
                     for d in ("flowplane_db", "flowplane_restore")]  # fmt: skip
            for sql in [*drops, f"DROP ROLE IF EXISTS {names['flowplane_user']}"]:
                subprocess.run([*PSQL, "-c", sql], capture_output=True, timeout=30, check=True)


@pytest.mark.e2e
@pytest.mark.postgres
def test_production_guide(guide_shell: DocShell) -> None:
    blocks = doctest_blocks(GUIDE)
    assert len(blocks) == 8, "the guide's tested blocks changed: update this test"
    out = [" ".join(o.split()) for o in guide_shell.run(blocks, timeout=240)]
    create_db, certs, start, team, resources, envoy, isolation, pg_backup = out
    assert create_db == ""
    assert certs == "pki/server.pem: OK"
    assert re.fullmatch(r"applied: 0001\S* .* 200", start), start
    assert team == "201"
    assert resources == "201 201 201 payments"
    assert envoy == "1 200 [('payments', True)]"
    assert isolation == "404 []"
    assert pg_backup == "the database is up to date"
    # TLS was really on: plain HTTP to the API port is not answered as HTTP
    port = guide_shell.ports[8080]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).raise_for_status()
    log = (guide_shell.work / "flowplane.log").read_text()
    assert "FLOWPLANE_XDS_AUTH=none" not in log and "connected: node team=payments/" in log


@pytest.mark.e2e
def test_sqlite_backup_and_restore(tmp_path: Path) -> None:
    """§7 on SQLite: an online `.backup` and `VACUUM INTO` of a running server's database pass
    an integrity check; after the restore steps the server starts on the copy, with the
    resource the backup contained and without the one created after it."""
    (backup,) = doctest_blocks(GUIDE, "sqlite")
    (restore,) = doctest_blocks(GUIDE, "sqlite-restore")
    with DocShell(tmp_path / "work") as sh:
        token = sh.serve()
        api = f"http://127.0.0.1:{sh.ports[8080]}/api/v1/native/clusters"
        auth = {"Authorization": f"Bearer {token}"}

        def cluster(name: str) -> int:
            body = {"name": name, "endpoints": [{"host": "127.0.0.1", "port": 8000}]}
            return httpx.post(api, json=body, headers=auth, timeout=10).status_code

        assert cluster("before-backup") == 201
        (out,) = sh.run([backup])
        assert out.split() == ["ok"]
        assert (sh.work / "flowplane-vacuumed.db").stat().st_size > 0
        assert cluster("after-backup") == 201
        sh.stop_server()
        sh.run([restore])
        sh.serve()
        names = [c["name"] for c in httpx.get(api, headers=auth, timeout=10).json()["items"]]
        assert "before-backup" in names and "after-backup" not in names


@pytest.mark.e2e
def test_moving_from_sqlite_copies_the_configuration(tmp_path: Path) -> None:
    """§1 "Moving from SQLite": the copy loop moves teams, Native resources (a team's and shared
    ones) and Platform API definitions from one server to a fresh one; what the APIs generated
    is generated again there, not copied; the default gateway is left alone."""
    (move,) = doctest_blocks(GUIDE, "move")
    with DocShell(tmp_path / "old") as old, DocShell(tmp_path / "new") as new:
        old_token, new_token = old.serve(), new.serve()
        base = f"http://127.0.0.1:{old.ports[8080]}/api/v1"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {old_token}"}) as c:
            for path, body in [
                ("/teams", {"name": "payments"}),
                ("/native/clusters", {"name": "ledger", "team": "payments",
                                      "endpoints": [{"host": "127.0.0.1", "port": 8000}]}),
                ("/native/clusters", {"name": "shared", "endpoints": [{"host": "10.0.0.1",
                                                                       "port": 80}]}),
                ("/native/route-configs", {"name": "web", "virtualHosts": [{
                    "name": "all", "domains": ["*"], "routes": [{
                        "match": {"path": {"type": "prefix", "value": "/"}},
                        "action": {"type": "forward", "cluster": "shared"}}]}]}),
                ("/native/listeners", {"name": "web", "address": "127.0.0.1", "port": 10080,
                                       "filterChains": [{"filters": [{
                                           "type": "httpConnectionManager",
                                           "routeConfigName": "web"}]}]}),
                ("/platform/apis", {"name": "pets", "domain": "pets.local", "upstreams": [
                    {"url": "http://127.0.0.1:8001"}], "routes": [{"path": "/pets"}]}),
            ]:  # fmt: skip
                r = c.post(path, json=body)
                assert r.status_code == 201, (path, r.text)
        new_url = f"http://127.0.0.1:{new.ports[8080]}"
        old.names = {"https://flowplane.internal:8080": new_url}
        old.env |= {"OLD_TOKEN": old_token, "NEW_TOKEN": new_token}
        (out,) = old.run([move])
        assert sorted(out.split("\n")) == sorted([
            "teams 201", "native/clusters 201", "native/clusters 201",
            "native/route-configs 201", "native/listeners 201", "platform/apis 201", "",
        ]), out  # fmt: skip
        with httpx.Client(base_url=f"{new_url}/api/v1",
                          headers={"Authorization": f"Bearer {new_token}"}) as c:  # fmt: skip
            clusters = {x["name"]: x for x in c.get("/native/clusters").json()["items"]}
            assert clusters["ledger"]["team"] == "payments" and "shared" in clusters
            assert [x["name"] for x in c.get("/platform/apis").json()["items"]] == ["pets"]
            assert any(x["source"] == "platform" for x in clusters.values())  # generated anew
            assert c.get("/native/listeners/web").status_code == 200
