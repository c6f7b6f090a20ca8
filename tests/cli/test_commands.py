"""Issue 16: every `flowplane` client command against a real server process, run as a real
process, in every output format, with the exit codes the README promises."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowplane.testing.envoy import envoy_binary
from flowplane.testing.ports import free_port
from tests.cli.conftest import Server, ok, run_cli, start_server

pytestmark = pytest.mark.e2e


def write(path: Path, data: Any) -> str:
    path.write_text(yaml.safe_dump(data) if path.suffix == ".yaml" else json.dumps(data))
    return str(path)


def cluster(name: str, team: str | None = None, port: int = 8000) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "endpoints": [{"host": "127.0.0.1", "port": port}]}
    return body | ({"team": team} if team else {})


# -- configuration: profiles, environment, flags -------------------------------------------------


def test_login_profiles_and_precedence(server: Server, tmp_path: Path) -> None:
    """README "Command line": for each of server, token and CA the flag beats FLOWPLANE_*,
    which beats the config file's profile; login refuses a token the server refuses."""
    cfg = {"FLOWPLANE_CONFIG": str(tmp_path / "cfg" / "config.yaml")}
    bad = run_cli("login", "--server", server.url, "--token", "nope", env=cfg)
    assert bad.code == 3 and "not a valid JWT" in bad.err
    assert not (tmp_path / "cfg" / "config.yaml").exists()  # nothing stored for a bad login

    ok(run_cli("login", "--server", server.url, "--token", server.token, env=cfg))
    path = tmp_path / "cfg" / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds a token
    stored = yaml.safe_load(path.read_text())
    assert stored["current"] == "default"
    assert stored["profiles"]["default"] == {"server": server.url, "token": server.token}

    ok(run_cli("teams", "list", env=cfg))  # the profile alone is enough
    assert run_cli("teams", "list", env=cfg | {"FLOWPLANE_TOKEN": "x.y.z"}).code == 3  # env > file
    env_bad = cfg | {"FLOWPLANE_TOKEN": "x.y.z"}
    ok(run_cli("--token", server.token, "teams", "list", env=env_bad))  # flag > env
    assert run_cli("--token", "x.y.z", "teams", "list", env=cfg).code == 3  # flag > file
    down = cfg | {"FLOWPLANE_SERVER": "http://127.0.0.1:1"}
    assert run_cli("teams", "list", env=down).code == 10  # env server > file server
    ok(run_cli("--server", server.url, "teams", "list", env=down))

    # profiles: --profile / FLOWPLANE_PROFILE pick one, else the file's current one
    stored["profiles"]["down"] = {"server": "http://127.0.0.1:1", "token": server.token}
    path.write_text(yaml.safe_dump(stored))
    assert run_cli("--profile", "down", "teams", "list", env=cfg).code == 10
    assert run_cli("teams", "list", env=cfg | {"FLOWPLANE_PROFILE": "down"}).code == 10
    r = run_cli("--profile", "missing", "teams", "list", env=cfg)
    assert r.code == 2 and "no profile 'missing'" in r.err
    ok(
        run_cli(
            "login",
            "--profile",
            "second",
            env=cfg | {"FLOWPLANE_SERVER": server.url, "FLOWPLANE_TOKEN": server.token},
        )
    )
    stored = yaml.safe_load(path.read_text())
    assert stored["current"] == "second" and set(stored["profiles"]) == {
        "default",
        "down",
        "second",
    }


def test_no_server_and_usage_errors(cli: Any, tmp_path: Path) -> None:
    """Exit codes: 10 when the server cannot be reached, 2 for a bad command line or a bad
    input file (nothing is sent)."""
    r = cli("clusters", "list", env={"FLOWPLANE_SERVER": f"http://127.0.0.1:{free_port()}"})
    assert r.code == 10 and "cannot reach the server" in r.err
    assert cli("clusters", "frobnicate").code == 2
    assert cli("clusters", "list", "-o", "xml").code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    r = cli("clusters", "create", "-f", str(bad))
    assert r.code == 2 and "not valid YAML or JSON" in r.err
    r = cli("clusters", "create", "-f", str(tmp_path / "absent.yaml"))
    assert r.code == 2 and "cannot read" in r.err


