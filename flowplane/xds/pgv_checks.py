"""The value checkers of PGV's rule kinds, compiled from a `(validate.rules)` FieldRules message.

Each `*_check` builder reads one rules message once and returns a `Check`: a function of a
field's value that returns the messages of the rules it breaks (empty when it passes), worded
as PGV's C++ validators word them ("value must be greater than 0s"). `None` means there is
nothing to check. `flowplane.xds.constraints` decides which values get checked (presence,
oneofs, wrappers, recursion); nothing here walks messages.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from typing import Any

import re2
from google.protobuf.descriptor import FieldDescriptor
from validate import validate_pb2 as pgv

__all__ = ["Check", "both", "envoy_duration", "map_checks", "repeated_checks", "value_check"]

# A check gets a field's value (never one Envoy would not check) and returns the messages of
# the rules it breaks; an empty tuple means the value passes.
Check = Callable[[Any], tuple[str, ...]]
_OK: tuple[str, ...] = ()
_MESSAGE = FieldDescriptor.TYPE_MESSAGE

# PGV's well-known header regexes (validate.proto `KnownRegex`); with `strict: false` only
# NUL, CR and LF are refused.
_HEADER_NAME = re2.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE = re2.compile(r"^[^\x00-\x08\x0A-\x1F\x7F]*$")
_HEADER_LOOSE = re2.compile(r"^[^\x00\n\r]*$")


# --- numbers -------------------------------------------------------------------------------


def _fmt_num(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def _fmt_duration(nanos: int) -> str:
    """A duration as protobuf's JSON form ("0s", "0.001s"), as PGV's messages write it."""
    sign = "-" if nanos < 0 else ""
    s, n = divmod(abs(nanos), 1_000_000_000)
    frac = f".{n:09d}".rstrip("0") if n else ""
    return f"{sign}{s}{frac}s"


def _bounds_check(
    rules: Any, conv: Callable[[Any], Any], fmt: Callable[[Any], str]
) -> Check | None:
    """const / lt / lte / gt / gte / in / not_in of a numeric-like rules message; `conv`
    turns a rule's operand into the comparable form, `fmt` renders it. A lower bound above the
    upper bound is PGV's exclusive range: the value must lie outside it."""
    has = _has(rules)
    const = conv(rules.const) if has("const") else None
    lo = (conv(rules.gt), False) if has("gt") else (conv(rules.gte), True) if has("gte") else None
    hi = (conv(rules.lt), False) if has("lt") else (conv(rules.lte), True) if has("lte") else None
    in_ = frozenset(conv(x) for x in getattr(rules, "in")) if _has_in(rules) else None
    not_in = frozenset(conv(x) for x in rules.not_in) if _has_not_in(rules) else None
    if const is None and lo is None and hi is None and in_ is None and not_in is None:
        return None

    def above(v: Any) -> bool:
        assert lo is not None
        return bool(v >= lo[0] if lo[1] else v > lo[0])

    def below(v: Any) -> bool:
        assert hi is not None
        return bool(v <= hi[0] if hi[1] else v < hi[0])

    if lo is not None and hi is not None:
        lo_s = f"{'[' if lo[1] else '('}{fmt(lo[0])}"
        hi_s = f"{fmt(hi[0])}{']' if hi[1] else ')'}"
        if hi[0] >= lo[0]:
            range_msg = f"value must be inside range {lo_s}, {hi_s}"
            range_ok: Callable[[Any], bool] = lambda v: above(v) and below(v)  # noqa: E731
        else:
            # Exclusive range: the bounds swap brackets, as in PGV's message.
            range_msg = (
                f"value must be outside range {'(' if hi[1] else '['}{fmt(hi[0])}, "
                f"{fmt(lo[0])}{')' if lo[1] else ']'}"
            )
            range_ok = lambda v: above(v) or below(v)  # noqa: E731
    elif lo is not None:
        range_msg = f"value must be greater than {'or equal to ' if lo[1] else ''}{fmt(lo[0])}"
        range_ok = above
    elif hi is not None:
        range_msg = f"value must be less than {'or equal to ' if hi[1] else ''}{fmt(hi[0])}"
        range_ok = below
    else:
        range_ok, range_msg = (lambda v: True), ""

    def check(raw: Any) -> tuple[str, ...]:
        v = conv(raw)
        out: list[str] = []
        if const is not None and v != const:
            out.append(f"value must equal {fmt(const)}")
        if not range_ok(v):
            out.append(range_msg)
        if in_ is not None and v not in in_:
            out.append(f"value must be in list {sorted(map(fmt, in_))}")
        if not_in is not None and v in not_in:
            out.append(f"value must not be in list {sorted(map(fmt, not_in))}")
        return tuple(out)

    return check


