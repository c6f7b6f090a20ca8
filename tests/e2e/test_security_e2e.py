"""Security end to end: per-team data planes, mTLS and token auth on xDS with real Envoy 1.40
processes, API TLS and hostile input against a real `flowplane serve` process.

Envoys run one at a time where a test checks that a port is *not* served: Envoy listeners use
SO_REUSEPORT, so a second Envoy with the same listener would answer for the first.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jwt
import pytest
import trio

from flowplane.settings import Settings, load_settings
from flowplane.testing.certs import Pki, make_pki
from flowplane.testing.envoy import EnvoyProcess, run_envoy
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.testing.plane import run_plane
from flowplane.testing.ports import free_port
from flowplane.testing.upstream import Upstream, run_upstream

pytestmark = pytest.mark.e2e

N = "/api/v1/native"
ADS_LOGGER = "flowplane.grpc.ads"
XDS_TYPES = ("Listener", "Cluster", "RouteConfiguration")
REFUSAL_WINDOW = 3.0  # seconds a refused Envoy is watched (Envoy retries ADS every ~0.5-1 s)


# -- helpers: the control plane -----------------------------------------------------------------


def plane_settings(db_url: str, **extra: Any) -> Settings:
    extra.setdefault("xds_auth", "none")  # tests that want token or mtls say so
    return load_settings(
        database_url=db_url, xds_address="127.0.0.1:0", default_gateway=False,
        snapshot_debounce_seconds=0.001, **extra,
    )  # fmt: skip


def ok(resp: httpx.Response, status: int = 201) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.text}"
    return resp.json() if resp.content else None


@dataclass(frozen=True)
class Stack:
    """A cluster -> route config -> listener chain on 127.0.0.1:`port`."""

    listener: str
    route_config: str
    cluster: str
    port: int
    team: str | None = None

    def xds(self, name: str) -> str:
        """`name` as xDS names it: `<team>/<name>` for a team's resource (api.md)."""
        return name if self.team is None else f"{self.team}/{name}"


async def create_stack(
    api: httpx.AsyncClient, prefix: str, team: str | None, upstream: Upstream
) -> Stack:
    stack = Stack(f"{prefix}-edge", f"{prefix}-routes", f"{prefix}-backend", free_port(), team)
    owner: dict[str, Any] = {"team": team} if team is not None else {}
    ok(await api.post(f"{N}/clusters", json=cluster_body(stack.cluster, upstream.port, **owner)))
    body = route_config_body(stack.route_config, stack.cluster, **owner)
    ok(await api.post(f"{N}/route-configs", json=body))
    body = listener_body(
        stack.listener, stack.route_config, stack.port, address="127.0.0.1", **owner
    )
    ok(await api.post(f"{N}/listeners", json=body))
    return stack


