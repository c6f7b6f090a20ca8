"""The README's CLI walk-through, run as written (bash, the installed `flowplane` script)
against a real server, so every step it shows works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.cli.conftest import Server, ok, run_cli

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(marker: str) -> str:
    text = README.read_text()
    start = text.index(marker)
    return text[start:].split("```sh\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_cli_walkthrough_runs(server: Server, tmp_path: Path) -> None:
    script = readme_block("<!-- cli-walkthrough -->")
    assert "http://127.0.0.1:8080" in script
    script = script.replace("http://127.0.0.1:8080", server.url)
    # pets.yaml as "Your first API in five minutes" writes it
    first_api = readme_block("## Your first API in five minutes")
    pets = re.search(r"cat > pets.yaml <<'YAML'\n(.*?)\nYAML\n", first_api, re.S)
    assert pets
    (tmp_path / "pets.yaml").write_text(pets.group(1) + "\n")
    editor = tmp_path / "editor.py"  # what a person does in the editor: move to port 8001
    editor.write_text(
        "import sys, yaml\n"
        "doc = yaml.safe_load(open(sys.argv[1]))\n"
        "doc['endpoints'][0]['port'] = 8001\n"
        "open(sys.argv[1], 'w').write(yaml.safe_dump(doc))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPLANE_")}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "TOKEN": server.token,
        "FLOWPLANE_CONFIG": str(tmp_path / "config.yaml"),
        "EDITOR": f"{sys.executable} {editor}",
    }
    env.pop("VISUAL", None)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "logged in to" in out and "cluster 'backend' saved" in out
    assert "1 to update" in out  # listeners apply -f: the listener gained its filters
    assert "API 'pets'" in out and "created" in out
    assert "domain: pets.local" in out  # apis get pets -o yaml
    assert yaml.safe_load((tmp_path / "envoy.yaml").read_text())["node"]["id"].startswith("dp-")

    auth = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=auth) as api:
        backend = api.get("/api/v1/native/clusters/backend").json()
        assert backend["endpoints"] == [{"host": "127.0.0.1", "port": 8001}]
        assert backend["version"] == 2
        web = api.get("/api/v1/native/listeners/web").json()
        filters = web["filterChains"][0]["filters"][0]["httpFilters"]
        assert [f["type"] for f in filters] == ["local_rate_limit", "header_mutation"]

    # `-f -` reads stdin, for create and for apply
    cfg = {"FLOWPLANE_CONFIG": str(tmp_path / "config.yaml")}
    spec = '{"name": "from-stdin", "endpoints": [{"host": "127.0.0.1", "port": 9}]}'
    ok(run_cli("clusters", "create", "-f", "-", stdin=spec, env=cfg))
    doc = f'{{"kind": "Cluster", "spec": {spec}}}'
    assert "1 unchanged" in ok(run_cli("apply", "-f", "-", stdin=doc, env=cfg)).out
