"""Issue 16: declarative `flowplane apply` and `flowplane export` against real server
processes, run as real processes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cli.conftest import Server, ok, run_cli, start_server

pytestmark = pytest.mark.e2e

N = "/api/v1/native"
P = "/api/v1/platform"


def post(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post(path, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def cluster(name: str, team: str | None, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "endpoints": [{"host": "127.0.0.1", "port": 8000}], **extra}
    return body | ({"team": team} if team else {})


def routes(name: str, team: str | None, cluster_name: str, **route: Any) -> dict[str, Any]:
    body = {"name": name, "virtualHosts": [{"name": "vh", "domains": [f"{name}.example"],
            "routes": [{"match": {"path": {"type": "prefix", "value": "/"}},
                        "action": {"type": "forward", "cluster": cluster_name}, **route}]}]}  # fmt: skip
    return body | ({"team": team} if team else {})


def listener(name: str, team: str | None, port: int, rc: str, **hcm: Any) -> dict[str, Any]:
    body = {"name": name, "address": "127.0.0.1", "port": port, "filterChains": [{"filters": [
        {"type": "httpConnectionManager", "routeConfigName": rc, **hcm}]}]}  # fmt: skip
    return body | ({"team": team} if team else {})


OPENAPI = """
openapi: 3.0.3
info: {title: Store, version: "1.0"}
servers: [{url: "https://store.internal:8443"}]
x-flowplane-cors: {origins: ["https://app.example"], allowCredentials: true}
paths:
  /orders/{id}:
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    get:
      x-flowplane-ratelimit: {requests: 10, interval: 1s, keyBy: "header:x-user"}
      responses: {"200": {description: an order}}
