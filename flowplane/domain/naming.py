"""Names unique per team, and the xDS names they become (api.md Conventions).

A resource is identified by (kind, team, name): two teams may each have a cluster `backend`, and
a name another team uses is never an error. In xDS — and as the key of every index of the
configuration state — a team's resource is `<team>/<name>`, a shared (team-less) one keeps its
bare name; team names and resource names cannot contain `/`, so the key is unambiguous.

A reference inside a resource resolves in the referring resource's team: `backend` in a route
config of team `a` is `a/backend`. A shared resource is named explicitly, `shared/<name>`, so
creating a same-named team resource never re-points an existing reference. A shared resource's
`backend` is the shared `backend`; a shared resource may also name a team's resource `<team>/<name>`
(only the shared gateway does, for the upstreams a team's Platform API made — the planning rules
in `flowplane.domain.state` decide what may be referenced).

`xds_model` gives the model a resource's xDS translation is made from: its name and every
reference replaced by the key they resolve to. Models list the fields that hold a reference in a
`ref_fields` class attribute (see `flowplane.domain.common.RefName`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, get_args

from pydantic import BaseModel

from flowplane.domain.common import SHARED

__all__ = [
    "SHARED",
    "display",
    "resolve",
    "rewrite_refs",
    "split_key",
    "team_label",
    "xds_model",
    "xds_name",
]

M = TypeVar("M", bound=BaseModel)


def xds_name(team: str | None, name: str) -> str:
    """The key (and xDS name) of resource `name` of `team` (None: shared)."""
    return name if team is None else f"{team}/{name}"


def split_key(key: str) -> tuple[str | None, str]:
    """(team, name) of a key made by `xds_name`."""
    team, sep, name = key.partition("/")
    return (team, name) if sep else (None, key)


def resolve(team: str | None, ref: str) -> str:
    """The key that reference `ref`, written in a resource of `team`, names."""
    qualifier, sep, name = ref.partition("/")
    if not sep:
        return xds_name(team, ref)
    return name if qualifier == SHARED else ref


def team_label(team: str | None) -> str:
    """How a team is named in messages and in `?team=` (`shared` for shared resources)."""
    return SHARED if team is None else team


def display(key: str, viewer_team: str | None) -> str:
    """A key as a resource of `viewer_team` would write it as a reference."""
    team, name = split_key(key)
    if team == viewer_team:
        return name
    return f"{SHARED}/{name}" if team is None else key


def xds_model(model: M, team: str | None) -> M:
    """`model` (a cluster, route config or listener of `team`) with its `name` and every reference
    resolved to keys. The same object when nothing changes (a shared resource that names no
    `shared/...`), so the common case costs one walk and no copies."""
    out: M = _map_refs(model, team)
    name = getattr(out, "name", None)
    if team is not None and isinstance(name, str):
        out = out.model_copy(update={"name": xds_name(team, name)})
    return out


def _map_refs(value: Any, team: str | None) -> Any:
    if isinstance(value, BaseModel):
        cls = type(value)
        fields = value.__dict__
        update: dict[str, Any] = {}
        for field, how in _plan(cls):
            old = fields[field]
            if how is _REF:
                new = resolve(team, old) if isinstance(old, str) else old
            elif how is _KEYS:
                new = _map_override_keys(old, team) if isinstance(old, dict) else old
            else:
                new = _map_refs(old, team)
            if new is not old:
                update[field] = new
        # Models parsed lazily from a stored dict (an HTTP filter's `typed_config`) list those
        # cached properties in `ref_views`: the copy carries their resolved value.
        for attr in _views(cls):
            old = getattr(value, attr)
            new = _map_refs(old, team)
            if new is not old:
                update[attr] = new
        return _copy(value, update) if update else value
    if isinstance(value, list | tuple):
        items = [_map_refs(v, team) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return type(value)(items)
        return value
    if isinstance(value, dict):
        mapped = {k: _map_refs(v, team) for k, v in value.items()}
        if any(mapped[k] is not v for k, v in value.items()):
            return mapped
        return value
    return value


# -- which fields to visit: decided once per model class from its annotations -----------------
# A field is visited if it holds a reference (`ref_fields`), override keys (`ref_keys`), or a
# type whose models may (transitively) hold one; everything else (path matchers, headers, TLS
# settings ...) is skipped, so resolving a large route config walks only its route actions.

_REF, _KEYS, _WALK = object(), object(), object()
_view_names: dict[type, dict[str, str]] = {}


def _views(cls: type[BaseModel]) -> dict[str, str]:
    """`ref_views` of `cls`: cached property -> the field of the stored JSON it is parsed from."""
    views = _view_names.get(cls)
    if views is None:
        views = _view_names[cls] = dict(cls.__dict__.get("ref_views", {}))
    return views


def _copy(value: BaseModel, update: dict[str, Any]) -> BaseModel:
    """`value.model_copy(update=update)` without its generic machinery (a resolved route config
    copies every route that names a cluster: this is most of `xds_model`'s cost). Fields are not
    validated again, as with `model_copy`; `update` may also set cached properties."""
    cls = type(value)
    out = cls.__new__(cls)
    object.__setattr__(out, "__dict__", {**value.__dict__, **update})
    fields_set = value.__pydantic_fields_set__ | (update.keys() & cls.model_fields.keys())
    object.__setattr__(out, "__pydantic_fields_set__", fields_set)
    object.__setattr__(out, "__pydantic_extra__", value.__pydantic_extra__)
    object.__setattr__(out, "__pydantic_private__", value.__pydantic_private__)
    return out
_plans: dict[type, tuple[tuple[str, object], ...]] = {}
_bearing: dict[type, bool] = {}


def _plan(cls: type[BaseModel]) -> tuple[tuple[str, object], ...]:
    plan = _plans.get(cls)
    if plan is None:
        refs, keys = getattr(cls, "ref_fields", ()), getattr(cls, "ref_keys", ())
        steps: list[tuple[str, object]] = []
        for name, info in cls.model_fields.items():
            if name in refs:
                steps.append((name, _REF))
            elif name in keys:
                steps.append((name, _KEYS))
            elif any(_bears_refs(m) for m in _models_in(info.annotation)):
                steps.append((name, _WALK))
        plan = _plans[cls] = tuple(steps)
    return plan


def _bears_refs(cls: type[BaseModel]) -> bool:
    known = _bearing.get(cls)
    if known is not None:
        return known
    _bearing[cls] = False  # while deciding: a model that contains itself adds nothing
    own = any(getattr(cls, a, ()) for a in ("ref_fields", "ref_keys", "ref_views"))
    result = own or any(
        _bears_refs(m) for info in cls.model_fields.values() for m in _models_in(info.annotation)
    )
    _bearing[cls] = result
    return result


def _models_in(tp: Any) -> Iterator[type[BaseModel]]:
    """The model classes a type annotation can hold (through Optional, unions, lists, dicts,
    Annotated)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
        return
    for arg in get_args(tp):
        yield from _models_in(arg)


def _map_override_keys(overrides: dict[str, Any], team: str | None) -> dict[str, Any]:
    """Per-scope filter overrides keyed `<listener>/<filter>` (a filter a listener delivers over
    ECDS: Envoy keys its per-route config by the listener's xDS name) with the listener resolved
    like a reference; keys without a listener are the filter's own name and stay."""
    out: dict[str, Any] = {}
    changed = False
    for key, value in overrides.items():
        listener, sep, name = key.rpartition("/")
        new = f"{resolve(team, listener)}/{name}" if sep else key
        changed |= new != key
        out[new] = value
    return out if changed else overrides


def rewrite_refs(model: BaseModel, spec: Any, fn: Callable[[str], str]) -> Any:
    """`spec` (the client's JSON that `model` was parsed from) with every reference `r` written
    as `fn(r)`, including the listener part of per-scope override keys; None if nothing
    changes. Used once, to carry a configuration stored before names were per team into the
    new rules (flowplane.domain.state `repair_legacy_references`)."""
    out = copy.deepcopy(spec)
    return out if _rewrite(model, out, fn) else None


def _rewrite(value: Any, spec: Any, fn: Callable[[str], str]) -> bool:
    changed = False
    if isinstance(value, BaseModel) and isinstance(spec, dict):
        cls = type(value)
        for field, how in _plan(cls):
            alias = cls.model_fields[field].alias or field
            if alias not in spec:
                continue
            sub = spec[alias]
            if how is _REF:
                if isinstance(sub, str) and fn(sub) != sub:
                    spec[alias], changed = fn(sub), True
            elif how is _KEYS:
                if isinstance(sub, dict):
                    keys = {}
                    for key, v in sub.items():
                        listener, sep, name = key.rpartition("/")
                        keys[f"{fn(listener)}/{name}" if sep else key] = v
                    if list(keys) != list(sub):
                        spec[alias], changed = keys, True
            else:
                changed |= _rewrite(getattr(value, field), sub, fn)
        for attr, source in _views(cls).items():
            if source in spec:
                changed |= _rewrite(getattr(value, attr), spec[source], fn)
    elif isinstance(value, list | tuple) and isinstance(spec, list):
        for v, sub in zip(value, spec, strict=False):
            changed |= _rewrite(v, sub, fn)
    elif isinstance(value, dict) and isinstance(spec, dict):
        for key, v in value.items():
            if key in spec:
                changed |= _rewrite(v, spec[key], fn)
    return changed
