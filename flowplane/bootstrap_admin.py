"""First start: a signing key and an admin token; and the background flush of auth activity."""

from __future__ import annotations

import logging
import sys

import trio

from flowplane.actors.auth import CreateToken, EnsureSigningKey, RecordAudit, ReloadTokens
from flowplane.actors.config import ConfigActor
from flowplane.api.auth import Authenticator
from flowplane.domain.auth import SYSTEM
from flowplane.storage.base import UpdateRow, Write

log = logging.getLogger(__name__)

BANNER = """
==============================================================================
 Flowplane created the first admin token. It is shown only this once:

 {token}

 Use it as:  Authorization: Bearer <token>
 Lost it?    flowplane token create --role admin --name recovery
==============================================================================
"""


async def ensure_admin(actor: ConfigActor) -> str | None:
    """Make sure a signing key exists; with no tokens at all, create an admin token and print
    it once to stderr (never to the log stream). Returns the token string if one was created."""
    await actor.submit(EnsureSigningKey())
    if actor.auth.tokens:
        return None
    created = await actor.submit(CreateToken({"name": "initial-admin", "role": "admin"}, SYSTEM))
    token: str = created[1]
    print(BANNER.format(token=token), file=sys.stderr, flush=True)
    log.info("created the initial admin token (printed once above, not logged)")
    return token


async def flush_auth_activity(
    actor: ConfigActor, authenticator: Authenticator, *, interval: float = 30.0
) -> None:
    """Write failed-authentication audit rows as they come (batched), and tokens' last use
    every `interval` seconds, so neither costs a database write per request."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_flush_failures, actor, authenticator)
        nursery.start_soon(_reload_tokens, actor, authenticator)
        while True:
            await trio.sleep(interval)
            await _flush_last_used(actor, authenticator)


async def _reload_tokens(actor: ConfigActor, authenticator: Authenticator) -> None:
    """Pick up tokens another process (the CLI) wrote to the database; at most once a second."""
    while True:
        await authenticator.reload_requested.wait()
        authenticator.reload_requested = trio.Event()
        try:
            await actor.submit(ReloadTokens())
        except Exception:
            log.exception("could not reload tokens")
        await trio.sleep(1.0)


async def _flush_failures(actor: ConfigActor, authenticator: Authenticator) -> None:
    while True:
        await authenticator.failures_ready.wait()
        await trio.sleep(0.05)  # gather a burst into one transaction
        rows = authenticator.take_failures()
        if rows:
            try:
                await actor.submit(RecordAudit(list(rows)))
            except Exception:
                log.exception("could not record %d failed authentications", len(rows))


async def _flush_last_used(actor: ConfigActor, authenticator: Authenticator) -> None:
    used, authenticator.last_used = authenticator.last_used, {}
    rows: list[Write] = []
    for jti, when in used.items():
        tok = actor.auth.tokens.get(jti)
        if tok is not None:
            rows.append(UpdateRow("tokens", jti, {"last_used_at": when}))
    if rows:
        try:
            await actor.submit(RecordAudit(rows))
        except Exception:
            log.exception("could not record token last use")
        for jti, when in used.items():  # keep showing them until the next flush
            authenticator.last_used.setdefault(jti, when)
