"""Helpers shared by the suites that run a whole plane (`tests/conformance`, `tests/e2e`)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from flowplane.settings import Settings, load_settings
from flowplane.testing.certs import make_pki

N = "/api/v1/native"


def ok(resp: httpx.Response, status: int = 201) -> Any:
    """The JSON body of `resp` (None when empty), after checking its status code."""
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


def plane_settings(db_url: str, xds_port: int = 0, **extra: Any) -> Settings:
    """Settings for `run_plane`: xDS on 127.0.0.1:`xds_port` (0 = any free port), no default
    gateway, xDS auth `none` chosen explicitly (these tests drive ADS clients that carry no
    token; the authenticated default has tests of its own); `extra` overrides the rest."""
    extra.setdefault("xds_auth", "none")
    return load_settings(
        database_url=db_url, xds_address=f"127.0.0.1:{xds_port}", default_gateway=False, **extra
    )


def mtls_plane(db_url: str, tmp_path: Path, team: str) -> tuple[Settings, ssl.SSLContext]:
    """FLOWPLANE_XDS_AUTH=mtls settings for `run_plane` (a fresh PKI under `tmp_path`) and a
    client TLS context whose certificate names `team` (ALPN h2, as an Envoy offers)."""
    pki = make_pki(tmp_path / "pki", teams=(team,))
    settings = plane_settings(
        db_url, xds_tls_cert=str(pki.server_cert), xds_tls_key=str(pki.server_key),
        xds_tls_client_ca=str(pki.ca_cert), xds_auth="mtls",
    )  # fmt: skip
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    tls.load_cert_chain(pki.client(team).cert, pki.client(team).key)
    tls.set_alpn_protocols(["h2"])
    return settings, tls
