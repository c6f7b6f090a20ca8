"""First start: a signing key and an admin token; the background flush of auth activity; and
audit retention.

Supervision: the flush loops are actors too. A failed flush (storage down, or a bug) is logged
with what it was writing and counted in `flowplane_actor_failures_total{actor="auth-flush"}`;
the loop keeps running and the rows wait for the next round (last use) or are dropped after
being logged (failed authentications, which are also in the log). The audit retention job
(`keep_audit`) is supervised the same way (`actor="audit-retention"`) and tries again at its next
round.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import trio

from flowplane.actors.auth import CreateToken, EnsureSigningKey, RecordAudit, ReloadTokens
from flowplane.actors.config import ConfigActor
from flowplane.auth.authenticator import Authenticator
from flowplane.domain.auth import SYSTEM
from flowplane.observability import metrics
from flowplane.storage.base import Repository, UpdateRow, Write

log = logging.getLogger(__name__)

BANNER = """
==============================================================================
 Flowplane created the first admin token. It is shown only this once:

 {token}

 Use it as:  Authorization: Bearer <token>
 Lost it?    flowplane token create --role admin --name recovery
==============================================================================
"""


async def ensure_admin(actor: ConfigActor, *, json_lines: bool = False) -> str | None:
    """Make sure a signing key exists; with no tokens at all, create an admin token and print
    it once to stderr (never to the log stream): as the banner, or, with `json_lines` (log
    format json), as one JSON object, so that every line on stderr is JSON. Returns the token
    string if one was created."""
    await actor.submit(EnsureSigningKey())
    if actor.auth.tokens:
        return None
    created = await actor.submit(CreateToken({"name": "initial-admin", "role": "admin"}, SYSTEM))
    token: str = created[1]
    if json_lines:
        line = {
            "time": datetime.now(UTC).isoformat(), "level": "WARNING", "logger": "flowplane",
            "message": "created the first admin token; it is shown only this once",
            "adminToken": token,
        }  # fmt: skip
        print(json.dumps(line), file=sys.stderr, flush=True)
    else:
        print(BANNER.format(token=token), file=sys.stderr, flush=True)
    log.info("created the initial admin token (printed once above, not logged)")
    return token


RELOAD_EVERY_SECONDS = 1.0
"""Token reloads from the database at most this often (a flood of unknown ids costs one)."""
FAILURE_FLUSH_SECONDS = 5.0
"""Failed authentications arriving within this window (from the first one on) are written in
one transaction, as one audit row per (source, reason) with a count (issue 11, item 13): a flood
of bad tokens costs at most one row per source and reason per window."""
AUDIT_PRUNE_EVERY_SECONDS = 3600.0
"""How often `keep_audit` deletes the audit rows past their retention."""


async def flush_auth_activity(
    actor: ConfigActor, authenticator: Authenticator, *, interval: float = 30.0
) -> None:
    """Write failed authentications as they come (aggregated per `FAILURE_FLUSH_SECONDS`), and
    tokens' last use every `interval` seconds, so neither costs a database write per request."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_flush_failures, actor, authenticator)
        nursery.start_soon(_reload_tokens, actor, authenticator)
        while True:
            await trio.sleep(interval)
            await _flush_last_used(actor, authenticator)


def _failed(what: str, actor: str = "auth-flush") -> None:
    metrics.ACTOR_FAILURES.labels(actor).inc()
    log.exception("could not %s", what)


Job = tuple[Callable[[], Awaitable[None]], str, str]  # (job, what it does, actor label)


def _audit_job(repo: Repository, keep_days: int) -> Job:
    async def prune() -> None:
        cutoff = datetime.now(UTC) - timedelta(days=keep_days)
        deleted = await repo.prune_audit(cutoff)
        if deleted:
            log.info("deleted %d audit rows older than %d days", deleted, keep_days)

    return prune, f"delete audit rows older than {keep_days} days", "audit-retention"


def _history_job(repo: Repository, keep: int) -> Job:
    async def prune() -> None:
        deleted = await repo.prune_history(keep)
        if deleted:
            log.info("deleted %d old versions from history (keeping %d each)", deleted, keep)

    return prune, f"prune history to {keep} versions", "history-retention"


async def keep_audit(
    repo: Repository, keep_days: int, *, every: float = AUDIT_PRUNE_EVERY_SECONDS
) -> None:
    """Audit retention (FLOWPLANE_AUDIT_KEEP_DAYS): at start and then every `every` seconds,
    delete the audit rows older than `keep_days` days. Runs until cancelled."""
    await _periodically([_audit_job(repo, keep_days)], every)


async def keep_history(
    repo: Repository, keep: int, *, every: float = AUDIT_PRUNE_EVERY_SECONDS
) -> None:
    """History retention (FLOWPLANE_HISTORY_KEEP): at start and then every `every` seconds,
    delete all but the newest `keep` versions of each resource and API (writes never prune:
    the write path stays one INSERT). Runs until cancelled."""
    await _periodically([_history_job(repo, keep)], every)


async def keep_retention(
    repo: Repository, audit_keep_days: int, history_keep: int, *,
    every: float = AUDIT_PRUNE_EVERY_SECONDS,
) -> None:  # fmt: skip
    """`keep_audit` and `keep_history` in one task, one prune after the other: two prunes at
    once would need a second pooled PostgreSQL connection, and one being opened when the
    server stops was seen to keep the pool from closing (a hung shutdown)."""
    await _periodically(
        [_audit_job(repo, audit_keep_days), _history_job(repo, history_keep)], every
    )


async def _periodically(jobs: list[Job], every: float) -> None:
    """Run `jobs` one after the other now and then every `every` seconds until cancelled; a
    failure is logged and counted (as its actor) and the next run tries again."""
    while True:
        for job, what, actor in jobs:
            try:
                await job()
            except Exception:
                _failed(what, actor)
        await trio.sleep(every)


async def _reload_tokens(actor: ConfigActor, authenticator: Authenticator) -> None:
    """Pick up tokens another process (the CLI) wrote to the database; at most once a second."""
    while True:
        await authenticator.wait_reload_request()
        try:
            await actor.submit(ReloadTokens())
        except Exception:
            _failed("reload tokens")
        finally:
            authenticator.reload_done()  # requests waiting on an unknown token check again
        await trio.sleep(RELOAD_EVERY_SECONDS)


async def _flush_failures(actor: ConfigActor, authenticator: Authenticator) -> None:
    while True:
        await authenticator.wait_failures()
        await trio.sleep(FAILURE_FLUSH_SECONDS)  # gather (and aggregate) a burst into one write
        rows = authenticator.take_failures()
        for r in rows[:20]:  # one line per (source, reason) per window: bounded under a flood
            log.info(
                "refused %d authentication(s) from %s: %s",
                r.after["count"], r.client_address or "unknown", r.after["reason"],
            )  # fmt: skip
        if len(rows) > 20:
            log.info("refused authentications from %d more sources", len(rows) - 20)
        if rows:
            try:
                await actor.submit(RecordAudit(list(rows)))
            except Exception:
                _failed(f"record {sum(r.after['count'] for r in rows)} failed authentications")


async def _flush_last_used(actor: ConfigActor, authenticator: Authenticator) -> None:
    used = authenticator.take_last_used()
    rows: list[Write] = [
        UpdateRow("tokens", jti, {"last_used_at": when})
        for jti, when in used.items()
        if jti in actor.auth.tokens
    ]
    if not rows:
        return
    try:
        await actor.submit(RecordAudit(rows))
    except Exception:
        _failed("record token last use")  # not marked: the next round tries again
    else:
        authenticator.mark_flushed(used)
