"""The composition root: settings -> storage -> actors -> servers, in one trio nursery."""

from __future__ import annotations

import gc
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio_asyncio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart_trio import QuartTrio

from flowplane.actors.config import ConfigActor, ConfigChange, load_state
from flowplane.actors.feed import CatchUp, ChangeFeed, keep_change_log
from flowplane.actors.history import load_history
from flowplane.actors.leader import Leader
from flowplane.actors.platform import Gateway, load_apis
from flowplane.actors.snapshots import SnapshotActor
from flowplane.api.app import Readiness, RestServices, create_app
from flowplane.api.fastpath import FastReads
from flowplane.auth.authenticator import Authenticator
from flowplane.auth.keys import AuthState, load_auth
from flowplane.domain.state import ConfigState
from flowplane.grpc import compat
from flowplane.grpc.hub import Hub
from flowplane.grpc.pool import WorkerPool, default_workers
from flowplane.grpc.server import XdsServer
from flowplane.observability.asgi import ObservedRequests
from flowplane.observability.storage import metered
from flowplane.observability.tracing import configure_tracing, shutdown_tracing
from flowplane.services.audit import AuditService
from flowplane.services.dataplanes import DataPlaneService
from flowplane.services.gateway import LISTENER, ROUTES, ensure_default_gateway
from flowplane.services.history import HistoryService
from flowplane.services.platform import PlatformService
from flowplane.services.resources import ResourceService
from flowplane.services.security import TeamService, TokenService
from flowplane.services.startup import (
    ensure_admin,
    flush_auth_activity,
    keep_retention,
)
from flowplane.services.upgrade import upgrade_documents
from flowplane.settings import Settings
from flowplane.storage import open_repository
from flowplane.storage.base import Repository
from flowplane.storage.postgres import PostgresRepository
from flowplane.tls import check_api_tls, xds_server_context
from flowplane.xds.builder import SnapshotBuilder
from flowplane.xds.sotw import NameLimits
from flowplane.xds.translate import check_resource, translate_resource

log = logging.getLogger("flowplane")


@dataclass
class Core:
    """Storage, state, the config actor and the snapshot builder: everything but the servers."""

    settings: Settings
    repo: Repository
    state: ConfigState
    actor: ConfigActor
    readiness: Readiness
    hub: Hub
    snapshots: SnapshotActor
    auth: AuthState
    authenticator: Authenticator
    services: RestServices
    admin_token: str | None = None  # set when this start created the first admin token
    xds_port: int | None = None
    feed: ChangeFeed | None = None  # PostgreSQL: other replicas' changes (README "Replicas")
    leader: Leader | None = None  # PostgreSQL: the election for the singleton jobs


def _services(
    settings: Settings,
    repo: Repository,
    state: ConfigState,
    actor: ConfigActor,
    auth: AuthState,
    authenticator: Authenticator,
    hub: Hub,
    xds_port: Callable[[], int | None],
) -> RestServices:
    """Every service, each given only what it uses."""
    tokens = TokenService(auth, actor, authenticator)
    gateway = Gateway(LISTENER, ROUTES) if settings.default_gateway else None
    return RestServices(
        resources=ResourceService(state, actor),
        tokens=tokens,
        teams=TeamService(auth, actor),
        audit=AuditService(repo),
        dataplanes=DataPlaneService(hub, tokens, settings, xds_port),
        platform=PlatformService(state, actor, gateway),
        authenticator=authenticator,
        history=HistoryService(state, actor, repo, gateway),
    )


