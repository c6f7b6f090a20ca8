"""`flowplane serve` as a real process: socket traffic, SIGTERM, restart on the same database."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from flowplane.testing.factories import cluster_body
from flowplane.testing.ports import free_port

pytestmark = pytest.mark.e2e


async def start(db: Path, port: int, log: Path) -> trio.Process:
    env = {
        **os.environ,
        "FLOWPLANE_DATABASE_URL": f"sqlite:///{db}",
        "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{port}",
        "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    with log.open("ab") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "flowplane.cli.main", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    async with httpx.AsyncClient() as c:
        with trio.fail_after(30):
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited early:\n{log.read_bytes().decode()}")  # noqa: ASYNC240
                try:
                    if (await c.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        return proc
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)


async def stop(proc: trio.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        return await proc.wait()


async def test_serve_sigterm_restart_keeps_data(tmp_path: Path) -> None:
    db, log, port = tmp_path / "data" / "fp.db", tmp_path / "server.log", free_port()
    proc = await start(db, port, log)
    try:
        # the first start prints the admin token once, in a banner on stderr
        token = re.search(r"^ (ey[\w-]+\.[\w-]+\.[\w-]+)$", log.read_text(), re.M)
        assert token, log.read_text()
        auth = {"Authorization": f"Bearer {token.group(1)}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as c:
            assert (await c.get("/api/v1/native/clusters")).status_code == 200
            assert (
                await c.get("/api/v1/native/clusters", headers={"Authorization": ""})
            ).status_code == 401
            r = await c.post("/api/v1/native/clusters", json=cluster_body())
            assert r.status_code == 201
            created = r.json()
        assert await stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert "flowplane ready: REST API on http://127.0.0.1:" in text
    assert "received SIGTERM" in text and "shutting down" in text

    proc = await start(db, port, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as c:
            assert (await c.get("/api/v1/native/clusters/backend")).json() == created
        assert await stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
    second_start = log.read_text().split("received SIGTERM")[1]
    assert "applied migrations" not in second_start
    assert "admin token" not in second_start  # printed once only, on the first start


async def test_bad_settings_refuse_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWPLANE_DATABASE_URL": "mysql://nope", "FLOWPLANE_API_ADDRESS": "x"}
    result = await trio.run_process(
        [sys.executable, "-m", "flowplane.cli.main", "serve"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 2
    assert b"FLOWPLANE_API_ADDRESS" in result.stderr


async def test_cli_token_create_recovers_a_running_server(tmp_path: Path) -> None:
    db, log, port = tmp_path / "fp.db", tmp_path / "server.log", free_port()
    proc = await start(db, port, log)
    try:
        env = {**os.environ, "FLOWPLANE_DATABASE_URL": f"sqlite:///{db}"}
        result = await trio.run_process(
            [sys.executable, "-m", "flowplane.cli.main", "token", "create", "--role", "admin",
             "--name", "recovery"],
            env=env, capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        token = result.stdout.decode().strip()
        assert token.count(".") == 2
        assert f"written to sqlite:///{db}".encode() in result.stderr
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as c:
            with trio.fail_after(10):  # issue 17 item 2: accepted on its very first use
                assert (await c.get("/api/v1/tokens")).status_code == 200
            names = [t["name"] for t in (await c.get("/api/v1/tokens")).json()["items"]]
            assert names == ["initial-admin", "recovery"]
        assert await stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()


async def test_cli_token_create_never_creates_a_database(tmp_path: Path) -> None:
    """Issue 17 item 3: run where no database is, `token create` used to make a new empty one
    and print a token no server accepts. It refuses (exit 2, saying why), creates nothing; run
    against the server's database it says which database it wrote."""
    missing = tmp_path / "elsewhere" / "flowplane.db"
    env = {**os.environ, "FLOWPLANE_DATABASE_URL": f"sqlite:///{missing}"}
    cmd = [sys.executable, "-m", "flowplane.cli.main", "token", "create", "--role", "admin",
           "--name", "recovery"]  # fmt: skip
    result = await trio.run_process(cmd, env=env, capture_stdout=True, capture_stderr=True,
                                    check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert b"no database at" in result.stderr and not result.stdout
    assert not missing.exists() and not missing.parent.exists()
    # a file that is not a Flowplane database is refused too, and not made into one
    other = tmp_path / "other.db"
    other.write_bytes(b"")
    env["FLOWPLANE_DATABASE_URL"] = f"sqlite:///{other}"
    result = await trio.run_process(cmd, env=env, capture_stdout=True, capture_stderr=True,
                                    check=False)  # fmt: skip
    assert result.returncode == 2 and b"not a Flowplane database" in result.stderr
    with sqlite3.connect(other) as conn:  # opening it set WAL mode; no table was created
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_cli_version() -> None:
    """Issue 17 item 6: `flowplane --version` answers instead of asking for a command."""
    result = subprocess.run(
        [sys.executable, "-m", "flowplane.cli.main", "--version"], capture_output=True,
        check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("flowplane 0.")


async def test_json_logs_are_json_lines_and_tell_what_happened(tmp_path: Path) -> None:
    """Issue 17 item 5: with FLOWPLANE_LOG_FORMAT=json every line on stderr is one JSON object
    (the first admin token included: it was a plain banner among the JSON), and INFO says what
    an operator needs — here, a resource write."""
    db, log, port = tmp_path / "fp.db", tmp_path / "server.log", free_port()
    os.environ["FLOWPLANE_LOG_FORMAT"] = "json"
    try:
        proc = await start(db, port, log)
    finally:
        del os.environ["FLOWPLANE_LOG_FORMAT"]
    try:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        (token,) = [entry["adminToken"] for entry in lines if "adminToken" in entry]
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth) as c:
            body = {"name": "logged", "endpoints": [{"host": "127.0.0.1", "port": 9}]}
            assert (await c.post("/api/v1/native/clusters", json=body)).status_code == 201
        assert await stop(proc) == 0
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
        assert any(e["level"] == "INFO" and "committed: create cluster logged" in e["message"]
                   for e in lines), [e["message"] for e in lines]  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
            await proc.wait()


def test_xds_auth_none_is_warned_about_at_start(tmp_path: Path) -> None:
    """Issue 17 item 7: "`none` must be chosen explicitly and logs a warning at start" -- a real
    `flowplane serve` with FLOWPLANE_XDS_AUTH=none logs one WARNING saying what it means; the
    default (token) logs none."""
    from tests.docs.harness import DocShell

    for auth, warned in (("none", True), (None, False)):
        with DocShell(tmp_path / str(auth)) as sh:
            sh.serve({"FLOWPLANE_XDS_AUTH": auth} if auth else {})
            log = sh.stop_server()
        lines = [ln for ln in log.splitlines() if "FLOWPLANE_XDS_AUTH=none" in ln]
        assert len(lines) == int(warned), log
        if warned:
            assert " WARNING " in lines[0] and "every team's configuration" in lines[0]
