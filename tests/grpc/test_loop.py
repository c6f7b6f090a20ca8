"""The batched trio-asyncio main loop (flowplane/grpc/loop.py) keeps asyncio's guarantees."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.lowlevel
import trio_asyncio

from flowplane.grpc import compat
from flowplane.grpc import loop as batched_loop


@pytest.fixture(autouse=True)
def _batched() -> None:
    """Install the patch as a server start does (nothing installs it at import)."""
    compat.install_batched_loop()
    assert compat.batched_loop_installed()


async def test_callbacks_run_in_order_and_trio_tasks_interleave() -> None:
    order: list[object] = []
    async with trio_asyncio.open_loop() as loop:
        done = trio.Event()

        async def trio_side() -> None:
            await trio.lowlevel.checkpoint()
            order.append("trio")

        async with trio.open_nursery() as nursery:
            n = 3 * batched_loop.BATCH
            for i in range(n):
                loop.call_soon(order.append, i)
            loop.call_soon(done.set)
            nursery.start_soon(trio_side)
            with trio.fail_after(5):
                await done.wait()
    numbers = [x for x in order if isinstance(x, int)]
    assert numbers == list(range(n))  # FIFO, none lost
    # the trio task ran before all callbacks finished: batches yield to trio
    assert order.index("trio") < len(order) - 1


async def test_timers_and_futures_still_work() -> None:
    async with trio_asyncio.open_loop() as loop:
        fired: list[str] = []

        async def aio() -> str:
            fut = loop.create_future()
            loop.call_later(0.02, fired.append, "late")
            loop.call_later(0.01, fired.append, "early")
            loop.call_later(0.03, fut.set_result, "ok")
            task = asyncio.ensure_future(asyncio.sleep(0.005))
            await task
            return await fut

        with trio.fail_after(5):
            assert await trio_asyncio.aio_as_trio(aio)() == "ok"
        assert fired == ["early", "late"]
