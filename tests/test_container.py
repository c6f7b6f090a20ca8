"""The container image (issue 17 item 9): its Dockerfile, the health probe it runs, and the
start-up check that names the uid when the /data directory is not writable.

The image itself is not built here: the base image comes from a registry this machine cannot
reach and there is no Docker engine (see README "Docker"). What can be checked without one is
checked for real: the Dockerfile's instructions, the probe against a real server, the check
against a real unwritable directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowplane.cli.main import main
from flowplane.errors import ConfigurationError
from flowplane.storage.sqlite import check_location
from flowplane.testing.ports import free_port
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


# -- the image, built and run (slow; needs podman, root and a locally made base image) ----------

BASE = "localhost/python:3.11-slim"
"""The base the test builds FROM instead of Docker Hub's python:3.11-slim (not reachable from
this project's machines). Made once, as root, from Debian packages (Debian 12's Python is 3.11):

    apt-get install -y debootstrap podman
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm ROOTFS
    ln -s python3 ROOTFS/usr/bin/python
    tar -C ROOTFS -c . | podman import --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' - BASE

(plus `--change 'ENV PIP_CERT=/etc/ssl/host-ca.crt'` and pip's index settings where PyPI is
reached through a proxy with its own CA; the test mounts the host's CA bundle at that path)."""


def _podman(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


def _image_ready() -> str | None:
    """Why the image cannot be built and run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (Debian package `podman`)"
    if os.getuid() != 0:
        return "mounting the image and running it in a chroot needs root"
    if subprocess.run(["podman", "image", "exists", BASE], capture_output=True).returncode:
        return f"no local base image {BASE} (see BASE in this module for how to make one)"
    return None


@pytest.fixture
def image() -> Iterator[tuple[str, Path, dict[str, str]]]:
    """The image built from the Dockerfile (Docker format, so HEALTHCHECK is kept): its tag,
    its root filesystem mounted read-only, and its environment."""
    reason = _image_ready()
    if reason:
        pytest.skip(reason)
    tag = f"localhost/flowplane-test:{uuid.uuid4().hex[:8]}"
    _podman(
        "build", "--format", "docker", "--isolation", "chroot", "--network", "host",
        "-v", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro",
        "--from", BASE, "-t", tag, str(ROOT), timeout=900,
    )  # fmt: skip
    try:
        root = Path(_podman("image", "mount", tag))
        env = dict(e.split("=", 1) for e in json.loads(_podman(
            "image", "inspect", tag, "--format", "{{json .Config.Env}}")))  # fmt: skip
        yield tag, root, env
    finally:
        subprocess.run(["podman", "image", "unmount", tag], capture_output=True)
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)


def _in_image(root: Path, env: dict[str, str], *cmd: str) -> list[str]:
    """`cmd` inside the image's filesystem as the image's user (uid 10001), with its env."""
    return ["chroot", "--userspec=10001:10001", str(root), "env", "-i", "HOME=/home/flowplane",
            *(f"{k}={v}" for k, v in env.items()), *cmd]  # fmt: skip


@pytest.mark.e2e
def test_image_builds_and_runs(image: tuple[str, Path, dict[str, str]], tmp_path: Path) -> None:
    """The Dockerfile builds (against a locally made base); its config keeps the HEALTHCHECK and
    the non-root user; run as uid 10001 with a host directory owned by 10001 on /data it serves
    and the HEALTHCHECK command reports healthy; with a root-owned directory on /data it stops
    at once (exit 2) with the message naming uid 10001. (Run in a chroot of the image's
    filesystem: `podman run` itself is not permitted on this machine's kernel settings.)"""
    tag, root, env = image
    config = json.loads(_podman("image", "inspect", tag, "--format", "{{json .Config}}"))
    health = json.loads(_podman("image", "inspect", tag, "--format", "{{json .HealthCheck}}"))
    assert health["Test"] == ["CMD", "python", "-m", "flowplane.cli.healthcheck"]
    assert config["User"] == "flowplane" and "/data" in config["Volumes"]
    port = free_port()
    env = {**env, "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{port}",
           "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{free_port()}",
           "FLOWPLANE_DEFAULT_GATEWAY": "false"}  # fmt: skip
    for owner, expect_ready in ((10001, True), (0, False)):
        data = tmp_path / f"data-{owner}"
        data.mkdir()
        os.chown(data, owner, 0)
        subprocess.run(["mount", "--bind", str(data), str(root / "data")], check=True)
        # A container's /tmp is writable (its own layer, or a tmpfs with --read-only); here the
        # image is mounted read-only, so give it one: the xDS worker processes' control socket
        # lives there.
        scratch = tmp_path / f"tmp-{owner}"
        scratch.mkdir()
        scratch.chmod(0o1777)
        subprocess.run(["mount", "--bind", str(scratch), str(root / "tmp")], check=True)
        try:
            with (tmp_path / f"serve-{owner}.log").open("wb") as log:
                server = subprocess.Popen(_in_image(root, env, "flowplane", "serve"), stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            try:
                if expect_ready:
                    deadline = time.monotonic() + 60
                    while subprocess.run(_in_image(root, env, "python", "-m",
                                                   "flowplane.cli.healthcheck"),
                                         capture_output=True).returncode:  # fmt: skip
                        assert server.poll() is None, (tmp_path / f"serve-{owner}.log").read_text()
                        assert time.monotonic() < deadline, "the healthcheck never passed"
                        time.sleep(0.5)
                    assert (data / "flowplane.db").stat().st_uid == 10001
                else:
                    assert server.wait(60) == 2
                    text = (tmp_path / f"serve-{owner}.log").read_text()
                    assert "this process runs as uid 10001" in text, text
            finally:
                if server.poll() is None:
                    server.send_signal(signal.SIGTERM)
                    server.wait(30)
        finally:
            subprocess.run(["umount", str(root / "tmp")], check=True)
            subprocess.run(["umount", str(root / "data")], check=True)
