"""Helpers shared by the suites that run a whole plane (`tests/conformance`, `tests/e2e`)."""

from __future__ import annotations

from typing import Any

import httpx

from flowplane.settings import Settings, load_settings

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
