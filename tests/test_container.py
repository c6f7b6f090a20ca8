"""The container image (issue 17 item 9): its Dockerfile, the health probe it runs, and the
start-up check that names the uid when the /data directory is not writable.

The image itself is not built here: the base image comes from a registry this machine cannot
reach and there is no Docker engine (see README "Docker"). What can be checked without one is
checked for real: the Dockerfile's instructions, the probe against a real server, the check
against a real unwritable directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowplane.cli.main import main
from flowplane.errors import ConfigurationError
from flowplane.storage.sqlite import check_location
from tests.docs.harness import ROOT, DocShell


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_runs_unprivileged_with_a_data_volume_and_a_healthcheck() -> None:
    """"no HEALTHCHECK; ... a host directory mounted on /data is not writable by the image's
    non-root user": the image runs as a non-root user, keeps the database in the /data volume,
    and its HEALTHCHECK runs the readiness probe with the image's own Python (no curl)."""
    ins = instructions()
    words = [w for w, _ in ins]
    (user,) = [a for w, a in ins if w == "USER"]
    assert user not in ("root", "0")
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert [a for w, a in ins if w == "VOLUME"] == ['["/data"]']
    env = " ".join(a for w, a in ins if w == "ENV")
    assert "FLOWPLANE_DATABASE_URL=sqlite:////data/flowplane.db" in env
    assert "FLOWPLANE_XDS_AUTH" not in env  # the authenticated default applies
    (health,) = [a for w, a in ins if w == "HEALTHCHECK"]
    options, _, cmd = health.partition(" CMD ")
    assert {o.split("=")[0] for o in options.split()} >= {"--interval", "--timeout", "--retries"}
    assert json.loads(cmd) == ["python", "-m", "flowplane.cli.healthcheck"]
    assert [a for w, a in ins if w == "ENTRYPOINT"] == ['["flowplane"]']


@pytest.fixture
def served(tmp_path: Path) -> Iterator[DocShell]:
    with DocShell(tmp_path / "work") as sh:
        yield sh


@pytest.mark.e2e
def test_healthcheck_probe_follows_readiness(served: DocShell) -> None:
    """The HEALTHCHECK command exits 0 while a real server answers /readyz 200 on the port of
    FLOWPLANE_API_ADDRESS (as the image sets it: 0.0.0.0:<port>), and 1 once it is gone."""
    served.serve()
    env = {**os.environ, "FLOWPLANE_API_ADDRESS": f"0.0.0.0:{served.ports[8080]}"}
    cmd = [sys.executable, "-m", "flowplane.cli.healthcheck"]
    assert subprocess.run(cmd, env=env, timeout=30, capture_output=True).returncode == 0
    served.stop_server()
    gone = subprocess.run(cmd, env=env, timeout=30, capture_output=True, text=True)
    assert gone.returncode == 1 and "/readyz" in gone.stderr


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot write: mode 555, or for root (whom modes do not stop)
    the immutable attribute."""
    d = tmp_path / "data"
    d.mkdir()
    if os.getuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available here")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)


def test_unwritable_database_directory_is_named_with_the_uid(
    unwritable: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database directory the process cannot write (a host directory mounted on /data that
    uid 10001 does not own) stops `flowplane serve` at start, exit 2, with a message naming the
    directory, its owner and the uid to give it to -- not SQLite's "unable to open database
    file" in a traceback. Nothing is created."""
    url = f"sqlite:///{unwritable}/flowplane.db"
    with pytest.raises(ConfigurationError) as err:
        check_location(url)
    msg = err.value.message
    assert f"uid {os.getuid()} gid {os.getgid()}" in msg and str(unwritable) in msg
    assert f"owned by uid {unwritable.stat().st_uid}" in msg and "--user" in msg
    monkeypatch.setenv("FLOWPLANE_DATABASE_URL", url)
    assert main(["serve"]) == 2
    assert "cannot write the database" in capsys.readouterr().err
    assert list(unwritable.iterdir()) == []


def test_database_location_is_created_and_checked(tmp_path: Path) -> None:
    """A missing directory is created (as before); an existing writable file passes."""
    url = f"sqlite:///{tmp_path}/new/dir/flowplane.db"
    check_location(url)
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new/dir").iterdir())
    (tmp_path / "new/dir/flowplane.db").write_bytes(b"")
    check_location(url)
    check_location("sqlite:///:memory:")
