"""Storage metrics without touching the drivers: a proxy around the repository, made by the
composition root, that times every call (`flowplane_storage_operation_seconds{operation}`) and
counts the ones that raise (`flowplane_storage_errors_total{operation,error}`).

`operation` is the repository method (write, load_all, query_audit, ping, ...): one call is one
query or one transaction, so this is the latency the actors and services wait for. `error` is
the exception's class name (StorageError, WriteOutcomeUnknown, ...). A cancelled call (a
deadline elsewhere) is neither timed nor counted as an error.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import trio

from flowplane.observability import metrics

T = TypeVar("T")


class _Metered:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._wrapped: dict[str, Callable[..., Any]] = {}

    def __getattr__(self, name: str) -> Any:
        # only called for names not set on the proxy: the repository's methods and attributes
        attr = getattr(self._inner, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            wrapped = self._wrapped[name] = _timed(name, attr)
        return wrapped


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
    """`repository`, with every coroutine method timed and its failures counted."""
    return cast(T, _Metered(repository))
