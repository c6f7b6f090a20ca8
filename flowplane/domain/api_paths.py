"""Platform API paths (api.md "Path patterns"): how the path of an API definition's route
becomes the path match of a Native route.

    /a/b        -> prefix   /a/b
    /a/{id}     -> template /a/{id}     (Envoy's URI template: matches /a/42, not /a/42/x)
    /a/*/b      -> regex    ^/a/[^/]+/b$ (anchored RE2; `*` is one segment of anything)

A variable may share its segment with text (`/files/{name}.json`), by Envoy's template rules
(flowplane.domain.uri_template); a `*` stands alone. In a `*` path, variables match one segment
too. Literal text is letters, digits and -._~%!$&'()+,;:@= (percent-encode anything else).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import re2

from flowplane.domain import uri_template


@dataclass(frozen=True, slots=True)
class PathPattern:
    """How a Platform path becomes a Native route's path match.

    `kind`/`value` are the Native `match.path`; `variables` the template's (empty otherwise);
    `shape` the path with every variable and `*` written `{}` (two paths with the same shape
    match the same requests); `segments` the shape's segments (for ordering routes)."""

    kind: Literal["prefix", "template", "regex"]
    value: str
    variables: tuple[str, ...]
    shape: str

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.shape.split("/")[1:]) if self.shape != "/" else ()


_VAR_RE = re.compile(r"\{[^{}]*\}")
_ONE_SEGMENT = "[^/]+"


def path_pattern(path: str) -> PathPattern:
    """The pattern of a Platform path (api.md "Path patterns"); ValueError if it is invalid.

    `/a/b` -> prefix `/a/b`; `/a/{id}` -> template `/a/{id}` (Envoy's URI template: `{id}` is
    one segment, so it matches `/a/42` but not `/a/42/x`); a `*` segment (one segment, anything)
    -> the anchored RE2 regex `^/a/[^/]+/b$`, where variables also match one segment each. A
    variable may share its segment with text (`/files/{name}.json`); a `*` may not."""
    if not path.startswith("/"):
        raise ValueError("a path starts with '/'")
    segments = path[1:].split("/") if path != "/" else []
    for i, seg in enumerate(segments):
        if not seg and i != len(segments) - 1:
            raise ValueError("a path has no empty segment ('//')")
        if "*" in seg and seg != "*":
            raise ValueError(
                f"'*' stands alone as a segment (one segment of anything), not {seg!r}"
            )
        text = _VAR_RE.sub("", seg) if "{" in seg else seg
        if "{" in text or "}" in text:
            raise ValueError(f"unmatched '{{' or '}}' in {seg!r} (a variable is {{name}})")
        if text and text != "*" and not uri_template.is_literal(text):
            raise ValueError(
                f"invalid segment {seg!r}: a path is letters, digits, -._~%!$&'()+,;:@= "
                "(percent-encode anything else), {variables} and '*'"
            )
    shape = "/" + "/".join(_VAR_RE.sub("{}", s) if s != "*" else "{}" for s in segments)
    if "*" in segments:
        # the same rules for {variables} as in a template (checked with each '*' as text)
        uri_template.match_variables("/" + "/".join("x" if s == "*" else s for s in segments))
        regex = "/".join(_ONE_SEGMENT if s == "*" else _segment_regex(s) for s in segments)
        return PathPattern("regex", f"^/{regex}$", (), shape)
    if "{" in path or "}" in path:
        names = uri_template.match_variables(path)
        return PathPattern("template", path, tuple(names), shape)
    return PathPattern("prefix", path, (), shape)


def _segment_regex(segment: str) -> str:
    out, pos = [], 0
    for m in _VAR_RE.finditer(segment):
        out += [re2.escape(segment[pos : m.start()]), _ONE_SEGMENT]
        pos = m.end()
    out.append(re2.escape(segment[pos:]))
    return "".join(p for p in out if p)


def full_path(base_path: str | None, path: str) -> str:
    """`basePath` + `path`; the path `/` under a base path is the base path itself."""
    if not base_path:
        return path
    return base_path if path == "/" else base_path + path
