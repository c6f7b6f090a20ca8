"""Envoy's URI templates (`envoy.path.match.uri_template`, `envoy.path.rewrite.uri_template`),
checked by the rules Envoy 1.40 applies, so a template is refused here instead of being NACKed.
tests/domain/test_uri_template.py puts every rule's examples to a real Envoy.

- A match template is `/` then segments split by `/` (never empty: no `//`; one trailing `/` is
  allowed). A segment is made of literal text (`[A-Za-z0-9-._~%!$&'()+,;:@=]`, and `*` after
  the first character), globs (`*`: one segment, `**`: any rest, `/` included) and at most one
  variable: `{name}` (= `{name=*}`) or `{name=pattern}`, the pattern being `*`, `**` and literal
  segments joined by `/`. Within a segment a variable comes before any glob (`x{id}y`, `{id}*`
  but not `*{id}`); text after a glob (`*.txt`) ends the template. Variable names are
  `[A-Za-z][A-Za-z0-9_]*`, 1-16 characters, at most 5 per template, each once. No glob and no
  variable after a `**`.
- A rewrite template starts with `/`, has no `//`, and is literal text (the literal characters
  plus `/`) and `{name}` references to variables of the match template.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

MAX_VARIABLES: Final = 5
MAX_VARIABLE_NAME: Final = 16
LITERAL_CHARS: Final = r"A-Za-z0-9\-._~%!$&'()+,;:@="
_LITERAL_RE = re.compile(f"^[{LITERAL_CHARS}]+$")
_REWRITE_LITERAL_RE = re.compile(f"^[{LITERAL_CHARS}/]+$")
_VARIABLE_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
_PRINTABLE_RE = re.compile(r"^/[\x21-\x7e]*$")  # RE2's [[:graph:]]
# One token of a match template: a variable, a glob, a separator, or a run of other characters.
# A '*' starts a glob; after other text it is just text (Envoy: `/a*b` is one literal).
_TOKEN_RE = re.compile(r"\{[^}]*\}?|\*\*?|/|[^{}*/][^{}/]*|[{}]")
_TEXT_RE = re.compile(f"^[{LITERAL_CHARS}][{LITERAL_CHARS}*]*$")

PATH_GLOB: Final = "*"
TEXT_GLOB: Final = "**"


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    match: tuple[str, ...]  # `*`, `**` and literals; empty: `*`

    @property
    def globs(self) -> tuple[str, ...]:
        return tuple(m for m in self.match if m in (PATH_GLOB, TEXT_GLOB)) or (
            () if self.match else (PATH_GLOB,)
        )


def is_literal(text: str) -> bool:
    """Whether `text` is literal text a template may contain."""
    return bool(_LITERAL_RE.fullmatch(text))


def _literal(text: str, what: str = "text") -> str:
    if not _TEXT_RE.fullmatch(text):
        raise ValueError(
            f"invalid {what} {text!r}: literal text is letters, digits and -._~%!$&'()+,;:@="
        )
    return text


def _variable(token: str) -> Variable:
    if not token.endswith("}"):
        raise ValueError(f"unmatched '{{' in {token!r}")
    name, eq, pattern = token[1:-1].partition("=")
    if not _VARIABLE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid variable name {name!r}: a name is a letter, then letters, digits or '_'"
        )
    if not eq:
        return Variable(name, ())
    if not pattern:
        raise ValueError(f"variable {name!r} has an empty pattern")
    match = []
    for part in pattern.split("/"):
        if part in (PATH_GLOB, TEXT_GLOB):
            match.append(part)
        elif not part:
            raise ValueError(f"variable {name!r}: empty segment in its pattern {pattern!r}")
        else:
            match.append(_literal(part, f"text in variable {name!r}"))
    return Variable(name, tuple(match))


def match_variables(template: str) -> list[str]:
    """The variable names of a match template, in order; ValueError if Envoy would refuse it."""
    if not _PRINTABLE_RE.fullmatch(template):
        raise ValueError("a path template starts with '/' and has no spaces or control characters")
    segments: list[list[str | Variable]] = [[]]
    for token in _TOKEN_RE.findall(template[1:]):
        if token == "/":
            if not segments[-1]:
                raise ValueError("a path template has no empty segment ('//')")
            segments.append([])
        elif token.startswith("{"):
            segments[-1].append(_variable(token))
        elif token == "}":
            raise ValueError("unmatched '}' in the path template")
        elif token in (PATH_GLOB, TEXT_GLOB):
            segments[-1].append(token)
        else:
            segments[-1].append(_literal(token))
    trailing_slash = not segments[-1]
    if trailing_slash:
        segments.pop()  # a trailing '/' (or the template "/")
    for i, seg in enumerate(segments):
        _check_segment(seg, at_end=i == len(segments) - 1 and not trailing_slash)
    variables = [t for seg in segments for t in seg if isinstance(t, Variable)]
    names = [v.name for v in variables]
    if len(names) > MAX_VARIABLES:
        raise ValueError(f"a path template has at most {MAX_VARIABLES} variables (Envoy's limit)")
    for n in names:
        if len(n) > MAX_VARIABLE_NAME:
            raise ValueError(
                f"variable name {n!r} is longer than {MAX_VARIABLE_NAME} characters (Envoy's limit)"
            )
    if len(set(names)) != len(names):
        raise ValueError("a path template names a variable twice")
    seen_text_glob = False
    for glob in (g for seg in segments for t in seg for g in _globs(t)):
        if seen_text_glob:
            raise ValueError("nothing that matches may follow '**' in a path template")
        seen_text_glob = glob == TEXT_GLOB
    return names


def _globs(token: str | Variable) -> tuple[str, ...]:
    if isinstance(token, Variable):
        return token.globs
    return (token,) if token in (PATH_GLOB, TEXT_GLOB) else ()


def _check_segment(seg: list[str | Variable], *, at_end: bool) -> None:
    variables = [t for t in seg if isinstance(t, Variable)]
    if len(variables) > 1:
        raise ValueError("a path segment has at most one variable")
    globs = [i for i, t in enumerate(seg) if t in (PATH_GLOB, TEXT_GLOB)]
    if globs and variables and seg.index(variables[0]) > globs[0]:
        raise ValueError("in a path segment, a variable comes before any '*'")
    text_after_glob = globs and any(
        not isinstance(t, Variable) and t not in (PATH_GLOB, TEXT_GLOB) for t in seg[globs[0] :]
    )
    if text_after_glob and not at_end:
        raise ValueError("text after a '*' ends the template (like '/*.txt'): no '/' after it")


def rewrite_variables(rewrite: str) -> list[str]:
    """The variables a rewrite template uses; ValueError if Envoy would refuse its syntax."""
    if not rewrite.startswith("/"):
        raise ValueError("a rewrite template must start with '/'")
    if "//" in rewrite:
        raise ValueError("a rewrite template has no '//'")
    names: list[str] = []
    rest = rewrite
    while rest:
        text, brace, rest = rest.partition("{")
        if text and not _REWRITE_LITERAL_RE.fullmatch(text):
            raise ValueError(
                f"invalid text {text!r}: a rewrite template is '/', letters, digits, "
                "-._~%!$&'()+,;:@= and {variable}"
            )
        if not brace:
            break
        name, close, rest = rest.partition("}")
        if not close:
            raise ValueError("unmatched '{' in the rewrite template")
        if not _VARIABLE_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid variable name {name!r} in the rewrite template")
        names.append(name)
    return names


def check_rewrite(rewrite: str, variables: Collection[str]) -> None:
    """ValueError unless `rewrite` is a valid rewrite template using only `variables`."""
    unknown = sorted(set(rewrite_variables(rewrite)) - set(variables))
    if unknown:
        raise ValueError(
            f"the rewrite uses variable(s) the path does not capture: {', '.join(unknown)}"
        )
