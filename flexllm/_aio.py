"""The async facade: run the sync core on a thread pool, copying contextvars (no second implementation)."""
from __future__ import annotations

import asyncio
import contextvars
import functools
import queue
import threading
from concurrent.futures import Executor
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from . import _cancel
from ._logging import get_logger

__all__ = ["aiter_in_thread", "run_in_thread", "run_stoppable"]

logger = get_logger("flexllm")
T = TypeVar("T")
_END = object()


async def run_in_thread(executor: Executor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await `fn(*args, **kwargs)` run on `executor`, with the caller's contextvars.

    Cancelling the await (task.cancel(), asyncio.wait_for's timeout) stops the call at its next wait:
    it never starts another attempt, and the concurrency slot of a request still on the wire is handed
    back at once (that request ends in its own thread and its reply is dropped; see `_cancel.Scope`).
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    scope = _cancel.Scope(abandon=True)
    ctx.run(_cancel.bind, scope)
    future = loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args, **kwargs))
    try:
        return await future
    except asyncio.CancelledError:
        scope.stop()
        raise


async def run_stoppable(executor: Executor, fn: Callable[..., T], stop: threading.Event,
                        abort: Callable[[], None]) -> T:
    """Await `fn()` (a whole batch) on `executor`; a cancelled await stops it the way Ctrl-C does.

    On cancel, `stop` is set (no new request or retry starts; answers in flight are still recorded) and
    the cancellation waits until `fn` has wound down, so the output file's lock is released by the time
    the caller sees CancelledError. A second cancel while winding down calls `abort` (drop the answers in
    flight, like a second Ctrl-C).
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    future = loop.run_in_executor(executor, functools.partial(ctx.run, fn))
    try:
        return await asyncio.shield(future)
    except KeyboardInterrupt:  # raised inside this task by the loop's SIGINT handler: out now
        stop.set()
        abort()
        raise
    except asyncio.CancelledError:
        stop.set()
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        if cancelling is not None and cancelling() > 1:
            abort()  # cancelled twice before it could run (asyncio.run after a second Ctrl-C): abandon at once
        elif not future.done():
            logger.warning("batch cancelled: no new requests start; waiting for those in flight to keep their "
                           "results (cancel again, or Ctrl-C again, to abandon them)")
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                abort()
            except BaseException:  # noqa: S110 - the caller is cancelled; its CancelledError wins
                break
        if future.done() and not future.cancelled():
            future.exception()  # retrieved: never logged as "exception never retrieved"
        raise


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
    # a consumer that leaves wakes the producer's retry sleep (no new attempt) and cuts its stalled stream
    scope = _cancel.Scope(stop, abandon=True)
    ctx.run(_cancel.bind, scope)
    wakeup = asyncio.Event()

    def notify() -> None:
        try:
            loop.call_soon_threadsafe(wakeup.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            stop.set()

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
        iterator = None
        try:
            iterator = make_iter()  # may raise at once (bad arguments, locked output file): handed over too
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
    future.add_done_callback(lambda _: wakeup.set())  # a producer that ended always wakes the consumer
    try:
        while True:
            try:
                ok, item = handoff.get_nowait()
            except queue.Empty:
                if future.done():  # ended without handing over an end marker or its error
                    if not future.cancelled() and future.exception() is not None:
                        raise future.exception() from None
                    raise RuntimeError("the producer thread ended without a result") from None
                wakeup.clear()
                if handoff.empty() and not future.done():
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
        scope.stop()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: never raises
