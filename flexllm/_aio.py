"""The async facade: run the sync core on a thread pool, copying contextvars (no second implementation)."""
from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

__all__ = ["aiter_in_thread", "run_in_thread"]

T = TypeVar("T")
_END = object()


async def run_in_thread(executor: Executor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await `fn(*args, **kwargs)` run on `executor`, with the caller's contextvars."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    return await loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args, **kwargs))


async def aiter_in_thread(executor: Executor, make_iter: Callable[[], Iterator[T]],
                          maxsize: int = 64) -> AsyncIterator[T]:
    """Iterate a sync iterator on `executor`, handing items over through a bounded queue.

    Back-pressure: the producer thread blocks when `maxsize` items wait. When the consumer stops early
    (break, cancel, aclose) the producer is told, closes the sync iterator (so its HTTP response is
    released) and ends.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    handoff: "queue.Queue[Any]" = queue.Queue(maxsize)
    stop = threading.Event()
    wakeup = asyncio.Event()

    def notify() -> None:
        loop.call_soon_threadsafe(wakeup.set)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                notify()
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = make_iter()
        try:
            for item in iterator:
                if not put((True, item)):
                    break
            else:
                put((True, _END))
        except BaseException as exc:  # handed to the consumer, re-raised there
            put((False, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    future = loop.run_in_executor(executor, functools.partial(ctx.run, produce))
    try:
        while True:
            try:
                ok, item = handoff.get_nowait()
            except queue.Empty:
                wakeup.clear()
                if handoff.empty():
                    await wakeup.wait()
                continue
            if not ok:
                raise item
            if item is _END:
                break
            yield item
    finally:
        # tell the producer to stop; it closes the sync iterator (releasing the HTTP response) in its own
        # thread as soon as it wakes, so a cancelled consumer never waits on the network here
        stop.set()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: never raises
