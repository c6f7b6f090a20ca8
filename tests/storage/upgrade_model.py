"""A deliberately changed model, as a next release would ship it: the cluster field
`connectTimeoutSeconds` renamed `connectTimeout`, registered as the cluster upgrade v1 -> v2.

`install` swaps it in (the registry, and the cluster model behind `Kind.CLUSTER`): after it,
this process behaves as that next release. Used by the upgrade tests, in process and in the
subprocess that is killed midway (`upgrade_driver`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import Field

from flowplane.domain import resources, schema
from flowplane.domain.cluster import Cluster
from flowplane.domain.common import PositiveSeconds
from flowplane.domain.resources import Kind

OLD, NEW = "connectTimeoutSeconds", "connectTimeout"


class ClusterV2(Cluster):
    """The v2 cluster: only the new name is accepted (the old one is an unknown field)."""

    connect_timeout_seconds: PositiveSeconds = Field(5.0, alias=NEW)


def rename(doc: dict[str, Any]) -> dict[str, Any]:
    """The v1 -> v2 upgrade: every value carried across under its new name."""
    if OLD in doc:
        doc[NEW] = doc.pop(OLD)
    return doc


def registry_v2(step: Callable[[dict[str, Any]], dict[str, Any]] = rename) -> schema.SchemaRegistry:
    reg = schema.SchemaRegistry()
    reg.register("cluster", 1)(step)
    return reg


def slow(seconds: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`rename`, announcing on stdout ("upgrading") the second document it upgrades and then
    taking `seconds` over it: a window in which the upgrade transaction is open with the first
    document already rewritten."""
    calls = 0

    def step(doc: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            print("upgrading", flush=True)
            time.sleep(seconds)
        return rename(doc)

    return step


def install(step: Callable[[dict[str, Any]], dict[str, Any]] = rename) -> Callable[[], None]:
    """Become the next release; returns how to undo it."""
    old_registry, old_model = schema.REGISTRY, resources._MODELS[Kind.CLUSTER]
    schema.REGISTRY = registry_v2(step)
    resources._MODELS[Kind.CLUSTER] = ClusterV2

    def undo() -> None:
        schema.REGISTRY = old_registry
        resources._MODELS[Kind.CLUSTER] = old_model

    return undo
