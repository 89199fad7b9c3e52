"""The batch engine's worker threads: a ThreadPoolExecutor whose threads each run one long loop.

Submitting every item to the executor built a Future (a Condition and its lock), a work item and a done
callback per item and passed an idle semaphore around: at concurrency 50 that dispatch was most of the
client's own CPU per live request. Here the executor runs one loop per thread (one Future per thread, not
per item); a job is a tuple on one queue and its outcome a tuple on another, and the thread that submits
(the batch's consumer) is the only one that counts what is outstanding.
"""
from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import weakref
import concurrent.futures.thread
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, List, Optional, Tuple

__all__ = ["Workers", "default_policy"]

_STOP = None  # the sentinel a worker exits on
_GATHER = 64  # outcomes the consumer waits for at most before it wakes (fewer while jobs run low)
_LINGER = 0.05  # seconds the consumer waits for them at most: the delay an outcome can see before it is taken


class Workers:
    """Up to `size` threads running `fn(*job)`; each outcome `(result, exception)` is handed to `take`.

    Threads start as jobs arrive (never more than the jobs outstanding), so a small batch on a client with
    a large concurrency starts few. Not thread-safe on the submitting side: one thread submits and takes.
    """

    def __init__(self, size: int, fn: Callable[..., Any], *, name: str,
                 initializer: Optional[Callable[[], None]] = None,
                 on_exit: Optional[Callable[[], None]] = None) -> None:
        self.size = max(1, size)
        self._on_exit = on_exit  # called if the interpreter exits while this pool is open (stop the batch)
        self.outstanding = 0  # submitted and not yet taken
        self._done: "collections.deque[Tuple[Any, Optional[BaseException]]]" = collections.deque()
        self._want = 0  # > 0: the consumer sleeps until this many outcomes are ready (a worker rings then)
        self._bell: "queue.SimpleQueue[bool]" = queue.SimpleQueue()
        self._jobs: "queue.SimpleQueue[Optional[tuple]]" = queue.SimpleQueue()
        self._fn = fn
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix=name, initializer=initializer)
        self._name, self._initializer = name, initializer
        self._loops: List[Any] = []  # one Future (or Thread, see _start) per thread, each running `_loop`
        self._busy: List[bool] = []  # per thread: running a job now (one list store per job, no lock)
        self._closed = False
        self._owner = threading.current_thread()  # the thread that submits and takes
        _live.add(self)

    def submit(self, *job: Any) -> None:
        """Queue one job (a worker picks it up as soon as one is free)."""
        self.outstanding += 1
        self._jobs.put(job)  # first: a thread started below finds it at once instead of sleeping for it
        if len(self._loops) < min(self.size, self.outstanding):
            self._busy.append(False)
            self._loops.append(self._start(len(self._loops)))

    def _start(self, slot: int) -> Any:
        """One more thread running `_loop`: the executor's; or, once the main thread has returned (the
        executor then refuses any work, so that exit does not wait on idle pools), a thread of our own —
        the batch's own non-daemon thread is still running and the interpreter waits for both."""
        try:
            return self._executor.submit(self._loop, slot)
        except RuntimeError:
            if not getattr(concurrent.futures.thread, "_shutdown", False):
                raise
        def run() -> None:
            if self._initializer is not None:
                self._initializer()
            self._loop(slot)

        thread = threading.Thread(target=run, name=f"{self._name}_{slot}")
        thread.start()
        return thread

    @property
    def running(self) -> int:
        """Jobs a thread is running now (the rest of `outstanding` are queued, or done and not taken)."""
        return sum(self._busy)

    def take(self) -> Any:
        """The next outcome (blocking; interruptible by Ctrl-C): the job's result, or its exception raised."""
        done = self._done
        while not done:
            queued = self._jobs.qsize()  # wake for enough outcomes to refill half the queued jobs, at most _GATHER
            self._sleep(max(1, min(_GATHER, self.outstanding, queued // 2 if queued else _GATHER)), _LINGER)
        result, exc = done.popleft()
        self.outstanding -= 1
        if exc is not None:
            raise exc
        return result

    def _sleep(self, want: int, timeout: float) -> bool:
        """Sleep until `want` outcomes are ready, at most `timeout`; False when it timed out.

        Not one wake-up per outcome: at concurrency 1,000 that made the consumer a thousand context switches
        a second. `_want` is set before the check, so a worker finishing meanwhile is never missed."""
        self._want = want
        try:
            if len(self._done) >= want:
                return True
            try:
                self._bell.get(timeout=timeout)
                return True
            except queue.Empty:
                return False
        finally:
            self._want = 0
            while True:  # a bell rung twice (two workers saw `_want` together) is not heard twice
                try:
                    self._bell.get_nowait()
                except queue.Empty:
                    break

    def drain(self) -> int:
        """Wait until every outstanding job is done (interruptible); how many had a result (not None).

        Exceptions are dropped: this is for a batch that is stopping. A Ctrl-C landing between taking an
        outcome and the count could leave `outstanding` one too high, so an idle pool with nothing left
        ends the wait instead of blocking forever.
        """
        kept = 0
        done = self._done
        while self.outstanding > 0:
            if not done:
                if not self._sleep(1, 1.0) and not done and self._jobs.empty() and not any(self._busy):
                    self.outstanding = 0
                continue
            result, exc = done.popleft()
            self.outstanding -= 1
            if exc is None and result is not None:
                kept += 1
        return kept

    def close(self, wait: bool = True) -> None:
        """Let every thread exit once the queued jobs are done; `wait` joins them."""
        if not self._closed:
            self._closed = True
            _live.discard(self)
            for _ in self._loops:
                self._jobs.put(_STOP)
        self._executor.shutdown(wait=wait)
        if wait:
            for loop in self._loops:
                if isinstance(loop, threading.Thread) and loop is not threading.current_thread():
                    loop.join()

    def _exiting(self) -> None:
        """The interpreter is exiting with this pool open (a batch iterator left unfinished): queued jobs
        are dropped, running ones finish, and every thread ends, so the exit does not wait forever."""
        if self._on_exit is not None:
            self._on_exit()
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        self.close(wait=False)

    def _loop(self, slot: int) -> None:
        _as_batch_work()
        get, put, fn, busy, done = self._jobs.get, self._done.append, self._fn, self._busy, self._done
        while True:
            job = get()
            if job is _STOP:
                return
            busy[slot] = True
            try:
                outcome: Tuple[Any, Optional[BaseException]] = (fn(*job), None)
            except BaseException as exc:  # handed to the submitting thread, which re-raises it
                outcome = (None, exc)
            busy[slot] = False
            put(outcome)
            want = self._want
            if want and len(done) >= want:  # the consumer sleeps until this many are ready: ring once
                self._want = 0
                self._bell.put(True)
            del job, outcome


@contextlib.contextmanager
def default_policy() -> Iterator[None]:
    """The calling thread under the default policy meanwhile: a thread it starts (sqlitedict's writer, opened
    by the first cache write, which may come from a batch worker) must not inherit SCHED_BATCH and keep it
    after the batch."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or os.sched_getscheduler(0) != batch:
        yield
        return
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    try:
        yield
    finally:
        try:
            os.sched_setscheduler(0, batch, os.sched_param(0))
        except OSError:
            pass


def _as_batch_work() -> None:
    """Mark the calling worker thread (only it) SCHED_BATCH on Linux: the same priority and nice value,
    but waking up does not preempt the running thread. A reply waking one of 1,000 workers used to
    preempt whichever thread held the GIL, only to block on the GIL at once (two context switches for
    nothing); measured at concurrency 1,000 this cut involuntary switches per request from ~1.4 to ~0.3.
    Nothing process-wide changes, and the policy ends with the thread (at the end of the batch)."""
    if hasattr(os, "SCHED_BATCH"):
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: this thread, not the process
        except OSError:  # a sandbox that forbids it: the default policy is as correct, only slower
            pass


_live: "weakref.WeakSet[Workers]" = weakref.WeakSet()  # pools not closed yet


def _at_exit() -> None:
    # only pools whose consumer is gone (the main thread has finished, or its thread ended): a batch that a
    # live thread is still running finishes and closes its pool itself before the interpreter joins it
    main = threading.main_thread()
    for pool in list(_live):
        if pool._owner is main or not pool._owner.is_alive():
            pool._exiting()


# like concurrent.futures' own hook: runs before the interpreter joins the executor's threads (registered
# after it, so called before it), which would otherwise wait on loops that no job or sentinel will reach
try:
    threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # an interpreter without the hook, or one already exiting
    pass
