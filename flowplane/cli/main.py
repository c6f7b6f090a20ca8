"""The `flowplane` command.

Server side (they use the configuration of `flowplane.settings`, never the REST API): `serve`,
`db migrate`, `db upgrade [--check]`, and the recovery `token create`, which writes to the
database. Everything else is a client of the REST API (`flowplane.cli.client`); server-side
modules are imported only by the commands that need them, so a client command starts quickly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flowplane.cli import ops, resources
from flowplane.cli.client import FAILED, USAGE, CliError, report
from flowplane.cli.context import Root

if TYPE_CHECKING:
    from flowplane.settings import Settings

app = typer.Typer(
    name="flowplane",
    help="Envoy control plane: run the server, or manage one over its REST API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)


def _version() -> str:
    import importlib.metadata  # only here: it costs a client command's start-up otherwise

    try:
        return importlib.metadata.version("flowplane")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"flowplane {_version()}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(envvar="FLOWPLANE_SERVER", show_envvar=True,
                     help="the server's URL (else the profile's, else http://127.0.0.1:8080)"),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="FLOWPLANE_TOKEN", show_envvar=True, help="API token")
    ] = None,
    ca: Annotated[
        str | None,
        typer.Option(envvar="FLOWPLANE_CA", show_envvar=True, help="PEM CA bundle for HTTPS"),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(envvar="FLOWPLANE_PROFILE", show_envvar=True,
                     help="config file profile (else the file's current one)"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(envvar="FLOWPLANE_CONFIG", show_envvar=True,
                     help="config file (else ~/.config/flowplane/config.yaml)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each answer")] = 30.0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:  # fmt: skip
    ctx.obj = Root(server, token, ca, profile, config, timeout)


# -- server side -----------------------------------------------------------------------------------

DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="overrides FLOWPLANE_DATABASE_URL")
]


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    api_address: Annotated[
        str | None, typer.Option("--api-address", help="overrides FLOWPLANE_API_ADDRESS")
    ] = None,
    xds_workers: Annotated[
        int | None,
        typer.Option(
            "--xds-workers", metavar="N",
            help="xDS worker processes sharing the xDS port (default: one per CPU; 0: serve"
            " xDS in this process); overrides FLOWPLANE_XDS_WORKERS",
        ),
    ] = None,
) -> None:
    """Run the control plane (REST API + xDS)."""
    import trio

    from flowplane.app import run_server

    settings = _settings(
        database_url=database_url, api_address=api_address,
        xds_workers=None if xds_workers is None else str(xds_workers),
    )  # fmt: skip
    def run() -> None:
        _check_location(settings)
        trio.run(run_server, settings)

    _server_side(run)


db = typer.Typer(rich_markup_mode="markdown", no_args_is_help=True, help="database maintenance")
app.add_typer(db, name="db")


@db.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending migrations and exit."""
    import trio

    settings = _settings(database_url=database_url)
    def run() -> None:
        _check_location(settings)
        trio.run(_migrate, settings)

    _server_side(run)


@db.command()
def upgrade(
    database_url: DatabaseUrl = None,
    check: Annotated[
        bool, typer.Option("--check", help="list what would change; write nothing")
    ] = False,
) -> None:
    """Upgrade stored documents to this release's schema versions (migrations first, unless
    --check: then they must be applied already), in one transaction."""
    import trio

    settings = _settings(database_url=database_url)
    _server_side(lambda: trio.run(_upgrade, settings, check))


class Role(StrEnum):
    admin = "admin"
    platform_engineer = "platform-engineer"
    api_developer = "api-developer"
    data_plane = "data-plane"


token_app = typer.Typer(
    rich_markup_mode="markdown",
    no_args_is_help=True,
    help="tokens, straight in the database (recovery)",
)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option("--name")],
    role: Annotated[Role | None, typer.Option("--role")] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope")] = None,
    team: Annotated[list[str] | None, typer.Option("--team")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token in the database and print it (once)."""
    import trio

    from flowplane.cli.token import create_token

    settings = _settings(database_url=database_url)
    role_name = role.value if role else None

    def run() -> None:
        token = trio.run(create_token, settings, name, role_name, scope or [], team or [])
        print(token)
        print(f"flowplane: token {name!r} written to {settings.database_url}", file=sys.stderr)

    _server_side(run)


def _settings(**overrides: str | None) -> Settings:
    from flowplane.errors import FlowplaneError
    from flowplane.observability.logging import configure_logging
    from flowplane.settings import load_settings

    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except FlowplaneError as err:
        raise CliError(err.message, USAGE) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _check_location(settings: Settings) -> None:
    """`serve` and `db migrate` may create the SQLite file: a directory they cannot write is a
    clear message (owner, mode, the uid to give it to), not SQLite's "unable to open"."""
    if settings.database_url.startswith("sqlite:"):
        from flowplane.storage.sqlite import check_location

        check_location(settings.database_url)


def _server_side(run: Callable[[], None]) -> None:
    """Run a server-side command: a refusal (bad settings, not a Flowplane database) is one
    line on stderr and exit code 2."""
    from flowplane.errors import FlowplaneError

    try:
        run()
    except FlowplaneError as err:
        raise CliError(err.message, USAGE) from None
    except BaseExceptionGroup as group:
        # A start-up refusal raised inside a nursery (the trio-asyncio loop's, the core's)
        # arrives wrapped: answer with the error itself, as for any other refusal (e.g. a
        # document written by a newer release), not with a traceback.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if isinstance(leaf, FlowplaneError):
            raise CliError(leaf.message, USAGE) from None
        raise


async def _migrate(settings: Settings) -> None:
    import trio_asyncio

    from flowplane.storage import open_repository

    async with trio_asyncio.open_loop():  # the PostgreSQL driver runs on asyncio
        repo = await open_repository(settings.database_url)
        try:
            applied = await repo.migrate()
        finally:
            await repo.aclose()
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")


async def _upgrade(settings: Settings, check: bool) -> None:
    import json

    import trio_asyncio

    from flowplane.services.upgrade import describe, patch_of, upgrade_documents
    from flowplane.storage import open_repository

    async with trio_asyncio.open_loop():
        repo = await open_repository(settings.database_url)
        try:
            if not check:
                applied = await repo.migrate()
                if applied:
                    print("applied migrations: " + ", ".join(applied))
            changes = await upgrade_documents(repo, check=check)
        finally:
            await repo.aclose()
    for change in changes:
        print(describe(change))
        for op in patch_of(change):
            print("    " + json.dumps(op, separators=(",", ":")))
    if not changes:
        print("every stored document has the current schema version: nothing to upgrade")
    elif check:
        print(f"{len(changes)} document(s) would be upgraded (nothing was written)")
    else:
        print(f"upgraded {len(changes)} document(s)")


# -- client side -----------------------------------------------------------------------------------

ops.register(app)
resources.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit code (README "Command line"). Every failure is one
    message on stderr (the server's message and field details for a refused request), never a
    traceback."""
    try:
        command = typer.main.get_command(app)
        command.main(args=argv, prog_name="flowplane", standalone_mode=True)
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else FAILED)
    except CliError as err:
        return report(err)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug: say what, without a traceback
        leaf: BaseException = err
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]  # the error itself, not the nursery that carried it
        print(f"flowplane: unexpected error ({type(leaf).__name__}): {leaf}", file=sys.stderr)
        return FAILED
    return 0


def _only_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
        leaf = leaf.exceptions[0]
    return leaf


if __name__ == "__main__":
    sys.exit(main())
