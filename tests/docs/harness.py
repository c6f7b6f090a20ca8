"""Run the shell blocks of the documentation, as written, against real processes.

A reader copies a fenced ```sh block into a terminal where `flowplane serve` runs with its
defaults; `DocShell` does the same: it starts a real `flowplane serve` process (default settings,
only the database file and the ports chosen by the test), then runs blocks with bash, in order, in
one shell session so that variables (`TOKEN`, `AUTH`, `API`, ...) carry from block to block.

What the harness changes, and nothing else:

- **Ports**: every port of `DOC_PORTS` that appears in a block (8080 for the REST API, 10000 for
  the default gateway, 8000 for an upstream, ...) is replaced by a free port of this run, the
  same one everywhere (the server is started on the mapped ports), so parallel test runs and
  other engineers' processes on the machine do not collide with the documented numbers.
- **`TOKEN=<...>`**: a line assigning a placeholder gets the admin token from the server's
  banner; `$ADMIN_TOKEN` is also set for blocks that mean "your admin token".
- **`envoy`**: a wrapper first on PATH runs the real Envoy 1.40 (`--disable-hot-restart
  --concurrency 1`) with the given bootstrap, moving its admin listener to a free port (every
  bootstrap says 9901 by default and several Envoys run at once here), and returns once Envoy is
  LIVE (admin `/ready` answers 200), leaving it running — what a reader's second terminal does.
  Envoy's output goes where the command's would. It fails if Envoy exits or is not LIVE within
  30 s.

Every process a block starts (upstreams with `&`, Envoys) runs in the bash process's own session;
`close()` kills that process group by its id, then the server by its pid.

Blocks are chosen by `sh_blocks(markdown, heading)` (the ```sh blocks of one section) or
`doctest_blocks(markdown)` (the ```sh blocks right after a `<!-- doctest -->` line).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import httpx

from flowplane.testing.envoy import envoy_binary
from flowplane.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]

DOC_PORTS = (8080, 8000, 8001, 8002, 10000, 10080, 10081, 10082, 10083, 10084, 10085, 10443, 18000)
"""The ports the documents use; each gets a free port of the run (same number everywhere)."""

_FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
_TOKEN_LINE = re.compile(r"^TOKEN=<[^>\n]*>[ \t]*$", re.M)
_BANNER_TOKEN = re.compile(r"^ (ey[\w-]+\.[\w-]+\.[\w-]+)$", re.M)
_MARK = "<!-- doctest -->"

ENVOY_WRAPPER = r'''#!{python}
"""`envoy` for documentation tests (tests/docs/harness.py): the real Envoy, admin moved to a
free port, returns once LIVE and leaves Envoy running."""
import json, os, subprocess, sys, time, urllib.request
import yaml
args = sys.argv[1:]
config = args[args.index("-c") + 1]
with open(config) as f:
    text = f.read()
boot = json.loads(text) if text.lstrip().startswith("{{") else yaml.safe_load(text)
boot["admin"]["address"]["socket_address"]["port_value"] = 0
base = os.path.abspath(f".envoy-{{os.getpid()}}")
with open(base + ".yaml", "w") as f:
    yaml.safe_dump(boot, f)
rest = [a for i, a in enumerate(args) if a != "-c" and (i == 0 or args[i - 1] != "-c")]
proc = subprocess.Popen(  # Envoy's stdout and stderr are the caller's, as with the real one
    [{envoy!r}, "-c", base + ".yaml", "--admin-address-path", base + ".admin",
     "--disable-hot-restart", "--concurrency", "1", "-l", "warning", *rest],
    stdin=subprocess.DEVNULL,
)
with open({pids!r}, "a") as f:
    f.write(f"{{proc.pid}}\n")
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    if proc.poll() is not None:
        break
    try:
        with open(base + ".admin") as f:
            admin = f.read().strip()
        if admin and urllib.request.urlopen(f"http://{{admin}}/ready", timeout=1).status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.stderr.write(f"envoy (pid {{proc.pid}}) is not LIVE (exit code {{proc.poll()}})\n")
sys.exit(1)
'''


def sh_blocks(markdown: str, heading: str) -> list[str]:
    """The ```sh blocks of the section whose heading line is `heading` (up to the next heading
    of the same or a higher level; `#` lines inside fences are not headings)."""
    level = len(heading.split(" ", 1)[0])
    lines, section, inside, fenced = markdown.splitlines(keepends=True), [], False, False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            if inside and len(line.split(" ", 1)[0]) <= level:
                break
            inside = inside or line.rstrip("\n") == heading
        if inside:
            section.append(line)
    if not section:
        raise LookupError(f"no section {heading!r}")
    return [m.group(1) for m in _FENCE.finditer("".join(section))]


