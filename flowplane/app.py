"""The composition root: settings -> storage -> actors -> servers, in one trio nursery."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from flowplane.actors.config import ConfigActor, load_state
from flowplane.api.app import Readiness, create_app
from flowplane.domain.state import ConfigState
from flowplane.settings import Settings
from flowplane.storage import open_repository
from flowplane.storage.base import Repository

log = logging.getLogger("flowplane")


@dataclass
class Core:
    """Storage, state and the config actor: everything but the network servers."""

    settings: Settings
    repo: Repository
    state: ConfigState
    actor: ConfigActor
    readiness: Readiness


@asynccontextmanager
async def open_core(settings: Settings) -> AsyncIterator[Core]:
    """Open storage, migrate, rebuild state, run the config actor; close everything on exit."""
    repo = await open_repository(settings.database_url)
    try:
        applied = await repo.migrate()
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        state = await load_state(repo)
        actor = ConfigActor(repo, state, settings.mailbox_size)
        readiness = Readiness()
        readiness.set("storage", True)
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            yield Core(settings, repo, state, actor, readiness)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await repo.aclose()


def make_app(core: Core):  # type: ignore[no-untyped-def]
    return create_app(
        state=core.state,
        actor=core.actor,
        repo=core.repo,
        readiness=core.readiness,
        max_body_bytes=core.settings.max_body_bytes,
    )


async def serve_api(
    core: Core,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST API until `shutdown` is set; started() with the bound addresses."""
    config = HypercornConfig()
    host, port = core.settings.api_host_port
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = core.settings.shutdown_grace_seconds
    config.h11_max_incomplete_size = 64 * 1024  # oversized request heads -> 431/400, not memory
    await hypercorn_serve(
        make_app(core), config, shutdown_trigger=shutdown.wait, task_status=task_status
    )


async def run_server(
    settings: Settings,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`flowplane serve`: run until SIGTERM/SIGINT, then shut down within the grace period."""
    shutdown = trio.Event()
    async with open_core(settings) as core, trio.open_nursery() as nursery:
        nursery.start_soon(_signals, shutdown)
        binds = await nursery.start(
            lambda task_status: serve_api(core, shutdown=shutdown, task_status=task_status)
        )
        log.info(
            "flowplane ready: REST API on %s, database %s",
            ", ".join(binds),
            settings.database_url,
        )
        task_status.started(binds)
        await shutdown.wait()
        log.info("shutting down")
        # hypercorn stops on `shutdown`; give it the grace period, then cancel what is left.
        nursery.cancel_scope.deadline = trio.current_time() + settings.shutdown_grace_seconds + 1


async def _signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            shutdown.set()
            return
