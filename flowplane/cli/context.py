"""What every client command shares: the root options and the one `Client` made from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from flowplane.cli.client import Client, CliError, Connection, default_config_path, resolve
from flowplane.cli.output import Format


@dataclass
class Root:
    server: str | None = None
    token: str | None = None
    ca: str | None = None
    profile: str | None = None
    config: Path | None = None
    timeout: float = 30.0
    _client: Client | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.config or default_config_path()

    def connection(self) -> Connection:
        return resolve(self.server, self.token, self.ca, self.profile, self.config_path)

    def client(self, ctx: typer.Context) -> Client:
        if self._client is None:
            self._client = Client(self.connection(), self.timeout)
            ctx.call_on_close(self._client.close)
        return self._client


def client(ctx: typer.Context) -> Client:
    root = ctx.find_root().obj
    if not isinstance(root, Root):  # invoked without the root callback (never from the CLI)
        root = ctx.find_root().obj = Root()
    return root.client(ctx)


def read_input(path: Path) -> str:
    """A file's text, `-` for stdin."""
    if str(path) == "-":
        import sys

        return sys.stdin.read()
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read {path}: {err}") from None


def single(data: list[Any], where: str) -> Any:
    if len(data) != 1:
        raise CliError(f"{where}: expected one document, found {len(data)}")
    return data[0]


OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="table (for people), json or yaml (for scripts)")
]
TeamOpt = Annotated[
    str | None,
    typer.Option("--team", "-t", help="the team the name belongs to (sent as ?team=)"),
]
FileOpt = Annotated[Path, typer.Option("--file", "-f", help="a JSON or YAML file; - reads stdin")]
