"""Path pattern detection (api.md "Path patterns"): `/a/b` -> prefix; `/a/{id}` -> URI template
(matches `/a/42`, not `/a/42/x`); any `*` segment -> an anchored RE2 regex."""

from __future__ import annotations

import pytest
import re2

from flowplane.domain.api_definition import full_path, path_pattern
from flowplane.domain.route import PathMatch

TABLE = [
    # path, kind, Native value, variables, shape
    ("/", "prefix", "/", (), "/"),
    ("/pets", "prefix", "/pets", (), "/pets"),
    ("/pets/", "prefix", "/pets/", (), "/pets/"),
    ("/a/b.c~d%20e", "prefix", "/a/b.c~d%20e", (), "/a/b.c~d%20e"),
    ("/pets/{id}", "template", "/pets/{id}", ("id",), "/pets/{}"),
    ("/pets/{id}/toys/{toy_id}", "template", "/pets/{id}/toys/{toy_id}", ("id", "toy_id"),
     "/pets/{}/toys/{}"),
    ("/files/{name}.json", "template", "/files/{name}.json", ("name",), "/files/{}.json"),
    ("/a/*", "regex", "^/a/[^/]+$", (), "/a/{}"),
    ("/a/*/b", "regex", "^/a/[^/]+/b$", (), "/a/{}/b"),
    ("/*", "regex", "^/[^/]+$", (), "/{}"),
    ("/a.b/*/{id}", "regex", "^/a\\.b/[^/]+/[^/]+$", (), "/a.b/{}/{}"),
    ("/a/*/{name}.json", "regex", "^/a/[^/]+/[^/]+\\.json$", (), "/a/{}/{}.json"),
    ("/a+b/*", "regex", "^/a\\+b/[^/]+$", (), "/a+b/{}"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "kind", "value", "variables", "shape"), TABLE)
def test_patterns(path: str, kind: str, value: str, variables: tuple[str, ...], shape: str) -> None:
    p = path_pattern(path)
    assert (p.kind, p.value, p.variables, p.shape) == (kind, value, variables, shape)
    # every pattern is a valid Native path match (templates by Envoy's rules, regexes by RE2)
    PathMatch.model_validate({"type": kind, "value": value})


@pytest.mark.parametrize(
    ("path", "matches", "does_not_match"),
    [
        ("/a/*/b", ["/a/x/b", "/a/42/b"], ["/a/b", "/a//b", "/a/x/y/b", "/a/x/b/c", "/x/a/x/b"]),
        ("/a/*", ["/a/x"], ["/a", "/a/", "/a/x/y"]),
        ("/a.b/*", ["/a.b/x"], ["/aXb/x"]),  # text is literal, '.' included
    ],
)
def test_regexes_are_anchored_and_star_is_one_segment(
    path: str, matches: list[str], does_not_match: list[str]
) -> None:
    """Envoy matches a route's regex against the whole path (RE2); the pattern is anchored
    besides, so it means the same wherever it is used."""
    regex = re2.compile(path_pattern(path).value)
    assert [m for m in matches if not regex.fullmatch(m)] == []
    assert [m for m in does_not_match if regex.search(m)] == []


@pytest.mark.parametrize(
    ("base", "path", "full"),
    [
        (None, "/pets", "/pets"),
        ("/v1", "/pets", "/v1/pets"),
        ("/v1", "/pets/{id}", "/v1/pets/{id}"),
        ("/v1", "/", "/v1"),  # the path "/" under a base path is the base path itself
        (None, "/", "/"),
    ],
)
def test_base_path_is_prepended(base: str | None, path: str, full: str) -> None:
    assert full_path(base, path) == full


def test_segments_for_ordering() -> None:
    assert path_pattern("/").segments == ()
    assert path_pattern("/a/{id}/").segments == ("a", "{}", "")