def _has(rules: Any) -> Callable[[str], bool]:
    """`rules.HasField`, False for a field this rules message does not declare (enum rules
    have no bounds, duration rules no `ignore_empty`)."""
    fields = rules.DESCRIPTOR.fields_by_name
    return lambda name: name in fields and bool(rules.HasField(name))


def _has_in(rules: Any) -> bool:
    return len(getattr(rules, "in", ())) > 0


def _has_not_in(rules: Any) -> bool:
    return len(getattr(rules, "not_in", ())) > 0


def _ident(v: Any) -> Any:
    return v


def _duration_nanos(d: Any) -> int:
    return int(d.seconds) * 1_000_000_000 + int(d.nanos)


def _ignore_empty(rules: Any, check: Check | None) -> Check | None:
    if check is None or not (_has(rules)("ignore_empty") and rules.ignore_empty):
        return check
    inner = check
    return lambda v: _OK if not v else inner(v)


# --- strings and bytes -----------------------------------------------------------------------


def _valid_hostname(s: str) -> bool:
    s = s.removesuffix(".")
    if not s or len(s) > 253:
        return False
    for label in s.split("."):
        if not 1 <= len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c.isascii() and (c.isalnum() or c == "-") for c in label):
            return False
    return True


def _valid_ip(s: str, version: int | None) -> bool:
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return False
    return version is None or addr.version == version


def _valid_uuid(s: str) -> bool:
    try:
        return len(s) == 36 and str(uuid.UUID(s)) == s.lower()
    except ValueError:
        return False


_WELL_KNOWN: dict[str, tuple[Callable[[str], bool], str]] = {
    "hostname": (_valid_hostname, "value must be a valid hostname"),
    "ip": (lambda s: _valid_ip(s, None), "value must be a valid IP address"),
    "ipv4": (lambda s: _valid_ip(s, 4), "value must be a valid IPv4 address"),
    "ipv6": (lambda s: _valid_ip(s, 6), "value must be a valid IPv6 address"),
    "address": (
        lambda s: _valid_ip(s, None) or _valid_hostname(s),
        "value must be a valid hostname or IP address",
    ),
    "uuid": (_valid_uuid, "value must be a valid UUID"),
}


