"""Client commands that are not one kind's CRUD: `login`, declarative `apply` and `export`,
`import openapi`, `bootstrap`, `nodes`, `audit`."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from flowplane.cli import declarative
from flowplane.cli.client import (
    ApiError,
    Client,
    CliError,
    Connection,
    write_profile,
)
from flowplane.cli.context import OutputOpt, TeamOpt, client, read_input
from flowplane.cli.kinds import DECLARATIVE
from flowplane.cli.output import Format, cell, console, dump_json, dump_yaml, emit


def register(app: typer.Typer) -> None:
    app.command()(login)
    app.command("apply")(apply_)
    app.command("export")(export)
    imp = typer.Typer(
        rich_markup_mode="markdown", no_args_is_help=True, help="import API descriptions"
    )
    imp.command("openapi")(import_openapi)
    app.add_typer(imp, name="import")
    app.command()(bootstrap)
    app.command()(nodes)
    app.command()(audit)


# -- login -------------------------------------------------------------------------------------


def login(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option(help="the server's URL")] = None,
    token: Annotated[str | None, typer.Option(help="the API token (asked for when absent)")] = None,
    ca: Annotated[str | None, typer.Option(help="a PEM CA bundle for an HTTPS server")] = None,
    profile: Annotated[str, typer.Option(help="the profile to store")] = "default",
) -> None:
    """Check a server URL and token, then store them as a profile of the config file (the
    current one from now on)."""
    root = ctx.find_root().obj
    conn = root.connection()  # what the root flags, FLOWPLANE_* and the file already say
    secret = token or conn.token
    if not secret:
        if not sys.stdin.isatty():
            raise CliError("no token: give --token or FLOWPLANE_TOKEN")
        secret = typer.prompt("token", hide_input=True)
    conn = Connection((server or conn.server).rstrip("/"), secret, ca or conn.ca, profile)
    c = Client(conn, root.timeout)
    try:
        # Any /api/v1 GET authenticates; 401 means the token is no good, 403 only that it may
        # not list nodes (e.g. a data-plane token), which still makes a valid login.
        c.request("GET", "/api/v1/nodes", params={"limit": 1})
    except ApiError as err:
        if err.status != 403:
            raise
    finally:
        c.close()
    entry = {"server": conn.server, "token": secret} | ({"ca": conn.ca} if conn.ca else {})
    path = root.config_path
    write_profile(path, profile, entry, make_current=True)
    console().print(f"logged in to {conn.server}; profile {profile!r} saved in {path}",
                    highlight=False)  # fmt: skip


# -- declarative -----------------------------------------------------------------------------------


def apply_(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Option("--file", "-f", help="a file or directory (repeatable); - stdin")
    ],
    prune: Annotated[
        bool, typer.Option(help="delete what the files own but no longer describe")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show the plan, change nothing")
    ] = False,
    team: Annotated[
        str | None, typer.Option("--team", "-t", help="only this team's documents and scope")
    ] = None,
    diff: Annotated[bool, typer.Option(help="show a diff for each update")] = True,
    output: OutputOpt = Format.table,
) -> None:
    """Make the server match the documents: plan (create / update / unchanged / delete with
    --prune), show it, apply it in dependency order."""
    docs = declarative.load(files)
    if team is not None:
        docs = [d for d in docs if d.team == team or (d.kind.kind == "Team" and d.name == team)]
    c = client(ctx)
    # the kinds the documents use must be readable; the others only matter to --prune, and
    # a kind this token may not even list has nothing it could prune
    used = [k for k in DECLARATIVE if any(d.kind is k for d in docs)]
    optional = DECLARATIVE if prune else ()
    current = declarative.server_state(c, used, progress=True, optional=optional)
    plan = declarative.plan(docs, current, prune)
    if output is Format.table:
        declarative.show(plan, diff)
    else:
        emit([ch.to_json() for ch in [*plan.ordered(), *plan.of("unchanged")]], output)
    if dry_run or plan.empty:
        return
    lines = declarative.execute(c, plan, progress=True)
    if output is Format.table:
        for line in lines:
            console().print(line, highlight=False)
        console().print(f"applied {len(lines)} changes", highlight=False)


def export(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Option("--dir", "-d", help="write one file per resource here")
    ] = None,
    team: Annotated[
        list[str] | None, typer.Option("--team", "-t", help="only these teams (repeatable)")
    ] = None,
    output: Annotated[
        Format, typer.Option("--output", "-o", help="yaml (documents) or json (an array)")
    ] = Format.yaml,
) -> None:
    """Write the server's state as documents `flowplane apply` takes (tokens are not exported:
    their secrets cannot be re-created)."""
    current = declarative.server_state(client(ctx), (), progress=True, optional=DECLARATIVE)
    docs = declarative.export_documents(current, set(team) if team else None)
    if directory is not None:
        written = declarative.write_documents(docs, directory)
        print(f"wrote {len(written)} documents under {directory}", file=sys.stderr)
    elif output is Format.json:
        sys.stdout.write(dump_json(docs) + "\n")
    else:
        sys.stdout.write("---\n".join(dump_yaml(d) for d in docs))


# -- platform ------------------------------------------------------------------------------------


def import_openapi(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="an OpenAPI 3.0/3.1 document, JSON or YAML")],
    team: Annotated[str | None, typer.Option("--team", "-t", help="the API's team")] = None,
    domain: Annotated[str | None, typer.Option(help="default: the first server's host")] = None,
    name: Annotated[str | None, typer.Option(help="the API's name (default: the title)")] = None,
    isolation: Annotated[bool, typer.Option(help="give it a listener of its own")] = False,
    port: Annotated[int | None, typer.Option(help="the isolated listener's port")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show, change nothing")] = False,
    output: OutputOpt = Format.table,
) -> None:
    """Create (or update, same name and team) an API from an OpenAPI document."""
    text = read_input(file)
    is_json = text.lstrip().startswith("{")
    params = {
        "team": team, "domain": domain, "name": name, "port": port,
        "listenerIsolation": "true" if isolation else None, "dryRun": "true" if dry_run else None,
    }  # fmt: skip
    r = client(ctx).request(
        "POST", "/api/v1/platform/import/openapi", params=params, content=text.encode(),
        headers={"Content-Type": "application/json" if is_json else "application/yaml"},
    )  # fmt: skip
    body = r.json()
    if output is not Format.table:
        emit(body, output)
        return
    api = body.get("api") or {}
    verb = "would change" if dry_run else ("created" if r.status_code == 201 else "updated")
    console().print(f"API {api.get('name')!r} ({api.get('id') or 'not stored'}) {verb}; "
                    f"domain {api.get('domain')}", highlight=False)  # fmt: skip
    changes = body.get("changes") or []
    if changes:
        emit(changes, Format.table)
    for w in body.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)


# -- data planes -----------------------------------------------------------------------------------


class Scope(StrEnum):
    team = "team"
    allowlist = "allowlist"
    all = "all"


class Mode(StrEnum):
    sotw = "sotw"
    delta = "delta"


class BootFormat(StrEnum):
    yaml = "yaml"
    json = "json"


def bootstrap(
    ctx: typer.Context,
    team: Annotated[str, typer.Argument(help="the data plane's team")],
    scope: Annotated[Scope, typer.Option(help="what the data plane receives")] = Scope.team,
    allowlist: Annotated[
        str | None, typer.Option(help="listener names, comma-separated (scope allowlist)")
    ] = None,
    include_default: Annotated[bool, typer.Option(help="shared listeners too")] = False,
    mode: Annotated[Mode, typer.Option(help="ADS state of the world or delta")] = Mode.sotw,
    fmt: Annotated[BootFormat, typer.Option("--format", help="yaml or json")] = BootFormat.yaml,
    admin_port: Annotated[int | None, typer.Option(help="Envoy's admin port (9901)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write it here, not stdout")] = None,
) -> None:
    """An Envoy bootstrap for a data plane of TEAM."""
    params = {
        "scope": scope.value, "allowlist": allowlist, "mode": mode.value, "format": fmt.value,
        "includeDefault": "true" if include_default else None, "adminPort": admin_port,
    }  # fmt: skip
    r = client(ctx).request("GET", f"/api/v1/teams/{team}/bootstrap", params=params)
    if out is None:
        sys.stdout.write(r.text)
    else:
        out.write_text(r.text)
        print(f"wrote {out}", file=sys.stderr)


def nodes(
    ctx: typer.Context,
    node_id: Annotated[str | None, typer.Argument(help="one node (default: all)")] = None,
    output: OutputOpt = Format.table,
) -> None:
    """Connected Envoys: per resource type the version sent and acknowledged, and the last
    rejection."""
    c = client(ctx)
    items = [c.get_json(f"/api/v1/nodes/{node_id}")] if node_id else c.list_all("/api/v1/nodes")
    if output is not Format.table:
        emit(items[0] if node_id else items, output)
        return
    rows = [
        node | {"_type": t, "_res": res}
        for node in items
        for t, res in (sorted(node.get("resources", {}).items()) or [("-", {})])
    ]
    emit(rows, output, NODE_COLUMNS)


def _rejection(row: dict[str, Any]) -> str:
    rej = row["_res"].get("lastRejection")
    if not rej:
        return "-"
    names = cell(rej.get("resourceNames"))
    return f"{rej.get('time')} v{rej.get('version')} [{names}] {rej.get('errorDetail')}"


NODE_COLUMNS = (
    ("NODE", lambda r: r.get("id")),
    ("TEAM", lambda r: r.get("team")),
    ("PROTOCOL", lambda r: r.get("protocol")),
    ("ADDRESS", lambda r: r.get("address")),
    ("CONNECTED", lambda r: r.get("connectedSince")),
    ("TYPE", lambda r: r["_type"]),
    ("SENT", lambda r: r["_res"].get("versionSent")),
    ("ACKED", lambda r: r["_res"].get("versionAcknowledged")),
    ("LAST REJECTION", _rejection),
)


def audit(
    ctx: typer.Context,
    resource_type: Annotated[
        str | None, typer.Option(help="cluster, route_config, listener, api, token, team, ...")
    ] = None,
    team: TeamOpt = None,
    actor: Annotated[str | None, typer.Option(help="a token id or name")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339, e.g. 2026-01-31T12:00:00Z")] = None,
    limit: Annotated[int, typer.Option(help="newest first; at most this many")] = 50,
    output: OutputOpt = Format.table,
) -> None:
    """The audit log: every change with who, what, when and from where."""
    params = {"resourceType": resource_type, "team": team, "actor": actor, "since": since,
              "limit": limit}  # fmt: skip
    page = client(ctx).get_json("/api/v1/audit", **params)
    emit(page["items"], output, AUDIT_COLUMNS)


AUDIT_COLUMNS = (
    ("TIME", lambda r: r.get("time")),
    ("ACTOR", lambda r: (r.get("actor") or {}).get("name")),
    ("ACTION", lambda r: r.get("action")),
    ("TYPE", lambda r: r.get("resourceType")),
    ("NAME", lambda r: r.get("resourceName")),
    ("TEAM", lambda r: r.get("team")),
    ("FROM", lambda r: r.get("clientAddress")),
)