async def fetch_bootstrap(api: httpx.AsyncClient, team: str, **params: str) -> dict[str, Any]:
    """The bootstrap the API hands out, with admin moved from 9901 to port 0 for tests."""
    qs = urlencode({"format": "json", **params})
    doc: dict[str, Any] = ok(await api.get(f"/api/v1/teams/{team}/bootstrap?{qs}"), 200)
    assert doc["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    doc["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    return doc


async def node_ids(api: httpx.AsyncClient) -> list[str | None]:
    return [n["id"] for n in ok(await api.get("/api/v1/nodes"), 200)["items"]]


async def node_synced(api: httpx.AsyncClient, node_id: str) -> dict[str, Any] | None:
    """The node's record once it has acknowledged every LDS/CDS/RDS version it was sent."""
    r = await api.get(f"/api/v1/nodes/{node_id}")
    if r.status_code != 200:
        return None
    node: dict[str, Any] = r.json()
    res = node["resources"]
    if not set(XDS_TYPES) <= res.keys():
        return None
    if any(v["versionSent"] is None or v["versionSent"] != v["versionAcknowledged"]
           for v in res.values()):  # fmt: skip
        return None
    return node


# -- helpers: Envoy -----------------------------------------------------------------------------


async def get_body(envoy: EnvoyProcess, port: int) -> bytes | None:
    try:
        status, _, body = await envoy.request(port, "/")
    except (OSError, httpx.TransportError):
        return None
    return body if status == 200 else None


async def refused(envoy: EnvoyProcess, port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` (connection refused)."""
    try:
        await envoy.request(port, "/", http_timeout=2)
    except httpx.ConnectError:
        return True
    return False


async def wait_serving(envoy: EnvoyProcess, stack: Stack, upstream: Upstream) -> None:
    async def probe() -> bool:
        body = await get_body(envoy, stack.port)
        return body is not None and body.startswith(upstream.name.encode() + b" GET /")

    await envoy.wait_for(probe, 20, what=f"traffic through {stack.listener} to {upstream.name}")


def expected(*stacks: Stack) -> dict[str, set[str]]:
    return {
        "listeners": {s.xds(s.listener) for s in stacks},
        "route_configs": {s.xds(s.route_config) for s in stacks},
        "clusters": {s.xds(s.cluster) for s in stacks},
    }


async def dynamic_names(envoy: EnvoyProcess) -> dict[str, set[str]]:
    rv = await envoy.resource_versions()
    return {k: set(rv[k]) for k in ("listeners", "route_configs", "clusters")}


async def assert_receives_only(
    api: httpx.AsyncClient,
    envoy: EnvoyProcess,
    node_id: str,
    stacks: Iterable[Stack],
    upstreams: dict[str, Upstream],
) -> dict[str, Any]:
    """Traffic flows through every stack's listener, the node has acknowledged everything it was
    sent, and Envoy holds exactly these stacks' listeners, route configs and clusters."""
    stacks = list(stacks)
    for s in stacks:
        await wait_serving(envoy, s, upstreams[s.port])
    node = await envoy.wait_for(lambda: node_synced(api, node_id), 20, what="node synced")
    assert node is not None
    assert await dynamic_names(envoy) == expected(*stacks)
    assert all(v == 0 for v in (await envoy.rejected_counts()).values())
    return node


async def assert_never_configured(
    api: httpx.AsyncClient, envoy: EnvoyProcess, node_id: str, window: float = REFUSAL_WINDOW
) -> None:
    """For `window` seconds: Envoy holds no dynamic listener, route config or cluster, and
    `/api/v1/nodes` never lists `node_id`."""
    with trio.move_on_after(window):
        while True:
            envoy.check_running()
            names = await dynamic_names(envoy)
            assert not any(names.values()), names
            assert node_id not in await node_ids(api)
            await trio.sleep(0.05)
    assert not any((await dynamic_names(envoy)).values())
    assert node_id not in await node_ids(api)


async def wait_log(
    caplog: pytest.LogCaptureFixture, needle: str, seconds: float = 20
) -> logging.LogRecord:
    with trio.fail_after(seconds):
        while True:
            for rec in caplog.records:
                if rec.name == ADS_LOGGER and needle in rec.getMessage():
                    return rec
            await trio.sleep(0.05)


def ads_service(boot: dict[str, Any]) -> dict[str, Any]:
    service: dict[str, Any] = boot["dynamic_resources"]["ads_config"]["grpc_services"][0]
    return service


def xds_tls_context(boot: dict[str, Any]) -> dict[str, Any]:
    ctx: dict[str, Any] = boot["static_resources"]["clusters"][0]["transport_socket"][
        "typed_config"
    ]
    return ctx


# -- 1. team-scoped data planes (xDS auth none: node metadata is trusted) -----------------------


async def test_team_scoped_data_planes(db_url: str, tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with (
            run_plane(plane_settings(db_url)) as plane,
            run_upstream("up-a") as ua,
            run_upstream("up-a2") as ua2,
            run_upstream("up-b") as ub,
            run_upstream("up-shared") as us,
        ):
            api = plane.api
            for team in ("a", "b"):
                ok(await api.post("/api/v1/teams", json={"name": team}))
            # names are unique per team (api.md): a's first stack and b's have the same names
            a = await create_stack(api, "app", "a", ua)
            a2 = await create_stack(api, "a2", "a", ua2)
            b = await create_stack(api, "app", "b", ub)
            shared = await create_stack(api, "shared", None, us)
            ups = {a.port: ua, a2.port: ua2, b.port: ub, shared.port: us}
            await plane.settled()

            async def envoy_for(
                team: str, stacks: list[Stack], absent: list[Stack], **params: str
            ) -> None:
                boot = await fetch_bootstrap(api, team, **params)
                node_id = boot["node"]["id"]
                assert node_id.startswith(f"team={team}/dp-")
                assert boot["node"]["metadata"]["team"] == team
                async with run_envoy(boot, tmp_dir=tmp_path) as envoy:
                    node = await assert_receives_only(api, envoy, node_id, stacks, ups)
                    assert node["team"] == team
                    for s in absent:
                        assert await refused(envoy, s.port), f"{s.listener} must not be served"
                # gone from /api/v1/nodes once Envoy stops
                with trio.fail_after(10):
                    while node_id in await node_ids(api):  # noqa: ASYNC110
                        await trio.sleep(0.05)

            # Envoy A: team a only (two listeners), not b's, not the shared one
            await envoy_for("a", [a, a2], [b, shared])
            # Envoy B: team b only
            await envoy_for("b", [b], [a, a2, shared])
            # Envoy A2: team a plus the shared listener
            await envoy_for("a", [a, a2, shared], [b], includeDefault="true")
            # allowlist: only a's first listener and what it references
            await envoy_for("a", [a], [a2, b, shared], scope="allowlist", allowlist=a.listener)
            # an allowlist naming another team's listener does not get it
            await envoy_for(
                "a", [a], [a2, b, shared], scope="allowlist", allowlist=f"{a.listener},b/{b.listener}"
            )


# -- 2. mTLS: the team comes from the client certificate ----------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", teams=("a", "b"))


def mtls_settings(db_url: str, pki: Pki) -> Settings:
    return plane_settings(
        db_url, xds_tls_cert=str(pki.server_cert), xds_tls_key=str(pki.server_key),
        xds_tls_client_ca=str(pki.ca_cert), xds_auth="mtls",
    )  # fmt: skip


async def test_mtls_identity_decides_the_team(
    db_url: str, tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=ADS_LOGGER)
    with trio.fail_after(120):
        async with run_plane(mtls_settings(db_url, pki)) as plane, run_upstream("up-a") as ua:
            api = plane.api
            ok(await api.post("/api/v1/teams", json={"name": "a"}))
            a = await create_stack(api, "a", "a", ua)
            await plane.settled()

            def files(team: str) -> dict[str, str]:
                pair = pki.client(team)
                return {"caFile": str(pki.ca_cert), "certFile": str(pair.cert),
                        "keyFile": str(pair.key)}  # fmt: skip

            # the bootstrap carries the TLS block with the files asked for
            boot = await fetch_bootstrap(api, "a", **files("a"))
            tls = xds_tls_context(boot)
            common = tls["common_tls_context"]
            assert common["validation_context"]["trusted_ca"] == {"filename": str(pki.ca_cert)}
            assert common["tls_certificates"] == [{
                "certificate_chain": {"filename": str(pki.client("a").cert)},
                "private_key": {"filename": str(pki.client("a").key)},
            }]  # fmt: skip
            assert tls["sni"] == "127.0.0.1"

            # team a's certificate: connects, gets team a's config, traffic flows
            async with run_envoy(boot, tmp_dir=tmp_path / "good") as envoy:
                node = await assert_receives_only(api, envoy, boot["node"]["id"], [a],
                                                  {a.port: ua})  # fmt: skip
                assert node["team"] == "a"

            # no client certificate: the TLS handshake fails, no stream, no config
            bare = await fetch_bootstrap(api, "a", **files("a"))
            del xds_tls_context(bare)["common_tls_context"]["tls_certificates"]
            async with run_envoy(bare, tmp_dir=tmp_path / "bare") as envoy:

                async def tried_twice() -> bool:
                    total = await envoy.stat("cluster.xds_cluster.upstream_cx_total")
                    return (total or 0) >= 2

                await envoy.wait_for(tried_twice, 20, what="two xDS connection attempts")
                await assert_never_configured(api, envoy, bare["node"]["id"])
                assert await envoy.stat("control_plane.connected_state") == 0
                assert await refused(envoy, a.port)

            # team b's certificate, but node metadata (and node id) claiming team a
            caplog.clear()
            liar = await fetch_bootstrap(api, "a", **files("b"))
            assert liar["node"]["metadata"]["team"] == "a"
            async with run_envoy(liar, tmp_dir=tmp_path / "liar") as envoy:
                rec = await wait_log(caplog, "refused")
                assert rec.levelno == logging.WARNING
                assert "node claims team 'a' but its identity grants 'b'" in rec.getMessage()
                await assert_never_configured(api, envoy, liar["node"]["id"])
                assert await refused(envoy, a.port)
                assert await envoy.stat("control_plane.connected_state") == 0


# -- 3. token auth: a data-plane token minted with the bootstrap ---------------------------------


async def test_token_auth_mint_use_revoke(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=ADS_LOGGER)
    with trio.fail_after(120):
        async with (
            run_plane(plane_settings(db_url, xds_auth="token")) as plane,
            run_upstream("up-a") as ua,
        ):
            api = plane.api
            ok(await api.post("/api/v1/teams", json={"name": "a"}))
            a = await create_stack(api, "a", "a", ua)
            await plane.settled()

            boot = await fetch_bootstrap(api, "a")
            (meta,) = ads_service(boot)["initial_metadata"]
            assert meta["key"] == "authorization"
            scheme, _, token = meta["value"].partition(" ")
            assert scheme == "Bearer" and token.count(".") == 2
            jti = jwt.decode(token, options={"verify_signature": False})["jti"]
            record = ok(await api.get(f"/api/v1/tokens/{jti}"), 200)
            assert record["teams"] == ["a"] and record["scopes"] == ["xds:connect"]
            assert record["status"] == "active"
            node_id = boot["node"]["id"]

            # with the token: team a's config, traffic flows
            async with run_envoy(boot, tmp_dir=tmp_path / "one") as envoy:
                node = await assert_receives_only(api, envoy, node_id, [a], {a.port: ua})
                assert node["team"] == "a"
            with trio.fail_after(10):
                while node_id in await node_ids(api):  # noqa: ASYNC110
                    await trio.sleep(0.05)

            # revoke it: a new Envoy with the very same bootstrap is refused
            ok(await api.delete(f"/api/v1/tokens/{jti}"), 204)
            assert ok(await api.get(f"/api/v1/tokens/{jti}"), 200)["status"] != "active"
            caplog.clear()
            async with run_envoy(boot, tmp_dir=tmp_path / "revoked") as envoy:
                rec = await wait_log(caplog, "refused")
                assert "revoked" in rec.getMessage(), rec.getMessage()
                await assert_never_configured(api, envoy, node_id)
                assert await refused(envoy, a.port)

            # a valid token of team a, but node metadata claiming team b: PERMISSION_DENIED
            other = await fetch_bootstrap(api, "a")
            other["node"]["metadata"]["team"] = "b"
            other["node"]["id"] = "team=b/dp-impostor"
            caplog.clear()
            async with run_envoy(other, tmp_dir=tmp_path / "impostor") as envoy:
                rec = await wait_log(caplog, "refused")
                assert "node claims team 'b' but its identity grants 'a'" in rec.getMessage()
                await assert_never_configured(api, envoy, other["node"]["id"])

            # no token metadata at all: refused
            bare = copy.deepcopy(boot)
            del ads_service(bare)["initial_metadata"]
            bare["node"]["id"] = "team=a/dp-no-token"
            caplog.clear()
            async with run_envoy(bare, tmp_dir=tmp_path / "bare") as envoy:
                rec = await wait_log(caplog, "refused")
                assert "missing Authorization" in rec.getMessage(), rec.getMessage()
                await assert_never_configured(api, envoy, bare["node"]["id"])
                assert await refused(envoy, a.port)


# -- helpers: `flowplane serve` as a process ----------------------------------------------------

_ADMIN_TOKEN = re.compile(r"^ (ey[\w-]+\.[\w-]+\.[\w-]+)$", re.M)


@dataclass
class Served:
    proc: trio.Process
    base_url: str
    port: int
    log: Path
    verify: ssl.SSLContext | bool

    def admin_token(self) -> str:
        m = _ADMIN_TOKEN.search(self.log.read_text())
        assert m, self.log.read_text()
        return m.group(1)

    def client(self, **kw: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.admin_token()}"}
        return httpx.AsyncClient(
            base_url=self.base_url, headers=headers, verify=self.verify, trust_env=False, **kw
        )


def serve_env(tmp_path: Path, api_port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLOWPLANE_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}",
        "FLOWPLANE_API_ADDRESS": f"127.0.0.1:{api_port}",
        "FLOWPLANE_XDS_ADDRESS": f"127.0.0.1:{free_port()}",
        "FLOWPLANE_DEFAULT_GATEWAY": "false",
        **extra,
    }


@asynccontextmanager
async def serve_process(
    tmp_path: Path, *, verify: ssl.SSLContext | None = None, **extra_env: str
) -> AsyncIterator[Served]:
    """`flowplane serve` until the block ends (then SIGTERM, exit 0 expected)."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    log = tmp_path / "server.log"
    scheme = "https" if verify is not None else "http"
    with log.open("ab") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "flowplane.cli.main", "serve"],
            env=serve_env(tmp_path, port, **extra_env),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    served = Served(proc, f"{scheme}://127.0.0.1:{port}", port, log,
                    verify if verify is not None else True)  # fmt: skip
    try:
        async with httpx.AsyncClient(verify=served.verify, trust_env=False) as c:
            with trio.fail_after(30):
                while True:
                    if proc.poll() is not None:
                        raise AssertionError(f"server exited early:\n{log.read_text()}")
                    try:
                        if (await c.get(f"{served.base_url}/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
        yield served
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await proc.wait() == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()


async def run_serve_once(tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "flowplane.cli.main", "serve"],
            env=serve_env(tmp_path, free_port(), **extra_env),
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip


def exception_chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


# -- 4. API TLS as a real process ---------------------------------------------------------------


async def test_api_tls_serve_process(tmp_path: Path, pki: Pki) -> None:
    ca = ssl.create_default_context(cafile=str(pki.ca_cert))
    tls_env = {"FLOWPLANE_API_TLS_CERT": str(pki.server_cert),
               "FLOWPLANE_API_TLS_KEY": str(pki.server_key)}  # fmt: skip
    with trio.fail_after(90):
        async with serve_process(tmp_path / "ok", verify=ca, **tls_env) as srv:
            async with srv.client() as c:
                r = await c.get("/healthz")
                assert r.status_code == 200 and r.json()["status"] == "ok"
                assert r.http_version == "HTTP/1.1"
                assert (await c.get("/api/v1/native/clusters")).status_code == 200
            # plain HTTP to the TLS port: no HTTP answer at all
            async with httpx.AsyncClient(trust_env=False, timeout=5) as plain:
                with pytest.raises(httpx.TransportError):
                    await plain.get(f"http://127.0.0.1:{srv.port}/healthz")
            # HTTPS without trusting our CA: the certificate is not accepted
            async with httpx.AsyncClient(trust_env=False, timeout=5) as public:
                with pytest.raises(httpx.ConnectError) as info:
                    await public.get(f"https://127.0.0.1:{srv.port}/healthz")
                assert any(isinstance(e, ssl.SSLCertVerificationError)
                           for e in exception_chain(info.value)), info.value  # fmt: skip
            # and the server still serves after those
            async with srv.client() as c:
                assert (await c.get("/healthz")).status_code == 200

        # a missing key file: exit 2 naming the setting, nothing started
        missing = tmp_path / "missing" / "no-such-key.pem"
        missing.parent.mkdir()
        result = await run_serve_once(
            tmp_path / "missing",
            FLOWPLANE_API_TLS_CERT=str(pki.server_cert), FLOWPLANE_API_TLS_KEY=str(missing),
        )  # fmt: skip
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert "FLOWPLANE_API_TLS_KEY" in err and str(missing) in err
        assert "Traceback" not in err
        assert not (tmp_path / "missing" / "fp.db").exists()

        # a certificate file that is not PEM: exit 2 naming the setting
        bad = tmp_path / "badpem"
        bad.mkdir()
        (bad / "cert.pem").write_text("this is not a certificate\n")
        result = await run_serve_once(
            bad, FLOWPLANE_API_TLS_CERT=str(bad / "cert.pem"),
            FLOWPLANE_API_TLS_KEY=str(pki.server_key),
        )  # fmt: skip
        err = result.stderr.decode()
        assert result.returncode == 2, err
        assert "FLOWPLANE_API_TLS_CERT" in err and str(bad / "cert.pem") in err
        assert "Traceback" not in err


# -- 5. hostile input over a real socket --------------------------------------------------------


async def raw_http(
    port: int,
    *parts: bytes,
    pause: float = 0.0,
    timeout: float = 10,  # noqa: ASYNC109
) -> tuple[int | None, bytes]:
    """Send raw bytes (in `parts`, `pause` s apart: a slow sender) while reading one response,
    as a client that does not wait to finish sending (the server may answer early and stop
    reading). Returns (status, body), or (None, b"") if the server closed or reset the
    connection without answering. Reads by Content-Length: the connection may stay open."""
    data = bytearray()

    async def send_parts(stream: trio.SocketStream) -> None:
        try:
            for i, part in enumerate(parts):
                if i and pause:
                    await trio.sleep(pause)
                await stream.send_all(part)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server stopped reading and closed

    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(send_parts, stream)
            while True:
                head, sep, body = bytes(data).partition(b"\r\n\r\n")
                if sep:
                    m = re.search(rb"(?im)^content-length: *(\d+)\r?$", head)
                    if m and len(body) >= int(m.group(1)):
                        break
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break  # reset: the server closed with our bytes unread
                if not chunk:
                    break
                data += chunk
            nursery.cancel_scope.cancel()
    if not data:
        return None, b""
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    assert m, head[:200]
    return int(m.group(1)), body


def raw_get(target: str, token: str) -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n").encode()  # fmt: skip


HOSTILE_NAMES = (
    "../../etc/passwd",
    "a';DROP TABLE resources;--",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    'x" OR "1"="1',
    "name with spaces",
    "a/../../b",
)


async def test_hostile_input_real_socket(tmp_path: Path) -> None:
    with trio.fail_after(90):
        async with serve_process(tmp_path) as srv, srv.client(timeout=10) as c:
            token = srv.admin_token()
            ok(await c.post(f"{N}/clusters", json=cluster_body("seed", 8080)))

            async def totals() -> dict[str, int]:
                out = {}
                for path in (f"{N}/clusters", f"{N}/route-configs", f"{N}/listeners",
                             "/api/v1/teams"):  # fmt: skip
                    out[path] = ok(await c.get(path), 200)["total"]
                return out

            before = await totals()

            # an oversized request head (300 KB header): 431 or closed, and no crash.
            big = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 300_000
            status, _ = await raw_http(srv.port, big + b"\r\n\r\n")
            assert status is None or 400 <= status < 500, status
            assert (await c.get("/healthz")).status_code == 200
            # ... also through httpx, with a valid token on an API path
            try:
                r = await c.get(f"{N}/clusters", headers={"X-Big": "b" * 300_000})
                assert 400 <= r.status_code < 500, r.status_code
            except httpx.TransportError:
                pass
            assert (await c.get("/healthz")).status_code == 200

            # a 2 MB body: 413 with the JSON error body (Content-Length and chunked)
            pad = b"x" * (2 * 1024 * 1024)
            payload = b'{"name": "huge", "endpoints": [], "pad": "' + pad + b'"}'
            # (a raw socket: the server answers 413 and closes before reading the body, which
            # an HTTP client library reports as an aborted upload)
            head = (f"POST {N}/clusters HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n").encode()  # fmt: skip
            status, body = await raw_http(srv.port, head, payload)
            assert status == 413, (status, body[:200])
            assert json.loads(body)["error"] == "payload_too_large"
            assert json.loads(body)["message"]

            # chunked (no Content-Length): the server answers 413 while we are still sending
            head = (f"POST {N}/clusters HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n").encode()  # fmt: skip
            step = 64 * 1024
            framed = [b"%x\r\n%b\r\n" % (len(payload[i : i + step]), payload[i : i + step])
                      for i in range(0, len(payload), step)]  # fmt: skip
            status, body = await raw_http(srv.port, head, *framed, b"0\r\n\r\n")
            assert status == 413, (status, body[:200])
            assert json.loads(body)["error"] == "payload_too_large"
            assert (await c.get("/healthz")).status_code == 200

            # hostile names in bodies: 400 with a field-level detail, nothing stored
            makers: dict[str, Callable[[str], dict[str, Any]]] = {
                "clusters": lambda n: cluster_body(n, 8080),
                "route-configs": lambda n: route_config_body(n, "seed"),
                "listeners": lambda n: listener_body(n, "seed", free_port(), "127.0.0.1"),
            }
            for name in HOSTILE_NAMES:
                for kind, make in makers.items():
                    r = await c.post(f"{N}/{kind}", json=make(name))
                    assert r.status_code == 400, (kind, name, r.text)
                    assert r.json()["error"] == "bad_request"
                r = await c.post("/api/v1/teams", json={"name": name})
                assert r.status_code == 400, (name, r.text)
                r = await c.post(f"{N}/clusters", json=cluster_body("ok-name", 8080, team=name))
                assert r.status_code in (400, 404), (name, r.text)

                # ... and in paths (percent-encoded by us): 400/404, never 2xx/5xx
                enc = quote(name, safe="")
                for method in ("GET", "PUT", "PATCH", "DELETE"):
                    for kind, make in makers.items():
                        r = await c.request(method, f"{N}/{kind}/{enc}",
                                            json=None if method in ("GET", "DELETE") else make(name))  # fmt: skip
                        assert r.status_code in (400, 404), (method, kind, name, r.text)
                for path in (f"/api/v1/teams/{enc}", f"/api/v1/teams/{enc}/bootstrap",
                             f"/api/v1/nodes/{enc}", f"/api/v1/tokens/{enc}"):  # fmt: skip
                    r = await c.get(path)
                    assert r.status_code in (400, 404), (path, r.text)
                # ... and in a list filter: no error, nothing matches
                r = await c.get(f"{N}/clusters", params={"team": name})
                assert r.status_code in (200, 400), r.text
                if r.status_code == 200:
                    assert r.json()["total"] == 0

            # raw request targets, exactly as written (no client-side normalisation)
            for target in (
                f"{N}/clusters/../../etc/passwd",
                f"{N}/clusters/..%2f..%2fetc%2fpasswd",
                f"{N}/clusters/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                f"{N}/clusters/%2E%2E/%2E%2E/etc/passwd",
                "/api/v1/teams/..%2f..%2fetc/bootstrap",
                f"{N}/clusters/a';DROP%20TABLE%20resources;--",
                f"{N}/clusters?team=a'%3BDROP%20TABLE%20resources%3B--&limit=1;DROP",
                "/../../../etc/passwd",
            ):
                status, body = await raw_http(srv.port, raw_get(target, token))
                assert status in (400, 404), (target, status, body[:200])
                assert b"root:" not in body

            # nothing stored, and the store still works
            assert await totals() == before
            ok(await c.get(f"{N}/clusters/seed"), 200)
            ok(await c.post(f"{N}/clusters", json=cluster_body("after", 8080)))
            assert (await totals())[f"{N}/clusters"] == before[f"{N}/clusters"] + 1


# -- server gaps found by the tests above (xfail until fixed) -----------------------------------

HEAD_100KB = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"


async def test_100kb_request_head_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with serve_process(tmp_path) as srv:
            # a slow sender: 60 KB, then the rest of the head (each read stays under the limit)
            status, _ = await raw_http(srv.port, HEAD_100KB[:60_000], HEAD_100KB[60_000:],
                                       pause=0.3)  # fmt: skip
            assert status is None or 400 <= status < 500, status


async def test_server_closes_connection_after_connection_close(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with serve_process(tmp_path) as srv:
            stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
            async with stream:
                await stream.send_all(
                    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                data = bytearray()
                with trio.move_on_after(10):  # keep_alive_timeout is 5 s; close is due at once
                    while chunk := await stream.receive_some(65536):
                        data += chunk
                    data += b"<EOF>"
            assert data.startswith(b"HTTP/1.1 200 "), bytes(data[:100])
            assert data.endswith(b"<EOF>"), "the server kept the connection open"


async def read_until_closed(port: int, data: bytes, timeout: float = 10) -> tuple[bytes, bool]:  # noqa: ASYNC109
    """Send `data`, read until the server closes; (what was read, whether it closed in time)."""
    received = bytearray()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(timeout):
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass  # reset: closed with bytes of ours unread, which is closed too
            return bytes(received), True
    return bytes(received), False


@pytest.mark.parametrize("te_first", [False, True], ids=["cl-te", "te-cl"])
async def test_content_length_with_transfer_encoding_is_refused_and_closed(
    tmp_path: Path, te_first: bool
) -> None:
    """Issue 11 item 8, RFC 9112 §6.3: a request with both Content-Length and Transfer-Encoding
    is a smuggling pattern. A front proxy framing by Content-Length forwards the whole body;
    h11 frames by chunked and would read a second request out of it. The server answers 400 and
    closes: the hidden request (here: creating a team) is never answered nor executed."""
    with trio.fail_after(60):
        async with serve_process(tmp_path) as srv, srv.client(timeout=10) as c:
            token = srv.admin_token()
            team = b'{"name": "smuggled"}'
            hidden = (f"POST /api/v1/teams HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(team)}\r\n\r\n").encode() + team  # fmt: skip
            body = b"0\r\n\r\n" + hidden
            framing = [f"Content-Length: {len(body)}\r\n".encode(),
                       b"Transfer-Encoding: chunked\r\n"]  # fmt: skip
            if te_first:
                framing.reverse()
            head = (b"POST /api/v1/teams HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + f"Authorization: Bearer {token}\r\n".encode()
                    + b"Content-Type: application/json\r\n" + b"".join(framing) + b"\r\n")  # fmt: skip
            for _ in range(10):  # answering mid-body once lost the answer in ~half the tries
                data, closed = await read_until_closed(srv.port, head + body)
                assert data.startswith(b"HTTP/1.1 400 "), data[:300]
                assert data.count(b"HTTP/1.1 ") == 1, data  # the hidden request got no answer
                _, _, payload = data.partition(b"\r\n\r\n")
                assert json.loads(payload)["error"] == "bad_request"
                assert b"connection: close" in data.lower()
                assert closed, "the server kept the connection open"
            # ... and was not executed; the server still serves, and logged no error
            assert (await c.get("/api/v1/teams/smuggled")).status_code == 404
            assert (await c.get("/healthz")).status_code == 200
            assert "Traceback" not in srv.log.read_text()


async def test_refused_streams_are_never_listed_as_nodes(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger=ADS_LOGGER)
    with trio.fail_after(60):
        async with run_plane(plane_settings(db_url, xds_auth="token")) as plane:
            hub = plane.core.hub
            listed: list[dict[str, Any]] = []
            register = hub.register

            def recording_register(*args: Any, **kwargs: Any) -> Any:
                info = register(*args, **kwargs)
                listed.append(info.__dict__)  # what /api/v1/nodes would show, by reference
                return info

            monkeypatch.setattr(hub, "register", recording_register)
            boot = await fetch_bootstrap(plane.api, "a")
            del ads_service(boot)["initial_metadata"]
            async with run_envoy(boot, tmp_dir=tmp_path):
                await wait_log(caplog, "refused")
            assert listed == [], "a refused stream was listed among connected nodes"