def _string_check(rules: Any, is_bytes: bool) -> Check | None:
    """String rules (`is_bytes` False: lengths in code points as PGV's `len`) or bytes rules."""
    has = _has(rules)
    checks: list[Callable[[Any], str | None]] = []
    unit = "bytes" if is_bytes else "runes"

    def length(field: str, test: Callable[[int, int], bool], text: str, *, in_bytes: bool) -> None:
        if has(field):
            n = int(getattr(rules, field))
            u = "bytes" if in_bytes else unit

            def c(v: Any) -> str | None:
                size = len(v.encode()) if in_bytes and isinstance(v, str) else len(v)
                return None if test(size, n) else f"value length must be {text}{n} {u}"

            checks.append(c)

    length("len", lambda a, b: a == b, "", in_bytes=is_bytes)
    length("min_len", lambda a, b: a >= b, "at least ", in_bytes=is_bytes)
    length("max_len", lambda a, b: a <= b, "at most ", in_bytes=is_bytes)
    if not is_bytes:
        length("len_bytes", lambda a, b: a == b, "", in_bytes=True)
        length("min_bytes", lambda a, b: a >= b, "at least ", in_bytes=True)
        length("max_bytes", lambda a, b: a <= b, "at most ", in_bytes=True)

    def simple(field: str, test: Callable[[Any, Any], bool], text: str) -> None:
        if has(field):
            want = getattr(rules, field)
            msg = f"{text} {want!r}"
            checks.append(lambda v: None if test(v, want) else msg)

    simple("const", lambda v, w: v == w, "value must equal")
    simple("prefix", lambda v, w: v.startswith(w), "value does not have prefix")
    simple("suffix", lambda v, w: v.endswith(w), "value does not have suffix")
    simple("contains", lambda v, w: w in v, "value does not contain")
    simple("not_contains", lambda v, w: w not in v, "value contains")
    if has("pattern"):
        # PGV compiles `pattern` with RE2 and requires a partial match (as re2.search does).
        regex = re2.compile(rules.pattern.encode("latin-1") if is_bytes else rules.pattern)
        pmsg = f"value does not match regex pattern {rules.pattern!r}"
        checks.append(lambda v: None if regex.search(v) else pmsg)
    if _has_in(rules):
        allowed = frozenset(getattr(rules, "in"))
        imsg = f"value must be in list {sorted(map(repr, allowed))}"
        checks.append(lambda v: None if v in allowed else imsg)
    if _has_not_in(rules):
        refused = frozenset(rules.not_in)
        nmsg = f"value must not be in list {sorted(map(repr, refused))}"
        checks.append(lambda v: None if v not in refused else nmsg)
    wk = rules.WhichOneof("well_known")
    if wk == "well_known_regex":
        strict = not rules.HasField("strict") or rules.strict
        known = rules.well_known_regex
        if known != pgv.UNKNOWN:
            is_name = known == pgv.HTTP_HEADER_NAME
            rx = (_HEADER_NAME if is_name else _HEADER_VALUE) if strict else _HEADER_LOOSE
            what = "HTTP header name" if is_name else "HTTP header value"
            wmsg = f"value must be a valid {what}"
            checks.append(lambda v: None if rx.search(v) else wmsg)
    elif wk is not None and getattr(rules, wk) and wk in _WELL_KNOWN:
        valid, wmsg2 = _WELL_KNOWN[wk]
        if is_bytes:
            # Bytes `ip`/`ipv4`/`ipv6` are packed addresses: 4 or 16 bytes.
            sizes = {"ip": (4, 16), "ipv4": (4,), "ipv6": (16,)}.get(wk, ())
            checks.append(lambda v: None if len(v) in sizes else wmsg2)
        else:
            checks.append(lambda v: None if valid(v) else wmsg2)
    if not checks:
        return None
    return _ignore_empty(rules, _collect(checks))


def _collect(checks: list[Callable[[Any], str | None]]) -> Check:
    def check(v: Any) -> tuple[str, ...]:
        return tuple(m for c in checks if (m := c(v)) is not None)

    return check


# --- rule compilation -------------------------------------------------------------------------

_NUMERIC = frozenset(
    [
        "float",
        "double",
        "int32",
        "int64",
        "uint32",
        "uint64",
        "sint32",
        "sint64",
        "fixed32",
        "fixed64",
        "sfixed32",
        "sfixed64",
    ]
)


