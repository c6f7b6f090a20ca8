"""Storage backends behind one repository protocol (`base.Repository`)."""

from __future__ import annotations

from flowplane.errors import ConfigurationError
from flowplane.storage.base import Repository


async def open_repository(url: str) -> Repository:
    """Open the backend named by the database URL's scheme."""
    if url.startswith("sqlite:"):
        from flowplane.storage.sqlite import SqliteRepository

        return await SqliteRepository.open(url)
    if url.startswith(("postgresql:", "postgres:")):
        raise ConfigurationError(
            "the PostgreSQL backend is not available yet; use a sqlite:/// URL"
        )
    raise ConfigurationError(f"unsupported database URL {url!r}: use sqlite:///path.db")
