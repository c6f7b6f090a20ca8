"""Helpers for the OpenAPI import tests: small documents, running an import, its refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from flowplane.domain.api_definition import parse_api_definition
from flowplane.errors import BadRequest, FlowplaneError
from flowplane.platform.openapi import ImportLimits, ImportResult, import_openapi

DATA = Path(__file__).parent / "data" / "openapi"


def data(name: str) -> bytes:
    raw = (DATA / name).read_bytes()
    return gzip.decompress(raw) if name.endswith(".gz") else raw


def op(**extra: Any) -> dict[str, Any]:
    """An operation object: one response, plus `extra`."""
    return {"responses": {"200": {"description": "ok"}}, **extra}


def doc(**top: Any) -> dict[str, Any]:
    """A small valid OpenAPI 3.0 document; `top` replaces its top-level fields."""
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Pets API", "version": "1.0.0"},
        "servers": [{"url": "https://pets.example.com/v1"}],
        "paths": {"/pets": {"get": op()}},
    }
    document.update(top)
    return document


def run(
    document: dict[str, Any] | bytes | str,
    content_type: str = "application/json",
    *,
    name: str | None = None,
    team: str | None = None,
    domain: str | None = None,
    isolation: bool = False,
    port: int | None = None,
    limits: ImportLimits | None = None,
) -> ImportResult:
    if isinstance(document, dict):
        body = json.dumps(document).encode()
    elif isinstance(document, str):
        body = document.encode()
    else:
        body = document
    result = import_openapi(
        body,
        content_type,
        name=name,
        team=team,
        domain=domain,
        listener_isolation=isolation,
        port=port,
        limits=limits or ImportLimits(),
    )
    # Whatever the import makes, the API definition model accepts (no 400, no 409).
    parse_api_definition(result.definition)
    return result


def refused(
    document: dict[str, Any] | bytes | str,
    content_type: str = "application/json",
    *,
    error: type[FlowplaneError] = BadRequest,
    **options: Any,
) -> dict[str, str]:
    """The problems of a refused import, pointer -> message (one problem per pointer)."""
    with pytest.raises(error) as caught:
        run(document, content_type, **options)
    problems = {p.field: p.message for p in caught.value.details}
    assert len(problems) == len(caught.value.details), caught.value.details
    return problems


def refusal(
    document: dict[str, Any] | bytes | str,
    content_type: str = "application/json",
    *,
    error: type[FlowplaneError] = BadRequest,
    **options: Any,
) -> FlowplaneError:
    with pytest.raises(error) as caught:
        run(document, content_type, **options)
    return caught.value
