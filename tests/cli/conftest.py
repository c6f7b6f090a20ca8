"""A real `flowplane serve` process per test module and the real `flowplane` CLI as a
subprocess: no HTTP mocks anywhere."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowplane.testing.ports import free_port

CLI = [sys.executable, "-m", "flowplane.cli.main"]


@dataclass
class Server:
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def api(self) -> httpx.Client:
        """A plain HTTP client as the admin, for checking what the CLI did."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )


def start_server(
    directory: Path, extra_env: Mapping[str, str] | None = None, ca: Path | None = None
) -> Server:
    """`flowplane serve` on loopback ports in `directory`; returns once /readyz answers 200
    with the first admin token read from its banner. With `ca`, the API is served over HTTPS
    (`extra_env` has the certificate) and checked against that CA."""
    directory.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), directory / "server.log"
    env = {
        **os.environ,
        "FLOWPLANE_DATABASE_URL": f"sqlite:///{directory}/fp.db",
        "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{port}",
        "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{free_port()}",
        "FLOWPLANE_DEFAULT_GATEWAY_ADDRESS": f"127.0.0.1:{free_port()}",
        "FLOWPLANE_SNAPSHOT_DEBOUNCE_SECONDS": "0.001",
        **(extra_env or {}),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*CLI, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"{'https' if ca else 'http'}://127.0.0.1:{port}"
    verify: Any = ssl.create_default_context(cafile=str(ca)) if ca else True
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2, verify=verify).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server not ready in 30 s:\n{log.read_text()}")
        time.sleep(0.05)
    token = re.search(r"^ (ey[\w-]+\.[\w-]+\.[\w-]+)$", log.read_text(), re.M)
    assert token, log.read_text()
    return Server(url, token.group(1), proc, log)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield s
    finally:
        s.stop()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> Result:
    """The real CLI as a subprocess with exactly `env` on top of a clean environment (no
    FLOWPLANE_* leaking in from the developer's shell)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPLANE_")}
    base.pop("VISUAL", None)
    base.pop("EDITOR", None)
    done = subprocess.run(
        [*CLI, *args], env={**base, **(env or {})}, input=stdin, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr  # errors are messages, never tracebacks
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Any:
    """`cli(*args)`: the CLI against the module's server as its admin (FLOWPLANE_SERVER and
    FLOWPLANE_TOKEN, a config file of this test's own)."""
    base = {
        "FLOWPLANE_SERVER": server.url,
        "FLOWPLANE_TOKEN": server.token,
        "FLOWPLANE_CONFIG": str(tmp_path / "config.yaml"),
    }

    def call(*args: str, env: Mapping[str, str] | None = None, stdin: str | None = None) -> Result:
        return run_cli(*args, env={**base, **(env or {})}, stdin=stdin)

    return call


def ok(r: Result) -> Result:
    assert r.code == 0, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    return r
