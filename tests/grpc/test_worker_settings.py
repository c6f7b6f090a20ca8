"""`FLOWPLANE_XDS_WORKERS` / `flowplane serve --xds-workers N` (issue 14)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from flowplane.cli.main import _settings, app
from flowplane.errors import ConfigurationError
from flowplane.grpc.pool import default_workers
from flowplane.settings import load_settings


@pytest.mark.parametrize("bad", [-1, 257, "many"])
def test_bad_worker_counts_are_refused(db_url: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="FLOWPLANE_XDS_WORKERS"):
        load_settings(database_url=db_url, xds_workers=bad)


def test_the_default_is_one_worker_per_usable_cpu(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset means "one per CPU" (decided at serve time); the test suite sets 0 (conftest)."""
    monkeypatch.delenv("FLOWPLANE_XDS_WORKERS", raising=False)
    assert load_settings(database_url=db_url).xds_workers is None
    assert default_workers() == len(os.sched_getaffinity(0))


def test_the_command_line_overrides_the_environment(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --xds-workers N` beats FLOWPLANE_XDS_WORKERS (the option is passed to the
    settings as an override); a value that is no number is a usage error."""
    monkeypatch.setenv("FLOWPLANE_XDS_WORKERS", "3")
    monkeypatch.setenv("FLOWPLANE_DATABASE_URL", db_url)
    assert _settings(xds_workers="0").xds_workers == 0
    assert _settings().xds_workers == 3
    runner = CliRunner()
    assert "--xds-workers" in runner.invoke(app, ["serve", "--help"]).output
    assert runner.invoke(app, ["serve", "--xds-workers", "many"]).exit_code == 2
