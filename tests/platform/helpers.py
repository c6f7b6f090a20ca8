"""Helpers for the Platform API tests: a small valid definition to vary, and the field -> message
map of a refused one."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from flowplane.domain.api_definition import ApiDefinition, parse_api_definition
from flowplane.errors import BadRequest

API_ID = "0b8e6c52-4d3a-4c8e-9f00-5e1d2c3b4a59"
JWKS = "https://issuer.example/.well-known/jwks.json"


def api_body(**fields: Any) -> dict[str, Any]:
    """A minimal valid definition (one upstream, one route), with `fields` replacing its own."""
    body: dict[str, Any] = {
        "name": "petstore",
        "domain": "petstore.example.com",
        "upstreams": [{"url": "http://pets.internal:8080"}],
        "routes": [{"path": "/pets"}],
    }
    body.update(copy.deepcopy(fields))
    return body


def api(**fields: Any) -> ApiDefinition:
    return parse_api_definition(api_body(**fields))


def refused(body: dict[str, Any]) -> dict[str, str]:
    """`body` must be refused with a 400; its problems as field -> message."""
    with pytest.raises(BadRequest) as info:
        parse_api_definition(body)
    return {p.field: p.message for p in info.value.details}
