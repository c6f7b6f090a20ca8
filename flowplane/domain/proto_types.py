"""Envoy protobuf messages named by a client (`custom` filters): resolve a type URL to a message
class of xds-protos and parse protobuf JSON into it.

The default descriptor pool only knows the modules imported so far, so a name is resolved by
importing the generated `*_pb2` modules of its package first (the longest prefix of the name that
is a package of the `envoy`/`xds`/`udpa` distributions). Only names made of identifiers are
imported, and only `*_pb2` modules under those three packages. Pure and deterministic apart from
that (idempotent) import.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Iterator
from functools import cache
from typing import Any, Final

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

TYPE_URL_PREFIX: Final = "type.googleapis.com/"
HTTP_FILTER_PACKAGE: Final = "envoy.extensions.filters.http."
_IMPORTABLE: Final = ("envoy.", "xds.", "udpa.")
_FULL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class ProtoError(ValueError):
    """A type URL that names no usable message, or JSON that does not parse as it."""


@cache
def _import_package_of(full_name: str) -> None:
    """Import every `*_pb2` module of the longest package that prefixes `full_name`."""
    if not full_name.startswith(_IMPORTABLE) or not _FULL_NAME.fullmatch(full_name):
        return
    parts = full_name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        package = ".".join(parts[:end])
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is None or spec.submodule_search_locations is None:
            continue
        for info in sorted(pkgutil.iter_modules(spec.submodule_search_locations),
                           key=lambda m: m.name):  # fmt: skip
            if info.name.endswith("_pb2") and not info.ispkg:
                try:
                    importlib.import_module(f"{package}.{info.name}")
                except ImportError:  # a module whose dependencies are not installed: skip
                    continue
        return


def full_name_of(type_url: str) -> str:
    if not type_url.startswith(TYPE_URL_PREFIX):
        raise ProtoError(f"must start with {TYPE_URL_PREFIX!r}")
    name = type_url[len(TYPE_URL_PREFIX) :]
    if not _FULL_NAME.fullmatch(name):
        raise ProtoError("must name a protobuf message (type.googleapis.com/<package>.<Message>)")
    return name


def message_class(type_url: str) -> type[Message]:
    """The message class `type_url` names; `ProtoError` if none is known."""
    name = full_name_of(type_url)
    _import_package_of(name)
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        raise ProtoError(f"unknown message type {name!r}") from None
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def _any_types(value: Any) -> Iterator[str]:
    """Every `@type` in a JSON document (the type URLs of nested `Any` values)."""
    if isinstance(value, dict):
        t = value.get("@type")
        if isinstance(t, str):
            yield t
        for v in value.values():
            yield from _any_types(v)
    elif isinstance(value, list):
        for v in value:
            yield from _any_types(v)


def parse_json(cls: type[Message], config: dict[str, Any]) -> Message:
    """`config` (protobuf's JSON mapping) as a `cls` message; `ProtoError` with protobuf's message
    if it does not parse. Types of nested `Any` values are imported first so they resolve."""
    for type_url in _any_types(config):
        if type_url.startswith(TYPE_URL_PREFIX):
            _import_package_of(type_url[len(TYPE_URL_PREFIX) :])
    try:
        return json_format.ParseDict(config, cls())
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as err:
        raise ProtoError(str(err)) from None
