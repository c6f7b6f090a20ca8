"""Sans-I/O check of Envoy messages against the validation rules Envoy's protos declare.

Envoy validates every resource it receives with the protoc-gen-validate (PGV) rules annotated
on its protos (`(validate.rules)` on fields, `(validate.required)` on oneofs, `(validate.disabled)`
and `(validate.ignored)` on messages), and NACKs a resource that breaks one. A SotW update is
all-or-nothing, so one refused cluster stops every later cluster change from reaching that
Envoy. `violations(msg)` reads the same annotations from the descriptors xds-protos ships and
returns every broken rule with its proto field path, so nothing that Envoy would refuse for a
declared constraint is stored.

Generic over the descriptors: the rules of each message type are compiled once into a table of
per-field checkers (cached by full name), and a message is walked by that table only. Fields
that cannot reach any rule are not visited. `google.protobuf.Any` values are unpacked when their
type is in the default descriptor pool (Envoy validates an extension's config when it builds
the extension) and checked as that type.

Semantics follow PGV's C++ validators (what Envoy runs): scalar rules apply to proto3 scalars
even when zero (unless `ignore_empty`), to a oneof member or an optional field only when it is
set, and to a wrapper type (`UInt32Value`, ...) through its `value` when the wrapper is set;
set message fields, repeated items and map values are checked recursively unless
`message.skip`. Besides the annotations, every Duration is held to the range Envoy itself
enforces on all durations it loads (`_envoy_duration`).

Not implemented (no Envoy proto in xds-protos uses them): the string well-known formats
`email`, `uri` and `uri_ref`, and the timestamp rules `lt_now`, `gt_now` and `within`; they
are ignored, never reported.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import re2
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2 as pgv

__all__ = ["Violation", "violations"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: `path` is the proto field path (`load_assignment.endpoints[0]...`)."""

    path: str
    message: str


# A checker gets a field's value (never a message Envoy would not check) and returns its
# messages; an empty tuple means the value passes.
Check = Callable[[Any], tuple[str, ...]]
_OK: tuple[str, ...] = ()

