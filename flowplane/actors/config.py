"""The config actor: the single writer of configuration (and of tokens, teams and keys).

Services send it a `Txn` over its bounded mailbox and await the reply. For each command it plans
the change against a read-only `PlanContext` (the committed in-memory state), persists it in one
transaction, applies it to memory, announces it to subscribers (the snapshot builder) and only
then replies. Persist first, then announce — never the other way round.

Supervision (one rule for every actor, README "Architecture"): an unexpected exception while
handling a command is a bug. It is logged with the command that caused it, counted in
`flowplane_actor_failures_total{actor="config"}`, and answered to that caller as a 500; nothing
of the command was applied (a plan is applied to memory only after its transaction committed),
and the actor keeps serving the next command. The one exception: if applying a plan to memory
itself raises, memory may no longer match storage, and the actor stops the process
(`InconsistentState`, non-zero exit) rather than serve from it; a restart rebuilds memory from
the database.

Several replicas on one PostgreSQL database (README "Replicas"): a write that finds another
replica committed first (`StaleState`: nothing was written) is planned once more inside
`exclusive` (the change feed's: the database's change-log lock held, memory caught up under it),
and commits in that transaction; other replicas' changes arrive as `MemoryTxn`s from the feed
and are published with `announce`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

import trio
from pydantic import BaseModel

from flowplane.auth.audit import audit_row, resource_history
from flowplane.auth.keys import AuthState
from flowplane.domain import schema
from flowplane.domain.auth import SYSTEM, Principal
from flowplane.domain.resources import Kind, Ref, StoredResource, parse_spec
from flowplane.domain.state import ConfigState, Plan
from flowplane.errors import FlowplaneError, Internal, StorageError
from flowplane.observability import metrics, tracing
from flowplane.observability.metrics import NO_TEAM
from flowplane.storage.base import (
    Delete,
    Repository,
    ResourceRow,
    StaleState,
    Upsert,
    Write,
    WriteOutcomeUnknown,
)

log = logging.getLogger(__name__)

Op = Literal["create", "replace", "patch", "delete"]

Change = tuple[Kind, str, BaseModel | None]
"""(kind, key, the resource's xDS model or None for deleted): what the snapshot builder gets."""
MAX_GROUP = 64  # commands committed together at most


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """What one committed command changed: (kind, key, new xDS model or None for deleted)."""

    serial: int
    changes: tuple[Change, ...]
    origin: tracing.Origin = tracing.NO_ORIGIN  # the write's time, trace and log fields


@dataclass(slots=True)
class TxnPlan:
    """A checked change ready to commit: the rows to write (one transaction, audit included),
    how to make it visible in memory once committed, and what to answer."""

    writes: list[Write]
    apply: Callable[[], None]
    result: Any = None
    changes: tuple[Change, ...] = ()
    undo: Callable[[], None] | None = None  # exact inverse of `apply` (enables group commit)
    # One (kind, action, source, team) per entry of `changes`: the labels it is counted under in
    # flowplane_config_changes_total once committed (action create|update|delete, source the
    # API path the change came through, native|platform; team "-" for none).
    counted: tuple[tuple[str, str, str, str], ...] = ()


Validate = Callable[[Kind, BaseModel], object]


@dataclass(frozen=True, slots=True)
class PlanContext:
    """What a transaction plans against: the committed configuration and auth state, and the
    extra validation every stored resource must pass. Read it; never change it — a plan's
    changes happen in `TxnPlan.apply`, once its writes have committed."""

    state: ConfigState
    auth: AuthState
    validate: Validate | None = None


class Txn:
    """A command for the config actor. `plan` runs inside the actor (the single writer), so it
    sees a state no other writer can change before the plan commits."""

    principal: Principal = SYSTEM
    # Log the command at INFO once it committed (what an operator reads: resource, token and
    # team changes; not the background bookkeeping).
    logged: bool = False
    _done: trio.Event
    _result: Any

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result = None
        # Where the command came from (time, trace, request id): carried through the mailbox
        # explicitly, since the actor's task does not share the caller's context.
        self.origin = tracing.capture()

    def plan(self, ctx: PlanContext) -> TxnPlan:
        raise NotImplementedError

    def describe(self) -> str:
        """What this command is, for logs (never secrets or whole bodies)."""
        return type(self).__name__

    def resolve(self, result: Any) -> None:
        self._result = result
        self._done.set()
        if self.origin.at is not None:
            metrics.CONFIG_COMMAND_SECONDS.labels(type(self).__name__).observe(
                time.monotonic() - self.origin.at
            )

    async def wait(self) -> Any:
        await self._done.wait()
        if isinstance(self._result, FlowplaneError):
            raise self._result
        return self._result


class MemoryTxn(Txn):
    """A command that changes only memory but needs I/O to do it (e.g. reloading tokens another
    process wrote). It runs inside the actor, so it cannot interleave with a change."""

    async def run(self, ctx: PlanContext, repo: Repository) -> None:
        raise NotImplementedError


class Command(Txn):
    """Create, replace, merge-patch or delete one stored resource."""

    logged = True

    def __init__(
        self,
        op: Op,
        kind: Kind,
        name: str | None = None,
        body: Any = None,
        if_match: str | None = None,
        source: str = "native",
        principal: Principal = SYSTEM,
        team: str | None = None,
    ) -> None:
        super().__init__()
        self.op, self.kind, self.name, self.body = op, kind, name, body
        self.if_match, self.source, self.principal = if_match, source, principal
        self.team = team  # the `?team=` that picks the resource `name` (None: not given)

    def describe(self) -> str:
        name = self.name
        if name is None and isinstance(self.body, dict) and isinstance(self.body.get("name"), str):
            # A create names its resource only in the body: without it the log of a bug could
            # not tell which of several creates caused it. Bounded: the body is not validated yet.
            name = f"{self.body['name'][:100]} (new)"
        return f"{self.op} {self.kind.label} {name or '(new)'} by {self.principal.name}"

    def plan(self, ctx: PlanContext) -> TxnPlan:
        s, p = ctx.state, self.principal
        if self.op == "create":
            plan = s.plan_create(self.kind, self.body, self.source, principal=p)
        else:
            assert self.name is not None
            k, n, b, m, t = self.kind, self.name, self.body, self.if_match, self.team
            if self.op == "replace":
                plan = s.plan_replace(k, n, b, m, principal=p, team=t)
            elif self.op == "patch":
                plan = s.plan_patch(k, n, b, m, principal=p, team=t)
            else:
                plan = s.plan_delete(k, n, m, principal=p, team=t)
        action = {"create": "create", "replace": "update", "patch": "update"}.get(self.op, "delete")
        return resource_txn(ctx, p, plan, action, self.source)


def resource_txn(
    ctx: PlanContext, p: Principal, plan: Plan, action: str, source: str
) -> TxnPlan:
    """The transaction of one planned resource change by `p`: the extra validation, the row
    (or its deletion), the audit row and the history row under `action`, one transaction."""
    if plan.after is not None and ctx.validate is not None:
        ctx.validate(plan.kind, plan.after.xds_model)
    writes: list[Write] = (
        [Upsert(row_of(plan.after))]
        if plan.after is not None
        else [Delete(plan.kind.value, plan.key)]
    )
    subject = plan.after or plan.before
    team = (subject.team if subject else None) or NO_TEAM
    writes.append(
        audit_row(
            p,
            action,
            plan.kind.value,
            subject.name if subject else plan.key,
            subject.team if subject else None,
            plan.before.spec if plan.before else None,
            plan.after.spec if plan.after else None,
        )
    )
    writes.append(resource_history(p, action, plan))
    s = ctx.state
    return TxnPlan(
        writes,
        lambda: s.apply(plan),
        plan.after,
        (change_of(plan),),
        undo=lambda: s.apply(plan.inverse()),
        counted=((plan.kind.value, action_of(plan), source, team),),
    )


def action_of(plan: Plan) -> str:
    """create, update or delete: what `plan` does to its resource (a rollback does one too)."""
    return "create" if plan.before is None else ("delete" if plan.after is None else "update")


class Protect(Txn):
    """Mark resources as not deletable, with the reason a delete is refused (409). Only memory
    changes (protection is start-up policy, re-applied at every start), but it goes through the
    actor like every other change, so it cannot interleave with a command being planned."""

    def __init__(self, reasons: Mapping[Ref, str]) -> None:
        super().__init__()
        self.reasons = dict(reasons)

    def describe(self) -> str:
        return "protect " + ", ".join(str(r) for r in self.reasons)

    def plan(self, ctx: PlanContext) -> TxnPlan:
        return TxnPlan([], lambda: ctx.state.protected.update(self.reasons))


def change_of(plan: Plan) -> Change:
    """The snapshot builder's view of a plan: the resource's key and the model it translates."""
    return (plan.kind, plan.key, plan.after.xds_model if plan.after else None)


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
        owner=res.owner,
        schema_version=schema.current(res.kind.value),
    )