# -- resource commands ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "body", "changed"),
    [
        ("clusters", cluster("cmd-c", "cmd"), {"connectTimeoutSeconds": 3}),
        (
            "route-configs",
            {"name": "cmd-r", "team": "cmd", "virtualHosts": [{"name": "vh", "domains": ["*"],
             "routes": [{"match": {"path": {"type": "prefix", "value": "/"}},
                         "action": {"type": "directResponse", "status": 200}}]}]},
            {"virtualHosts": [{"name": "vh2", "domains": ["a.example"], "routes": []}]},
        ),
        (
            "listeners",
            {"name": "cmd-l", "team": "cmd", "address": "127.0.0.1", "port": 21901,
             "filterChains": [{"filters": [{"type": "tcpProxy", "cluster": "cmd-base"}]}]},
            {"port": 21902},
        ),
        (
            "apis",
            {"name": "cmd-a", "team": "cmd", "domain": "cmd-a.example",
             "upstreams": [{"url": "http://127.0.0.1:8000"}], "routes": [{"path": "/a"}]},
            {"routes": [{"path": "/a"}, {"path": "/b", "methods": ["GET"]}]},
        ),
        ("teams", {"name": "cmd-t", "description": "first"},
         {"description": "second", "quotas": {"maxClusters": 3}}),
    ],
)  # fmt: skip
def test_resource_commands(
    server: Server, cli: Any, tmp_path: Path, group: str, body: dict[str, Any],
    changed: dict[str, Any],
) -> None:  # fmt: skip
    """create -f, get and list in table/json/yaml, apply -f (update, then nothing to do),
    edit ($EDITOR, If-Match), delete -- for each kind, as the admin."""
    with server.api() as api:
        if api.get("/api/v1/teams/cmd").status_code == 404:
            api.post("/api/v1/teams", json={"name": "cmd"}).raise_for_status()
            api.post("/api/v1/native/clusters", json=cluster("cmd-base", "cmd")).raise_for_status()
    name = body["name"]
    team = ["--team", body["team"]] if "team" in body else []
    created = ok(cli(group, "create", "-f", write(tmp_path / "new.yaml", body), "-o", "json"))
    assert created.json()["version"] == 1 and created.json()["name"] == name
    assert cli(group, "create", "-f", write(tmp_path / "again.json", body)).code == 6  # 409

    as_json = ok(cli(group, "get", name, *team, "-o", "json")).json()
    as_yaml = yaml.safe_load(ok(cli(group, "get", name, *team, "-o", "yaml")).out)
    assert as_json == as_yaml and {k: as_json[k] for k in body} == body
    table = ok(cli(group, "get", name, *team)).out.splitlines()
    assert table[0].split()[0] == "NAME" and table[1].split()[0] == name
    listed = ok(cli(group, "list", "-o", "json")).json()
    assert name in [i["name"] for i in listed]
    assert yaml.safe_load(ok(cli(group, "list", "-o", "yaml")).out) == listed
    assert name in ok(cli(group, "list")).out

    # apply -f: the file's version replaces the server's; a second apply has nothing to do
    updated = body | changed
    doc = write(tmp_path / "apply.yaml", {"kind": _kind(group), "spec": updated})
    r = ok(cli(group, "apply", "-f", doc))
    assert "~ update" in r.out and "1 to update" in r.out
    assert (
        "0 to create, 0 to update, 0 to delete, 1 unchanged"
        in ok(cli(group, "apply", "-f", doc)).out
    )
    got = ok(cli(group, "get", name, *team, "-o", "json")).json()
    assert {k: got[k] for k in updated} == updated and got["version"] == 2

    # edit: the editor's change is saved with the version read
    restore = {k: body[k] for k in changed if k in body}
    editor = _editor(tmp_path, restore | {"_drop": [k for k in changed if k not in body]})
    r = ok(cli(group, "edit", name, *team, env={"EDITOR": editor}))
    assert "saved" in r.out
    got = ok(cli(group, "get", name, *team, "-o", "json")).json()
    assert got["version"] == 3
    assert {k: got.get(k) for k in body} == body and not got.get("quotas")  # `changed` undone
    assert "no change" in ok(cli(group, "edit", name, *team, env={"EDITOR": "true"})).out

    r = cli(group, "delete", name, *team, "--if-match", "1")
    assert r.code == (7 if group not in ("teams",) else 0), r.err  # 412: stale If-Match
    if r.code == 7:
        assert "version" in r.err.lower() or "match" in r.err.lower()
        ok(cli(group, "delete", name, *team))
    assert cli(group, "get", name, *team).code == 5


