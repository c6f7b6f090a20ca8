"""Typed HTTP filters (api.md "Filters"): one module per filter type, each defining `SPEC`.

An `httpFilters` entry is `{type, name?, optional?, disabled?, config}`. Its `config` is checked by
the model of its type; problems are reported per field under `config.` (the stored JSON stays
exactly what the client sent). Per-scope overrides — `filters` on a route, a virtual host or a
route config — map a filter's *name* to `{"disabled": true}` or to an override config, which is
checked by the override model of the filter type that name stands for. A filter's name is its
`type` unless the listener gives it another `name`; a route config cannot know which listener's
filter a custom name means, so a custom-named filter can only be disabled per scope, and typed
overrides are keyed by the type name (the default).

Adding a filter type = one module here (models + `SPEC`) and one in `flowplane/xds/filters/`
(translation); both packages discover their modules, and tests check the two sets agree.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from flowplane.domain.common import ApiModel, NestedProblems, nested
from flowplane.errors import FieldProblem


class FilterModel(ApiModel):
    """Base of a filter's typed config and of its per-scope override."""

    def clusters(self) -> set[str]:
        """Names of the clusters this config sends traffic to (JWKS fetches, authz services):
        they must exist, and cannot be deleted while referenced."""
        return set()


class RouterConfig(FilterModel):
    """The router takes no options (it is appended last automatically)."""


@dataclass(frozen=True)
class FilterSpec:
    filter_type: str
    config: type[FilterModel]
    override: type[FilterModel] | None  # None: per scope, only {"disabled": true}
    config_required: bool = True


ROUTER: Final = "router"
DISABLED: Final = {"disabled": True}


def _discover() -> dict[str, FilterSpec]:
    specs = {ROUTER: FilterSpec(ROUTER, RouterConfig, None, config_required=False)}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        spec = importlib.import_module(f"{__name__}.{info.name}").SPEC
        assert isinstance(spec, FilterSpec), info.name
        assert spec.filter_type not in specs, info.name
        specs[spec.filter_type] = spec
    return specs


SPECS: Final[dict[str, FilterSpec]] = _discover()


# Filter types that may be delivered over ECDS with no config yet: their empty config does
# nothing (a jwt_authn filter with no providers and no rules checks no request), so a listener
# can carry the filter from the start and later configs change only the extension config.
EMPTY_WHEN_DISCOVERED: Final[dict[str, dict[str, Any]]] = {"jwt_authn": {"providers": {}}}


def parse_config(
    filter_type: str, config: dict[str, Any] | None, *, discovered: bool = False
) -> FilterModel:
    """The typed config of an `httpFilters` entry. Raises ValueError (a `NestedProblems` naming
    each field under `config`) if it is invalid; `filter_type` must be in `SPECS`. A
    `discovered` filter of a type in `EMPTY_WHEN_DISCOVERED` may have no config (its empty
    one)."""
    spec = SPECS[filter_type]
    if config is None:
        if discovered and filter_type in EMPTY_WHEN_DISCOVERED:
            return spec.config.model_construct(**EMPTY_WHEN_DISCOVERED[filter_type])
        if spec.config_required:
            raise ValueError(f"a {filter_type} filter needs a config")
        config = {}
    try:
        return spec.config.model_validate(config)
    except ValidationError as err:
        raise nested(err, "config") from None


def override_target(key: str) -> tuple[str | None, str]:
    """(listener, filter) of a per-scope override key: `<filter>` (a filter type or name), or
    `<listener>/<filter>` for a filter that listener delivers over ECDS (Envoy names such a
    filter, and keys its per-route config, by `<listener>/<filter's Envoy name>`). Filter
    types and names have no `/`, so splitting at the last one is unambiguous; the listener may
    be written as a reference (`shared/<name>`, `<team>/<name>`: flowplane.domain.naming)."""
    listener, sep, name = key.rpartition("/")
    return (listener, name) if sep else (None, key)


def parse_override(key: str, value: dict[str, Any]) -> FilterModel | None:
    """A per-scope override: None for `{"disabled": true}`, else the typed override of the filter
    type `key` names (after an optional `<listener>/`). Raises ValueError (problems under `key`)
    if it is invalid."""
    if value == DISABLED:
        return None
    key = override_target(key)[1]
    spec = SPECS.get(key)
    if spec is None or spec.override is None:
        what = f"the {key} filter" if spec is not None else f"a filter named {key!r}"
        raise ValueError(
            f'{what} can only be disabled per scope ({{"disabled": true}})'
            + ("" if spec is not None else "; typed overrides are keyed by the filter type")
        )
    try:
        return spec.override.model_validate(value)
    except ValidationError as err:
        raise nested(err, key) from None


def check_overrides(overrides: dict[str, dict[str, Any]] | None) -> None:
    """Validate every entry of a `filters` map; raises `NestedProblems` listing each problem."""
    problems: list[FieldProblem] = []
    for key, value in (overrides or {}).items():
        try:
            parse_override(key, value)
        except NestedProblems as err:
            problems += err.problems
        except ValueError as err:
            problems.append(FieldProblem(key, str(err)))
    if problems:
        raise NestedProblems(problems)
