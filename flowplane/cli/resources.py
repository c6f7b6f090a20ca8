"""`flowplane clusters|route-configs|listeners|apis|teams|tokens list|get|create|apply|edit|delete`.

One group per kind, built from the kind's description (`flowplane.cli.kinds`), so every kind
behaves the same: names are addressed with `--team` (sent as `?team=`), writes of a whole spec
carry the version that was read (`If-Match`) where the API honours it.
"""

# No `from __future__ import annotations`: typer reads these closures' annotations, which
# name their enclosing function's locals (`key`), so they are evaluated where defined.
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from flowplane.cli import declarative
from flowplane.cli.client import USAGE, CliError
from flowplane.cli.context import FileOpt, OutputOpt, TeamOpt, client, read_input, single
from flowplane.cli.kinds import ALL, API, CLUSTER, LISTENER, ROUTE_CONFIG, TOKEN, Kind
from flowplane.cli.output import Format, console, dump_yaml, emit


def spec_from(kind: Kind, raw: Any, where: str) -> dict[str, Any]:
    """A bare spec, or a document `{kind, spec}` of this kind."""
    if isinstance(raw, dict) and set(raw) == {"kind", "spec"}:
        if raw["kind"] != kind.kind:
            raise CliError(f"{where}: a {raw['kind']} document, not a {kind.kind}")
        raw = raw["spec"]
    if not isinstance(raw, dict):
        raise CliError(f"{where}: expected a mapping (a {kind.label}'s JSON or YAML)")
    return raw


HISTORY_KINDS = (CLUSTER, ROUTE_CONFIG, LISTENER, API)  # what the server keeps history of


def register(app: typer.Typer) -> None:
    for kind in ALL:
        app.add_typer(group(kind), name=kind.command, help=f"{kind.label}s over the REST API")


