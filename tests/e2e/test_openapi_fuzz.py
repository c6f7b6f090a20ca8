"""Schemathesis against the running REST API, driven by our own /openapi.json.

Every operation gets schema-valid and schema-violating requests (fixed seed, deterministic), with
and without a token, with undeclared methods, and stateful sequences. The test fails on any 5xx,
any status code, content type or response body the document does not declare, a public endpoint
not marked public (or a private one answering without a token), a 405 without `Allow`, and an
invalid request accepted. The checks it leaves out, and why: tests/e2e/schemathesis.toml.

It found, when first run: PATCH /teams/{team} with the body `null` deleting the team (500), and
PATCH /tokens/{id} with `null` revoking the token; both fixed, with their own regression test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from flowplane.app import open_core, serve_api
from flowplane.settings import load_settings
from flowplane.testing.plane import admin_token
from flowplane.testing.ports import free_port

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
RUN = "from schemathesis.cli import schemathesis; schemathesis()"


async def test_the_api_keeps_its_openapi_contract_under_fuzzing(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/fuzz.db",
        api_address=f"127.0.0.1:{free_port()}",
        default_gateway=True,  # something to find, refuse to delete, conflict with
        rate_limit_per_minute=10_000_000,
    )
    with trio.fail_after(110):
        async with open_core(settings) as core, trio.open_nursery() as nursery:
            shutdown = trio.Event()
            binds = await nursery.start(lambda task_status: serve_api(
                core, shutdown=shutdown, task_status=task_status))  # fmt: skip
            base = binds[0]
            result = await trio.run_process(
                [
                    sys.executable, "-c", RUN, "--config-file", str(CONFIG),
                    "run", f"{base}/openapi.json",
                    "-H", f"Authorization: Bearer {admin_token(core)}",
                    "--max-examples", "6", "--seed", "20261126", "--generation-deterministic",
                    "--workers", "2",
                    "--request-timeout", "10", "--no-color",
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=tmp_path,
            )
            shutdown.set()
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, out[-6000:]
    assert "36/36" in out or "Tested:" in out, out[-2000:]
