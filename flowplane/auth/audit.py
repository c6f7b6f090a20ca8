"""One audit row: who did what to which resource, when, from where; and one history row: a
version of a resource or API, with who made it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flowplane.domain import schema
from flowplane.domain.auth import Principal
from flowplane.domain.state import Plan
from flowplane.storage.base import AuditRow, HistoryRow


def audit_row(
    principal: Principal,
    action: str,
    resource_type: str,
    name: str | None,
    team: str | None,
    before: Any = None,
    after: Any = None,
) -> AuditRow:
    return AuditRow(
        time=datetime.now(UTC),
        actor_id=principal.token_id,
        actor_name=principal.name,
        action=action,
        resource_type=resource_type,
        resource_name=name,
        team=team,
        before=before,
        after=after,
        client_address=principal.client_address,
    )


def history_row(
    principal: Principal,
    action: str,
    kind: str,
    team: str | None,
    name: str,
    version: int,
    spec: dict[str, Any] | None,
    *,
    source: str | None = None,
    owner: str | None = None,
) -> HistoryRow:
    """One version of a resource or API for its history (`spec` None: the deletion), in the
    shape this release writes."""
    return HistoryRow(
        kind=kind, team=team, name=name, version=version, action=action,
        actor_id=principal.token_id, actor_name=principal.name, at=datetime.now(UTC),
        schema_version=schema.current(kind), spec=spec, source=source, owner=owner,
    )  # fmt: skip


def resource_history(principal: Principal, action: str, plan: Plan) -> HistoryRow:
    """The history row of a planned resource change: its new version, or (a delete) a version
    of its own with no content."""
    if plan.after is not None:
        a = plan.after
        return history_row(principal, action, a.kind.value, a.team, a.name, a.version, a.spec,
                           source=a.source, owner=a.owner)  # fmt: skip
    b = plan.before
    assert b is not None
    return history_row(principal, "delete", b.kind.value, b.team, b.name, b.version + 1, None,
                       source=b.source, owner=b.owner)  # fmt: skip
