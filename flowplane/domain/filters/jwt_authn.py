"""`jwt_authn`: verify JSON Web Tokens (Envoy's jwt_authn filter).

Config:

    {"providers": {"<name>": Provider, ...},       # 1..1000; names ^[a-z0-9][a-z0-9._-]{0,62}$
     "rules": [{"match": {"prefix"|"path"|"regex": str}, "requires": Requirement?}, ...]?,
     "requirementMap": {"<name>": Requirement, ...}?}

    Provider = {"issuer": str, "audiences": [str]?,
                "remoteJwks": {"uri", "cluster", "timeoutSeconds"?, "cacheSeconds"?}
                  | "localJwks": {"inline": "<JWKS JSON>"},
                "fromHeaders": [{"name", "valuePrefix"?}]?, "fromParams": [str]?,
                "forward": bool?, "forwardPayloadHeader": str?,
                "claimToHeaders": [{"headerName", "claimName"}]?}
    Requirement = exactly one of {"provider": name} | {"requiresAny": [Requirement, ...]}
                | {"requiresAll": [Requirement, ...]} | {"allowMissing": true}
                | {"allowMissingOrFailed": true}       (lists of 2..20, nesting depth <= 5)

Rules are tried in order; the first whose `match` matches the request path applies, and a rule
without `requires` lets the path through without a token. A request no rule matches needs no
token. At least one rule or requirementMap entry is required (without either the filter checks
nothing). Every provider a requirement names must be in `providers`.

Per-scope override (route, virtual host, route config `filters`, keyed `jwt_authn`):
`{"requirementName": "<name>"}` applies that `requirementMap` entry there instead of the rules
(`{"disabled": true}` skips the filter). The name can only be checked against the listener's
filter by Envoy, which answers 403 to requests on a route naming a requirement it lacks.

`clusters()` names the remoteJwks clusters: they must exist and cannot be deleted while used.
An `https` JWKS uri needs a cluster with upstream TLS (not checked here).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from jwt import PyJWK, PyJWTError
from pydantic import AfterValidator, Field, model_validator

from flowplane.domain.common import ApiModel, NestedProblems, RefName, Regex
from flowplane.domain.filters import FilterModel, FilterSpec
from flowplane.domain.filters.header_mutation import HeaderName
from flowplane.errors import FieldProblem

MAX_DEPTH = 5
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# A shared gateway's filter holds the providers and requirements of every API on it (the
# Platform API names them `<api id>.<n>`), hence room for many.
MAX_PROVIDERS = 1000
MAX_REQUIREMENTS = 2000

# A provider / requirement name (a key of `providers` / `requirementMap`, or a reference).
KeyName = Annotated[str, Field(pattern=_KEY_RE.pattern)]


def _check_keys(value: dict[str, Any]) -> dict[str, Any]:
    bad = [k for k in value if not _KEY_RE.fullmatch(k)]
    if bad:
        raise NestedProblems([
            FieldProblem(k, "a name must be 1-63 characters of lowercase letters, digits, "
                            "'.', '_' and '-', starting with a letter or digit")
            for k in bad
        ])  # fmt: skip
    return value


def _check_uri(value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError as err:
        raise ValueError(f"is not a valid URI: {err}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URI with a host")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace")
    return value


# What Envoy (jwt_verify_lib) accepts of each key type: the string members it needs, the `alg`
# values it allows, and the curves (`crv` -> the only `alg` that curve allows).
_KEY_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "oct": ("k",), "OKP": ("crv", "x")}
_KEY_ALGS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512"},
    "oct": {"HS256", "HS384", "HS512"},
    "OKP": {"EdDSA"},
}
_CURVES = {
    "EC": {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"},
    "OKP": {"Ed25519": "EdDSA"},
}


def _key_problem(key: Any) -> str | None:
    """Why Envoy could not use this JWK (None: it can)."""
    kty = key.get("kty") if isinstance(key, dict) else None
    if kty not in _KEY_MEMBERS:
        return f'needs a "kty" of {", ".join(_KEY_MEMBERS)}'
    assert isinstance(key, dict)
    missing = [m for m in _KEY_MEMBERS[kty] if not isinstance(key.get(m), str)]
    if missing:
        return f"({kty}) lacks the string member(s) {', '.join(missing)}"
    alg = key.get("alg")
    if alg is not None and alg not in _KEY_ALGS[kty]:
        return f'({kty}) has "alg" {alg!r}; Envoy takes {", ".join(sorted(_KEY_ALGS[kty]))}'
    if kty in _CURVES:
        crv = key["crv"]
        if crv not in _CURVES[kty]:
            return f'({kty}) has "crv" {crv!r}; Envoy takes {", ".join(_CURVES[kty])}'
        if alg is not None and alg != _CURVES[kty][crv]:
            return f'({kty}) has "alg" {alg!r}, which does not go with "crv" {crv!r}'
    try:  # the key material itself (lengths, points on the curve, base64url)
        PyJWK(key)
    except (PyJWTError, ValueError, TypeError, KeyError) as err:
        return f"({kty}) is not a valid key: {str(err)[:200]}"
    return None


def _check_jwks(value: str) -> str:
    """Envoy refuses an inline JWKS with no usable key and skips unusable ones; every key must
    be usable here, so a mistake in one key is not silently ignored."""
    try:
        doc = json.loads(value)
    except ValueError:
        raise ValueError("is not valid JSON (a JWKS document is expected)") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError('a JWKS is a JSON object with a non-empty "keys" list')
    for i, key in enumerate(keys):
        problem = _key_problem(key)
        if problem is not None:
            raise ValueError(f"keys[{i}] {problem}")
    return value


Uri = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(_check_uri)]
Jwks = Annotated[str, Field(min_length=1, max_length=65536), AfterValidator(_check_jwks)]
Text = Annotated[str, Field(min_length=1, max_length=1024)]
# An HTTP header value (no control characters but tab), e.g. "Bearer ".
HeaderValue = Annotated[str, Field(max_length=256, pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]*$")]
QueryParam = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\s&=#?]+$")]


class RemoteJwks(ApiModel):
    ref_fields: ClassVar[tuple[str, ...]] = ("cluster",)

    uri: Uri
    cluster: RefName
    timeout_seconds: Annotated[float, Field(ge=0.001, le=3600)] = 5.0
    cache_seconds: Annotated[float, Field(ge=0.001, le=315_360_000)] = 300.0


class LocalJwks(ApiModel):
    inline: Jwks


class FromHeader(ApiModel):
    name: HeaderName
    value_prefix: HeaderValue | None = None


class ClaimToHeader(ApiModel):
    header_name: HeaderName
    claim_name: Annotated[str, Field(min_length=1, max_length=256)]


class Provider(ApiModel):
    issuer: Text
    audiences: Annotated[list[Text], Field(max_length=100)] | None = None
    remote_jwks: RemoteJwks | None = None
    local_jwks: LocalJwks | None = None
    from_headers: Annotated[list[FromHeader], Field(max_length=20)] | None = None
    from_params: Annotated[list[QueryParam], Field(max_length=20)] | None = None
    forward: bool | None = None
    forward_payload_header: HeaderName | None = None
    claim_to_headers: Annotated[list[ClaimToHeader], Field(max_length=50)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _forward_type(cls, data: Any) -> Any:
        # `loc_to_field` drops "forward" from error paths (it is also a route action's union
        # tag), so pydantic's own error would name the provider, not the field: check it here.
        if isinstance(data, dict) and data.get("forward") not in (None, True, False):
            raise NestedProblems([FieldProblem("forward", "Input should be a valid boolean")])
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Provider:
        if (self.remote_jwks is None) == (self.local_jwks is None):
            raise ValueError("give exactly one of remoteJwks and localJwks")
        return self


_REQUIREMENT_KEYS = ("provider", "requiresAny", "requiresAll", "allowMissing",
                     "allowMissingOrFailed")  # fmt: skip
RequirementList = Annotated[list["Requirement"], Field(min_length=2, max_length=20)]


class Requirement(ApiModel):
    provider: KeyName | None = None
    requires_any: RequirementList | None = None
    requires_all: RequirementList | None = None
    allow_missing: Literal[True] | None = None
    allow_missing_or_failed: Literal[True] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Requirement:
        given = [
            v
            for v in (self.provider, self.requires_any, self.requires_all, self.allow_missing,
                      self.allow_missing_or_failed)
            if v is not None
        ]  # fmt: skip
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_REQUIREMENT_KEYS)}")
        if self.depth() > MAX_DEPTH:
            raise ValueError(f"requirements nest at most {MAX_DEPTH} levels deep")
        return self

    def children(self) -> tuple[str, list[Requirement]] | None:
        if self.requires_any is not None:
            return "requiresAny", self.requires_any
        if self.requires_all is not None:
            return "requiresAll", self.requires_all
        return None

    def depth(self) -> int:
        kids = self.children()
        return 1 + max(k.depth() for k in kids[1]) if kids else 1

    def providers(self, path: str) -> list[tuple[str, str]]:
        """(field path, provider name) for each provider this requirement names."""
        if self.provider is not None:
            return [(f"{path}.provider", self.provider)]
        kids = self.children()
        if kids is None:
            return []
        key, reqs = kids
        return [p for i, r in enumerate(reqs) for p in r.providers(f"{path}.{key}[{i}]")]


class RuleMatch(ApiModel):
    prefix: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    path: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    regex: Annotated[Regex, Field(min_length=1, max_length=4096)] | None = None

    @model_validator(mode="after")
    def _one(self) -> RuleMatch:
        given = [k for k in ("prefix", "path", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of prefix, path and regex")
        value = getattr(self, given[0])
        if given[0] != "regex" and not value.startswith("/"):
            raise ValueError(f"a {given[0]} must start with '/'")
        return self


class Rule(ApiModel):
    match: RuleMatch
    requires: Requirement | None = None  # None: the path needs no token


class JwtAuthnConfig(FilterModel):
    providers: Annotated[
        dict[str, Provider],
        Field(min_length=1, max_length=MAX_PROVIDERS),
        AfterValidator(_check_keys),
    ]
    rules: Annotated[list[Rule], Field(max_length=200)] = Field(default_factory=list)
    requirement_map: Annotated[
        dict[str, Requirement],
        Field(max_length=MAX_REQUIREMENTS),
        AfterValidator(_check_keys),
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> JwtAuthnConfig:
        if not self.rules and not self.requirement_map:
            raise ValueError("give at least one rule or requirementMap entry")
        named = [p for i, r in enumerate(self.rules) if r.requires is not None
                 for p in r.requires.providers(f"rules[{i}].requires")]  # fmt: skip
        named += [p for k, r in self.requirement_map.items()
                  for p in r.providers(f"requirementMap.{k}")]  # fmt: skip
        problems = [
            FieldProblem(path, f"unknown provider {name!r} (known: {', '.join(self.providers)})")
            for path, name in named
            if name not in self.providers
        ]
        if problems:
            raise NestedProblems(problems)
        return self

    def clusters(self) -> set[str]:
        return {p.remote_jwks.cluster for p in self.providers.values() if p.remote_jwks}


class JwtAuthnOverride(FilterModel):
    """Per scope: apply the listener filter's `requirementMap` entry of this name."""

    requirement_name: KeyName


SPEC = FilterSpec("jwt_authn", JwtAuthnConfig, JwtAuthnOverride)
