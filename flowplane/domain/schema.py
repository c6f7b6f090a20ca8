"""Schema versions of stored documents, and the upgrades between them (api.md "History and
rollback").

Every stored document (a cluster's, route config's or listener's `spec`, an API definition's
`spec`, and every version kept in history) carries the `schemaVersion` of its JSON shape. A
release that changes the shape of a kind's JSON registers one upgrade function for it, from the
previous version to the next: a pure function of the document (no I/O, no clock), which must
carry every value across (renamed, moved or converted; never dropped). The current version of a
kind is 1 + the number of upgrades registered for it.

Start-up upgrades older documents (`services/upgrade.py`); a document whose version is newer
than the current one was written by a newer release and is refused (`TooNew`): this release
cannot know which of its fields it would drop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from flowplane.errors import Internal

Document = dict[str, Any]
Upgrade = Callable[[Document], Document]

# The kinds of stored documents: the Native kinds (resources.Kind values) and API definitions.
KINDS = ("cluster", "route_config", "listener", "api")


class TooNew(Internal):
    """A stored document was written by a newer release (its schemaVersion is unknown here)."""


class SchemaRegistry:
    """The upgrade functions of each document kind, in order: `steps[kind][n]` turns version
    n + 1 into version n + 2."""

    def __init__(self) -> None:
        self._steps: dict[str, list[Upgrade]] = {k: [] for k in KINDS}

    def current(self, kind: str) -> int:
        """The version of `kind` documents this release writes."""
        return len(self._steps[kind]) + 1

    def register(self, kind: str, from_version: int) -> Callable[[Upgrade], Upgrade]:
        """Decorator: `fn` upgrades a `kind` document from `from_version` to the next. Steps are
        registered in order (from_version must be the current version), so no gap can exist."""
        if kind not in self._steps:
            raise ValueError(f"unknown document kind {kind!r}")

        def add(fn: Upgrade) -> Upgrade:
            if from_version != self.current(kind):
                raise ValueError(
                    f"{kind} upgrades must be registered in order: the next one is from"
                    f" v{self.current(kind)}, not v{from_version}"
                )
            self._steps[kind].append(fn)
            return fn

        return add

    def upgrade(self, kind: str, doc: Document, version: int, what: str) -> Document:
        """`doc` (a `kind` document at `version`) in the current shape. The input is never
        changed (each step gets a copy). `what` names the document in the error raised when
        `version` is newer than this release knows (`TooNew`) or not a version at all."""
        current = self.current(kind)
        if version > current:
            raise TooNew(
                f"{what} has schemaVersion {version}, but this release of Flowplane knows"
                f" {kind} documents up to version {current}: it was written by a newer release."
                " Run that release (or newer), or restore a backup made by this one."
            )
        if version < 1:
            raise TooNew(f"{what} has an invalid schemaVersion {version}")
        for step in self._steps[kind][version - 1 :]:
            doc = step(copy.deepcopy(doc))
        return doc


REGISTRY = SchemaRegistry()
"""This release's upgrades. None yet: every kind is at version 1 (the shape of the first release
that stored schema versions). A release that changes a document's JSON adds, e.g.:

    @REGISTRY.register("cluster", 1)
    def _connect_timeout(doc: Document) -> Document:   # v1 -> v2
        if "connectTimeoutSeconds" in doc:
            doc["connectTimeout"] = doc.pop("connectTimeoutSeconds")
        return doc
"""


def current(kind: str) -> int:
    """The schema version this release writes for `kind` (read through the module, so a test
    may swap `REGISTRY` for one with a changed model)."""
    return REGISTRY.current(kind)