@asynccontextmanager
async def open_core(settings: Settings) -> AsyncIterator[Core]:
    """Open storage, migrate, rebuild state and the first snapshot, run the actors; close all
    on exit."""
    repo = metered(  # storage latency and errors, per repository operation
        await open_repository(
            settings.database_url,
            time_limit=settings.storage_timeout_seconds,
            pool_size=settings.database_pool_size,
        )
    )
    try:
        applied = await repo.migrate()
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        await upgrade_documents(repo)  # older shapes -> current, one transaction, logged
        # Other replicas may share a PostgreSQL database: the change-log position is read before
        # memory is loaded, so memory reflects at least it (a change committed meanwhile is
        # read again by the feed, harmlessly).
        position = await repo.change_position() if isinstance(repo, PostgresRepository) else None
        state = await load_state(repo)
        await load_apis(repo, state)
        await load_history(repo, state)
        auth = await load_auth(repo)
        state.team_quotas = {name: t.quotas for name, t in auth.teams.items()}
        actor = ConfigActor(
            repo, state, auth, validate=check_resource, mailbox_size=settings.mailbox_size
        )
        feed = leader = None
        if isinstance(repo, PostgresRepository):
            repo.fence = position  # memory reflects at least this change (read before loading)
            feed = ChangeFeed(repo, actor)
            actor.exclusive = feed.exclusive
            pg = repo
            leader = Leader(repo, [
                lambda: keep_retention(pg, settings.audit_keep_days, settings.history_keep),
                lambda: keep_change_log(pg),
            ])  # fmt: skip
        authenticator = Authenticator(auth, default_rate_per_minute=settings.rate_limit_per_minute)
        readiness = Readiness()
        readiness.set("storage", True)
        readiness.set("snapshot", False)
        hub = Hub()
        auth.token_listeners.append(hub.wake_all)
        snapshots = SnapshotActor(
            SnapshotBuilder(translate_resource), hub.publish, settings.snapshot_debounce_seconds
        )
        snapshots.build_initial(state)
        readiness.set("snapshot", True)
        send, receive = trio.open_memory_channel[ConfigChange](settings.mailbox_size)
        actor.subscribe(send)
        async with trio.open_nursery() as nursery:
            await nursery.start(snapshots.run, receive)
            await nursery.start(actor.run)
            if feed is not None:
                await nursery.start(feed.run)
                # What other replicas committed since memory was loaded, before this one
                # decides whether it must create the signing key and first admin token.
                await actor.submit(CatchUp(feed))
            admin_token = await ensure_admin(actor, json_lines=settings.log_format == "json")
            await ensure_default_gateway(settings, actor)
            nursery.start_soon(flush_auth_activity, actor, authenticator)
            if leader is not None:
                nursery.start_soon(leader.run)  # retention runs on the elected replica
            else:
                nursery.start_soon(
                    keep_retention, repo, settings.audit_keep_days, settings.history_keep
                )
            core: Core | None = None
            services = _services(settings, repo, state, actor, auth, authenticator, hub,
                                 lambda: core.xds_port if core else None)  # fmt: skip
            core = Core(settings, repo, state, actor, readiness, hub, snapshots, auth,
                        authenticator, services, admin_token, feed=feed, leader=leader)  # fmt: skip
            yield core
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await repo.aclose()


def quart_app(core: Core) -> QuartTrio:
    """The quart-trio application alone (every route, no fast path)."""
    return create_app(
        core.services, core.readiness, core.repo.ping, max_body_bytes=core.settings.max_body_bytes
    )


