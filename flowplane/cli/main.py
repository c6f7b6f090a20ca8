"""The `flowplane` command: `serve`, `db migrate`."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

import trio
import trio_asyncio

from flowplane.errors import FlowplaneError
from flowplane.observability.logging import configure_logging
from flowplane.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flowplane", description="Envoy control plane")
    p.add_argument("--version", action="version", version=f"flowplane {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the control plane (REST API + xDS)")
    serve.add_argument("--database-url", help="overrides FLOWPLANE_DATABASE_URL")
    serve.add_argument("--api-address", help="overrides FLOWPLANE_API_ADDRESS")
    serve.add_argument(
        "--xds-workers", type=int, metavar="N",
        help="xDS worker processes sharing the xDS port (default: one per CPU; 0: serve xDS "
        "in this process); overrides FLOWPLANE_XDS_WORKERS",
    )  # fmt: skip
    db = sub.add_parser("db", help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    mig = dbsub.add_parser("migrate", help="apply pending migrations and exit")
    mig.add_argument("--database-url", help="overrides FLOWPLANE_DATABASE_URL")
    tok = sub.add_parser("token", help="tokens, straight in the database")
    toksub = tok.add_subparsers(dest="token_command", required=True)
    create = toksub.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=["admin", "platform-engineer", "api-developer",
                                           "data-plane"])  # fmt: skip
    create.add_argument("--scope", action="append", default=[], dest="scopes")
    create.add_argument("--team", action="append", default=[], dest="teams")
    create.add_argument("--database-url", help="overrides FLOWPLANE_DATABASE_URL")
    return p


def _version() -> str:
    try:
        return importlib.metadata.version("flowplane")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: v
        for k, v in {
            "database_url": getattr(args, "database_url", None),
            "api_address": getattr(args, "api_address", None),
            "xds_workers": getattr(args, "xds_workers", None),
        }.items()
        if v is not None
    }
    return load_settings(**overrides)


async def _migrate(settings: Settings) -> None:
    from flowplane.storage import open_repository

    async with trio_asyncio.open_loop():  # the PostgreSQL driver runs on asyncio
        repo = await open_repository(settings.database_url)
        try:
            applied = await repo.migrate()
        finally:
            await repo.aclose()
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "serve":
            from flowplane.app import run_server

            trio.run(run_server, settings)
        elif args.command == "db":
            trio.run(_migrate, settings)
        elif args.command == "token":
            from flowplane.cli.token import create_token

            token = trio.run(create_token, settings, args.name, args.role, args.scopes, args.teams)
            print(token)
            print(f"flowplane: token {args.name!r} written to {settings.database_url}",
                  file=sys.stderr)  # fmt: skip
    except FlowplaneError as err:
        print(f"flowplane: {err.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
