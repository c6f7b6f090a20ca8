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
enforces on all durations it loads (`envoy_duration`).

Not implemented (no Envoy proto in xds-protos uses them): the string well-known formats
`email`, `uri` and `uri_ref`, and the timestamp rules `lt_now`, `gt_now` and `within`; they
are ignored, never reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2 as pgv

from flowplane.xds.pgv_checks import (
    Check,
    both,
    envoy_duration,
    map_checks,
    repeated_checks,
    value_check,
)

__all__ = ["Violation", "violations"]

_ANY = "google.protobuf.Any"
_DURATION = "google.protobuf.Duration"
_WRAPPERS = frozenset(
    f"google.protobuf.{w}Value"
    for w in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: `path` is the proto field path (`load_assignment.endpoints[0]...`)."""

    path: str
    message: str


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
            list_check, item_check = repeated_checks(value_fd, rules.repeated)
        elif kind == "map":
            list_check, key_check, item_check = map_checks(fd, rules.map)
    elif rules is not None:
        check = value_check(fd, rules)
    if is_duration:
        if fd.is_repeated:
            item_check = both(item_check, envoy_duration)
        else:
            check = both(check, envoy_duration)
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