def value_check(fd: FieldDescriptor, rules: Any) -> Check | None:
    """The checker of one (non-repeated) value of `fd` for a `FieldRules` message (the field's
    own rules, or its `repeated.items` / `map.keys` / `map.values`)."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return None
    sub = getattr(rules, kind)
    if kind in _NUMERIC:
        return _ignore_empty(sub, _bounds_check(sub, _ident, _fmt_num))
    if kind == "bool":
        if not sub.HasField("const"):
            return None
        want = sub.const
        bmsg = f"value must equal {str(want).lower()}"
        return lambda v: _OK if bool(v) == want else (bmsg,)
    if kind in ("string", "bytes"):
        return _string_check(sub, kind == "bytes")
    if kind == "enum":
        return _enum_check(fd, sub)
    if kind == "duration":
        return _bounds_check(sub, _duration_nanos, _fmt_duration)
    if kind == "timestamp":
        return _bounds_check(sub, _duration_nanos, lambda n: f"{_fmt_duration(n)} since epoch")
    if kind == "any":
        return _any_check(sub)
    return None  # repeated / map rules are handled by the field plan


def _enum_check(fd: FieldDescriptor, sub: Any) -> Check | None:
    base = _bounds_check(sub, _ident, _fmt_num)  # const / in / not_in (no bounds on enums)
    defined = (
        frozenset(v.number for v in fd.enum_type.values)
        if sub.HasField("defined_only") and sub.defined_only and fd.enum_type is not None
        else None
    )
    if defined is None:
        return base
    dmsg = "value must be one of the defined enum values"

    def check(v: Any) -> tuple[str, ...]:
        out = base(v) if base is not None else _OK
        return out if v in defined else (*out, dmsg)

    return check


def _any_check(sub: Any) -> Check | None:
    in_ = frozenset(getattr(sub, "in")) if _has_in(sub) else None
    not_in = frozenset(sub.not_in) if _has_not_in(sub) else None
    if in_ is None and not_in is None:
        return None

    def check(v: Any) -> tuple[str, ...]:
        if in_ is not None and v.type_url not in in_:
            return (f"type URL must be in list {sorted(in_)}",)
        if not_in is not None and v.type_url in not_in:
            return (f"type URL must not be in list {sorted(not_in)}",)
        return _OK

    return check


# Not a PGV rule, but Envoy applies it to every Duration of every resource it loads
# (MessageUtil::validateDurationFields, Any included): no negative parts, and seconds below
# INT64_MAX / 10^9 so the value fits in int64 nanoseconds ("Invalid duration: Duration
# out-of-range"). Measured with `envoy --mode validate`: 9223372035.999s passes, 9223372036s
# does not.
_ENVOY_MAX_SECONDS = (2**63 - 1) // 1_000_000_000  # 9223372036, excluded


def envoy_duration(d: Any) -> tuple[str, ...]:
    if d.seconds < 0 or d.nanos < 0:
        return ("value must not be negative (Envoy's duration limit)",)
    if d.seconds >= _ENVOY_MAX_SECONDS or d.nanos > 999_999_999:
        return (f"value must be less than {_ENVOY_MAX_SECONDS}s (Envoy's duration limit)",)
    return _OK


def both(first: Check | None, second: Check) -> Check:
    if first is None:
        return second
    return lambda v: first(v) + second(v)


def _count_check(
    rules: Any, lo_field: str, hi_field: str, noun: str
) -> list[Callable[[Any], str | None]]:
    out: list[Callable[[Any], str | None]] = []
    if rules.HasField(lo_field):
        lo = int(getattr(rules, lo_field))
        lmsg = f"value must contain at least {lo} {noun}(s)"
        out.append(lambda v: None if len(v) >= lo else lmsg)
    if rules.HasField(hi_field):
        hi = int(getattr(rules, hi_field))
        hmsg = f"value must contain no more than {hi} {noun}(s)"
        out.append(lambda v: None if len(v) <= hi else hmsg)
    return out


def repeated_checks(fd: FieldDescriptor, rules: Any) -> tuple[Check | None, Check | None]:
    checks = _count_check(rules, "min_items", "max_items", "item")
    if rules.HasField("unique") and rules.unique:
        key: Callable[[Any], Any] = (
            (lambda m: m.SerializeToString(deterministic=True)) if fd.type == _MESSAGE else _ident
        )

        def unique(v: Any) -> str | None:
            keys = [key(x) for x in v]
            unique_ok = len(set(keys)) == len(keys)
            return None if unique_ok else "repeated value must contain unique items"

        checks.append(unique)
    items = value_check(fd, rules.items) if rules.HasField("items") else None
    return _ignore_empty(rules, _collect(checks) if checks else None), items


def map_checks(fd: FieldDescriptor, rules: Any) -> tuple[Check | None, Check | None, Check | None]:
    checks = _count_check(rules, "min_pairs", "max_pairs", "pair")
    entry = fd.message_type
    keys = value_check(entry.fields_by_name["key"], rules.keys) if rules.HasField("keys") else None
    vals = (
        value_check(entry.fields_by_name["value"], rules.values)
        if rules.HasField("values")
        else None
    )
    return _ignore_empty(rules, _collect(checks) if checks else None), keys, vals
