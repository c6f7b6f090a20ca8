"""The REST client behind every client command: where the server is, which token to send, and
how an answer becomes output or an exit code.

Connection settings are resolved, for each of server URL, token and CA bundle, from (first
wins): the command-line flag, the `FLOWPLANE_*` environment variable, the selected profile of
the config file, the default. The config file is `--config`/`$FLOWPLANE_CONFIG`, else
`$XDG_CONFIG_HOME/flowplane/config.yaml` (`~/.config/flowplane/config.yaml`). The environment
is read by typer (each option's `envvar`), never here: `flowplane.settings` is the only module
of ours that reads it.

Exit codes (README "Command line"): a script can tell the kind of failure from the code alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import yaml

DEFAULT_SERVER: Final = "http://127.0.0.1:8080"

# Exit codes scripts can rely on (README "Command line" lists them).
OK: Final = 0
FAILED: Final = 1  # the server failed (500) or answered something unexpected
USAGE: Final = 2  # bad command line, config file or input file (the server was not asked)
EXIT_BY_ERROR: Final[Mapping[str, int]] = {
    "unauthorized": 3,
    "forbidden": 4,
    "quota_exceeded": 4,
    "not_found": 5,
    "conflict": 6,
    "precondition_failed": 7,
    "bad_request": 8,
    "payload_too_large": 8,
    "unsupported_media_type": 8,
    "rate_limited": 9,
    "unavailable": 10,
}
UNREACHABLE: Final = 10  # no answer at all (connection refused, timeout, TLS failure) or 503
EXIT_BY_STATUS: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


class CliError(Exception):
    """A failure to report on stderr as one message (+ field details) and an exit code."""

    def __init__(
        self, message: str, code: int = USAGE, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details or []

    def lines(self) -> Iterator[str]:
        yield f"flowplane: {self.message}"
        for d in self.details:
            where = d.get("field")
            yield f"  {where}: {d.get('message')}" if where else f"  {d.get('message')}"


class ApiError(CliError):
    """The server refused a request: its error kind, message and field details."""

    def __init__(self, status: int, kind: str, message: str, details: list[dict[str, Any]]):
        super().__init__(message, EXIT_BY_ERROR.get(kind, FAILED), details)
        self.status = status
        self.kind = kind


# -- configuration ------------------------------------------------------------------------------


def default_config_path() -> Path:
    """`$XDG_CONFIG_HOME/flowplane/config.yaml` (typer's app dir; `~/.config/flowplane`)."""
    import typer

    return Path(typer.get_app_dir("flowplane")) / "config.yaml"


def read_config(path: Path) -> dict[str, Any]:
    """The config file as `{current?, profiles: {name: {server?, token?, ca?}}}`; {} if absent."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"cannot read the config file {path}: {err}") from None
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise CliError(f"the config file {path} has no `profiles:` mapping of mappings")
    return data


def write_profile(path: Path, name: str, profile: Mapping[str, str], make_current: bool) -> None:
    """Store `profile` under `name` (replacing it); the file is readable by its owner only, as
    it holds tokens."""
    data = read_config(path) or {"profiles": {}}
    data["profiles"][name] = dict(profile)
    if make_current or "current" not in data:
        data["current"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(data, out, sort_keys=False)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Connection:
    server: str
    token: str | None
    ca: str | None
    profile: str | None


def resolve(
    server: str | None, token: str | None, ca: str | None, profile: str | None, path: Path
) -> Connection:
    """Flag or FLOWPLANE_* environment (the option's `envvar`: typer gives the flag
    precedence) > config file profile > default, per setting."""
    data = read_config(path)
    name = profile or data.get("current")
    stored: Mapping[str, Any] = {}
    if name is not None:
        profiles = data.get("profiles", {})
        if name not in profiles:
            if profile is not None:  # asked for explicitly: a typo must not fall back silently
                raise CliError(f"no profile {name!r} in {path} (flowplane login --profile)")
        else:
            stored = profiles[name]

    def pick(given: str | None, key: str) -> str | None:
        value = given or stored.get(key)
        return str(value) if value else None

    url = pick(server, "server") or DEFAULT_SERVER
    return Connection(url.rstrip("/"), pick(token, "token"), pick(ca, "ca"), name)


# -- HTTP -------------------------------------------------------------------------------------


@dataclass
class Client:
    """One connection to the server for the life of a command (keep-alive between requests)."""

    conn: Connection
    timeout: float = 30.0
    _http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        headers = {"User-Agent": "flowplane-cli"}
        if self.conn.token:
            headers["Authorization"] = f"Bearer {self.conn.token}"
        verify: Any = True
        if self.conn.ca:
            if not Path(self.conn.ca).is_file():
                raise CliError(f"the CA bundle {self.conn.ca} does not exist")
            import ssl

            verify = ssl.create_default_context(cafile=self.conn.ca)
        self._http = httpx.Client(
            base_url=self.conn.server, headers=headers, verify=verify, timeout=self.timeout
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; any answer other than 2xx raises `ApiError` with the server's
        message, no answer at all raises `CliError` (exit code UNREACHABLE)."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = self._http.request(
                method, path, params=clean, json=json, content=content, headers=headers
            )
        except httpx.TransportError as err:
            raise CliError(
                f"cannot reach the server at {self.conn.server}: {err or type(err).__name__}",
                UNREACHABLE,
            ) from None
        if r.is_success:
            return r
        raise error_of(r)

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    page_size: int = 1000  # the API's largest `limit`

    def list_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list endpoint, page by page (lists are never truncated silently)."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get_json(path, limit=self.page_size, offset=len(items), **params)
            items.extend(page["items"])
            if not page["items"] or len(items) >= page["total"]:
                return items


def error_of(r: httpx.Response) -> ApiError:
    """The server's error body (api.md: `{error, message, details}`), or a stand-in for an
    answer without one (a proxy's page, a 5xx from elsewhere)."""
    kind = EXIT_BY_STATUS.get(r.status_code, "internal")
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        details = body.get("details")
        return ApiError(
            r.status_code,
            str(body.get("error") or kind),
            body["message"],
            details if isinstance(details, list) else [],
        )
    text = r.text.strip().splitlines()[0][:200] if r.text.strip() else r.reason_phrase
    return ApiError(r.status_code, kind, f"HTTP {r.status_code} from the server: {text}", [])


def report(err: CliError) -> int:
    for line in err.lines():
        print(line, file=sys.stderr)
    return err.code
