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

from typing import Any, TypeVar

from pydantic import BaseModel

from flowplane.domain.common import SHARED

__all__ = ["SHARED", "display", "resolve", "split_key", "team_label", "xds_model", "xds_name"]

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
        update: dict[str, Any] = {}
        refs = getattr(cls, "ref_fields", ())
        keyed = getattr(cls, "ref_keys", ())
        for field in cls.model_fields:
            old = getattr(value, field)
            if field in refs:
                new = resolve(team, old) if isinstance(old, str) else old
            elif field in keyed and isinstance(old, dict):
                new = _map_override_keys(old, team)
            else:
                new = _map_refs(old, team)
            if new is not old:
                update[field] = new
        # Models parsed lazily from a stored dict (an HTTP filter's `typed_config`) list those
        # cached properties in `ref_views`: the copy carries their resolved value.
        views = {}
        for attr in getattr(cls, "ref_views", ()):
            old = getattr(value, attr)
            new = _map_refs(old, team)
            if new is not old:
                views[attr] = new
        if not update and not views:
            return value
        out = value.model_copy(update=update)
        out.__dict__.update(views)
        return out
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