def _kind(group: str) -> str:
    return {"clusters": "Cluster", "route-configs": "RouteConfig", "listeners": "Listener",
            "apis": "Api", "teams": "Team"}[group]  # fmt: skip


def _editor(tmp_path: Path, change: dict[str, Any]) -> str:
    """An $EDITOR that edits the YAML file it is given: drops the keys in `_drop`, sets the
    others."""
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys, yaml\n"
        f"change = {change!r}\n"
        "doc = yaml.safe_load(open(sys.argv[1]))\n"
        "for k in change.pop('_drop', []): doc.pop(k, None)\n"
        "doc.update(change)\n"
        "open(sys.argv[1], 'w').write(yaml.safe_dump(doc))\n"
    )
    return f"{sys.executable} {script}"


def test_edit_refuses_to_overwrite_a_concurrent_change(
    server: Server, cli: Any, tmp_path: Path
) -> None:
    """api.md: PUT honours If-Match (412 when stale). The editor session reads version 1;
    someone else writes version 2 meanwhile; saving is a 412 (exit 7) and version 2 stays."""
    ok(cli("clusters", "create", "-f", write(tmp_path / "c.json", cluster("cmd-race"))))
    script = tmp_path / "racing_editor.py"
    script.write_text(
        "import sys, httpx, yaml\n"
        f"httpx.patch({server.url + '/api/v1/native/clusters/cmd-race'!r},\n"
        f"    headers={{'Authorization': 'Bearer {server.token}'}},\n"
        "    json={'connectTimeoutSeconds': 7}).raise_for_status()\n"
        "doc = yaml.safe_load(open(sys.argv[1])); doc['connectTimeoutSeconds'] = 9\n"
        "open(sys.argv[1], 'w').write(yaml.safe_dump(doc))\n"
    )
    r = cli("clusters", "edit", "cmd-race", env={"VISUAL": f"{sys.executable} {script}"})
    assert r.code == 7, r.err
    got = ok(cli("clusters", "get", "cmd-race", "-o", "json")).json()
    assert got["connectTimeoutSeconds"] == 7 and got["version"] == 2


def test_history_and_rollback(cli: Any, tmp_path: Path) -> None:
    """Issue 16: `history` / `rollback` once the endpoints exist (api.md "History and
    rollback"): the versions newest first, one version and its RFC 6902 diff, a rollback as a
    new version with the old content, a stale --if-match refused (412 -> exit 7), and a
    deleted cluster re-created by rolling it back."""
    ok(cli("clusters", "create", "-f", write(tmp_path / "c.json", cluster("cmd-hist"))))
    ok(cli("clusters", "edit", "cmd-hist", env={"VISUAL": _editor(tmp_path, {"http2": True})}))
    listed = ok(cli("clusters", "history", "cmd-hist", "-o", "json")).json()
    assert [(v["version"], v["action"]) for v in listed] == [(2, "update"), (1, "create")]
    table = ok(cli("clusters", "history", "cmd-hist")).out
    assert "VERSION" in table and "update" in table
    first = ok(cli("clusters", "history", "cmd-hist", "--version", "1", "-o", "json")).json()
    assert "http2" not in json.dumps(first)
    diff = ok(cli("clusters", "history", "cmd-hist", "--version", "2", "--diff", "-o", "json"))
    assert {"op": "add", "path": "/http2", "value": True} in diff.json()  # RFC 6902
    r = cli("clusters", "rollback", "cmd-hist", "1", "--if-match", "1")
    assert r.code == 7, r.err  # it is at version 2
    back = ok(cli("clusters", "rollback", "cmd-hist", "1", "--if-match", "2", "-o", "json")).json()
    assert back["version"] == 3 and "http2" not in back
    ok(cli("clusters", "delete", "cmd-hist"))
    assert cli("clusters", "get", "cmd-hist").code == 5
    again = ok(cli("clusters", "rollback", "cmd-hist", "3", "-o", "json")).json()
    assert again["name"] == "cmd-hist" and again["version"] == 5  # 4 was the deletion
    ok(cli("clusters", "delete", "cmd-hist"))


