"""Reading an untrusted OpenAPI document: bytes in, a plain JSON value out, within limits.

Everything here assumes the document is hostile (api.md "OpenAPI import": limits on size,
nesting and `$ref` depth; a hostile document -> 400 or 413, never a hang or a 500):

- size: more than `max_bytes` -> 413 before anything is parsed;
- encoding: UTF-8 only (a BOM is allowed), JSON by RFC 8259, YAML loaded with PyYAML's *safe*
  loader (plain data; no Python objects). `NaN`/`Infinity` are refused (not JSON);
- nesting: more than `max_depth` nested objects/arrays -> 400. The parsers bound their own
  recursion first (CPython's json raises RecursionError; libyaml stops at 1000 levels);
- YAML anchors and aliases are allowed, and aliases are never expanded: the loaded value shares
  the aliased object. Every later pass walks the shared object once per alias, so the walk here
  counts the *expanded* size against `max_nodes` and refuses a "billion laughs" document (413)
  after at most `max_nodes` steps; an alias to its own ancestor is refused as too deep;
- YAML-only values (timestamps, binary, sets) are not JSON: timestamps stay strings (the
  timestamp rule of YAML 1.1 is not applied: OpenAPI is JSON, and `version: 2024-01-01` means a
  string), integer keys become strings (`200:` is the status code '200'), anything else -> 400;
- `$ref`: only local references (`#/...`) are followed; a reference to another document or URL
  is refused (nothing is ever fetched); a chain of references longer than `max_ref_hops` or a
  cycle of references that never reaches a value -> 400.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from urllib.parse import unquote

import yaml

from flowplane.errors import BadRequest, FieldProblem, PayloadTooLarge, UnsupportedMediaType

JSON_MEDIA_TYPES: Final = frozenset({"application/json"})
YAML_MEDIA_TYPES: Final = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """What one import may cost. The defaults hold the largest public API documents we know of
    (see tests/platform/data/openapi) with room to spare, and bound the worst case to seconds."""

    max_bytes: int = 5 * 1024 * 1024
    max_depth: int = 64  # nested objects/arrays; real documents stay under 30
    max_nodes: int = 250_000  # values after alias expansion; validation time grows with it
    max_validation_steps: int = 200_000  # jsonschema steps, 12-30 us each: seconds at most
    max_ref_hops: int = 16  # a $ref to a $ref to ... (a value is reached within this many)
    max_operations: int = 2_000  # checked before validation (the validator is the slow part)
    max_routes: int = 500  # the API definition's limit
    max_problems: int = 100  # a 400 lists at most this many problems (and says there may be more)


# --- JSON pointers (RFC 6901) ---------------------------------------------------------------


def pointer(*parts: str | int) -> str:
    """`pointer("paths", "/pets", "get")` -> `/paths/~1pets/get` (the root is "")."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


Trail = tuple["Trail", str | int] | None
"""The way to a value from the root, as a linked list (cheap to extend, built into a pointer only
when a problem is reported)."""


def trail_pointer(trail: Trail) -> str:
    parts: list[str | int] = []
    while trail is not None:
        trail, part = trail
        parts.append(part)
    return pointer(*reversed(parts))


# --- decoding -------------------------------------------------------------------------------


def media_type(content_type: str) -> str:
    """The body's format, "json" or "yaml", from its Content-Type; anything else -> 415. A
    `charset` parameter other than UTF-8 -> 415 too (JSON is UTF-8; we read YAML as UTF-8)."""
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedMediaType(f"unsupported charset {value.strip()!r}: send UTF-8")
    if kind in JSON_MEDIA_TYPES:
        return "json"
    if kind in YAML_MEDIA_TYPES:
        return "yaml"
    accepted = ", ".join(sorted(JSON_MEDIA_TYPES | YAML_MEDIA_TYPES))
    raise UnsupportedMediaType(
        f"unsupported content type {kind or '(none)'!r}: send one of {accepted}"
    )