_ANY = "google.protobuf.Any"
_DURATION = "google.protobuf.Duration"
_TIMESTAMP = "google.protobuf.Timestamp"
_WRAPPERS = frozenset(
    f"google.protobuf.{w}Value"
    for w in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_BYTES = FieldDescriptor.TYPE_BYTES

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
                return None if test(size, n) else f"value length must be {text} {n} {u}"

            checks.append(c)

    length("len", lambda a, b: a == b, "", in_bytes=is_bytes)
    length("min_len", lambda a, b: a >= b, "at least", in_bytes=is_bytes)
    length("max_len", lambda a, b: a <= b, "at most", in_bytes=is_bytes)
    if not is_bytes:
        length("len_bytes", lambda a, b: a == b, "", in_bytes=True)
        length("min_bytes", lambda a, b: a >= b, "at least", in_bytes=True)
        length("max_bytes", lambda a, b: a <= b, "at most", in_bytes=True)

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


def _value_check(fd: FieldDescriptor, rules: Any) -> Check | None:
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


def _envoy_duration(d: Any) -> tuple[str, ...]:
    if d.seconds < 0 or d.nanos < 0:
        return ("value must not be negative (Envoy's duration limit)",)
    if d.seconds >= _ENVOY_MAX_SECONDS or d.nanos > 999_999_999:
        return (f"value must be less than {_ENVOY_MAX_SECONDS}s (Envoy's duration limit)",)
    return _OK


def _both(first: Check | None, second: Check) -> Check:
    if first is None:
        return second
    return lambda v: first(v) + second(v)


# --- per-message plans ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    check: Check | None  # on the value itself (wrappers: on the wrapper's `value`)
    unwrap: bool  # apply `check` to `.value` (a wrapper type with scalar rules)
    repeated: bool
    is_map: bool
    list_check: Check | None  # min/max items, unique, min/max pairs
    item_check: Check | None  # repeated.items, or map.values
    key_check: Check | None  # map.keys
    recurse: bool  # walk into the value (or each item / map value) as a message
    # What an unset field breaks, decided once: `required`, or the rules a proto3 scalar's
    # zero value (or an empty list) fails. Empty for a oneof member (only checked when set).
    when_absent: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A message type's compiled rules. The walk visits only the fields `ListFields` returns
    (set fields; fast in upb) and, separately, the few that fail when unset."""

    fields: dict[str, _Field]  # by field name, for set fields
    absent: tuple[_Field, ...]  # fields with a non-empty `when_absent`
    required_oneofs: tuple[str, ...]


_EMPTY = _Plan({}, (), ())
_plans: dict[str, _Plan] = {}
_reach: dict[str, bool] = {}


def _rules_of(fd: FieldDescriptor) -> Any | None:
    opts = fd.GetOptions()
    return opts.Extensions[pgv.rules] if opts.HasExtension(pgv.rules) else None


def _msg_flag(desc: Descriptor, ext: Any) -> bool:
    opts = desc.GetOptions()
    return bool(opts.HasExtension(ext) and opts.Extensions[ext])


def _skipped(desc: Descriptor) -> bool:
    """`(validate.disabled)` / `(validate.ignored)`: PGV generates no checks for the message."""
    return _msg_flag(desc, pgv.disabled) or _msg_flag(desc, pgv.ignored)


def _reaches(desc: Descriptor) -> bool:
    """Whether a message of this type can hold anything to check (an Any counts: its content
    is only known at run time). A type met again while it is being decided counts as
    reaching, which is conservative, never wrong."""
    name = desc.full_name
    if name in _reach:
        return _reach[name]
    if name == _ANY:
        return True
    if _skipped(desc):
        _reach[name] = False
        return False
    _reach[name] = True  # provisional, for cycles
    found = any(_msg_flag_oneof(o) for o in desc.oneofs) or any(
        _rules_of(fd) is not None
        or (fd.type == _MESSAGE and _value_desc(fd).full_name == _DURATION)
        or (fd.type == _MESSAGE and _reaches(_value_desc(fd)))
        for fd in desc.fields
    )
    _reach[name] = found
    return found


def _msg_flag_oneof(o: Any) -> bool:
    opts = o.GetOptions()
    return bool(opts.HasExtension(pgv.required) and opts.Extensions[pgv.required])


def _is_map(fd: FieldDescriptor) -> bool:
    return bool(fd.type == _MESSAGE and fd.message_type.GetOptions().map_entry)


def _value_desc(fd: FieldDescriptor) -> Descriptor:
    """The message type walked for `fd`: a map field's value type, else the field's own."""
    if _is_map(fd):
        v = fd.message_type.fields_by_name["value"]
        return v.message_type if v.type == _MESSAGE else fd.message_type
    return fd.message_type


def _plan(desc: Descriptor) -> _Plan:
    plan = _plans.get(desc.full_name)
    if plan is None:
        plan = _plans[desc.full_name] = _build_plan(desc)
    return plan


def _build_plan(desc: Descriptor) -> _Plan:
    if _skipped(desc):
        return _EMPTY
    fields = {f.name: f for fd in desc.fields if (f := _field_plan(fd)) is not None}
    oneofs = tuple(o.name for o in desc.oneofs if _msg_flag_oneof(o))
    return _Plan(fields, tuple(f for f in fields.values() if f.when_absent), oneofs)


def _field_plan(fd: FieldDescriptor) -> _Field | None:
    rules = _rules_of(fd)
    is_msg = fd.type == _MESSAGE
    is_map = _is_map(fd)
    value_fd = fd.message_type.fields_by_name["value"] if is_map else fd
    skip = rules is not None and rules.HasField("message") and rules.message.skip
    recurse = (
        not skip
        and value_fd.type == _MESSAGE
        and value_fd.message_type.full_name not in _WRAPPERS
        and _reaches(value_fd.message_type)
    )
    is_duration = value_fd.type == _MESSAGE and value_fd.message_type.full_name == _DURATION
    if rules is None and not recurse and not is_duration:
        return None
    kind = rules.WhichOneof("type") if rules is not None else None
    required: str | None = None
    if rules is not None and (
        (rules.HasField("message") and rules.message.required)
        or (kind in ("duration", "timestamp", "any") and getattr(rules, kind).required)
    ):
        required = "value is required"
    list_check = item_check = key_check = check = None
    if fd.is_repeated and rules is not None:
        if kind == "repeated":
            list_check, item_check = _repeated_checks(value_fd, rules.repeated)
        elif kind == "map":
            list_check, key_check, item_check = _map_checks(fd, rules.map)
    elif rules is not None:
        check = _value_check(fd, rules)
    if is_duration:
        if fd.is_repeated:
            item_check = _both(item_check, _envoy_duration)
        else:
            check = _both(check, _envoy_duration)
    unwrap = is_msg and not is_map and fd.message_type.full_name in _WRAPPERS
    when_absent: tuple[str, ...] = ()
    if fd.containing_oneof is not None:
        pass  # a oneof member is checked only when it is the set one
    elif fd.is_repeated:
        when_absent = list_check({} if is_map else []) if list_check is not None else ()
    elif fd.has_presence:
        when_absent = (required,) if required is not None else ()
    elif check is not None:
        when_absent = check(fd.default_value)
    return _Field(
        name=fd.name,
        check=check,
        unwrap=unwrap,
        repeated=bool(fd.is_repeated),
        is_map=is_map,
        list_check=list_check,
        item_check=item_check,
        key_check=key_check,
        recurse=recurse,
        when_absent=when_absent,
    )


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


def _repeated_checks(fd: FieldDescriptor, rules: Any) -> tuple[Check | None, Check | None]:
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
    items = _value_check(fd, rules.items) if rules.HasField("items") else None
    return _ignore_empty(rules, _collect(checks) if checks else None), items


def _map_checks(fd: FieldDescriptor, rules: Any) -> tuple[Check | None, Check | None, Check | None]:
    checks = _count_check(rules, "min_pairs", "max_pairs", "pair")
    entry = fd.message_type
    keys = _value_check(entry.fields_by_name["key"], rules.keys) if rules.HasField("keys") else None
    vals = (
        _value_check(entry.fields_by_name["value"], rules.values)
        if rules.HasField("values")
        else None
    )
    return _ignore_empty(rules, _collect(checks) if checks else None), keys, vals


# --- the walk ---------------------------------------------------------------------------------

_pool = descriptor_pool.Default()


def _unpack(any_msg: Any) -> Message | None:
    """The message in an Any when its type is known here (else None: nothing to check)."""
    type_name = any_msg.type_url.rpartition("/")[2]
    try:
        desc = _pool.FindMessageTypeByName(type_name)
    except KeyError:
        return None
    inner: Message = message_factory.GetMessageClass(desc)()
    return inner if any_msg.Unpack(inner) else None


def violations(msg: Message) -> list[Violation]:
    """Every declared PGV rule `msg` breaks, in field order, with proto field paths."""
    out: list[Violation] = []
    _walk(msg, "", out)
    return out


def _walk(msg: Any, prefix: str, out: list[Violation]) -> None:
    desc = msg.DESCRIPTOR
    if desc.full_name == _ANY:
        inner = _unpack(msg)
        if inner is not None:
            _walk(inner, prefix, out)
        return
    plan = _plan(desc)
    for name in plan.required_oneofs:
        if msg.WhichOneof(name) is None:
            out.append(Violation(prefix + name, "value is required"))
    fields = plan.fields
    if not fields:
        return
    listed = msg.ListFields()
    if plan.absent:
        present = {fd.name for fd, _ in listed}
        for unset in plan.absent:
            if unset.name not in present:
                _report(prefix + unset.name, unset.when_absent, out)
    for fd, value in listed:
        f = fields.get(fd.name)
        if f is None:
            continue
        path = prefix + f.name
        if f.repeated:
            _walk_many(f, value, path, out)
            continue
        if f.check is not None:
            _report(path, f.check(value.value if f.unwrap else value), out)
        if f.recurse:
            _walk(value, path + ".", out)


def _walk_many(f: _Field, value: Any, path: str, out: list[Violation]) -> None:
    if f.list_check is not None:
        _report(path, f.list_check(value), out)
    if f.is_map:
        for k in value:
            at = f"{path}[{k!r}]"
            if f.key_check is not None:
                _report(at, f.key_check(k), out)
            v = value[k]
            if f.item_check is not None:
                _report(at, f.item_check(v), out)
            if f.recurse:
                _walk(v, at + ".", out)
        return
    for i, v in enumerate(value):
        at = f"{path}[{i}]"
        if f.item_check is not None:
            _report(at, f.item_check(v), out)
        if f.recurse:
            _walk(v, at + ".", out)


def _report(path: str, messages: Iterable[str], out: list[Violation]) -> None:
    out.extend(Violation(path, m) for m in messages)
