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

from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from flowplane.api.auth import PUBLIC, RULES
from flowplane.api.schemas import ErrorOut

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
_CONFLICTS = {"security.create_team", "security.patch_team", "security.delete_team"}


def _success(method: str, endpoint: str) -> dict[str, Any]:
    if method == "delete":
        return {"description": "Done (no body)"}
    if endpoint == "dataplanes.bootstrap":
        return {
            "description": "An Envoy bootstrap (YAML unless format=json)",
            "content": {t: {"schema": {"type": "object"}} for t in ("application/yaml", _JSON)},
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


class FlowplaneOpenAPI(OpenAPIProvider):
    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        error, error_components = self.build_response_object(ErrorOut, None)
        components.update(error_components)
        public = RULES.get(rule.endpoint or "") == PUBLIC
        native = (rule.endpoint or "").startswith("native.")
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
                if not any(200 <= int(c) < 300 for c in responses):
                    responses[_SUCCESS[method]] = _success(method, rule.endpoint or "")
                if method in _WRITES:
                    if method == "patch" and "requestBody" not in op:
                        types = (_MERGE_PATCH, _JSON) if native else (_JSON,)
                        op["requestBody"] = {
                            "required": True,
                            "description": "The fields to change (RFC 7386 merge patch)",
                            "content": {ct: {"schema": {"type": "object"}} for ct in types},
                        }
                    if "requestBody" in op:
                        op["requestBody"] = {**op["requestBody"], "required": True}
                        codes |= {400, 413, 415}
                if native and method in {"put", "patch", "delete"}:
                    params.append(_IF_MATCH)
                    codes |= {409, 412}
                if rule.endpoint in _CONFLICTS:
                    codes.add(409)
                for code in sorted(codes):
                    responses.setdefault(code, {**error, "description": _REASONS[code]})
                op["responses"] = responses
                op["parameters"] = params
        return paths, components
