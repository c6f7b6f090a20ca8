"""Shared pieces of the domain models: the base model, names, hosts, error conversion.

Models accept camelCase JSON only, refuse unknown fields, and are strict about types (a string is
never silently turned into a number). What a client sent is what we store
(`resources.client_spec`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import re2
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from flowplane.errors import BadRequest, FieldProblem

# Validate with `fullmatch`, never `match`: `$` also matches before a final "\n" ("nl\n").
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_HOST_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def rfc3339(
    ts: datetime, timespec: Literal["seconds", "milliseconds", "microseconds"] = "seconds"
) -> str:
    """The one RFC 3339 formatter: UTC as `Z` (every time the API shows is UTC)."""
    return ts.isoformat(timespec=timespec).replace("+00:00", "Z")


class ApiModel(BaseModel):
    """Base of every REST-facing model: camelCase, strict, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


def _check_name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            "must be 1-253 characters of lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[
    str,
    AfterValidator(_check_name),
    Field(json_schema_extra={"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 253}),
]
"""A DNS-like resource or team name."""

SHARED = "shared"
"""The qualifier of a reference to a shared (team-less) resource (`shared/<name>`); no team may
be called that."""


def _check_team(value: str) -> str:
    _check_name(value)
    if value == SHARED:
        raise ValueError(f"{SHARED!r} is reserved (it names shared resources in references)")
    return value


TeamName = Annotated[
    str,
    AfterValidator(_check_team),
    Field(json_schema_extra={"pattern": NAME_RE.pattern, "minLength": 1, "maxLength": 253}),
]
"""A team's name: a `Name` other than `shared`."""

_NAME = NAME_RE.pattern[1:-1]
REF_RE = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")


def _check_ref(value: str) -> str:
    if not REF_RE.fullmatch(value):
        raise ValueError(
            "must be a name (1-253 characters of lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit), or `shared/<name>` for a shared one"
        )
    return value


RefName = Annotated[
    str,
    AfterValidator(_check_ref),
    Field(json_schema_extra={"pattern": REF_RE.pattern, "minLength": 1, "maxLength": 507}),
]
"""A reference to another resource by name: `<name>` resolves inside the referring resource's
team (for a shared resource: among shared ones); `shared/<name>` names a shared resource
explicitly (api.md Conventions). Models list the fields holding one in `__refs__`."""

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0, le=315_576_000_000)]


def is_ip(value: str) -> bool:
    # `ipaddress` takes anything after an IPv6 `%` as the zone ("fe80::1%eth0\n" parses): refuse
    # control characters, spaces and non-ASCII before asking it.
    if not (value.isascii() and value.isprintable()) or " " in value:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_host(value: str) -> str:
    if is_ip(value):
        return value
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError("must be an IP address or a DNS hostname")
    return value


Host = Annotated[
    str, AfterValidator(_check_host), Field(json_schema_extra={"minLength": 1, "maxLength": 253})
]


def _check_ip(value: str) -> str:
    if not is_ip(value):
        raise ValueError("must be an IPv4 or IPv6 address")
    return value


IpAddress = Annotated[str, AfterValidator(_check_ip)]


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def check_regex(value: str) -> str:
    """Envoy's regexes are RE2 (no lookaround, no backreferences): validate with RE2 itself."""
    try:
        re2.compile(value, _RE2_OPTIONS)
    except re2.error as err:
        detail = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
        raise ValueError(f"is not a valid RE2 regular expression: {detail}") from None
    return value


Regex = Annotated[str, AfterValidator(check_regex)]


UNION_TAGS = frozenset(
    {"httpConnectionManager", "tcpProxy", "forward", "weighted", "redirect", "directResponse"}
)
"""The `type` values of the domain's discriminated unions (network filters, route actions).
pydantic puts the chosen member's tag into an error's location, right after the union field
(`action`, or an item of a listener chain's `filters`); it is not part of the client's JSON path,
so it is left out there — and only there: a field may have a tag's name (a JWT provider's
`forward`). tests/domain checks this set and `UNION_FIELDS` against the models."""
UNION_FIELDS = frozenset({"action", "filters"})


def loc_to_field(loc: tuple[int | str, ...]) -> str:
    """`("routes", 2, "action", "forward", "cluster")` -> `routes[2].action.cluster`."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "tagged-union[")) or part in {"lax", "strict"}:
            continue  # pydantic's internal union/validator markers mean nothing to a client
        elif part in UNION_TAGS and _after_union_field(loc, i):
            continue
        else:
            out += ("." if out else "") + part
    return out or "(body)"


def _after_union_field(loc: tuple[int | str, ...], i: int) -> bool:
    before = loc[i - 1] if i >= 1 else None
    if isinstance(before, int):  # an item of a list-valued union field
        before = loc[i - 2] if i >= 2 else None
    return before in UNION_FIELDS


_NESTED = "\x1fnested:"


class NestedProblems(ValueError):
    """Raised by a validator that checked a sub-document with another model (a filter's typed
    `config`, a per-scope override): carries that model's problems, each with its path below the
    field being validated, so the client still gets one precise problem per field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__(_NESTED + json.dumps([[p.field, p.message] for p in problems]))
        self.problems = problems


def nested(err: ValidationError, prefix: str) -> NestedProblems:
    """`err` (from validating a sub-document) as problems under `prefix` (e.g. `config`)."""
    return NestedProblems(problems_from(err, prefix))


def problems_from(err: ValidationError, prefix: str = "") -> list[FieldProblem]:
    problems = []
    for e in err.errors(include_url=False):
        field = loc_to_field(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if msg.startswith(_NESTED):  # expand what a NestedProblems carried, below this field
            base = field if field != "(body)" else ""
            for sub, sub_msg in json.loads(msg[len(_NESTED) :]):
                path = f"{base}.{sub}" if base and not sub.startswith("[") else f"{base}{sub}"
                problems.append(FieldProblem(_prefixed(prefix, path or "(body)"), sub_msg))
            continue
        problems.append(FieldProblem(_prefixed(prefix, field), msg))
    return problems


def _prefixed(prefix: str, field: str) -> str:
    if not prefix:
        return field
    return prefix if field == "(body)" else f"{prefix}.{field}"


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, what: str) -> M:
    """Validate `data` (decoded JSON) as `model`; raise BadRequest listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = problems_from(err)
        raise BadRequest(f"invalid {what}: {len(problems)} problem(s)", problems) from None