def doctest_blocks(markdown: str, tag: str = "") -> list[str]:
    """The ```sh blocks marked for testing: a `<!-- doctest -->` line right before the fence
    (`<!-- doctest: TAG -->` for a group a test runs on its own)."""
    mark = f"<!-- doctest: {tag} -->" if tag else _MARK
    out = []
    for m in _FENCE.finditer(markdown):
        before = markdown[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() == mark:
            out.append(m.group(1))
    return out


class DocShell:
    """A real `flowplane serve` and a bash session to run documentation blocks in."""

    def __init__(self, work: Path, env: Mapping[str, str] | None = None) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.ports = {p: free_port() for p in DOC_PORTS}
        self.pids_file = work / ".pids"
        self.pids_file.touch()
        bin_dir = work / ".bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "envoy"
        wrapper.write_text(
            ENVOY_WRAPPER.format(
                python=sys.executable, envoy=envoy_binary(), pids=str(self.pids_file)
            )
        )
        wrapper.chmod(0o755)
        venv_bin = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(work),
            **(env or {}),
        }
        self.names: dict[str, str] = {}  # word -> replacement (e.g. database names of a run)
        self.server: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.server_log = work / "server.log"

    # -- the server ---------------------------------------------------------------------------

    def serve(self, extra_env: Mapping[str, str] | None = None, *, scheme: str = "http") -> str:
        """Start `flowplane serve` with its defaults but for the database file and the mapped
        ports; wait until /readyz answers 200; return the first admin token (from the banner)."""
        env = {
            **self.env,
            "FLOWPLANE_DATABASE_URL": f"sqlite:///{self.work}/flowplane.db",
            "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{self.ports[8080]}",
            "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{self.ports[18000]}",
            "FLOWPLANE_DEFAULT_GATEWAY_ADDRESS": f"0.0.0.0:{self.ports[10000]}",
            **(extra_env or {}),
        }
        with self.server_log.open("ab") as out:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "flowplane.cli.main", "serve"],
                env=env, cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        url = f"{scheme}://127.0.0.1:{self.ports[8080]}/readyz"
        while True:
            if self.server.poll() is not None:
                raise AssertionError(f"flowplane serve exited:\n{self.server_log.read_text()}")
            try:
                if httpx.get(url, verify=False, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"flowplane serve not ready:\n{self.server_log.read_text()}")
            time.sleep(0.05)
        found = _BANNER_TOKEN.search(self.server_log.read_text())
        self.token = found.group(1) if found else self.token
        self.env["ADMIN_TOKEN"] = self.token
        return self.token

    def stop_server(self) -> str:
        """SIGTERM the server (by pid), wait for it; return its log."""
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None
        return self.server_log.read_text() if self.server_log.exists() else ""

    # -- blocks -------------------------------------------------------------------------------

    def localise(self, block: str) -> str:
        """The block with the run's names (`names`, first), ports and admin token put in (see
        the module doc)."""
        text = block
        for word, replacement in self.names.items():
            text = re.sub(rf"\b{re.escape(word)}\b", replacement, text)
        ports = "|".join(str(p) for p in self.ports)
        text = re.sub(
            rf"(?<![\d.])({ports})(?!\d)", lambda m: str(self.ports[int(m.group(1))]), text
        )
        return _TOKEN_LINE.sub(f"TOKEN={self.token}", text)

    def run(self, blocks: Iterable[str], *, timeout: float = 120) -> list[str]:
        """Run `blocks` in one bash session (`set -e`: the first failing command stops it);
        return each block's stdout. Raises AssertionError with the output on failure."""
        blocks = list(blocks)
        script = ["set -e"]
        for i, block in enumerate(blocks):
            script += [f"printf '\\n@@block {i}@@\\n'", self.localise(block)]
        script.append("printf '\\n@@end@@\\n'")
        (self.work / "script.sh").write_text("\n".join(script) + "\n")
        # Output goes to files, not pipes: what a block leaves running (`&`) keeps them open.
        stdout, stderr = self.work / "script.out", self.work / "script.err"
        with stdout.open("wb") as out_f, stderr.open("wb") as err_f:
            proc = subprocess.Popen(
                ["bash", str(self.work / "script.sh")],
                cwd=self.work, env=self.env, stdout=out_f, stderr=err_f,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self._groups.append(proc.pid)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(proc.pid)
            proc.wait()
        out, err = stdout.read_text(), stderr.read_text()
        if proc.returncode != 0 or "\n@@end@@\n" not in out:
            raise AssertionError(
                f"a documented command failed (exit {proc.returncode}).\nstdout:\n{out}\n"
                f"stderr:\n{err}\nserver log tail:\n{self._log_tail()}"
            )
        parts = re.split(r"\n@@block \d+@@\n", out.split("\n@@end@@\n")[0])
        return parts[1:]

    def _log_tail(self) -> str:
        return self.server_log.read_text()[-3000:] if self.server_log.exists() else "(none)"

    _groups: list[int]

    def __enter__(self) -> DocShell:
        self._groups = []
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop what the blocks started (their process groups, the Envoys by pid), then the
        server."""
        for pid in self.pids_file.read_text().split():
            _kill(int(pid))
        for pgid in self._groups:
            self._kill_group(pgid)
        self.stop_server()

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
