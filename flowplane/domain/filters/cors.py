"""`cors`: Cross-Origin Resource Sharing (Envoy's CORS filter).

Envoy's filter takes no policy of its own: the policy is per scope. So the listener's entry is
just `{"type": "cors"}` (its `config`, if given, must be `{}`), and the policy goes in the
`filters.cors` of a route config, virtual host or route:

    {"origins": [{"exact": "https://app.example.com"}, {"suffix": ".example.com"}],
     "methods": ["GET", "POST"], "headers": ["content-type"], "exposeHeaders": ["x-request-id"],
     "maxAge": 600, "allowCredentials": true}

Envoy merges the scopes field by field (route, then virtual host, then route config): methods,
headers, exposeHeaders and maxAge left out of a route's policy come from the virtual host's.
`origins` is required in every policy and `allowCredentials` is always explicit (false unless
given), so neither is ever inherited: a policy whose origins match every origin can never pick up
credentials from an enclosing scope.

Origin matching: `exact`, `prefix` and `suffix` ignore case (host names do); `regex` (RE2) must
match the whole Origin header (`https://app.example.com`, scheme and port included). A matcher
that matches the string `*` allows every origin (Envoy's rule), as does one that matches
unrelated origins; with `allowCredentials: true` such a matcher is refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import re2
from pydantic import Field, field_validator, model_validator

from flowplane.domain.cluster import HttpMethod
from flowplane.domain.common import ApiModel, NestedProblems, Regex
from flowplane.domain.filters import FilterModel, FilterSpec
from flowplane.errors import FieldProblem

_TOKEN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"  # an HTTP header field name (RFC 9110), any case
# Browsers cap Access-Control-Max-Age at 24 h (Firefox) or 2 h (Chromium); more is pointless.
MAX_AGE_LIMIT: Final = 86_400

HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=_TOKEN)]
OriginText = Annotated[str, Field(min_length=1, max_length=1024)]

# Two unrelated origins per scheme: a matcher matching both (or `*`) allows any origin.
_PROBES: Final = tuple(
    (f"{scheme}://flowplane-probe-a.invalid", f"{scheme}://flowplane-probe-b.test:8443")
    for scheme in ("https", "http")
)


class OriginMatcher(ApiModel):
    """Exactly one of `exact`, `prefix`, `suffix`, `regex`."""

    exact: OriginText | None = None
    prefix: OriginText | None = None
    suffix: OriginText | None = None
    regex: Annotated[Regex, Field(min_length=1, max_length=1024)] | None = None

    @model_validator(mode="after")
    def _one(self) -> OriginMatcher:
        given = [k for k in ("exact", "prefix", "suffix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of exact, prefix, suffix, regex"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def matches(self, origin: str) -> bool:
        """Whether Envoy's matcher for this would match `origin`."""
        if self.regex is not None:
            return re2.fullmatch(self.regex, origin) is not None
        origin = origin.lower()
        if self.exact is not None:
            return origin == self.exact.lower()
        if self.prefix is not None:
            return origin.startswith(self.prefix.lower())
        assert self.suffix is not None
        return origin.endswith(self.suffix.lower())

    def matches_any_origin(self) -> bool:
        return self.matches("*") or any(all(self.matches(o) for o in pair) for pair in _PROBES)


class CorsPolicy(FilterModel):
    """The per-scope policy (`filters.cors` on a route config, virtual host or route)."""

    origins: Annotated[list[OriginMatcher], Field(min_length=1, max_length=100)]
    methods: Annotated[list[HttpMethod], Field(min_length=1, max_length=9)] | None = None
    # ["*"]: whatever the preflight asks for (Access-Control-Request-Headers is echoed)
    headers: Annotated[list[HeaderName], Field(min_length=1, max_length=100)] | None = None
    expose_headers: Annotated[list[HeaderName], Field(min_length=1, max_length=100)] | None = None
    max_age: Annotated[int, Field(ge=0, le=MAX_AGE_LIMIT)] | None = None
    allow_credentials: bool = False

    @field_validator("methods", "headers", "expose_headers")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            seen: set[str] = set()
            for item in value:
                if item.lower() in seen:
                    raise ValueError(f"{item} is listed twice")
                seen.add(item.lower())
        return value

    @field_validator("headers")
    @classmethod
    def _star_alone(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and "*" in value and len(value) > 1:
            raise ValueError('"*" (every requested header) cannot be combined with names')
        return value

    @model_validator(mode="after")
    def _no_credentials_for_everyone(self) -> CorsPolicy:
        if self.allow_credentials:
            wild = [i for i, o in enumerate(self.origins) if o.matches_any_origin()]
            if wild:
                raise NestedProblems([
                    FieldProblem(
                        f"origins[{i}]",
                        "matches every origin, which allowCredentials: true does not allow "
                        "(any web site could make credentialed requests); list the origins",
                    )
                    for i in wild
                ])  # fmt: skip
        return self


class CorsConfig(FilterModel):
    """The listener-level entry: empty (Envoy's CORS filter takes no config)."""

    @model_validator(mode="before")
    @classmethod
    def _empty(cls, data: Any) -> Any:
        if data != {}:
            raise ValueError(
                "the cors filter takes no config here (give {} or nothing): the CORS policy "
                "goes in filters.cors on the route config, virtual host or route"
            )
        return data


SPEC = FilterSpec("cors", CorsConfig, CorsPolicy, config_required=False)