def resource_of(row: ResourceRow) -> StoredResource:
    kind = Kind(row.kind)
    what = f"stored {kind.label} {row.name!r}"
    spec = schema.REGISTRY.upgrade(row.kind, row.spec, row.schema_version, what)  # usually as is
    return StoredResource(
        kind=kind,
        name=row.name,
        team=row.team,
        version=row.version,
        source=row.source,
        spec=spec,
        created_at=row.created_at,
        updated_at=row.updated_at,
        model=parse_spec(kind, spec),
        owner=row.owner,
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
    repaired = state.repair_legacy_references()
    if repaired:
        # References stored before names were per team, in their new spelling: written back
        # in one transaction (same versions: the configuration they describe is unchanged).
        await repo.write([Upsert(row_of(r)) for r in repaired])
        log.info(
            "rewrote the references of %d stored resource(s) for per-team names: %s",
            len(repaired), ", ".join(str(r.ref) for r in repaired),
        )  # fmt: skip
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
        auth: AuthState,
        validate: Validate | None = None,
        *,
        mailbox_size: int = 256,
    ) -> None:
        self.repo = repo
        # `validate`: extra validation of a resource about to be stored (the app passes the xDS
        # translator, so nothing is stored that could not be served); raises to refuse.
        self.context = PlanContext(state, auth, validate)
        self.mailbox_size = mailbox_size
        self._subscribers: list[trio.MemorySendChannel[ConfigChange]] = []
        self._mailbox: trio.MemorySendChannel[Txn] | None = None
        self._inbox: trio.MemoryReceiveChannel[Txn] | None = None
        # Several replicas (actors/feed.py): when a write finds that another replica committed
        # first (`StaleState`), the command is planned again inside `exclusive()`, which holds
        # the database's change-log lock and brings memory up to the database first, so the
        # second plan is checked against the final state and its write cannot be stale.
        self.exclusive: Callable[[], AbstractAsyncContextManager[None]] | None = None

    @property
    def state(self) -> ConfigState:
        return self.context.state

    @property
    def auth(self) -> AuthState:
        return self.context.auth

    def subscribe(self, channel: trio.MemorySendChannel[ConfigChange]) -> None:
        """Every committed change is sent to `channel` (awaited: a full channel applies
        backpressure to writers rather than dropping changes)."""
        self._subscribers.append(channel)

    async def run(
        self, *, task_status: trio.TaskStatus[ConfigActor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        send, inbox = trio.open_memory_channel[Txn](self.mailbox_size)
        self._mailbox, self._inbox = send, inbox
        metrics.CONFIG_MAILBOX.set_function(lambda: send.statistics().current_buffer_used)
        task_status.started(self)
        async with inbox:
            while True:
                try:
                    first = await inbox.receive()
                except trio.EndOfChannel:
                    return
                # Group commit: resource commands already waiting join one transaction (one
                # fsync for all of them). Anything else is handled on its own, in order.
                group: list[Txn] = [first]
                while isinstance(group[-1], Command) and len(group) < MAX_GROUP:
                    try:
                        group.append(inbox.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                tail = group.pop() if not isinstance(group[-1], Command) else None
                if group:
                    await self._handle_group(group)
                if tail is not None:
                    await self._handle(tail)

    async def announce(self, changes: tuple[Change, ...]) -> None:
        """Publish changes another replica committed (the change feed applied them to memory;
        it calls this from inside the actor, as a `MemoryTxn`)."""
        if changes:
            self.state.serial += 1
            change = ConfigChange(self.state.serial, changes)
            for sub in self._subscribers:
                await sub.send(change)

    async def submit(self, cmd: Txn) -> Any:
        """Send `cmd` and wait for its outcome; raises the FlowplaneError it failed with."""
        if self._mailbox is None:
            raise StorageError("the config actor is not running")
        await self._mailbox.send(cmd)
        return await cmd.wait()

    async def _handle_group(self, cmds: list[Txn]) -> None:
        """Plan each command in order against the state the previous ones leave (so a later
        command sees an earlier one's resource), commit all their writes in one transaction,
        then make them visible in order. While the transaction is in flight the in-memory state
        is the committed one: tentative applications are undone before awaiting the database,
        so readers never see uncommitted configuration. A command that fails validation fails
        alone; a failed commit fails them all and changes nothing."""
        if len(cmds) == 1:
            await self._handle(cmds[0])
            return
        planned: list[tuple[Txn, TxnPlan]] = []
        for cmd in cmds:
            try:
                txn = cmd.plan(self.context)
            except FlowplaneError as err:
                cmd.resolve(err)
                continue
            except Exception as err:
                cmd.resolve(_bug(cmd, err))
                continue
            assert txn.undo is not None
            self._in_memory(cmd, txn.apply)
            planned.append((cmd, txn))
        for cmd, txn in reversed(planned):
            self._in_memory(cmd, txn.undo)  # type: ignore[arg-type]
        if not planned:
            return
        try:
            await self.repo.write([w for _, txn in planned for w in txn.writes])
        except WriteOutcomeUnknown as err:
            await self._settle(err, planned)
            return
        except StaleState:
            # Nothing was written: each command is planned again on its own, under the lock.
            for cmd, _ in planned:
                await self._handle(cmd, stale=True)
            return
        except Exception as err:
            failure = (
                err
                if isinstance(err, FlowplaneError)
                else Internal(f"internal error: {type(err).__name__}")
            )
            if not isinstance(err, FlowplaneError):
                metrics.ACTOR_FAILURES.labels("config").inc()
                log.exception(
                    "config actor failed to commit %d changes: %s",
                    len(planned), "; ".join(c.describe() for c, _ in planned),
                )  # fmt: skip
            for cmd, _ in planned:
                cmd.resolve(failure)
            return
        for cmd, txn in planned:
            await self._publish(cmd, txn)

    async def _settle(
        self, unknown: WriteOutcomeUnknown, planned: list[tuple[Txn, TxnPlan]]
    ) -> None:
        """A commit whose outcome is unknown: the callers are told so (503), but memory must
        match the database before the next command is planned against it. So the single writer
        asks the database until it answers, and applies the plans if they committed; commands
        arriving meanwhile wait (and time out) rather than plan against a state that may be
        stale."""
        for cmd, _ in planned:
            cmd.resolve(unknown)
        delay = 0.05
        while (outcome := await self.repo.write_outcome(unknown.write_id)) is None:
            self._refuse_waiting()
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)
        log.warning(
            "write %s, whose outcome was answered as unknown, %s: %s",
            unknown.write_id, "committed" if outcome else "did not commit",
            "; ".join(c.describe() for c, _ in planned),
        )  # fmt: skip
        if outcome:
            for cmd, txn in planned:
                await self._publish(cmd, txn, reply=False)

    def _refuse_waiting(self) -> None:
        """While an outcome is being settled, commands already waiting are answered at once
        (503, not applied) rather than waiting for a database that does not answer."""
        if self._inbox is None:
            return
        while True:
            try:
                cmd = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            cmd.resolve(
                StorageError(
                    "storage is unavailable (the outcome of an earlier write is not known yet):"
                    " the change was not applied",
                    headers={"Retry-After": "1"},
                )
            )

    async def _publish(self, cmd: Txn, txn: TxnPlan, *, reply: bool = True) -> None:
        """Make a committed change visible, count it, announce it, answer the caller (unless it
        was already answered: `_settle`). Runs in the command's trace and log fields."""
        with tracing.resumed(cmd.origin, "config.command", {"flowplane.command": cmd.describe()},
                             from_origin=True) as origin:  # fmt: skip
            self._in_memory(cmd, txn.apply, committed=True)
            if cmd.logged:
                log.info("committed: %s", cmd.describe())
            for labels in txn.counted:  # committed: a refused or failed command never gets here
                metrics.CONFIG_CHANGES.labels(*labels).inc()
            if txn.changes:
                self.state.serial += 1
                change = ConfigChange(self.state.serial, txn.changes, origin)
                for sub in self._subscribers:
                    await sub.send(change)
            if reply:
                cmd.resolve(txn.result)

    def _in_memory(self, cmd: Txn, step: Callable[[], None], *, committed: bool = False) -> None:
        """Run a plan's `apply` or `undo`. These never fail for a correct plan; if one does
        (a bug), memory may be half changed and no longer matches storage, so serving on would
        answer from a state that is not the database's: the actor stops the process instead
        (non-zero exit; a restart rebuilds memory from storage), after logging the command."""
        try:
            step()
        except Exception as err:
            metrics.ACTOR_FAILURES.labels("config").inc()
            log.critical(
                "config actor: %s could not be applied to memory%s; stopping the process"
                " (memory no longer matches storage; a restart rebuilds it)",
                cmd.describe(), " after its commit" if committed else "",
                exc_info=err,
            )  # fmt: skip
            cmd.resolve(Internal("internal error: the server is restarting"))
            raise InconsistentState(cmd.describe()) from err

    async def _handle(self, cmd: Txn, *, stale: bool = False) -> None:
        """Plan, commit, apply, announce, answer. `stale`: memory is known to be behind the
        database (the group this command was in was stale): plan it under the lock at once."""
        if isinstance(cmd, MemoryTxn):
            try:
                await cmd.run(self.context, self.repo)
            except FlowplaneError as err:
                cmd.resolve(err)
            except Exception as err:
                cmd.resolve(_bug(cmd, err))
            else:
                cmd.resolve(None)
            return
        txn: TxnPlan | None = None
        try:
            try:
                if stale:
                    raise StaleState("the command's group found memory behind the database")
                txn = cmd.plan(self.context)
                await self.repo.write(txn.writes)
            except StaleState as err:
                if self.exclusive is None:
                    raise
                # Another replica committed first; nothing was written. Plan again holding the
                # change-log lock, against memory brought up to the database under it.
                log.debug("re-planning %s: %s", cmd.describe(), err.message)
                txn = None
                async with self.exclusive():
                    txn = cmd.plan(self.context)
                    await self.repo.write(txn.writes)
        except WriteOutcomeUnknown as err:
            assert txn is not None
            await self._settle(err, [(cmd, txn)])
            return
        except FlowplaneError as err:
            cmd.resolve(err)
            return
        except Exception as err:  # a bug: report it to the caller, keep the actor alive
            cmd.resolve(_bug(cmd, err))
            return
        assert txn is not None
        await self._publish(cmd, txn)


class InconsistentState(RuntimeError):
    """Memory no longer matches storage (a plan's apply/undo raised): the process must stop."""


def _bug(cmd: Txn, err: Exception) -> Internal:
    """The supervision rule: log the command that hit a bug, count it, answer a 500."""
    metrics.ACTOR_FAILURES.labels("config").inc()
    log.error("config actor failed on %s", cmd.describe(), exc_info=err)
    return Internal(f"internal error: {type(err).__name__}")