"""


def build_state(api: httpx.Client) -> None:
    """Every kind, filters at every scope, teams with quotas, shared resources, platform APIs
    (shared mode, isolated, imported from OpenAPI) and a native route config that forwards to
    a cluster an API generated."""
    post(api, "/api/v1/teams", {"name": "alpha", "description": "the alpha team",
                                "quotas": {"maxClusters": 50, "requestsPerMinute": 6000}})  # fmt: skip
    post(api, "/api/v1/teams", {"name": "beta"})
    post(api, f"{N}/clusters", cluster("shared-authz", None, http2=True))
    post(api, f"{N}/clusters", cluster(
        "web", "alpha", connectTimeoutSeconds=2, lbPolicy="LEAST_REQUEST",
        healthChecks=[{"type": "http", "path": "/health", "intervalSeconds": 5,
                       "timeoutSeconds": 1, "healthyThreshold": 1, "unhealthyThreshold": 3}],
        circuitBreakers={"default": {"maxConnections": 100}},
        outlierDetection={"consecutive5xx": 5},
    ))  # fmt: skip
    post(api, f"{N}/clusters", cluster("jwks", "alpha"))
    post(api, f"{N}/route-configs", routes(
        "web", "alpha", "web",
        filters={"header_mutation": {"requestHeadersToAdd": [{"name": "x-r", "value": "1"}]},
                 "local_rate_limit": {"tokenBucket": {"maxTokens": 2, "fillIntervalSeconds": 1}}},
    ))  # fmt: skip
    post(api, f"{N}/listeners", listener("web", "alpha", 21801, "web", httpFilters=[
        {"type": "jwt_authn", "config": {"providers": {"main": {
            "issuer": "https://issuer.example",
            "remoteJwks": {"uri": "https://issuer.example/jwks", "cluster": "jwks"}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider": "main"}}]}},
        {"type": "local_rate_limit", "config": {"tokenBucket": {
            "maxTokens": 5, "tokensPerFill": 5, "fillIntervalSeconds": 60}}},
        {"type": "header_mutation", "config": {
            "requestHeadersToAdd": [{"name": "x-gateway", "value": "flowplane"}]}},
        {"type": "ext_authz", "config": {"service": {"type": "grpc", "cluster": "shared/shared-authz"}}},
        {"type": "custom_response", "config": {"rules": [
            {"statusCodes": [503], "response": {"status": 503, "body": "later"}}]}},
    ]))  # fmt: skip
    post(api, f"{N}/clusters", cluster("tcp-backend", "beta"))
    post(api, f"{N}/listeners", {"name": "tcp", "team": "beta", "address": "127.0.0.1",
         "port": 21802, "filterChains": [{"filters": [
             {"type": "tcpProxy", "cluster": "tcp-backend"}]}]})  # fmt: skip
    pets = post(api, f"{P}/apis", {
        "name": "pets", "team": "alpha", "domain": "pets.example",
        "upstreams": [{"url": "http://127.0.0.1:8000"}],
        "routes": [{"path": "/pets/{id}", "methods": ["GET"], "timeoutSeconds": 3},
                   {"path": "/admin", "filters": {"rateLimit": None}}],
        "filters": {"rateLimit": {"requests": 5, "interval": "1m", "keyBy": "client_ip"},
                    "jwtAuth": {"issuer": "https://id.example",
                                "jwksUri": "https://id.example/keys"}},
    })  # fmt: skip
    post(api, f"{P}/apis", {
        "name": "billing", "team": "beta", "domain": "billing.example",
        "upstreams": [{"host": "127.0.0.1", "port": 9000}], "routes": [{"path": "/"}],
        "listener": {"isolation": True, "address": "127.0.0.1", "port": 21803},
    })  # fmt: skip
    r = api.post(f"{P}/import/openapi", params={"team": "alpha", "domain": "store.example"},
                 content=OPENAPI, headers={"content-type": "application/yaml"})  # fmt: skip
    assert r.status_code == 201, r.text
    generated = pets["generated"]["clusters"][0]
    post(api, f"{N}/route-configs", routes("via-api", "alpha", generated))


@pytest.fixture(scope="module")
def rich_server(server: Server) -> Server:
    with server.api() as api:
        build_state(api)
    return server


def env_for(s: Server, tmp_path: Path) -> dict[str, str]:
    return {"FLOWPLANE_SERVER": s.url, "FLOWPLANE_TOKEN": s.token,
            "FLOWPLANE_CONFIG": str(tmp_path / "none.yaml")}  # fmt: skip


def test_export_apply_export_is_identity(rich_server: Server, tmp_path: Path) -> None:
    """Issue 16 acceptance: export -> apply into a fresh server -> export gives identical
    documents (every kind, filters, teams, platform APIs: an API's generated resources are
    its Api document, not native documents); applying again plans nothing."""
    first = ok(run_cli("export", env=env_for(rich_server, tmp_path))).out
    docs = list(yaml.safe_load_all(first))
    kinds = [d["kind"] for d in docs]
    assert kinds == sorted(kinds, key=["Team", "Cluster", "Api", "RouteConfig", "Listener"].index)
    assert {"Team", "Cluster", "Api", "RouteConfig", "Listener"} <= set(kinds)
    names = {(d["kind"], d["spec"].get("team"), d["spec"]["name"]) for d in docs}
    assert ("Api", "alpha", "store") in names and ("Api", "beta", "billing") in names
    assert not any(d["spec"]["name"].startswith(("alpha.", "beta.")) for d in docs)  # generated
    assert not any(d["spec"]["name"].startswith("default-gateway") for d in docs)
    (tmp_path / "state.yaml").write_text(first)

    fresh = start_server(tmp_path / "fresh")
    try:
        env = env_for(fresh, tmp_path)
        applied = ok(run_cli("apply", "-f", str(tmp_path / "state.yaml"), env=env))
        assert f"{len(docs)} to create, 0 to update, 0 to delete" in applied.out
        second = ok(run_cli("export", env=env)).out
        assert second == first
        again = ok(run_cli("apply", "-f", str(tmp_path / "state.yaml"), "-o", "json", env=env))
        assert {c["action"] for c in again.json()} == {"unchanged"}

        # export --dir writes one file per resource; the directory applies as the same state
        ok(run_cli("export", "--dir", str(tmp_path / "repo"), env=env))
        files = sorted(p.relative_to(tmp_path / "repo").as_posix()
                       for p in (tmp_path / "repo").rglob("*.yaml"))  # fmt: skip
        assert "_teams/alpha.yaml" in files and "alpha/api/pets.yaml" in files
        assert "_shared/cluster/shared-authz.yaml" in files and len(files) == len(docs)
        r = ok(run_cli("apply", "-f", str(tmp_path / "repo"), "--prune", env=env))
        assert f"0 to create, 0 to update, 0 to delete, {len(docs)} unchanged" in r.out
    finally:
        fresh.stop()


def test_prune_stays_inside_the_files_scope(rich_server: Server, tmp_path: Path) -> None:
    """README "Declarative configuration": --prune deletes only resources of the files' teams
    that the files do not describe -- never another team's, a shared one (no shared document
    here), what an API generated, the default gateway or a team. Deletes run listener ->
    route config -> cluster; --dry-run changes nothing."""
    env = env_for(rich_server, tmp_path)
    with rich_server.api() as api:
        post(api, "/api/v1/teams", {"name": "gamma"})
        post(api, "/api/v1/teams", {"name": "delta"})
        # distinct names per team: today names are unique across teams (api.md: per team soon)
        for team in ("gamma", "delta"):
            extra = f"extra-{team}"
            post(api, f"{N}/clusters", cluster(f"kept-{team}", team))
            post(api, f"{N}/clusters", cluster(extra, team))
            post(api, f"{N}/route-configs", routes(extra, team, extra))
            post(
                api,
                f"{N}/listeners",
                listener(extra, team, {"gamma": 21811, "delta": 21812}[team], extra),
            )
        post(api, f"{P}/apis", {"name": "gapi", "team": "gamma", "domain": "gapi.example",
                                "upstreams": [{"url": "http://127.0.0.1:8000"}],
                                "routes": [{"path": "/"}]})  # fmt: skip
        before = {p: api.get(p, params={"limit": 1000}).json()["total"]
                  for p in (f"{N}/clusters", f"{N}/route-configs", f"{N}/listeners",
                            f"{P}/apis", "/api/v1/teams")}  # fmt: skip

    files = tmp_path / "gamma.yaml"
    files.write_text(yaml.safe_dump_all([
        {"kind": "Team", "spec": {"name": "gamma"}},
        {"kind": "Cluster", "spec": cluster("kept-gamma", "gamma", connectTimeoutSeconds=4)},
        {"kind": "Cluster", "spec": cluster("kept-delta", "delta")},
    ]))  # fmt: skip

    plan = ok(run_cli("apply", "-f", str(files), "--prune", "--team", "gamma", "--dry-run",
                      "-o", "json", env=env)).json()  # fmt: skip
    changes = {(c["action"], c["kind"], c["team"], c["name"]) for c in plan}
    assert changes == {
        ("unchanged", "Team", None, "gamma"),
        ("update", "Cluster", "gamma", "kept-gamma"),
        ("delete", "Listener", "gamma", "extra-gamma"),
        ("delete", "RouteConfig", "gamma", "extra-gamma"),
        ("delete", "Api", "gamma", "gapi"),
        ("delete", "Cluster", "gamma", "extra-gamma"),
    }
    assert [c["kind"] for c in plan if c["action"] == "delete"] == [
        "Listener", "RouteConfig", "Api", "Cluster"]  # fmt: skip
    human = ok(run_cli("apply", "-f", str(files), "--prune", "--team", "gamma", "--dry-run",
                       env=env)).out  # fmt: skip
    assert "~ update Cluster gamma/kept-gamma" in human and "+connectTimeoutSeconds: 4" in human
    assert "- delete Listener gamma/extra-gamma" in human

    with rich_server.api() as api:  # a dry run changes nothing
        assert {p: api.get(p, params={"limit": 1000}).json()["total"] for p in before} == before

    r = ok(run_cli("apply", "-f", str(files), "--prune", "--team", "gamma", env=env))
    assert "applied 5 changes" in r.out
    with rich_server.api() as api:
        for kind in ("clusters", "route-configs", "listeners"):
            r = api.get(f"{N}/{kind}/extra-delta", params={"team": "delta"})
            assert r.json()["team"] == "delta"
        assert api.get(f"{N}/clusters/kept-gamma", params={"team": "gamma"}).json()[
            "connectTimeoutSeconds"] == 4  # fmt: skip
        after = {p: api.get(p, params={"limit": 1000}).json()["total"] for p in before}
    # gamma lost exactly: 1 listener, 1 route config, 1 cluster and its API (with the
    # cluster the API generated); nothing else anywhere
    assert after[f"{N}/listeners"] == before[f"{N}/listeners"] - 1
    assert after[f"{N}/route-configs"] == before[f"{N}/route-configs"] - 1
    assert after[f"{N}/clusters"] == before[f"{N}/clusters"] - 2
    assert after[f"{P}/apis"] == before[f"{P}/apis"] - 1
    assert after["/api/v1/teams"] == before["/api/v1/teams"]

    # without --team the files' teams are gamma and delta: delta's extras go too, shared and
    # API-made resources and the default gateway stay
    plan = ok(run_cli("apply", "-f", str(files), "--prune", "--dry-run", "-o", "json",
                      env=env)).json()  # fmt: skip
    deletes = {(c["kind"], c["team"], c["name"]) for c in plan if c["action"] == "delete"}
    assert deletes == {("Listener", "delta", "extra-delta"),
                       ("RouteConfig", "delta", "extra-delta"),
                       ("Cluster", "delta", "extra-delta")}  # fmt: skip
    ok(run_cli("apply", "-f", str(files), "--prune", env=env))
    plan = ok(run_cli("apply", "-f", str(files), "--prune", "-o", "json", env=env)).json()
    assert {c["action"] for c in plan} == {"unchanged"}  # idempotent


def test_invalid_documents_change_nothing(rich_server: Server, tmp_path: Path) -> None:
    """Every problem of every document is listed (exit 2) and nothing is sent; a document the
    server refuses stops the run with the server's message and its exit code."""
    env = env_for(rich_server, tmp_path)
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.yaml").write_text(yaml.safe_dump_all([
        {"kind": "Cluster", "spec": cluster("inv-1", "alpha")},
        {"kind": "Gadget", "spec": {"name": "x"}},
        {"kind": "Cluster", "spec": {"endpoints": []}},
    ]))  # fmt: skip
    (d / "b.json").write_text('[{"kind": "Cluster", "spec": {"name": "inv-1", "team": "alpha",'
                              ' "endpoints": []}}, {"kind": "Team", "spec": {"name": "t"},'
                              ' "extra": 1}]')  # fmt: skip
    r = run_cli("apply", "-f", str(d), env=env)
    assert r.code == 2
    for expected in ("a.yaml#2: `kind` must be one of", "a.yaml#3: `spec` must be a mapping",
                     "b.json#1: same resource as", "b.json#2: unknown keys extra"):  # fmt: skip
        assert expected in r.err, r.err
    with rich_server.api() as api:
        assert api.get(f"{N}/clusters/inv-1").status_code == 404

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([
        {"kind": "Cluster", "spec": cluster("inv-2", "alpha")},
        {"kind": "RouteConfig", "spec": routes("inv-2", "alpha", "no-such-cluster")},
    ]))  # fmt: skip
    r = run_cli("apply", "-f", str(bad), env=env)
    assert r.code == 8, r.err
    assert "create RouteConfig alpha/inv-2 failed after 1 of 2 changes" in r.err
    assert "no-such-cluster" in r.err


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gitops" / "flowplane"


