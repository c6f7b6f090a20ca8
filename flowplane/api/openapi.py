"""The OpenAPI document, completed with what the route decorators cannot say on their own.

quart-schema builds each operation from its view's decorators. What every operation shares is
added here, from the same sources the request path uses, so the document cannot drift from the
behaviour: which operations are public (`RULES`, the table the authoriser enforces: those get
`security: []`), the errors every authenticated call can return (401, 403, 429), a 404 for a
path naming something that does not exist, 400/413/415 for a body, 400 for a query string,
required request bodies, merge-patch bodies, `If-Match` on conditional writes, and 500.
Error bodies are api.md's error body (`ErrorOut`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from flowplane.api.auth import PUBLIC, RULES
from flowplane.api.schemas import ErrorOut
from flowplane.domain.filters import EMPTY_WHEN_DISCOVERED, SPECS
from flowplane.domain.route import OVERRIDES_MARKER

_REASONS = {
    400: "Bad request: malformed JSON, unknown or invalid fields (`details` names each)",
    401: "No valid bearer token",
    403: "The token lacks the scope, or the team or quota does not allow it",
    404: "No such resource (or not visible to the token's teams)",
    409: "Conflict (name taken, still referenced, address in use)",
    412: "If-Match does not match the current ETag",
    413: "Body larger than FLOWPLANE_MAX_BODY_BYTES",
    415: "Content-Type is not JSON",
    429: "Rate limit of the token exceeded (see Retry-After)",
    500: "Internal error; the change, if any, was not applied",
}
_WRITES = {"post", "put", "patch"}
_MERGE_PATCH = "application/merge-patch+json"
_JSON = "application/json"
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "Only apply the change if the resource's current ETag matches (else 412)",
    "schema": {"type": "string"},
}


# Operations documented without a success response get the one their method returns here.
_SUCCESS = {"get": 200, "post": 201, "put": 200, "patch": 200, "delete": 204}
# Non-native operations that answer 409: a team name taken, a team that still owns resources.
_CONFLICTS = {
    "security.create_team", "security.patch_team", "security.delete_team",
    "platform.create_api", "platform.import_openapi",  # name taken in the team, domain taken
}  # fmt: skip
# Platform operations that take If-Match and answer 409/412 like the Native ones.
_VERSIONED = {"platform.put_api", "platform.patch_api", "platform.delete_api",
              "platform.append_route"}  # fmt: skip
_IMPORT_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")
# Rollbacks (every kind's and the APIs'): a write answering 200 with the new version, If-Match,
# 409/412 like an update.
_ROLLBACKS = {e for e in RULES if e.startswith("history.") and e.endswith("_rollback")}
_HISTORY_VERSIONS = {e for e in RULES if e.startswith("history.") and e.endswith("_version")}


def _success(method: str, endpoint: str) -> dict[str, Any]:
    if method == "delete":
        return {"description": "Done (no body)"}
    if endpoint == "dataplanes.bootstrap":
        return {
            "description": "An Envoy bootstrap (YAML unless format=json)",
            "content": {t: {"schema": {"type": "object"}} for t in ("application/yaml", _JSON)},
        }
    if endpoint in _HISTORY_VERSIONS:
        return {
            "description": "The version as it was; with ?diff=previous, an RFC 6902 JSON patch",
            "content": {
                _JSON: {"schema": {"type": "object"}},
                "application/json-patch+json": {
                    "schema": {"type": "array", "items": {"type": "object"}}
                },
            },
        }
    if endpoint == "metrics":
        return {
            "description": "Prometheus metrics, text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    return {
        "description": "Created" if method == "post" else "OK",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


_FILTER_PREFIX = "filters."
_DISABLED = {
    "type": "object",
    "properties": {"disabled": {"const": True}},
    "required": ["disabled"],
    "additionalProperties": False,
}


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> str:
    """Put `model`'s JSON schema (and its nested models) into the components, named
    `filters.<Model>`; return the reference to it."""
    ref = "#/components/schemas/" + _FILTER_PREFIX + "{model}"
    schema = TypeAdapter(model).json_schema(by_alias=True, ref_template=ref)
    for name, sub in schema.pop("$defs", {}).items():
        schemas[_FILTER_PREFIX + name] = sub
    schemas[_FILTER_PREFIX + model.__name__] = schema
    return ref.format(model=model.__name__)


def _document_filters(schemas: dict[str, Any]) -> None:
    """Type each HTTP filter's `config` by its `type` (one variant per type, `oneOf` with a
    discriminator on `type`), and each per-scope override by the filter type it is keyed by."""
    variants: list[dict[str, Any]] = []
    overrides: dict[str, Any] = {}
    base = schemas.get("HttpFilter", {})
    for filter_type, spec in sorted(SPECS.items()):
        config: dict[str, Any] = {"$ref": _add_model(schemas, spec.config)}
        # A discovered (ECDS) filter of some types may have no config yet.
        required = spec.config_required and filter_type not in EMPTY_WHEN_DISCOVERED
        if not required:
            config = {"anyOf": [config, {"type": "null"}]}
        name = f"HttpFilter.{filter_type}"
        schemas[name] = {
            **base,
            "title": name,
            "properties": {
                **base.get("properties", {}),
                "type": {"const": filter_type},
                "config": config,
            },
            "required": ["type", "config"] if required else ["type"],
        }
        variants.append({"$ref": f"#/components/schemas/{name}"})
        if spec.override is not None:
            overrides[filter_type] = {
                "anyOf": [_DISABLED, {"$ref": _add_model(schemas, spec.override)}]
            }
        else:
            overrides[filter_type] = _DISABLED
    schemas["HttpFilter"] = {
        "description": base.get("description", ""),
        "oneOf": variants,
        "discriminator": {
            "propertyName": "type",
            "mapping": {t: f"#/components/schemas/HttpFilter.{t}" for t in sorted(SPECS)},
        },
    }
    schemas["FilterOverrides"] = {
        "type": "object",
        "description": 'Per-scope filter overrides: a filter\'s name -> {"disabled": true} or '
        "the override config of the filter type of that name (typed overrides are keyed by "
        "the type; a filter with a custom name can only be disabled).",
        "properties": overrides,
        "additionalProperties": _DISABLED,
    }


def _swap_markers(node: Any) -> Any:
    """Replace every `filters` override schema (marked by the domain) with the typed one."""
    if isinstance(node, dict):
        if node.get(OVERRIDES_MARKER):
            return {"$ref": "#/components/schemas/FilterOverrides"}
        return {k: _swap_markers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_swap_markers(v) for v in node]
    return node


class FlowplaneOpenAPI(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        doc: dict[str, Any] = _swap_markers(super().schema())
        _document_filters(doc["components"]["schemas"])
        return doc

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        error, error_components = self.build_response_object(ErrorOut, None)
        components.update(error_components)
        public = RULES.get(rule.endpoint or "") == PUBLIC
        native = (rule.endpoint or "").startswith("native.")
        merge_patchable = native or rule.endpoint == "platform.patch_api"
        for operations in paths.values():
            for method, op in operations.items():
                responses = dict(op["responses"])
                params = list(op.get("parameters", []))
                codes = {500}
                if public:
                    op["security"] = []  # healthz, readyz, metrics, the docs: no token needed
                else:
                    codes |= {401, 403, 429}
                if rule.arguments:
                    codes.add(404)
                if any(p.get("in") == "query" for p in params):
                    codes.add(400)
                if rule.endpoint in _ROLLBACKS:
                    responses[200] = _success("put", "")  # the new version, not a creation
                elif not any(200 <= int(c) < 300 for c in responses):
                    responses[_SUCCESS[method]] = _success(method, rule.endpoint or "")
                if rule.endpoint == "platform.import_openapi":
                    op["requestBody"] = {
                        "description": "An OpenAPI 3.0 or 3.1 document, JSON or YAML",
                        "content": {t: {"schema": {}} for t in _IMPORT_TYPES},
                    }
                    responses[200] = _success("put", "")
                    responses[201] = _success("post", "")
                if method in _WRITES:
                    if method == "patch" and "requestBody" not in op:
                        types = (_MERGE_PATCH, _JSON) if merge_patchable else (_JSON,)
                        op["requestBody"] = {
                            "required": True,
                            "description": "The fields to change (RFC 7386 merge patch)",
                            "content": {ct: {"schema": {"type": "object"}} for ct in types},
                        }
                    if "requestBody" in op:
                        op["requestBody"] = {**op["requestBody"], "required": True}
                        codes |= {400, 413, 415}
                versioned = _VERSIONED | _ROLLBACKS
                if (native and method in {"put", "patch", "delete"}) or rule.endpoint in versioned:
                    params.append(_IF_MATCH)
                    codes |= {409, 412}
                if rule.endpoint in _CONFLICTS:
                    codes.add(409)
                for code in sorted(codes):
                    responses.setdefault(code, {**error, "description": _REASONS[code]})
                op["responses"] = responses
                op["parameters"] = params
        return paths, components
