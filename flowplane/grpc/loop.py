"""Batch asyncio callbacks per trio scheduling round in trio-asyncio's loop (measured), and skip
its non-debug callback check in `call_soon` as asyncio itself does.

trio-asyncio 0.16 runs each asyncio callback in its own iteration of `_main_loop_one`: a cancel
scope, a memory-channel `receive()` and therefore a full trio checkpoint per callback. grpclib
schedules several callbacks per message, so at 1,000 streams a push costs thousands of trio
scheduling rounds; profiling showed trio's scheduler and this loop as the largest costs. Plain
asyncio runs every ready callback in one iteration; this does the same: after the callback the
original code takes, it runs the callbacks already queued (up to `BATCH`) without yielding, then
returns to trio (so trio tasks still get their turn, and timers are still checked each round).

Importing this module changes nothing: `flowplane.grpc.compat.install_batched_loop()` installs
`main_loop_one` and `call_soon` into trio-asyncio's loop class when an xDS server starts, after
checking that trio-asyncio is 0.16.0 (the replaced method is a copy of that version's
`_main_loop_one` plus the drain). `tests/grpc/test_loop.py` checks ordering, timers and the
asyncio invariants it relies on; `tests/grpc/test_compat.py` the trio-asyncio internals it reads.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from typing import Any

import trio
from sniffio import thread_local as sniffio_library
from trio_asyncio._handles import AsyncHandle

BATCH = 256


async def _run_one(self: Any, obj: Any) -> None:
    if isinstance(obj, AsyncHandle):
        obj._context.run(self._nursery.start_soon, obj._run, name=obj._callback)
        await obj._started.wait()
    elif not obj._cancelled:
        prev_library, sniffio_library.name = sniffio_library.name, "asyncio"
        try:
            obj._run()
        finally:
            sniffio_library.name = prev_library


async def main_loop_one(self: Any, no_wait: bool = False) -> None:
    """`BaseTrioEventLoop._main_loop_one` of trio-asyncio 0.16.0, then a drain of the queue."""
    obj = None
    if self._timers:
        timeout = self._timers[0]._when - self.time()
        if timeout <= 0:
            obj = heapq.heappop(self._timers)
    else:
        timeout = math.inf

    if obj is None:
        if no_wait:
            obj = self._q_recv.receive_nowait()
        else:
            with trio.move_on_after(timeout):
                obj = await self._q_recv.receive()
            if obj is None:
                return
        if isinstance(obj, asyncio.TimerHandle):
            heapq.heappush(self._timers, obj)
            return

    await _run_one(self, obj)
    # Drain what is already queued, in order, without a trio checkpoint per callback.
    for _ in range(BATCH):
        if self._stopped.is_set():
            return
        try:
            obj = self._q_recv.receive_nowait()
        except trio.WouldBlock:
            return
        if isinstance(obj, asyncio.TimerHandle):
            heapq.heappush(self._timers, obj)
            continue
        await _run_one(self, obj)


def call_soon(self: Any, callback: Any, *args: Any, **context: Any) -> asyncio.Handle:
    """`BaseTrioEventLoop.call_soon` of trio-asyncio 0.16.0, checking the callback in debug
    mode only."""
    # asyncio checks that a callback is not a coroutine only in debug mode; trio-asyncio 0.16
    # checks always, and that check (inspect machinery) was ~12% of a push's CPU.
    if self._debug:
        self._check_callback(callback, "call_soon")
    handle = asyncio.Handle(callback, args, self, **context)
    self._queue_handle(handle)
    return handle
