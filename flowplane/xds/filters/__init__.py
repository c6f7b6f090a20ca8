"""Translation of typed HTTP filters into Envoy protobuf (one module per type, as in
`flowplane.domain.filters`). Each module defines `TYPE`, `config_to_proto(config)` (the filter's
`typed_config` in the HCM) and, if the type has per-scope overrides, `override_to_proto(override)`
(its `typed_per_filter_config` entry). Pure functions of the domain models; deterministic."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from envoy.extensions.filters.http.router.v3 import router_pb2
from google.protobuf.message import Message

from flowplane.domain.filters import ROUTER, FilterModel


@dataclass(frozen=True)
class Translator:
    config: Callable[[FilterModel], Message]
    override: Callable[[FilterModel], Message] | None


def _router(_: FilterModel) -> Message:
    return router_pb2.Router()


def _discover() -> dict[str, Translator]:
    out = {ROUTER: Translator(_router, None)}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        out[mod.TYPE] = Translator(mod.config_to_proto, getattr(mod, "override_to_proto", None))
    return out


TRANSLATORS: Final[dict[str, Translator]] = _discover()


def filter_config(filter_type: str, config: FilterModel) -> Message:
    """The `typed_config` of an HCM HTTP filter of `filter_type`."""
    return TRANSLATORS[filter_type].config(config)


def override_config(filter_type: str, override: FilterModel) -> Message:
    """The `typed_per_filter_config` value of a typed per-scope override of `filter_type`."""
    translate = TRANSLATORS[filter_type].override
    assert translate is not None, filter_type  # the domain allows typed overrides only then
    return translate(override)
