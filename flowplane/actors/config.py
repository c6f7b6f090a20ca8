"""The config actor: the single writer of configuration.

REST handlers (and later the Platform API) send it a `Command` over its bounded mailbox and await
the reply. For each command it plans the change against the in-memory state, persists it in one
transaction, applies it to memory, announces it to subscribers (the snapshot builder) and only
then replies. Persist first, then announce — never the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import trio
from pydantic import BaseModel

from flowplane.domain.resources import Kind, StoredResource, parse_spec
from flowplane.domain.state import ConfigState, Plan
from flowplane.errors import FlowplaneError, Internal, StorageError
from flowplane.storage.base import Delete, Repository, ResourceRow, Upsert, Write

log = logging.getLogger(__name__)

Op = Literal["create", "replace", "patch", "delete"]


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """What one committed command changed: (kind, name, new model or None for deleted)."""

    serial: int
    changes: tuple[tuple[Kind, str, BaseModel | None], ...]


@dataclass(slots=True)
class Command:
    op: Op
    kind: Kind
    name: str | None = None
    body: Any = None
    if_match: str | None = None
    source: str = "native"
    _done: trio.Event = field(default_factory=trio.Event)
    _result: StoredResource | FlowplaneError | None = None

    def resolve(self, result: StoredResource | FlowplaneError | None) -> None:
        self._result = result
        self._done.set()

    async def wait(self) -> StoredResource | None:
        await self._done.wait()
        if isinstance(self._result, FlowplaneError):
            raise self._result
        return self._result


def row_of(res: StoredResource) -> ResourceRow:
    return ResourceRow(
        kind=res.kind.value,
        name=res.name,
        team=res.team,
        version=res.version,
        source=res.source,
        spec=res.spec,
        created_at=res.created_at,
        updated_at=res.updated_at,
    )


def resource_of(row: ResourceRow) -> StoredResource:
    kind = Kind(row.kind)
    return StoredResource(
        kind=kind,
        name=row.name,
        team=row.team,
        version=row.version,
        source=row.source,
        spec=row.spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
        model=parse_spec(kind, row.spec),
    )


async def load_state(repo: Repository) -> ConfigState:
    """Rebuild the in-memory state from storage (the database is the source of truth)."""
    state = ConfigState()
    for row in await repo.load_all():
        try:
            state.load(resource_of(row))
        except FlowplaneError as err:
            raise Internal(
                f"stored {row.kind} {row.name!r} no longer validates: {err.message}"
            ) from err
    dangling = state.dangling()
    if dangling:
        raise Internal(
            "stored configuration references missing resources: "
            + ", ".join(f"{u} -> {m}" for u, m in dangling)
        )
    return state


class ConfigActor:
    def __init__(
        self,
        repo: Repository,
        state: ConfigState,
        mailbox_size: int = 256,
        validate: Callable[[Kind, BaseModel], object] | None = None,
    ) -> None:
        self.repo = repo
        self.state = state
        # Extra validation of a resource about to be stored (the app passes the xDS translator,
        # so nothing is stored that could not be served); raises FlowplaneError to refuse.
        self.validate = validate
        self.mailbox_size = mailbox_size
        self._subscribers: list[trio.MemorySendChannel[ConfigChange]] = []
        self._mailbox: trio.MemorySendChannel[Command] | None = None
        self.now: Callable[[], datetime] | None = None  # tests may pin the clock

    def subscribe(self, channel: trio.MemorySendChannel[ConfigChange]) -> None:
        """Every committed change is sent to `channel` (awaited: a full channel applies
        backpressure to writers rather than dropping changes)."""
        self._subscribers.append(channel)

    async def run(
        self, *, task_status: trio.TaskStatus[ConfigActor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, inbox = trio.open_memory_channel[Command](self.mailbox_size)
        self._mailbox = send
        task_status.started(self)
        async with inbox:
            async for cmd in inbox:
                await self._handle(cmd)

    async def submit(self, cmd: Command) -> StoredResource | None:
        """Send `cmd` and wait for its outcome; raises the FlowplaneError it failed with."""
        if self._mailbox is None:
            raise StorageError("the config actor is not running")
        await self._mailbox.send(cmd)
        return await cmd.wait()

    def _plan(self, cmd: Command) -> Plan:
        s = self.state
        if cmd.op == "create":
            return s.plan_create(cmd.kind, cmd.body, cmd.source)
        assert cmd.name is not None
        if cmd.op == "replace":
            return s.plan_replace(cmd.kind, cmd.name, cmd.body, cmd.if_match)
        if cmd.op == "patch":
            return s.plan_patch(cmd.kind, cmd.name, cmd.body, cmd.if_match)
        return s.plan_delete(cmd.kind, cmd.name, cmd.if_match)

    async def _handle(self, cmd: Command) -> None:
        try:
            plan = self._plan(cmd)
            if plan.after is not None and self.validate is not None:
                self.validate(plan.kind, plan.after.model)
            writes: list[Write] = (
                [Upsert(row_of(plan.after))]
                if plan.after is not None
                else [Delete(plan.kind.value, plan.name)]
            )
            await self.repo.write(writes)
        except FlowplaneError as err:
            cmd.resolve(err)
            return
        except Exception as err:  # a bug: report it to the caller, keep the actor alive
            log.exception("config actor failed on %s %s", cmd.op, cmd.kind)
            cmd.resolve(Internal(f"internal error: {type(err).__name__}"))
            return
        self.state.apply(plan)
        change = ConfigChange(
            self.state.serial,
            ((plan.kind, plan.name, plan.after.model if plan.after else None),),
        )
        for sub in self._subscribers:
            await sub.send(change)
        cmd.resolve(plan.after)
