"""Real-world OpenAPI documents through a real Envoy (issue 10's acceptance): the petstore
(OpenAPI 3.0), Redocly's Museum API (3.1) and the Box Platform API (3.0, 296 operations), each
imported over REST onto one plane's shared gateway. Envoy accepts every resource, and a sample
of each document's operations (all of the small ones, every 10th of Box's) sent with the API's
Host and a concrete path reaches the upstream its servers name, with the path they imply.

The documents name real hosts (api.box.com, upload.box.com, ...), which a test cannot reach.
So before posting, each `servers` URL in the loaded document (document, path item and operation
level) has its scheme and host:port replaced by a local plain-HTTP upstream, one per original
host, keeping its path; server variables are resolved to their defaults first (as the importer
does). Everything else of the document is posted unchanged. The API's domain is the original
first server's host, passed as the `domain` option (the rewritten servers are IP addresses,
which the importer rightly refuses as a domain). What this does not exercise: TLS to the
upstream (the original servers are https)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import yaml

from flowplane.settings import load_settings
from flowplane.testing.envoy import ads_bootstrap, run_envoy
from flowplane.testing.plane import Plane, run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import Upstream, run_upstream
from tests.helpers import ok

pytestmark = pytest.mark.e2e

P = "/api/v1/platform"
DATA = Path(__file__).parent / "data" / "openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_VARIABLE_RE = re.compile(r"\{([^{}]*)\}")


def _load(file: str) -> dict[str, Any]:
    raw = (DATA / file).read_bytes()
    if file.endswith(".gz"):
        return json.loads(gzip.decompress(raw))  # type: ignore[no-any-return]
    return yaml.safe_load(raw)  # type: ignore[no-any-return]


def _resolve(server: dict[str, Any]) -> str:
    """A server's URL with its variables replaced by their defaults."""
    variables = server.get("variables") or {}
    return _VARIABLE_RE.sub(lambda m: str(variables[m.group(1)]["default"]), server["url"])


def _all_servers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from doc.get("servers") or []
    for item in doc["paths"].values():
        yield from item.get("servers") or []
        for method in METHODS:
            if method in item:
                yield from item[method].get("servers") or []


def _hosts(doc: dict[str, Any]) -> set[str]:
    return {urlsplit(_resolve(server)).hostname or "" for server in _all_servers(doc)}


def _localise(doc: dict[str, Any], upstreams: dict[str, Upstream]) -> dict[str, Any]:
    """The document with every server URL sent to the upstream standing for its host (the
    path kept, variables resolved and dropped). Changes `doc` in place and returns it."""
    for server in _all_servers(doc):
        url = urlsplit(_resolve(server))
        server["url"] = f"{upstreams[url.hostname or ''].url}{url.path}"
        server.pop("variables", None)
    return doc


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as the document writes it (template, maybe a `#variant`)
    server: str  # the effective server URL (operation's, else path item's, else document's)
    unusual: bool  # servers of its own, or a `#variant` path: always in the sample


def _operations(doc: dict[str, Any]) -> list[Operation]:
    ops = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                own = item[method].get("servers") or item.get("servers")
                server = _resolve((own or doc["servers"])[0])
                ops.append(Operation(method, path, server, bool(own) or "#" in path))
    return ops


def _concrete(template: str) -> str:
    """A request path for a document path: variables filled, a `#variant` dropped."""
    return _VARIABLE_RE.sub("v42", template.split("#")[0].split("?")[0])


@dataclass(frozen=True)
class Document:
    file: str
    domain: str  # the original first server's host
    sample_every: int


DOCUMENTS = (
    Document("petstore.yaml", "petstore.swagger.io", 1),
    Document("museum-api.yaml", "redocly.com", 1),
    Document("box-openapi.json.gz", "api.box.com", 10),
)


@asynccontextmanager
async def _upstreams(hosts: set[str]) -> AsyncIterator[dict[str, Upstream]]:
    async with AsyncExitStack() as stack:
        yield {h: await stack.enter_async_context(run_upstream(h)) for h in sorted(hosts)}


async def _request(port: int, method: str, path: str, host: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        return await client.request(
            method.upper(), f"http://127.0.0.1:{port}{path}", headers={"host": host}
        )


async def _no_nacks(plane: Plane) -> None:
    nodes = ok(await plane.api.get("/api/v1/nodes"), 200)["items"]
    assert nodes
    for node in nodes:
        assert node["resources"], node
        for type_url, res in node["resources"].items():
            assert res["lastRejection"] is None, (type_url, res)


async def test_real_documents_are_imported_and_served(db_url: str, tmp_path: Path) -> None:
    docs = {d.file: _load(d.file) for d in DOCUMENTS}
    # the operations (and where they go) as the original document says, before localising
    samples = {
        d.file: [op for i, op in enumerate(_operations(docs[d.file]))
                 if i % d.sample_every == 0 or op.unusual]
        for d in DOCUMENTS
    }  # fmt: skip
    assert len(_operations(docs["box-openapi.json.gz"])) == 296
    hosts = set().union(*(_hosts(doc) for doc in docs.values()))
    gateway = free_port()
    settings = load_settings(
        database_url=db_url, xds_address="127.0.0.1:0", default_gateway=True,
        default_gateway_address=f"127.0.0.1:{gateway}", snapshot_debounce_seconds=0.001,
        xds_auth="none",  # bootstraps made here carry no token
    )  # fmt: skip
    with trio.fail_after(120):
        async with run_plane(settings) as plane, _upstreams(hosts) as upstreams:
            for d in DOCUMENTS:
                body = json.dumps(_localise(docs[d.file], upstreams)).encode()
                imported = ok(await plane.api.post(
                    f"{P}/import/openapi?domain={d.domain}", content=body,
                    headers={"content-type": "application/json"},
                ))  # fmt: skip
                assert imported["api"]["domain"] == d.domain
            await plane.settled()
            boot = ads_bootstrap("envoy-realdocs", "127.0.0.1", plane.xds_port)
            async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                await envoy.wait_ready()

                async def serving() -> bool:
                    try:
                        resp = await _request(gateway, "GET", "/v1/pets", "petstore.swagger.io")
                    except httpx.TransportError:
                        return False
                    return resp.status_code == 200

                await envoy.wait_for(serving, 20, what="the gateway serving the petstore")
                await _no_nacks(plane)
                for d in DOCUMENTS:
                    base = urlsplit(_resolve(docs[d.file]["servers"][0])).path.rstrip("/")
                    for op in samples[d.file]:
                        server = urlsplit(op.server)
                        upstream = upstreams[server.hostname or ""]
                        concrete = _concrete(op.path)
                        resp = await _request(gateway, op.method, base + concrete, d.domain)
                        where = f"{d.file}: {op.method.upper()} {op.path}"
                        assert resp.status_code == 200, (where, resp.status_code, resp.text)
                        assert resp.headers["x-upstream"] == upstream.name, where
                        seen = upstream.requests[-1]
                        assert (seen.method, seen.path) == (
                            op.method.upper(),
                            server.path.rstrip("/") + concrete,
                        ), where
                await _no_nacks(plane)
