"""The HA example (docker-compose.yml, docs/ha/envoy.yaml). Docker is not available on this
project's machines, so the compose file is not run; what can be checked without it is: the
Envoy bootstrap is accepted by the real Envoy (`--mode validate`), it lists both replicas' xDS
addresses as the compose file names them, and both replicas share one PostgreSQL database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flowplane.testing.envoy import validate_bootstrap

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BOOTSTRAP = ROOT / "docs" / "ha" / "envoy.yaml"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.mark.e2e
async def test_the_example_envoy_bootstrap_validates(tmp_path: Path) -> None:
    """The rule: the documented bootstrap is one the real Envoy 1.40 accepts."""
    await validate_bootstrap(load(BOOTSTRAP), tmp_dir=tmp_path)


def test_the_example_wires_both_replicas_to_one_database() -> None:
    """The rule: both replicas share one database URL, and the Envoy's xDS cluster names both
    replicas' services at the xDS port they listen on."""
    services = load(COMPOSE)["services"]
    a, b = services["flowplane-a"]["environment"], services["flowplane-b"]["environment"]
    assert a["FLOWPLANE_DATABASE_URL"] == b["FLOWPLANE_DATABASE_URL"]
    assert a["FLOWPLANE_DATABASE_URL"].startswith("postgresql://")
    xds_port = int(a["FLOWPLANE_XDS_ADDRESS"].rpartition(":")[2])
    (xds,) = [c for c in load(BOOTSTRAP)["static_resources"]["clusters"]]
    endpoints = {
        (e["endpoint"]["address"]["socket_address"]["address"],
         e["endpoint"]["address"]["socket_address"]["port_value"])
        for group in xds["load_assignment"]["endpoints"] for e in group["lb_endpoints"]
    }  # fmt: skip
    assert endpoints == {("flowplane-a", xds_port), ("flowplane-b", xds_port)}
    assert "./docs/ha/envoy.yaml:/etc/envoy/envoy.yaml:ro" in services["envoy"]["volumes"]
