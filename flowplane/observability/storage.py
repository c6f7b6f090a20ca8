"""Storage metrics without touching the drivers: the composition root hands the repository to
`metered`, which times every public coroutine method of it
(`flowplane_storage_operation_seconds{operation}`) and counts the calls that raise
(`flowplane_storage_errors_total{operation,error}`).

`operation` is the repository method (write, load_all, query_audit, ping, ...): one call is one
query or one transaction, so this is the latency the actors and services wait for. `error` is
the exception's class name (StorageError, WriteOutcomeUnknown, ...). A cancelled call (a
deadline elsewhere) is neither timed nor counted as an error.

The timed methods are set on the instance itself (they shadow the class's), so the repository
stays what it is: its type, its other attributes and its internal calls are unchanged.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from flowplane.observability import metrics

T = TypeVar("T")


def _timed(operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
    seconds = metrics.STORAGE_SECONDS.labels(operation)

    @functools.wraps(call)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            result = await call(*args, **kwargs)
        except trio.Cancelled:
            raise
        except Exception as err:
            metrics.STORAGE_ERRORS.labels(operation, type(err).__name__).inc()
            seconds.observe(time.perf_counter() - t0)
            raise
        seconds.observe(time.perf_counter() - t0)
        return result

    return timed


def metered(repository: T) -> T:
    """`repository` itself, with every public coroutine method timed and its failures counted."""
    for name, _ in inspect.getmembers(type(repository), inspect.iscoroutinefunction):
        if not name.startswith("_"):
            setattr(repository, name, _timed(name, getattr(repository, name)))
    return repository
