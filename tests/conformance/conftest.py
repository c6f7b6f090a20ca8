"""Fixtures for the xDS conformance suite: a real plane per test (SQLite file, ADS on loopback)."""

from __future__ import annotations

import pytest

from flowplane.settings import Settings, load_settings


@pytest.fixture
def xds_settings(db_url: str) -> Settings:
    """Settings for `run_plane`: any free xDS port, no default gateway, a 1 ms debounce (every
    REST write is published on its own unless a test asks for a longer window)."""
    return load_settings(
        database_url=db_url, xds_address="127.0.0.1:0", default_gateway=False,
        snapshot_debounce_seconds=0.001,
    )  # fmt: skip