def group(kind: Kind) -> typer.Typer:
    g = typer.Typer(rich_markup_mode="markdown", no_args_is_help=True)
    key = "ID or NAME" if kind.by_id else "NAME"

    @g.command("list")
    def list_(ctx: typer.Context, team: TeamOpt = None, output: OutputOpt = Format.table) -> None:
        """List every one this token may see (all pages)."""
        params = {"team": team} if team else {}
        emit(client(ctx).list_all(kind.path, **params), output, kind.columns)

    @g.command()
    def get(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(metavar=key)],
        team: TeamOpt = None,
        output: OutputOpt = Format.table,
    ) -> None:
        """Show one."""
        record = kind.find(client(ctx), name, team)
        record.pop("_etag", None)
        emit(record, output, kind.columns)

    @g.command()
    def create(ctx: typer.Context, file: FileOpt, output: OutputOpt = Format.table) -> None:
        """Create one from a file (its JSON/YAML, or a `kind`+`spec` document)."""
        raw = single(declarative.parse(read_input(file), str(file)), str(file))
        created = client(ctx).request("POST", kind.path, json=spec_from(kind, raw, str(file)))
        record = created.json()
        emit(record, output, kind.columns)
        if kind is TOKEN and output is Format.table:
            console().print(f"token: {record.get('token')}  (shown only this once)", markup=False)

    if kind is not TOKEN:  # tokens have no name to identify them by

        @g.command()
        def apply(
            ctx: typer.Context,
            file: FileOpt,
            dry_run: Annotated[
                bool, typer.Option("--dry-run", help="show, change nothing")
            ] = False,
        ) -> None:
            """Create or replace each one in the file (by team and name), like `flowplane apply`
            limited to this kind, without pruning."""
            docs = declarative.parse(read_input(file), str(file))
            wrapped = [{"kind": kind.kind, "spec": spec_from(kind, d, str(file))} for d in docs]
            problems: list[dict[str, Any]] = []
            loaded = [declarative.document(d, str(file), problems) for d in wrapped]
            if problems:
                raise CliError("the file is not valid; nothing was changed", USAGE, problems)
            c = client(ctx)
            current = declarative.server_state(c, [kind], progress=False)
            plan = declarative.plan([d for d in loaded if d], current, prune=False)
            declarative.show(plan)
            if not dry_run:
                for line in declarative.execute(c, plan, progress=True):
                    console().print(line, highlight=False)

    @g.command()
    def edit(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(metavar=key)],
        team: TeamOpt = None,
        editor: Annotated[
            str, typer.Option(envvar=["VISUAL", "EDITOR"], show_envvar=True,
                              help="the editor command")
        ] = "vi",
    ) -> None:  # fmt: skip
        """Open it in $VISUAL/$EDITOR; on save, write it back (If-Match: the version read, so a
        change made meanwhile is a 412, never overwritten)."""
        c = client(ctx)
        record = kind.find(c, name, team)
        etag = record.pop("_etag", None)
        before = kind.spec(record)
        after = spec_from(kind, run_editor(editor, dump_yaml(before), kind), "the edited text")
        if after == before:
            console().print("no change", highlight=False)
            return
        path = kind.item_path(kind.key_of(record))
        params = {"team": record.get("team")} if kind.team_scoped and record.get("team") else {}
        headers = {"If-Match": etag} if kind.etag and etag else None
        if kind.replace == "PATCH":
            c.request("PATCH", path, json=kind.merge_patch(before, after), headers=headers)
        else:
            c.request("PUT", path, params=params, json=after, headers=headers)
        console().print(f"{kind.label} {name!r} saved", highlight=False)

    @g.command()
    def delete(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(metavar=key)],
        team: TeamOpt = None,
        if_match: Annotated[
            int | None, typer.Option("--if-match", help="only if still at this version")
        ] = None,
    ) -> None:
        """Delete it (tokens: revoke)."""
        c = client(ctx)
        target = name
        if kind.by_id:
            target = kind.key_of(kind.find(c, name, team))
        params = {"team": team} if team and kind.team_scoped else {}
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        c.request("DELETE", kind.item_path(target), params=params, headers=headers)
        console().print(f"{kind.label} {name!r} deleted", highlight=False)

    if kind in HISTORY_KINDS:

        @g.command()
        def history(
            ctx: typer.Context,
            name: Annotated[str, typer.Argument(metavar=key)],
            version: Annotated[
                int | None, typer.Option("--version", help="show this version as it was")
            ] = None,
            diff: Annotated[
                bool, typer.Option("--diff", help="with --version: what it changed (RFC 6902)")
            ] = False,
            team: TeamOpt = None,
            output: OutputOpt = Format.table,
        ) -> None:
            """Its versions, newest first (deleted ones too); `--version N` shows one."""
            c = client(ctx)
            params = {"team": team} if team and kind.team_scoped else {}
            base = f"{kind.item_path(_history_key(kind, c, name, team))}/history"
            if version is None:
                emit(c.list_all(base, **params), output, HISTORY_COLUMNS)
                return
            if diff:
                params["diff"] = "previous"
            emit(c.get_json(f"{base}/{version}", **params), output)

        @g.command()
        def rollback(
            ctx: typer.Context,
            name: Annotated[str, typer.Argument(metavar=key)],
            version: Annotated[int, typer.Argument(help="the version whose content comes back")],
            team: TeamOpt = None,
            if_match: Annotated[
                int | None, typer.Option("--if-match", help="only if still at this version")
            ] = None,
            output: OutputOpt = Format.table,
        ) -> None:
            """A new version with an old version's content (re-creates a deleted one)."""
            c = client(ctx)
            params = {"team": team} if team and kind.team_scoped else {}
            path = f"{kind.item_path(_history_key(kind, c, name, team))}/rollback"
            headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
            r = c.request("POST", path, params=params, json={"version": version}, headers=headers)
            emit(r.json(), output, kind.columns)

    if kind is TOKEN:

        @g.command()
        def rotate(
            ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar=key)],
            output: OutputOpt = Format.table,
        ) -> None:  # fmt: skip
            """A new token with the same name, scopes and teams; the old one is revoked."""
            c = client(ctx)
            target = kind.key_of(kind.find(c, token_id, None))
            record = c.request("POST", f"{kind.item_path(target)}/rotate").json()
            emit(record, output, kind.columns)
            if output is Format.table:
                console().print(f"token: {record.get('token')}  (shown only this once)",
                                markup=False)  # fmt: skip

    return g


HISTORY_COLUMNS = (
    ("VERSION", lambda r: r.get("version")),
    ("ACTION", lambda r: r.get("action")),
    ("ACTOR", lambda r: r.get("actor")),
    ("AT", lambda r: r.get("at")),
)


def _history_key(kind: Kind, c: Any, name: str, team: str | None) -> str:
    """How history paths address `name`: by name, or an API by its id (an id as given is used
    as is, so a deleted API's history can be read by its id)."""
    if not kind.by_id:
        return name
    try:
        return kind.key_of(kind.find(c, name, team))
    except CliError:
        return name  # not found by name: an id (perhaps of a deleted API)


def run_editor(editor: str, text: str, kind: Kind) -> Any:
    """`text` edited with the `editor` command; the parsed result."""
    with tempfile.TemporaryDirectory(prefix="flowplane-edit-") as tmp:
        path = Path(tmp) / f"{kind.command}.yaml"
        path.write_text(text)
        try:
            done = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except OSError as err:
            raise CliError(f"cannot run the editor {editor!r}: {err}") from None
        if done.returncode != 0:
            raise CliError(f"the editor {editor!r} exited with {done.returncode}; nothing saved")
        edited = path.read_text()
    return single(declarative.parse(edited, "the edited text"), "the edited text")