def test_the_gitops_example_applies_and_exports_as_its_layout(
    server: Server, tmp_path: Path
) -> None:
    """examples/gitops: the workflow's dry run changes nothing, apply creates it all, a second
    apply plans nothing, and `export --dir --team payments` writes the same documents in the
    same layout."""
    env = env_for(server, tmp_path)
    dry = ok(run_cli("apply", "-f", str(EXAMPLE), "--prune", "--dry-run", env=env))
    assert "5 to create, 0 to update, 0 to delete" in dry.out
    assert run_cli("teams", "get", "payments", env=env).code == 5
    ok(run_cli("apply", "-f", str(EXAMPLE), "--prune", env=env))
    again = ok(run_cli("apply", "-f", str(EXAMPLE), "--prune", env=env))
    assert "0 to create, 0 to update, 0 to delete, 5 unchanged" in again.out
    ok(run_cli("export", "--team", "payments", "--dir", str(tmp_path / "out"), env=env))
    mine = {p.relative_to(EXAMPLE): yaml.safe_load(p.read_text()) for p in EXAMPLE.rglob("*.yaml")}
    out = tmp_path / "out"
    exported = {p.relative_to(out): yaml.safe_load(p.read_text()) for p in out.rglob("*.yaml")}
    assert exported == mine
    # a change to the API in a copy of the repository: an update (If-Match), then nothing
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    api_file = repo / "payments" / "api" / "invoices.yaml"
    api_doc = yaml.safe_load(api_file.read_text())
    api_doc["spec"]["routes"].append({"path": "/invoices", "methods": ["POST"]})
    api_file.write_text(yaml.safe_dump(api_doc))
    r = ok(run_cli("apply", "-f", str(repo), "--prune", env=env))
    assert "~ update Api payments/invoices" in r.out
    added = [ln.strip() for ln in r.out.splitlines() if ln.strip().startswith("+ ")]
    assert "- POST" in " ".join(added) and "path: /invoices" in " ".join(added)
    assert "applied 1 changes" in r.out
    again = ok(run_cli("apply", "-f", str(repo), "--prune", env=env))
    assert "0 to create, 0 to update, 0 to delete, 5 unchanged" in again.out


def test_a_team_token_exports_and_applies_what_it_may_see(
    rich_server: Server, tmp_path: Path
) -> None:
    """An api-developer token of team alpha may not list Native resources (403): export
    skips those kinds (saying so) and writes alpha's APIs; applying that export with
    the same token plans nothing, --prune included (a kind it cannot list, it cannot prune)."""
    with rich_server.api() as api:
        made = post(api, "/api/v1/tokens", {"name": "alpha-dev", "role": "api-developer",
                                            "teams": ["alpha"]})  # fmt: skip
    env = env_for(rich_server, tmp_path) | {"FLOWPLANE_TOKEN": made["token"]}
    r = ok(run_cli("export", env=env))
    assert "skipped clusters" in r.err and "skipped listeners" in r.err
    docs = list(yaml.safe_load_all(r.out))
    assert {(d["kind"], d["spec"]["team"]) for d in docs} == {("Api", "alpha")}
    (tmp_path / "alpha.yaml").write_text(r.out)
    plan = ok(run_cli("apply", "-f", str(tmp_path / "alpha.yaml"), "--prune", "-o", "json",
                      env=env)).json()  # fmt: skip
    assert len(plan) == len(docs) and {c["action"] for c in plan} == {"unchanged"}
