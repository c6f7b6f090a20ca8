"""The README's walk-throughs, run as written against a real `flowplane serve` with its default
settings (authenticated xDS included) and a real Envoy (tests/docs/harness.py).

Issue 17 item 7: "The quick start must still be two commands and the walk-through must still
work unchanged" after xDS authentication became the default."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.harness import ROOT, DocShell, sh_blocks

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[DocShell]:
    with DocShell(tmp_path / "work") as sh:
        yield sh


def test_quick_start_is_two_commands() -> None:
    """The quick start block is two commands: install+serve, install+test."""
    (block,) = sh_blocks(README, "## Quick start")
    commands = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 2, commands
    assert commands[0].endswith("flowplane serve") and "XDS_AUTH" not in block
    # `.ci/run` runs exactly the second one (after its PostgreSQL and Chromium set-up)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == commands[1]


def test_the_otlp_protocol_files_are_opentelemetry_protos() -> None:
    """xds-protos installs older copies of the OTLP .proto modules into the same package; the
    install commands put opentelemetry-proto's back, or the OTLP trace exporter cannot load."""
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope")


def test_first_api_in_five_minutes(shell: DocShell) -> None:
    """"Your first API in five minutes": import an OpenAPI document, fetch the scope=all
    bootstrap (which carries a data-plane token under the default token auth), start Envoy,
    and the upstream's index comes back through the default gateway, then 5 a minute -> 429."""
    (block,) = sh_blocks(README, "## Your first API in five minutes (Platform API)")
    token = shell.serve()
    (out,) = shell.run([f"TOKEN={token}\n", block])[1:]
    assert '"name":"pets"' in out.replace('": "', '":"'), out
    assert "Directory listing for /" in out, out  # python's http.server index through Envoy
    assert out.rstrip().endswith("200 200 200 200 429 429"), out
    assert "key: authorization" in (shell.work / "envoy.yaml").read_text()  # token auth is on
    log = shell.stop_server()
    assert "FLOWPLANE_XDS_AUTH=none" not in log  # the default is not the unauthenticated mode
    assert re.search(r"xDS sotw stream \d+ connected: node dp-", log), log


def test_walk_through(shell: DocShell) -> None:
    """"Walk-through": cluster, route config, listener, the scope=all bootstrap and Envoy, the
    nodes list, a change, HTTP filters: 5 requests a minute on the listener -> the sixth 429,
    with the header added on the way. The walk-through starts its own upstreams (python's
    http.server on 8000, and on 8001 where its change moves the cluster)."""
    (block,) = sh_blocks(README, "## Walk-through")
    shell.serve()
    (out,) = shell.run([block])
    assert '"name":"backend"' in out.replace(": ", ":"), out
    assert '"versionAcknowledged"' in out, out  # /api/v1/nodes lists the connected Envoy
    assert "dataplane" not in out  # the minted token is inside envoy.yaml, not printed
    assert out.rstrip().endswith("200 200 200 200 200 429"), out
