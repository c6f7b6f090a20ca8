"""Resource kinds, the stored-resource record, and who references whom."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from pydantic import BaseModel

from flowplane.domain.cluster import Cluster
from flowplane.domain.common import parse, rfc3339
from flowplane.domain.listener import Listener
from flowplane.domain.naming import xds_model, xds_name
from flowplane.domain.route import RouteConfig, clusters_of_vhosts


class Kind(enum.StrEnum):
    CLUSTER = "cluster"
    ROUTE_CONFIG = "route_config"
    LISTENER = "listener"

    @property
    def model(self) -> type[BaseModel]:
        return _MODELS[self]

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")

    def scope(self, action: str) -> str:
        """The scope that reads (`action` "read") or writes ("write") resources of this kind."""
        return _SCOPES[self, action]


_MODELS: dict[Kind, type[BaseModel]] = {
    Kind.CLUSTER: Cluster,
    Kind.ROUTE_CONFIG: RouteConfig,
    Kind.LISTENER: Listener,
}

_SCOPE_RESOURCE: dict[Kind, str] = {
    Kind.CLUSTER: "clusters",
    Kind.ROUTE_CONFIG: "routes",
    Kind.LISTENER: "listeners",
}

# Built once: `Kind.scope` is on every request's path (the fast path and the services).
_SCOPES: dict[tuple[Kind, str], str] = {
    (kind, action): f"{resource}:{action}"
    for kind, resource in _SCOPE_RESOURCE.items()
    for action in ("read", "write")
}

READ_ONLY_FIELDS = ("version", "source", "createdAt", "updatedAt", "owner")


def client_spec(data: Any) -> Any:
    """The client's JSON minus the read-only metadata a GET returned (clients PUT back a GET)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
    return data


def parse_spec(kind: Kind, data: Any) -> BaseModel:
    """Validate a client's JSON for `kind`; raise BadRequest listing every problem.

    What gets stored is the client's JSON itself (`client_spec`), not a re-serialisation of the
    model, so every field and every number comes back exactly as sent (1 stays 1, not 1.0).
    """
    return parse(kind.model, client_spec(data), kind.label)


@dataclass(frozen=True, slots=True)
class Ref:
    """A resource by its key: `name` is the resource's xDS name, `<team>/<name>` for a team's
    resource (flowplane.domain.naming)."""

    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.label} {self.name!r}"


def references(kind: Kind, model: BaseModel) -> set[Ref]:
    """Every resource `model` names, which must exist for it to be valid in Envoy (the names as
    written: give a resource's `xds_model` for the keys they resolve to)."""
    if kind is Kind.ROUTE_CONFIG:
        assert isinstance(model, RouteConfig)
        return {Ref(Kind.CLUSTER, c) for c in clusters_of_vhosts(model.virtual_hosts)}
    if kind is Kind.LISTENER:
        assert isinstance(model, Listener)
        return {Ref(Kind.ROUTE_CONFIG, r) for r in model.route_config_names()} | {
            Ref(Kind.CLUSTER, c) for c in model.cluster_names()
        }
    return set()


@dataclass(frozen=True)
class StoredResource:
    """One resource as persisted: the client's JSON (`spec`) plus server-managed metadata.

    `model` is the validated domain object for `spec`; it is derived, never persisted.
    """

    kind: Kind
    name: str
    team: str | None
    version: int
    source: str
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    model: BaseModel = field(compare=False, repr=False)
    owner: str | None = None  # the id of the Platform API that made it (None: Native-made)

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @property
    def key(self) -> str:
        """The resource's key among its kind, and its xDS name: `<team>/<name>`, or the bare name
        of a shared resource."""
        return xds_name(self.team, self.name)

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.key)

    @cached_property
    def xds_model(self) -> BaseModel:
        """`model` with its name and references resolved to keys: what is translated to xDS."""
        return xds_model(self.model, self.team)

    @cached_property
    def refs(self) -> frozenset[Ref]:
        """The keys of every resource this one references."""
        return frozenset(references(self.kind, self.xds_model))

    @cached_property
    def spec_bytes(self) -> int:
        """The size of the stored JSON (what a team's maxStorageBytes quota counts)."""
        return len(json.dumps(self.spec, separators=(",", ":")).encode())

    @cached_property
    def json_bytes(self) -> bytes:
        """`to_json()` serialized once (the resource is immutable)."""
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    def to_json(self) -> dict[str, Any]:
        out = dict(self.spec)
        out.update(
            name=self.name,
            team=self.team,
            version=self.version,
            source=self.source,
            createdAt=rfc3339(self.created_at, "microseconds"),
            updatedAt=rfc3339(self.updated_at, "microseconds"),
        )
        if self.owner is not None:
            out["owner"] = {"kind": "api", "id": self.owner}
        return out
