"""Error paths: pydantic's discriminated-union tags never reach the client's field paths, and
no real field is dropped for looking like one."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from flowplane.domain import listener, route
from flowplane.domain.common import UNION_FIELDS, UNION_TAGS, ApiModel, loc_to_field


def _models() -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [ApiModel]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def _tags(annotation: Any) -> set[str]:
    """The `type` literals of the members of a discriminated union annotation."""
    tags: set[str] = set()
    for member in typing.get_args(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            field = member.model_fields.get("type")
            if field is not None:
                tags |= {a for a in typing.get_args(field.annotation) if isinstance(a, str)}
        else:
            tags |= _tags(member)
    return tags


def test_union_tags_are_exactly_the_domains_discriminator_values() -> None:
    found: set[str] = set()
    for model in (listener.FilterChain, route.Route):
        for field in model.model_fields.values():
            if field.discriminator is not None or any(
                getattr(m, "discriminator", None) for m in field.metadata
            ):
                found |= _tags(field.annotation)
    # FilterChain.filters is a list of the NetworkFilter union: look inside the list too
    found |= _tags(typing.get_args(listener.FilterChain.model_fields["filters"].annotation)[0])
    assert found == UNION_TAGS


def test_union_fields_are_exactly_the_fields_holding_a_discriminated_union() -> None:
    found = set()
    for model in _models():
        for name, field in model.model_fields.items():
            annotation = field.annotation
            inner = typing.get_args(annotation)
            if typing.get_origin(annotation) is list and inner:
                annotation = inner[0]
            if _tags(annotation) & UNION_TAGS:
                found.add(field.alias or name)
    assert found == UNION_FIELDS


def test_a_field_named_like_a_tag_keeps_its_name_in_error_paths() -> None:
    # a JWT provider's `forward` (a bool) vs the route action tag "forward"
    assert loc_to_field(("providers", "p", "forward")) == "providers.p.forward"
    assert loc_to_field(("routes", 0, "action", "forward", "cluster")) == "routes[0].action.cluster"
    assert loc_to_field(("filters", 0, "tcpProxy", "cluster")) == "filters[0].cluster"
