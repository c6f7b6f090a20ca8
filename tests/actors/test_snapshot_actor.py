"""The snapshot actor in virtual time: its debounce, and its supervision rule.

Rule (flowplane/actors/snapshots.py): "every change that arrives within `debounce_seconds` of
the first goes into one build", published through `publish`. And: a batch the builder refuses,
or that raises, "is logged with its serial and the resources it touched, and counted ...; the
builder is left unchanged, the previous snapshot stays published (xds rule 16) and the actor
keeps serving."

A real `SnapshotBuilder` (the xDS translator) is fed `ConfigChange`s through a trio memory
channel, as the config actor feeds it. Nothing here touches a thread or a socket, so trio's
`autojump_clock` (pytest-trio uses a clock only when the test itself takes the fixture) runs
every wait in virtual time: no test sleeps for real, and publish times are exact.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from google.protobuf.message import Message
from prometheus_client import REGISTRY
from pydantic import BaseModel
from trio.testing import MockClock

from flowplane.actors.config import ConfigChange
from flowplane.actors.snapshots import SnapshotActor
from flowplane.domain.resources import Kind, parse_spec
from flowplane.testing.factories import cluster_body, listener_body, route_config_body
from flowplane.xds.builder import SnapshotBuilder, Translate
from flowplane.xds.snapshot import Snapshot
from flowplane.xds.translate import translate_resource
from flowplane.xds.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE

WINDOW = 1.0  # the debounce window under test, in (virtual) seconds

BODIES: dict[Kind, Callable[..., dict[str, Any]]] = {
    Kind.CLUSTER: cluster_body,
    Kind.ROUTE_CONFIG: route_config_body,
    Kind.LISTENER: listener_body,
}


@dataclass
class Published:
    """A recording `publish` callable: (virtual time, snapshot) per call."""

    calls: list[tuple[float, Snapshot]] = field(default_factory=list)

    def __call__(self, snapshot: Snapshot) -> None:
        self.calls.append((trio.current_time(), snapshot))

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.calls]

    @property
    def last(self) -> Snapshot:
        return self.calls[-1][1]


@dataclass
class Feed:
    """The config actor's side of the channel: numbered changes, one resource each."""

    actor: SnapshotActor
    send: trio.MemorySendChannel[ConfigChange]
    serial: int = 0

    async def change(self, kind: Kind, name: str, *args: Any) -> int:
        """Announce that `kind` `name` was created or replaced (body from the factories)."""
        model: BaseModel = parse_spec(kind, BODIES[kind](name, *args))
        self.serial += 1
        await self.send.send(ConfigChange(self.serial, ((kind, name, model),)))
        return self.serial

    async def settled(self) -> None:
        """Wait until the actor has handled every change sent so far."""
        with trio.fail_after(60):  # virtual seconds: a hang fails at once, not after a minute
            await self.actor.caught_up(self.serial)


@asynccontextmanager
async def running(
    translate: Translate = translate_resource, debounce: float = WINDOW
) -> AsyncIterator[tuple[Feed, Published]]:
    published = Published()
    actor = SnapshotActor(SnapshotBuilder(translate), published, debounce_seconds=debounce)
    send, receive = trio.open_memory_channel[ConfigChange](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run, receive)
        async with send:
            yield Feed(actor, send), published
        # The channel is closed: the actor ends on EndOfChannel, and the nursery with it.


def names(snapshot: Snapshot, type_url: str) -> set[str]:
    return set(snapshot.resources(type_url))


def failures(actor: str) -> float:
    return REGISTRY.get_sample_value("flowplane_actor_failures_total", {"actor": actor}) or 0.0


def refused() -> float:
    return REGISTRY.get_sample_value("flowplane_snapshot_failures_total") or 0.0


# -- debounce ------------------------------------------------------------------------------------


async def test_changes_within_the_window_make_one_publish_and_a_later_change_another(
    autojump_clock: MockClock,
) -> None:
    """Every change arriving within the window of the first joins one build, published when the
    window closes; a change after the window starts a new window and a second publish."""
    async with running() as (feed, published):
        t0 = trio.current_time()
        # A cluster, the route configuration naming it and the listener naming that: only
        # consistent together, so one snapshot holding all three is the proof of one build.
        await feed.change(Kind.CLUSTER, "c1")
        await trio.sleep(0.4)
        await feed.change(Kind.ROUTE_CONFIG, "routes", "c1")
        await trio.sleep(0.5)
        await feed.change(Kind.LISTENER, "edge", "routes")
        await feed.settled()
        assert [t - t0 for t in published.times] == [pytest.approx(WINDOW)]
        first = published.last
        assert names(first, CLUSTER_TYPE) == {"c1"}
        assert names(first, ROUTE_TYPE) == {"routes"}
        assert names(first, LISTENER_TYPE) == {"edge"}

        await trio.sleep(0.2)  # t0 + 1.2: after the window
        await feed.change(Kind.CLUSTER, "c2", 9090)
        await feed.settled()
        assert [t - t0 for t in published.times] == [
            pytest.approx(WINDOW),
            pytest.approx(1.2 + WINDOW),
        ]
        assert names(published.last, CLUSTER_TYPE) == {"c1", "c2"}
        assert names(published.last, LISTENER_TYPE) == {"edge"}  # kept from the first build


