"""The start-up upgrade of stored documents to the shapes this release writes (api.md "History
and rollback"; the registry is `flowplane.domain.schema`).

Every current document (each resource's and API definition's `spec`, and what each API
generated, kept in Native shapes in its row) older than its kind's current schema version is
upgraded by the registered functions and validated against the current
model, and all of them are written in ONE transaction: if any document cannot be upgraded (one
written by a newer release, or an upgrade whose result does not validate) nothing is written and
start-up stops with a message naming it; a process killed midway leaves the old documents, and
the next start does it all again. History rows are kept as they were written (with their
schemaVersion) and upgraded when read.
"""

from __future__ import annotations

import logging

import jsonpatch

from flowplane.domain import schema
from flowplane.domain.api_definition import parse_api_definition
from flowplane.domain.apis import GENERATED_KEYS, SCHEMA_VERSIONS, upgrade_generated
from flowplane.domain.resources import Kind, parse_spec
from flowplane.errors import FlowplaneError, Internal
from flowplane.storage.base import DocumentUpgrade, Repository, StoredDocument

log = logging.getLogger("flowplane.upgrade")


def upgrade_one(doc: StoredDocument) -> DocumentUpgrade | None:
    """`doc` in the current shape (None: it already is). Raises `TooNew` for a document from a
    newer release and `Internal` if the upgraded document does not validate."""
    registry = schema.REGISTRY
    current = registry.current(doc.kind)
    what = f"stored {doc.label}"
    spec = registry.upgrade(doc.kind, doc.spec, doc.schema_version, what)  # TooNew if newer
    generated = None
    if doc.generated is not None:  # an API's: its Native specs follow their kinds' upgrades
        up = upgrade_generated(doc.generated, what)
        generated = None if up is doc.generated else up
    if doc.schema_version == current and generated is None:
        return None
    try:
        if doc.kind == "api":
            parse_api_definition(spec)
        else:
            parse_spec(Kind(doc.kind), spec)
    except FlowplaneError as err:
        raise Internal(
            f"{what} does not validate after its upgrade from schemaVersion"
            f" {doc.schema_version} to {current}: {err.message}"
        ) from err
    return DocumentUpgrade(doc, spec, current, generated)


def describe(change: DocumentUpgrade) -> str:
    """One line per upgraded document: which, from and to which version (an API's generated
    Native specs: from and to which versions of their kinds)."""
    d = change.before
    line = f"{d.label}: schemaVersion {d.schema_version} -> {change.schema_version}"
    if change.generated is not None and d.generated is not None:
        old = {k.value: 1 for k in GENERATED_KEYS} | d.generated.get(SCHEMA_VERSIONS, {})
        new = change.generated[SCHEMA_VERSIONS]
        line += "; what it generated: " + ", ".join(
            f"{k} {old[k]} -> {new[k]}" for k in sorted(new) if old.get(k) != new[k]
        )
    return line


def patch_of(change: DocumentUpgrade) -> list[dict[str, object]]:
    """What the upgrade changes in the document, as an RFC 6902 patch (an API's: of
    `{spec, generated}`)."""
    before: object = change.before.spec
    after: object = change.spec
    if change.generated is not None:
        before = {"spec": before, "generated": change.before.generated}
        after = {"spec": after, "generated": change.generated}
    ops: list[dict[str, object]] = jsonpatch.make_patch(before, after).patch
    return ops


async def upgrade_documents(repo: Repository, *, check: bool = False) -> list[DocumentUpgrade]:
    """Upgrade every older stored document in one transaction (`check`: roll it back, only
    say what would change). Logs what was done."""
    changes = await repo.upgrade_documents(upgrade_one, commit=not check)
    if changes and not check:
        log.info(
            "upgraded %d stored document(s) to the current schema in one transaction: %s",
            len(changes), "; ".join(describe(c) for c in changes),
        )  # fmt: skip
    return changes
