"""`flowplane.xds.constraints` on the PGV rule kinds no Envoy proto in xds-protos declares
(exclusive ranges, const / in / not_in, exact lengths, string formats, bytes, timestamps, Any
type lists, map values and pair counts, proto3 optional, disabled messages): checked on
message types built here, with the rules written as in a .proto file, so the generic checker
is exercised beyond what Envoy's own messages happen to use."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    timestamp_pb2,
)
from validate import validate_pb2 as pgv

from flowplane.xds.constraints import violations

F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "int32": F.TYPE_INT32, "int64": F.TYPE_INT64, "uint64": F.TYPE_UINT64, "float": F.TYPE_FLOAT,
    "bool": F.TYPE_BOOL, "string": F.TYPE_STRING, "bytes": F.TYPE_BYTES,
}  # fmt: skip
assert any_pb2.Any and timestamp_pb2.Timestamp  # their files must be in the pool first

# message name -> [(field name, type, rules in text format, "repeated"/"optional"/"")]
SPEC: dict[str, list[tuple[str, str, str, str]]] = {
    "Excl": [("v", "int32", "int32 {gt: 10 lt: 5}", "")],
    "Incl": [("v", "int32", "int32 {gte: 5 lte: 10}", "")],
    "Const": [
        ("i", "int64", "int64 {const: 3}", ""),
        ("s", "string", 'string {const: "a"}', ""),
        ("b", "bool", "bool {const: true}", ""),
        ("f", "float", "float {in: [1.5, 2.5]}", ""),
        ("u", "uint64", "uint64 {not_in: [7]}", ""),
    ],
    "Len": [
        ("runes", "string", "string {len: 2}", ""),
        ("bytes", "string", "string {len_bytes: 2}", ""),
        ("c", "string", 'string {contains: "x" not_contains: "y"}', ""),
        ("n", "string", 'string {not_in: ["bad"]}', ""),
    ],
    "Formats": [
        ("host", "string", "string {hostname: true}", ""),
        ("ip4", "string", "string {ipv4: true}", ""),
        ("ip6", "string", "string {ipv6: true}", ""),
        ("addr", "string", "string {address: true}", ""),
        ("id", "string", "string {uuid: true}", ""),
    ],
    "Bytes": [
        ("b", "bytes", 'bytes {min_len: 1 max_len: 3 prefix: "\\001"}', ""),
        ("ip", "bytes", "bytes {ip: true}", ""),
    ],
    "Opt": [("o", "int32", "int32 {gt: 0}", "optional")],
    "Rep": [("r", "string", "repeated {min_items: 2 ignore_empty: true}", "repeated")],
    "Ts": [("t", ".google.protobuf.Timestamp", "timestamp {gt {seconds: 10}}", "")],
    "AnyIn": [("a", ".google.protobuf.Any", 'any {in: ["type.googleapis.com/fptest.Incl"]}', "")],
    "Off": [("s", "string", "string {min_len: 1}", "")],  # (validate.disabled) = true
    "HasOff": [("off", ".fptest.Off", "", "")],
}


def _build() -> dict[str, Any]:
    fp = descriptor_pb2.FileDescriptorProto(
        name="flowplane_tests/pgv_synthetic.proto", package="fptest", syntax="proto3"
    )
    fp.dependency.extend(
        ["validate/validate.proto", "google/protobuf/any.proto", "google/protobuf/timestamp.proto"]
    )
    for name, fields in SPEC.items():
        m = fp.message_type.add(name=name)
        if name == "Off":
            m.options.Extensions[pgv.disabled] = True
        for i, (fname, ftype, rules, label) in enumerate(fields, start=1):
            f = m.field.add(name=fname, number=i, json_name=fname)
            f.label = F.LABEL_REPEATED if label == "repeated" else F.LABEL_OPTIONAL
            if ftype.startswith("."):
                f.type, f.type_name = F.TYPE_MESSAGE, ftype
            else:
                f.type = _TYPES[ftype]
            if label == "optional":  # proto3 `optional`: a synthetic oneof gives presence
                f.proto3_optional = True
                f.oneof_index = len(m.oneof_decl)
                m.oneof_decl.add(name=f"_{fname}")
            if rules:
                text_format.Parse(rules, f.options.Extensions[pgv.rules])
    # map<string, int32> m = 1 [(validate.rules).map = {max_pairs: 1 values {int32 {gt: 0}}}]
    m = fp.message_type.add(name="Map")
    entry = m.nested_type.add(name="MEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    f = m.field.add(name="m", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED)
    f.type_name = ".fptest.Map.MEntry"
    text_format.Parse("map {max_pairs: 1 values {int32 {gt: 0}}}", f.options.Extensions[pgv.rules])
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(fp.name)
    except KeyError:
        pool.AddSerializedFile(fp.SerializeToString())
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"fptest.{n}"))
        for n in [*SPEC, "Map"]
    }


M = _build()


def found(msg: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in violations(msg):
        out.setdefault(v.path, []).append(v.message)
    return out


@pytest.mark.parametrize(("v", "ok"), [(3, True), (5, False), (7, False), (10, False), (11, True)])
def test_exclusive_range_when_lower_bound_is_above_upper(v: int, ok: bool) -> None:
    # int32 = {gt: 10 lt: 5}: PGV reads this as "outside [5, 10]"
    assert found(M["Excl"](v=v)) == ({} if ok else {"v": ["value must be outside range [5, 10]"]})


def test_inclusive_range() -> None:
    assert found(M["Incl"](v=4)) == {"v": ["value must be inside range [5, 10]"]}
    assert found(M["Incl"](v=10)) == {}


def test_const_in_not_in() -> None:
    good = {"i": 3, "s": "a", "b": True, "f": 2.5, "u": 8}
    assert found(M["Const"](**good)) == {}
    assert found(M["Const"](**{**good, "i": 4, "s": "b", "f": 2.0, "u": 7})) == {
        "i": ["value must equal 3"],
        "s": ["value must equal 'a'"],
        "f": ["value must be in list ['1.5', '2.5']"],
        "u": ["value must not be in list ['7']"],
    }
    assert found(M["Const"](**{**good, "b": False})) == {"b": ["value must equal true"]}


def test_exact_lengths_contains_not_in() -> None:
    good = {"runes": "éé", "bytes": "é", "c": "axb", "n": "ok"}
    assert found(M["Len"](**good)) == {}
    assert found(M["Len"](**{**good, "runes": "é", "bytes": "éé", "c": "y", "n": "bad"})) == {
        "runes": ["value length must be 2 runes"],
        "bytes": ["value length must be 2 bytes"],
        "c": ["value does not contain 'x'", "value contains 'y'"],
        "n": ["value must not be in list [\"'bad'\"]"],
    }


def test_string_formats() -> None:
    good = {
        "host": "a-b.example.com", "ip4": "10.0.0.1", "ip6": "::1", "addr": "example.com",
        "id": "123e4567-e89b-12d3-a456-426614174000",
    }  # fmt: skip
    assert found(M["Formats"](**good)) == {}
    bad = {"host": "-a.com", "ip4": "::1", "ip6": "10.0.0.1", "addr": "a b", "id": "123"}
    assert found(M["Formats"](**bad)) == {
        "host": ["value must be a valid hostname"],
        "ip4": ["value must be a valid IPv4 address"],
        "ip6": ["value must be a valid IPv6 address"],
        "addr": ["value must be a valid hostname or IP address"],
        "id": ["value must be a valid UUID"],
    }


def test_bytes_rules() -> None:
    assert found(M["Bytes"](b=b"\x01a", ip=bytes(4))) == {}
    assert found(M["Bytes"](b=b"a" * 4, ip=bytes(5))) == {
        "b": ["value length must be at most 3 bytes", "value does not have prefix b'\\x01'"],
        "ip": ["value must be a valid IP address"],
    }


def test_proto3_optional_is_checked_only_when_set() -> None:
    assert found(M["Opt"]()) == {}
    assert found(M["Opt"](o=0)) == {"o": ["value must be greater than 0"]}


def test_repeated_ignore_empty() -> None:
    assert found(M["Rep"]()) == {}
    assert found(M["Rep"](r=["a"])) == {"r": ["value must contain at least 2 item(s)"]}


def test_timestamp_bounds() -> None:
    assert found(M["Ts"](t=timestamp_pb2.Timestamp(seconds=11))) == {}
    assert found(M["Ts"](t=timestamp_pb2.Timestamp(seconds=10))) == {
        "t": ["value must be greater than 10s since epoch"]
    }


def test_any_type_list() -> None:
    msg = M["AnyIn"]()
    msg.a.Pack(M["Incl"](v=7))
    assert found(msg) == {}
    msg.a.Pack(M["Excl"](v=1))
    assert found(msg) == {"a": ["type URL must be in list ['type.googleapis.com/fptest.Incl']"]}


def test_map_values_and_pair_count() -> None:
    msg = M["Map"]()
    msg.m["a"] = 1
    assert found(msg) == {}
    msg.m["b"] = 0
    assert found(msg) == {
        "m": ["value must contain no more than 1 pair(s)"],
        "m['b']": ["value must be greater than 0"],
    }


def test_disabled_message_is_not_checked() -> None:
    # option (validate.disabled) = true: neither the message nor a parent's walk checks it
    assert found(M["Off"]()) == {}
    parent = M["HasOff"]()
    parent.off.s = ""
    parent.off.SetInParent()
    assert found(parent) == {}
