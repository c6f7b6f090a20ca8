"""The declarative plan without a server (milliseconds): documents against server records,
the files' scope, and the order changes run in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flowplane.cli.client import CliError
from flowplane.cli.declarative import Current, Document, load, plan, scope_of
from flowplane.cli.kinds import API, BY_KIND, CLUSTER, LISTENER, ROUTE_CONFIG, TEAM_KIND


def doc(kind: str, name: str, team: str | None = None, **spec: Any) -> Document:
    body = {"name": name, **spec} | ({"team": team} if team else {})
    return Document(BY_KIND[kind], BY_KIND[kind].spec(body), "test")


def record(kind: str, name: str, team: str | None = None, **extra: Any) -> Current:
    """A record as the server returns it: the spec plus what the server adds."""
    body = {"name": name, "team": team, "version": 3, "source": "native",
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z", **extra}  # fmt: skip
    if kind == "Team":  # teams carry neither a team nor a source
        body.pop("team")
        body.pop("source")
        body |= {"description": None, "quotas": {}}
    if kind == "Api":
        body |= {"id": f"id-{name}", "generated": {"clusters": []}}
    return Current(BY_KIND[kind], body)


def actions(p: Any) -> set[tuple[str, str, str | None, str]]:
    return {(c.action, c.kind.kind, c.team, c.name) for c in p.changes}


def test_server_made_fields_do_not_count_as_changes() -> None:
    """A record equals a document when they differ only in what the server makes (version,
    source, times, owner, id, generated) or in a shared resource's `team: null` and a team's
    empty description and quotas."""
    docs = [doc("Cluster", "c", "a", port=1), doc("Cluster", "shared", None),
            doc("Team", "a"), doc("Api", "x", "a", domain="x.example")]  # fmt: skip
    current = [record("Cluster", "c", "a", port=1), record("Cluster", "shared", None),
               record("Team", "a"), record("Api", "x", "a", domain="x.example")]  # fmt: skip
    assert {c.action for c in plan(docs, current, prune=True).changes} == {"unchanged"}
    changed = plan([doc("Cluster", "c", "a", port=2)], current, prune=False)
    assert actions(changed) == {("update", "Cluster", "a", "c")}


def test_identity_is_kind_team_and_name() -> None:
    """The same name in another team or of another kind is another resource."""
    p = plan([doc("Cluster", "web", "b"), doc("Listener", "web", "a")],
             [record("Cluster", "web", "a")], prune=False)  # fmt: skip
    assert actions(p) == {("create", "Cluster", "b", "web"), ("create", "Listener", "a", "web")}


def test_prune_scope_is_the_files_teams() -> None:
    """README: prune deletes only resources of the files' teams (a document's team, a Team
    document, "shared" only when a non-Team document is shared) that no document describes;
    never what an API generated, the default gateway, or a team."""
    current = [
        record("Cluster", "gone", "a"),
        record("Cluster", "other-team", "b"),
        record("Cluster", "shared-one", None),
        record("Cluster", "made-by-api", "a", owner={"kind": "api", "id": "1"}),
        record("Listener", "default-gateway", None),
        record("RouteConfig", "default-gateway-routes", None),
        record("Team", "a"),
        record("Team", "c"),
        record("Api", "old-api", "c"),
    ]
    only_a = plan([doc("Cluster", "kept", "a")], current, prune=True)
    assert actions(only_a) == {
        ("create", "Cluster", "a", "kept"),
        ("delete", "Cluster", "a", "gone"),
    }
    # a Team document puts its team in scope (its resources), never other teams
    with_team = plan([doc("Team", "c")], current, prune=True)
    assert actions(with_team) == {
        ("unchanged", "Team", None, "c"),
        ("delete", "Api", "c", "old-api"),
    }
    # a shared document puts "shared" in scope; the default gateway is still never pruned
    shared = plan([doc("Cluster", "new-shared")], current, prune=True)
    assert actions(shared) == {("create", "Cluster", None, "new-shared"),
                               ("delete", "Cluster", None, "shared-one")}  # fmt: skip
    assert scope_of([doc("Team", "t"), doc("Api", "x", "u")]) == {"t", "u"}


def test_changes_run_in_dependency_order() -> None:
    """Creates and updates Team -> Cluster -> Api -> RouteConfig -> Listener, then deletes
    Listener -> RouteConfig -> Api -> Cluster; updates carry the version read (If-Match)."""
    docs = [doc("Listener", "l", "a"), doc("RouteConfig", "r", "a"), doc("Api", "x", "a"),
            doc("Cluster", "c", "a", port=9), doc("Team", "a", description="new")]  # fmt: skip
    current = [record("Cluster", "c", "a"), record("Team", "a"), record("Listener", "old", "a"),
               record("RouteConfig", "old", "a"), record("Api", "old", "a"),
               record("Cluster", "old", "a")]  # fmt: skip
    p = plan(docs, current, prune=True)
    order = [(c.action, c.kind.kind) for c in p.ordered()]
    assert order == [("update", "Team"), ("update", "Cluster"), ("create", "Api"),
                     ("create", "RouteConfig"), ("create", "Listener"), ("delete", "Listener"),
                     ("delete", "RouteConfig"), ("delete", "Api"), ("delete", "Cluster")]  # fmt: skip
    update = next(c for c in p.changes if c.action == "update" and c.kind is CLUSTER)
    assert update.current is not None and update.current.etag == '"3"'
    team = next(c for c in p.changes if c.kind is TEAM_KIND)
    assert team.current is not None and team.current.etag is None  # teams: no If-Match
    assert {API.kind, ROUTE_CONFIG.kind, LISTENER.kind} <= {c.kind.kind for c in p.changes}


def test_load_reports_every_problem_and_keeps_timestamps_strings(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yml").write_text(
        "kind: Cluster\nspec: {name: a, team: t}\n---\nkind: Nope\nspec: {name: b}\n"
    )
    (tmp_path / ".hidden.yaml").write_text("kind: Nope\n")
    (tmp_path / "notes.txt").write_text("not read")
    (tmp_path / "b.json").write_text('{"kind": "Cluster", "spec": {"name": "a", "team": "t"}}')
    with pytest.raises(CliError) as err:
        load([tmp_path])
    problems = [f"{Path(d['field']).name}: {d['message']}" for d in err.value.details]
    assert problems[0].startswith("a.yml#1: same resource as")  # b.json is read first
    assert problems[1].startswith("a.yml#2: `kind` must be one of")
    assert len(problems) == 2 and err.value.code == 2
    (tmp_path / "b.json").unlink()
    (tmp_path / "sub" / "a.yml").write_text(yaml.safe_dump(
        {"kind": "Team", "spec": {"name": "t", "when": "2026-01-01T00:00:00Z"}}
    ).replace("'", ""))  # fmt: skip
    assert load([tmp_path])[0].spec["when"] == "2026-01-01T00:00:00Z"