def test_server_errors_are_messages_with_details(cli: Any, tmp_path: Path) -> None:
    """Errors print the server's message and each field detail (never a traceback), and the
    exit code tells the kind: 8 for a 400, 5 for a 404, 6 for a 409 (still referenced)."""
    bad = {"name": "cmd-bad", "endpoints": [], "connectTimeoutSeconds": "x"}
    r = cli("clusters", "create", "-f", write(tmp_path / "bad.json", bad))
    assert r.code == 8
    lines = r.err.splitlines()
    assert lines[0].startswith("flowplane: ") and any(ln.startswith("  endpoints") for ln in lines)
    r = cli("listeners", "get", "cmd-nothing")
    assert (r.code, r.err.strip()) == (5, "flowplane: listener 'cmd-nothing' does not exist")
    r = cli("route-configs", "delete", "default-gateway-routes")
    assert r.code == 6 and "default gateway" in r.err


def test_a_team_token_sees_its_team_only(server: Server, cli: Any, tmp_path: Path) -> None:
    """tokens create/list/get/rotate/delete; a team-bound token's 403 is exit code 4."""
    with server.api() as api:
        if api.get("/api/v1/teams/cmd-tok").status_code == 404:
            api.post("/api/v1/teams", json={"name": "cmd-tok"}).raise_for_status()
    spec = {"name": "cmd-dev", "role": "api-developer", "teams": ["cmd-tok"]}
    made = ok(cli("tokens", "create", "-f", write(tmp_path / "t.yaml", spec), "-o", "json")).json()
    token, token_id = made["token"], made["id"]
    shown = ok(
        cli("tokens", "create", "-f", write(tmp_path / "t2.yaml", spec | {"name": "cmd-dev2"}))
    )
    assert "shown only this once" in shown.out
    assert ok(cli("tokens", "get", "cmd-dev", "-o", "json")).json()["id"] == token_id  # by name
    assert ok(cli("tokens", "get", token_id, "-o", "yaml")).out.startswith(f"id: {token_id}")
    assert "cmd-dev" in ok(cli("tokens", "list")).out

    r = cli("clusters", "list", env={"FLOWPLANE_TOKEN": token})
    assert r.code == 4 and r.err.startswith("flowplane: ")  # api-developer: Native API is 403
    assert ok(cli("apis", "list", "-o", "json", env={"FLOWPLANE_TOKEN": token})).json() == []

    rotated = ok(cli("tokens", "rotate", token_id, "-o", "json")).json()
    assert rotated["token"] != token
    assert cli("apis", "list", env={"FLOWPLANE_TOKEN": token}).code == 3  # the old one: revoked
    ok(cli("apis", "list", env={"FLOWPLANE_TOKEN": rotated["token"]}))
    ok(cli("tokens", "delete", rotated["id"]))
    assert cli("apis", "list", env={"FLOWPLANE_TOKEN": rotated["token"]}).code == 3

    # edit (tokens have no If-Match: a merge patch of what changed)
    editor = _editor(tmp_path, {"name": "cmd-dev2-renamed"})
    assert "saved" in ok(cli("tokens", "edit", "cmd-dev2", env={"EDITOR": editor})).out
    renamed = ok(cli("tokens", "get", "cmd-dev2-renamed", "-o", "json")).json()
    assert renamed["version"] == 2 and renamed["teams"] == ["cmd-tok"]


