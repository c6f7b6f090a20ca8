"""One audit row: who did what to which resource, when, from where."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flowplane.domain.auth import Principal
from flowplane.storage.base import AuditRow


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