def make_app(core: Core) -> ObservedRequests:
    """The ASGI app: request ids, metrics and traces around the read fast path in front of the
    quart-trio application."""
    return ObservedRequests(
        FastReads(quart_app(core), core.services.resources, core.authenticator)  # type: ignore[arg-type]
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
    config.h11_max_incomplete_size = 64 * 1024  # memory cap for request heads (431 at the edge)
    config.keep_alive_max_requests = 100_000  # reconnecting every 1,000 requests costs
    if core.settings.api_tls_cert and core.settings.api_tls_key:
        config.certfile = core.settings.api_tls_cert
        config.keyfile = core.settings.api_tls_key
    await hypercorn_serve(
        make_app(core),  # type: ignore[arg-type]
        config,
        shutdown_trigger=shutdown.wait,
        task_status=task_status,
    )


def worker_pool(core: Core, workers: int, *, status_interval: float = 0.5) -> WorkerPool:
    """A pool of `workers` xDS worker processes fed by `core`: told every snapshot and token
    change, its workers' streams listed by `/api/v1/nodes`. Start it with `nursery.start(
    pool.run)` (started() with the xDS port), stop it with `pool.stop(grace)`."""
    pool = WorkerPool(
        core.settings, workers, authenticator=core.authenticator, status_interval=status_interval
    )
    core.hub.observers.append(pool.publish)
    core.hub.sources.append(pool.connected)
    core.auth.token_listeners.append(pool.tokens_changed)
    pool.publish(core.hub.snapshot)
    return pool


async def run_server(
    settings: Settings,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`flowplane serve`: run until SIGTERM/SIGINT, then shut down within the grace period."""
    check_api_tls(settings)
    xds_tls = xds_server_context(settings)
    if settings.xds_auth == "none":
        log.warning(
            "FLOWPLANE_XDS_AUTH=none: xDS streams are not authenticated; anyone who reaches %s "
            "receives every team's configuration (the default is token)", settings.xds_address,
        )  # fmt: skip
    # XdsServer.start installs it too; here, before any nursery, a refusal (ConfigurationError:
    # trio-asyncio is not the version the patch was written for) reaches the CLI as the one-line
    # message of every other start-up error, and before the database is touched.
    compat.install_batched_loop()
    # Thousands of long-lived streams make a large, stable heap: collect the young generation
    # less often (the default 700 allocations means a collection every few pushes per stream).
    gc.set_threshold(50_000, 20, 20)
    if configure_tracing(settings):  # off unless the OTEL_* variables ask for it
        log.info("tracing on: spans exported over OTLP/HTTP")
    try:
        await _run(settings, xds_tls, task_status)
    finally:
        shutdown_tracing()  # flushes the spans still queued


async def _run(
    settings: Settings, xds_tls: ssl.SSLContext | None, task_status: trio.TaskStatus[list[str]]
) -> None:
    shutdown = trio.Event()
    async with (
        trio_asyncio.open_loop() as loop,
        open_core(settings) as core,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_signals, shutdown)
        host, port = settings.xds_host_port
        workers = settings.xds_workers if settings.xds_workers is not None else default_workers()
        xds: XdsServer | WorkerPool
        if workers == 0:  # xDS served in this process
            xds = XdsServer(
                core.hub, loop, ssl=xds_tls, auth=settings.xds_auth,
                authenticator=core.authenticator,
                keepalive=(settings.xds_keepalive_seconds, settings.xds_keepalive_timeout_seconds),
                limits=NameLimits(
                    settings.xds_max_names_per_request, settings.xds_max_names_per_stream
                ),
            )  # fmt: skip
            core.xds_port = await xds.start(host, port)
        else:  # worker processes serve xDS; this process feeds them (flowplane/grpc/pool.py)
            xds = pool = worker_pool(core, workers)
            core.xds_port = await nursery.start(pool.run)
        try:
            binds = await nursery.start(
                lambda task_status: serve_api(core, shutdown=shutdown, task_status=task_status)
            )
            log.info(
                "flowplane ready: REST API on %s, xDS (ADS) on %s:%d, database %s",
                ", ".join(binds), host, core.xds_port, settings.database_url,
            )  # fmt: skip
            task_status.started(binds)
            await shutdown.wait()
            log.info("shutting down")
            # hypercorn stops on `shutdown`; give it the grace period, then cancel what is left.
            nursery.cancel_scope.deadline = (
                trio.current_time() + settings.shutdown_grace_seconds + 1
            )
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(settings.shutdown_grace_seconds):
                if isinstance(xds, WorkerPool):
                    await xds.stop(settings.shutdown_grace_seconds)
                else:
                    await xds.stop()


async def _signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            shutdown.set()
            return