# -- platform, data planes, audit ----------------------------------------------------------------

PETS = """
openapi: 3.0.3
info: {title: Pets, version: "1.0"}
servers: [{url: "http://127.0.0.1:8000"}]
x-flowplane-ratelimit: {requests: 5, interval: 1m}
paths:
  /pets/{id}:
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    get: {responses: {"200": {description: a pet}}}
"""


def test_import_bootstrap_nodes_audit(server: Server, cli: Any, tmp_path: Path) -> None:
    """import openapi (dry run, then for real, then again: an update); a bootstrap that a real
    Envoy runs; `nodes` shows it with every type acknowledged; `audit` shows the import."""
    with server.api() as api:
        if api.get("/api/v1/teams/cmd-pets").status_code == 404:
            api.post("/api/v1/teams", json={"name": "cmd-pets"}).raise_for_status()
    doc = tmp_path / "pets.yaml"
    doc.write_text(PETS)
    args = ("import", "openapi", str(doc), "--team", "cmd-pets", "--domain", "pets.cmd")
    dry = ok(cli(*args, "--dry-run", "-o", "json")).json()
    assert dry["dryRun"] is True and dry["changes"]
    assert ok(cli("apis", "list", "--team", "cmd-pets", "-o", "json")).json() == []
    r = ok(cli(*args))
    assert "created" in r.out and "pets.cmd" in r.out
    assert "updated" in ok(cli(*args)).out
    api_json = ok(cli("apis", "get", "pets", "--team", "cmd-pets", "-o", "json")).json()
    assert api_json["domain"] == "pets.cmd" and api_json["version"] == 2

    audit = ok(cli("audit", "--resource-type", "api", "--team", "cmd-pets", "-o", "json")).json()
    assert [e["action"] for e in audit][:2] == ["update", "create"]
    table = ok(cli("audit", "--resource-type", "api", "--team", "cmd-pets")).out
    assert table.split()[:7] == ["TIME", "ACTOR", "ACTION", "TYPE", "NAME", "TEAM", "FROM"]
    assert "initial-admin" in table
    assert ok(cli("audit", "--limit", "1", "-o", "yaml")).out.startswith("- id:")
    assert cli("audit", "--since", "yesterday").code == 8

    admin_port = free_port()
    boot = tmp_path / "envoy.yaml"
    ok(cli("bootstrap", "cmd-pets", "--scope", "all", "--admin-port", str(admin_port),
           "--out", str(boot)))  # fmt: skip
    as_json = ok(cli("bootstrap", "cmd-pets", "--format", "json", "--mode", "delta")).json()
    assert as_json["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert cli("bootstrap", "cmd-pets", "--scope", "nope").code == 2
    with (tmp_path / "envoy.log").open("wb") as log:
        envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(boot), "--disable-hot-restart", "--concurrency", "1",
             "--base-id", str(admin_port), "-l", "warning"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        node_id = _wait_for_acks(cli)[0]["id"]
        one = ok(cli("nodes", node_id, "-o", "json")).json()
        assert one["id"] == node_id and one["protocol"] == "sotw"
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)


