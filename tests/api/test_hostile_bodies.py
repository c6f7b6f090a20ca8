"""Hostile request bodies and paths (issue 11, item 7): JSON between systems is UTF-8 without a
byte order mark (RFC 8259 §8.1), a key appears once per object, and a path with `//` is the JSON
404 — never werkzeug's 308 with an HTML body."""

from __future__ import annotations

import codecs
import json

import httpx
import pytest

from flowplane.app import Core, quart_app
from flowplane.testing.factories import cluster_body

N = "/api/v1/native"
JSON = {"Content-Type": "application/json"}
BODY = json.dumps(cluster_body("encoded", 8080))


def assert_bad_request(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == "bad_request"
    for word in words:
        assert word in body["message"], body


@pytest.mark.parametrize(
    "raw",
    [
        BODY.encode("utf-16"),  # with its BOM
        BODY.encode("utf-16-le"),
        BODY.encode("utf-16-be"),
        BODY.encode("utf-32"),
        BODY.encode("utf-32-le"),
        codecs.BOM_UTF8 + BODY.encode(),
        BODY.replace('"encoded"', '"enc\xf6ded"').encode("latin-1"),  # a lone 0xF6 byte
    ],
    ids=["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-8-bom", "latin-1"],
)
async def test_a_body_that_is_not_plain_utf8_is_refused(
    client: httpx.AsyncClient, core: Core, raw: bytes
) -> None:
    assert_bad_request(await client.post(f"{N}/clusters", content=raw, headers=JSON))
    assert_bad_request(await client.post("/api/v1/teams", content=raw, headers=JSON))
    assert await core.repo.load_all() == []
    # the same document as UTF-8 is accepted: only the encoding was wrong
    assert (
        await client.post(f"{N}/clusters", content=BODY.encode(), headers=JSON)
    ).status_code == 201


async def test_a_duplicate_key_is_refused_not_last_one_wins(
    client: httpx.AsyncClient, core: Core
) -> None:
    assert (await client.post("/api/v1/teams", json={"name": "a"})).status_code == 201
    assert (await client.post("/api/v1/teams", json={"name": "b"})).status_code == 201
    before = len(await core.repo.load_all())
    endpoints = '[{"host": "127.0.0.1", "port": 8080}]'
    top = f'{{"name": "dup", "endpoints": {endpoints}, "team": "a", "team": "b"}}'
    assert_bad_request(await client.post(f"{N}/clusters", content=top, headers=JSON), "'team'")
    nested = '{"name": "dup", "endpoints": [{"host": "127.0.0.1", "port": 80, "port": 8080}]}'
    assert_bad_request(await client.post(f"{N}/clusters", content=nested, headers=JSON), "'port'")
    assert len(await core.repo.load_all()) == before

    # a merge patch too
    body = cluster_body("dup", 8080, team="a")
    assert (await client.post(f"{N}/clusters", json=body)).status_code == 201
    patch = '{"team": "b", "team": "a"}'
    r = await client.patch(
        f"{N}/clusters/dup", content=patch,
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert_bad_request(r, "'team'")
    assert (await client.get(f"{N}/clusters/dup")).json()["version"] == 1

    # the same key in two different objects is fine
    ok = ('{"name": "two", "endpoints": [{"host": "a.example", "port": 1}, '
          '{"host": "b.example", "port": 2}]}')  # fmt: skip
    assert (await client.post(f"{N}/clusters", content=ok, headers=JSON)).status_code == 201


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{N}/clusters//x"),
        ("GET", f"{N}//clusters/x"),
        ("GET", "/api//v1/native/clusters"),
        ("GET", "//healthz"),
        ("GET", "/static//x"),
        ("GET", f"{N}/clusters/x/"),
        ("GET", f"{N}/clusters/"),
        ("DELETE", f"{N}/clusters//x"),
        ("PUT", f"{N}/clusters//x"),
        ("POST", f"{N}//clusters"),
    ],
)
async def test_doubled_and_trailing_slashes_are_the_json_404(
    client: httpx.AsyncClient, core: Core, method: str, path: str
) -> None:
    assert (await client.post(f"{N}/clusters", json=cluster_body("x", 8080))).status_code == 201
    r = await client.request(method, path, json=cluster_body("x", 8080))
    assert r.status_code == 404, (r.status_code, r.headers, r.text)
    assert r.headers["content-type"] == "application/json"
    assert "location" not in r.headers
    assert r.json()["error"] == "not_found"


async def test_no_route_can_answer_a_redirect(core: Core) -> None:
    """werkzeug's two routing redirects: merged slashes (off) and a rule ending in `/` requested
    without it (strict_slashes) — so no rule may end in `/`."""
    app = quart_app(core)
    rules = list(app.url_map.iter_rules())
    assert rules
    assert [r.rule for r in rules if r.merge_slashes] == []
    assert [r.rule for r in rules if r.rule.endswith("/")] == []
