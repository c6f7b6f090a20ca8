"""`flowplane token create`: the recovery token, made in the database by
`flowplane.services.recovery` (the CLI holds no business rules)."""

from __future__ import annotations

from flowplane.services.recovery import create_token

__all__ = ["create_token"]