def _wait_for_acks(cli: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = ok(cli("nodes", "-o", "json")).json()
        res = nodes[0]["resources"] if nodes else {}
        if len(res) >= 3 and all(
            r["versionAcknowledged"] == r["versionSent"] for r in res.values()
        ):
            table = ok(cli("nodes")).out.splitlines()
            assert table[0].split()[:6] == [
                "NODE",
                "TEAM",
                "PROTOCOL",
                "ADDRESS",
                "CONNECTED",
                "TYPE",
            ]
            rows = [ln for ln in table[1:] if ln.startswith(nodes[0]["id"])]
            assert len(rows) == len(res)  # one row per resource type, none rejected
            assert all(ln.rstrip().endswith("-") for ln in rows)
            assert ok(cli("nodes", "-o", "yaml")).out.startswith("- id:")
            return list(nodes)
        time.sleep(0.2)
    raise AssertionError("the Envoy never acknowledged every type")


def test_progress_bars_on_a_terminal_only(server: Server, tmp_path: Path) -> None:
    """Progress bars (rich) show while export reads the server when stdout is a terminal; a
    pipe gets the documents alone."""
    import pty

    with server.api() as api:
        if api.get("/api/v1/teams/cmd-progress").status_code == 404:
            api.post("/api/v1/teams", json={"name": "cmd-progress"}).raise_for_status()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPLANE_")}
    env |= {
        "FLOWPLANE_SERVER": server.url,
        "FLOWPLANE_TOKEN": server.token,
        "FLOWPLANE_CONFIG": str(tmp_path / "none.yaml"),
        "TERM": "xterm",
        "COLUMNS": "100",
    }
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowplane.cli.main", "export"],
            env=env,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
    assert b"reading the server" in seen and b"kind: Team" in seen
    piped = run_cli("export", env={k: env[k] for k in env if k.startswith("FLOWPLANE_")})
    assert "reading the server" not in piped.out + piped.err


def test_https_server_with_a_ca_bundle(tmp_path: Path) -> None:
    """--ca / FLOWPLANE_CA / a profile's `ca` make the CLI trust the server's CA; without it
    the certificate is refused (exit 10), a missing bundle is a usage error (exit 2)."""
    from flowplane.testing.certs import make_pki

    pki = make_pki(tmp_path / "pki")
    tls = {"FLOWPLANE_API_TLS_CERT": str(pki.server_cert),
           "FLOWPLANE_API_TLS_KEY": str(pki.server_key)}  # fmt: skip
    s = start_server(tmp_path / "tls", tls, ca=pki.ca_cert)
    try:
        env = {"FLOWPLANE_SERVER": s.url, "FLOWPLANE_TOKEN": s.token,
               "FLOWPLANE_CONFIG": str(tmp_path / "config.yaml")}  # fmt: skip
        r = run_cli("teams", "list", env=env)
        assert r.code == 10 and "CERTIFICATE_VERIFY_FAILED" in r.err
        ok(run_cli("--ca", str(pki.ca_cert), "teams", "list", env=env))
        ok(run_cli("teams", "list", env=env | {"FLOWPLANE_CA": str(pki.ca_cert)}))
        r = run_cli("--ca", str(tmp_path / "absent.pem"), "teams", "list", env=env)
        assert r.code == 2 and "does not exist" in r.err
        ok(run_cli("login", "--ca", str(pki.ca_cert), env=env))
        config = {"FLOWPLANE_CONFIG": env["FLOWPLANE_CONFIG"]}
        assert yaml.safe_load((tmp_path / "config.yaml").read_text())["profiles"]["default"][
            "ca"] == str(pki.ca_cert)  # fmt: skip
        ok(run_cli("teams", "list", env=config))  # the profile carries the CA
    finally:
        s.stop()


def test_lists_are_read_page_by_page(server: Server, cli: Any, tmp_path: Path) -> None:
    """api.md: no silent truncation. The client reads every page (here 2 items a page)."""
    from flowplane.cli.client import Client, Connection

    for i in range(5):
        ok(cli("clusters", "create", "-f", write(tmp_path / f"{i}.json", cluster(f"cmd-page-{i}"))))
    client = Client(Connection(server.url, server.token, None, None))
    client.page_size = 2
    try:
        names = [c["name"] for c in client.list_all("/api/v1/native/clusters")]
    finally:
        client.close()
    with server.api() as api:
        total = api.get("/api/v1/native/clusters").json()["total"]
    assert len(names) == len(set(names)) == total >= 5
    assert {f"cmd-page-{i}" for i in range(5)} <= set(names)