# libyaml when PyYAML has it (fast, and it bounds its own nesting); else the recursion limit does.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader


class _Loader(_SAFE_LOADER):  # type: ignore[misc]
    """PyYAML's safe loader minus the timestamp rule of YAML 1.1: an unquoted date stays a
    string, as it would in JSON."""

    yaml_implicit_resolvers: ClassVar = {
        first: [(tag, rx) for tag, rx in rules if tag != "tag:yaml.org,2002:timestamp"]
        for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(text: str, kind: str) -> Any:
    if kind == "json":
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as err:
            raise BadRequest(
                "the document is not valid JSON",
                [FieldProblem("", f"{err.msg} (line {err.lineno}, column {err.colno})")],
            ) from None
        except ValueError as err:
            raise BadRequest(
                "the document is not valid JSON", [FieldProblem("", str(err))]
            ) from None
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise BadRequest(
            "the document is not valid YAML", [FieldProblem("", " ".join(str(err).split()))]
        ) from None
    finally:
        loader.dispose()


def load_document(body: bytes, content_type: str, limits: ImportLimits) -> dict[str, Any]:
    """Decode and parse the body, then check its shape against the limits (module docstring).
    Returns the document as plain JSON data (dict, list, str, int, float, bool, None)."""
    kind = media_type(content_type)
    if len(body) > limits.max_bytes:
        raise PayloadTooLarge(
            f"the document is {len(body)} bytes; at most {limits.max_bytes} are accepted"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(
            "the document is not UTF-8",
            [FieldProblem("", f"invalid UTF-8 at byte {err.start}")],
        ) from None
    text = text.removeprefix("\ufeff")
    try:
        doc = _parse(text, kind)
    except RecursionError:
        raise BadRequest(
            "the document is nested too deeply",
            [FieldProblem("", f"more than {limits.max_depth} nested objects or arrays")],
        ) from None
    check_shape(doc, limits)
    if not isinstance(doc, dict):
        raise BadRequest(
            "the document must be an OpenAPI object",
            [FieldProblem("", f"must be an object, not {_type_name(doc)}")],
        )
    return doc


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def check_shape(doc: Any, limits: ImportLimits) -> None:
    """Walk every value (aliases expanded, so at most `max_nodes` steps): depth, size, and JSON
    types only. Integer keys (YAML `200:`) are turned into strings in place."""
    problems: list[FieldProblem] = []
    nodes = 0
    stack: list[tuple[Any, int, Trail]] = [(doc, 1, None)]
    while stack:
        value, depth, trail = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise PayloadTooLarge(
                f"the document has more than {limits.max_nodes} values "
                "(YAML aliases count once per use)"
            )
        if isinstance(value, dict | list):
            if depth > limits.max_depth:
                raise BadRequest(
                    "the document is nested too deeply",
                    [
                        FieldProblem(
                            trail_pointer(trail),
                            f"more than {limits.max_depth} nested objects or arrays",
                        )
                    ],
                )
            if isinstance(value, dict):
                if not all(isinstance(k, str) for k in value):
                    _string_keys(value, trail, problems)
                stack.extend((v, depth + 1, (trail, k)) for k, v in value.items())
            else:
                stack.extend((v, depth + 1, (trail, i)) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(FieldProblem(trail_pointer(trail), "NaN and infinity are not JSON"))
        elif not isinstance(value, str | int | float | bool) and value is not None:
            problems.append(
                FieldProblem(
                    trail_pointer(trail),
                    f"a YAML {type(value).__name__} is not a JSON value; quote it",
                )
            )
        if len(problems) >= limits.max_problems:
            break
    if problems:
        problems = problems[: limits.max_problems]
        raise BadRequest(
            f"the document is not plain JSON data: {len(problems)} problem(s)", problems
        )


def _string_keys(value: dict[Any, Any], trail: Trail, problems: list[FieldProblem]) -> None:
    items = list(value.items())
    value.clear()
    for k, v in items:
        key = k
        if isinstance(k, int) and not isinstance(k, bool):
            key = str(k)
        elif not isinstance(k, str):
            problems.append(
                FieldProblem(trail_pointer((trail, str(k))), "keys must be strings; quote it")
            )
            key = str(k)
        if key in value:
            problems.append(FieldProblem(trail_pointer((trail, key)), "duplicate key"))
        value[key] = v


# --- $ref -----------------------------------------------------------------------------------

# Values that are literal data, never OpenAPI or JSON Schema objects: a `$ref` inside them is
# text, not a reference (examples, defaults and enums often quote JSON that contains "$ref").
_LITERAL_KEYS: Final = frozenset({"example", "default", "enum", "const"})


class RefError(Exception):
    """A `$ref` that cannot be followed; the message says why."""


def _lookup(doc: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise RefError(
            "only references within the document ('#/...') are supported; "
            "nothing is fetched from other files or URLs"
        )
    fragment = unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        raise RefError("a reference by anchor name ('#name') is not supported; use '#/...'")
    value = doc
    for token in fragment.split("/")[1:] if fragment else ():
        key = _unescape(token)
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and key == str(int(key)):
            if int(key) >= len(value):
                raise RefError(f"points at nothing ({ref!r} does not exist in the document)")
            value = value[int(key)]
        else:
            raise RefError(f"points at nothing ({ref!r} does not exist in the document)")
    return value


def follow(doc: Any, ref: str, limits: ImportLimits) -> tuple[Any, str]:
    """The value `ref` leads to, following a chain of references, and its pointer."""
    seen = [ref]
    target = _lookup(doc, ref)
    while isinstance(target, dict) and isinstance(target.get("$ref"), str):
        nxt = target["$ref"]
        if nxt in seen:
            raise RefError("reference cycle: " + " -> ".join([*seen, nxt]))
        if len(seen) >= limits.max_ref_hops:
            raise RefError(f"more than {limits.max_ref_hops} references in a row")
        seen.append(nxt)
        target = _lookup(doc, nxt)
    return target, unquote(seen[-1][1:])


def _refs(doc: Any) -> Iterator[tuple[str, Trail]]:
    """Every `$ref` string in the document's structure (not inside literal data or `x-`
    extensions), with where it is."""
    stack: list[tuple[Any, Trail]] = [(doc, None)]
    while stack:
        value, trail = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "$ref" and isinstance(v, str):
                    yield v, (trail, k)
                elif k in _LITERAL_KEYS or k.startswith("x-"):
                    continue
                elif k == "examples" and isinstance(v, dict):  # a map of Example Objects
                    for name, ex in v.items():
                        if isinstance(ex, dict) and isinstance(ex.get("$ref"), str):
                            yield ex["$ref"], (((trail, k), name), "$ref")
                elif k == "examples":  # JSON Schema's `examples`: an array of literal values
                    continue
                else:
                    stack.append((v, (trail, k)))
        elif isinstance(value, list):
            stack.extend((v, (trail, i)) for i, v in enumerate(value))


def check_refs(doc: dict[str, Any], limits: ImportLimits) -> None:
    """Every reference is local, leads somewhere, and reaches a value (not a cycle) within
    `max_ref_hops`; otherwise 400 listing each bad `$ref` by its pointer."""
    problems: list[FieldProblem] = []
    verdicts: dict[str, str | None] = {}
    for ref, trail in _refs(doc):
        if ref not in verdicts:
            try:
                follow(doc, ref, limits)
                verdicts[ref] = None
            except RefError as err:
                verdicts[ref] = str(err)
        message = verdicts[ref]
        if message is not None:
            problems.append(FieldProblem(trail_pointer(trail), message))
            if len(problems) >= limits.max_problems:
                break
    if problems:
        problems.sort(key=lambda p: p.field)
        raise BadRequest(f"invalid $ref: {len(problems)} problem(s)", problems)