async def test_the_window_counts_from_the_first_change_not_the_latest(
    autojump_clock: MockClock,
) -> None:
    """A steady stream of changes cannot postpone publishing: one build per window, timed from
    the first change of the window."""
    async with running() as (feed, published):
        t0 = trio.current_time()
        for i in range(8):  # a change every 0.3 s, from t0 to t0 + 2.1
            await feed.change(Kind.CLUSTER, f"c{i}", 8000 + i)
            await trio.sleep(0.3)
        await feed.settled()
        # Windows open at 0 (changes at 0, 0.3, 0.6, 0.9) and at 1.2 (1.2, 1.5, 1.8, 2.1).
        assert [t - t0 for t in published.times] == [
            pytest.approx(WINDOW),
            pytest.approx(1.2 + WINDOW),
        ]
        first, second = (s for _, s in published.calls)
        assert names(first, CLUSTER_TYPE) == {"c0", "c1", "c2", "c3"}
        assert names(second, CLUSTER_TYPE) == {f"c{i}" for i in range(8)}


async def test_a_change_alone_is_published_one_window_after_it_arrived(
    autojump_clock: MockClock,
) -> None:
    async with running() as (feed, published):
        await trio.sleep(5)  # idle: nothing is published without a change
        assert published.calls == []
        t1 = trio.current_time()
        await feed.change(Kind.CLUSTER, "c1")
        await feed.settled()
        assert published.times == [pytest.approx(t1 + WINDOW)]


# -- supervision ---------------------------------------------------------------------------------


def exploding_on(name: str) -> Translate:
    """The real translator, with a bug for one resource name."""

    def translate(kind: Kind, model: BaseModel) -> list[tuple[str, str, Message]]:
        if getattr(model, "name", None) == name:
            raise RuntimeError(f"translator bug on {name}")
        return translate_resource(kind, model)

    return translate


async def test_an_exception_in_a_build_keeps_the_previous_snapshot_and_the_actor_serving(
    caplog: pytest.LogCaptureFixture, autojump_clock: MockClock
) -> None:
    """Supervision rule: the batch is logged with its serial and what it touched, counted in
    flowplane_actor_failures_total{actor="snapshot"}; the previous snapshot stays published and
    the next good change is published."""
    async with running(exploding_on("boom")) as (feed, published):
        await feed.change(Kind.CLUSTER, "c1")
        await feed.settled()
        good = published.last
        bugs, refusals = failures("snapshot"), refused()

        await trio.sleep(2 * WINDOW)  # alone in its window: no good change shares its fate
        serial = await feed.change(Kind.CLUSTER, "boom")
        await feed.settled()
        assert len(published.calls) == 1
        assert feed.actor.current is good and feed.actor.builder.snapshot is good
        assert failures("snapshot") == bugs + 1
        assert refused() == refusals + 1
        [record] = [r for r in caplog.records if r.name == "flowplane.actors.snapshots"]
        assert record.levelno == logging.ERROR
        assert f"serial {serial}" in record.getMessage()
        assert "cluster 'boom'" in record.getMessage()
        assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)

        await trio.sleep(2 * WINDOW)
        await feed.change(Kind.CLUSTER, "c2", 9090)
        await feed.settled()
        assert len(published.calls) == 2
        assert names(published.last, CLUSTER_TYPE) == {"c1", "c2"}  # and never 'boom'
        assert failures("snapshot") == bugs + 1


async def test_a_batch_the_builder_refuses_is_counted_but_is_no_actor_failure(
    caplog: pytest.LogCaptureFixture, autojump_clock: MockClock
) -> None:
    """A `FlowplaneError` from the builder (here: a route configuration naming a cluster that
    does not exist, which the config actor would have refused) is a refused batch: logged and
    counted in flowplane_snapshot_failures_total, not as an unexpected exception; the previous
    snapshot stays published and the actor keeps serving."""
    async with running() as (feed, published):
        await feed.change(Kind.CLUSTER, "c1")
        await feed.settled()
        good = published.last
        bugs, refusals = failures("snapshot"), refused()

        await trio.sleep(2 * WINDOW)
        await feed.change(Kind.ROUTE_CONFIG, "routes", "missing")
        await feed.settled()
        assert feed.actor.current is good and len(published.calls) == 1
        assert refused() == refusals + 1
        assert failures("snapshot") == bugs
        [record] = [r for r in caplog.records if r.name == "flowplane.actors.snapshots"]
        assert "route config 'routes'" in record.getMessage()
        assert "missing" in record.getMessage()

        await trio.sleep(2 * WINDOW)
        await feed.change(Kind.ROUTE_CONFIG, "routes", "c1")
        await feed.settled()
        assert names(published.last, ROUTE_TYPE) == {"routes"}


async def test_good_changes_in_the_window_of_a_bad_one_are_still_published(
    autojump_clock: MockClock,
) -> None:
    """A refused batch is retried one change at a time, in commit order: only the failing
    change is left out, so a committed good change is served now (it would not come again)."""
    async with running(exploding_on("boom")) as (feed, published):
        await feed.change(Kind.CLUSTER, "c1")
        await feed.change(Kind.CLUSTER, "boom")
        await feed.change(Kind.CLUSTER, "c2", 9090)
        await feed.settled()
        assert names(published.last, CLUSTER_TYPE) == {"c1", "c2"}
        assert feed.actor.current is published.last
