"""The batch engine: a thread pool running the shared request pipeline over many conversations.

Items flow through a bounded window (≈ 2 × concurrency in flight or queued), so memory does not grow
with the batch; every finished item is appended to the checkpoint at once (see `_checkpoint`), and a
rerun on the same output file resumes (DESIGN §6).
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import _cancel
from ._budget import CostBudget, request_cost
from ._checkpoint import Checkpoint, OutputFileLockedError
from ._constants import BATCH_WINDOW_PER_WORKER
from ._intake import Intake, chunks, item_of
from ._items import ItemParams, redo_rule
from ._logging import get_logger
from ._messages import find_lone_surrogate
from ._stores import RateLimitStoreError
from ._workers import Workers
from .errors import AuthenticationError, QuotaExceededError
from .pricing import get_model_pricing
from .progress import BatchProgress
from .types import BatchResultItem, ChatCompletionResult

__all__ = ["BatchJob", "OutputFileLockedError"]

logger = get_logger("flexllm")

_LOOKAHEAD = 256  # items whose cache entries are fetched in one lookup


class BatchJob:
    """One run of a batch. `run()` yields items as they finish; `summary()` tells how it went."""

    def __init__(self, runner: Any, model: str, params: Dict[str, Any], *, output_file: Optional[str] = None,
                 metadata_list: Optional[Sequence[dict]] = None, show_progress: bool = True,
                 flush_interval: float = 1.0, skip_cache: bool = False, params_list: Any = None,
                 redo: Any = None, max_cost_usd: Optional[float] = None,
                 stop: Optional[threading.Event] = None) -> None:
        if redo is not None and not output_file:
            raise ValueError("redo= needs an output_file: it selects finished records of an earlier run to ask again")
        if redo is not None and output_file and Checkpoint.is_stream_path(os.fspath(output_file)):
            raise ValueError(f"redo= needs an output file a rerun can read back, not standard output, a pipe or a "
                             f"device ({str(output_file)!r})")
        self.redo = redo_rule(redo)
        self.params_list = params_list
        self.max_cost_usd = max_cost_usd
        self.budget: Optional[CostBudget] = None
        self.rate_budget: Dict[str, float] = {}  # the rate budget during this run (waits, tokens, 429s)
        self.cost = 0.0
        self.runner = runner
        self.model = model
        self.params = params
        self.output_file = output_file
        self.metadata_list = metadata_list
        self.show_progress = show_progress
        self.flush_interval = flush_interval
        self.skip_cache = skip_cache
        self.total: Optional[int] = None
        self.counts: Counter = Counter()
        self.errors: Counter = Counter()
        self.tokens: Counter = Counter()
        self.retries = 0
        self.stopped_reason: Optional[str] = None
        self._elapsed = 0.0
        self._stop = stop if stop is not None else threading.Event()  # set: no new request or retry starts
        self._scope = _cancel.Scope(self._stop)  # bound in every worker: a stop wakes their sleeps
        self._capped = threading.Event()  # the cost cap is reached: no new item starts (those under way finish)
        self._lock = threading.Lock()  # the counters (the file and the progress display own their locks)
        self._closed = False
        self._kept = 0  # answers that were in flight when the batch was stopped, and were kept

    # -- public --------------------------------------------------------------------------------------
    def run(self, messages_list: Iterable[Any]) -> Iterator[BatchResultItem]:
        """Validate, resume, run. Raises ValueError before any request when the inputs are unusable."""
        if hasattr(messages_list, "__len__"):
            self.total = len(messages_list)  # type: ignore[arg-type]
        self.items = ItemParams(self.model, self.params, self.params_list, self.total)
        self.intake = Intake(self.runner, self.items, self.metadata_list, self.total, self.skip_cache, self._invalid)
        if self.max_cost_usd is not None:
            self.budget = CostBudget(self.max_cost_usd, {self._priced(m) for m in self.items.models})
        checkpoint = None
        if self.output_file:
            checkpoint = Checkpoint(self.output_file, flush_interval=self.flush_interval, redo=self.redo).open()
            try:
                if self.total is not None and hasattr(messages_list, "__getitem__"):
                    entries = self.params_list if self.items.given and hasattr(self.params_list, "__getitem__") \
                        else None
                    checkpoint.validate(messages_list, self.total,
                                        (lambda i: self.items.plain(entries[i])) if entries is not None else None)
            except BaseException:
                checkpoint.close()
                raise
        return self._run(messages_list, checkpoint)

    def summary(self) -> Dict[str, Any]:
        """Counts, throughput, tokens, estimated cost, retries and errors by type of this run."""
        live = self.counts["success"] + self.counts["failed"]
        prompt, completion = self.tokens["prompt_tokens"], self.tokens["completion_tokens"]
        cost = self.cost  # each item at its own model's price; an unknown model counts 0.0
        out = {
            "total": self.total if self.total is not None else sum(self.counts.values()),
            "success": self.counts["success"],
            "cached": self.counts["cached"],
            "resumed": self.counts["resumed"],
            "failed": self.counts["failed"],
            "elapsed_s": round(self._elapsed, 3),
            "requests_per_s": round(live / self._elapsed, 2) if self._elapsed > 0 else 0.0,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": self.tokens["total_tokens"],
            "estimated_cost_usd": round(cost, 9),
            "retries": self.retries,
            "errors": dict(self.errors),
        }
        for key, value in self.rate_budget.items():
            out[key] = round(value, 3) if isinstance(value, float) else value
        if self.stopped_reason:
            out["stopped_reason"] = self.stopped_reason
        return out

    # -- engine --------------------------------------------------------------------------------------
    def _run(self, messages_list: Iterable[Any], checkpoint: Optional[Checkpoint]) -> Iterator[BatchResultItem]:
        started = time.perf_counter()
        workers = max(1, int(self.runner.concurrency_limit))
        window = workers * BATCH_WINDOW_PER_WORKER
        self._budget_snapshot = getattr(self.runner, "budget_snapshot", dict)
        self._rate_budget_at_start = self._budget_snapshot()
        progress = BatchProgress(self.total, enabled=self.show_progress,
                                 show_cost=self.budget is not None or get_model_pricing(self._priced(self.model)) is not None,
                                 status=getattr(self.runner, "budget_status", None))
        pool = Workers(workers, self._work, name="flexllm-batch",
                       initializer=functools.partial(_cancel.bind, self._scope), on_exit=self._stop.set)
        interrupted = consumer_left = completed = False
        restore = _cancel.sigterm_as_interrupt()
        try:
            # read ahead only when a cache can answer many items in one lookup; otherwise take items one
            # by one, so a slow input (a generator on a pipe) never holds back what has already arrived
            lookahead = _LOOKAHEAD if not self.skip_cache and self.runner.cache is not None else 1
            for chunk in chunks(self.items.pair(messages_list), lookahead):
                finished, todo = self.intake.prepare(chunk, checkpoint)
                if finished:
                    self._record_finished(finished, checkpoint, progress)
                    for item, _ in finished:
                        yield item
                for work in todo:
                    while pool.outstanding >= window:
                        done = pool.take()  # re-raises a failure to write the output file
                        if done is not None:
                            yield done
                    if self._stop.is_set() or self._capped.is_set():
                        break
                    pool.submit(*work, checkpoint, progress)
                if self._stop.is_set() or self._capped.is_set():
                    break
            while pool.outstanding:
                done = pool.take()
                if done is not None:
                    yield done
            completed = True
        except KeyboardInterrupt:
            interrupted = True
            self._stop.set()
            self.stopped_reason = "interrupted"
            self._drain(pool)  # queued items never start: the stop is checked before each one
            raise
        except GeneratorExit:  # the consumer stopped iterating: answers in flight are still written
            consumer_left = True
            self._stop.set()
            self.stopped_reason = "consumer stopped"
            raise
        finally:
            restore()
            if self._stop.is_set() and self.stopped_reason is None:
                self.stopped_reason = "cancelled"
            in_flight = pool.running
            close = functools.partial(self._close, pool, in_flight, progress, checkpoint, started,
                                      interrupted, completed and not self._stop.is_set())
            if consumer_left and pool.outstanding and not sys.is_finalizing():  # never make a `break` wait
                if in_flight and checkpoint is not None:
                    logger.warning("batch stopped by its consumer: %d request(s) in flight will be kept in %s when "
                                   "they finish; items not started are not; rerun to resume", in_flight,
                                   checkpoint.path)
                elif in_flight:  # no output file: nothing is kept, nothing can be resumed
                    logger.warning("batch stopped by its consumer: %d request(s) in flight finish in the background "
                                   "and their answers are dropped (no output_file)", in_flight)
                threading.Thread(target=close, name="flexllm-batch-close").start()
            else:
                close()

    def _close(self, pool: Workers, in_flight: int, progress: BatchProgress, checkpoint: Optional[Checkpoint],
               started: float, interrupted: bool, compact: bool) -> None:
        """Let the requests in flight record their answers, then close progress and file (and compact)."""
        if not interrupted:
            self._kept += pool.drain()
        pool.close(wait=not interrupted)
        self._elapsed = time.perf_counter() - started
        start = self._rate_budget_at_start
        self.rate_budget = {k: v - start.get(k, 0) for k, v in self._budget_snapshot().items()}
        with self._lock:
            self._closed = True
        progress.close()
        if checkpoint is not None:
            checkpoint.close(compact=compact)
        if self.intake.meta_differs:
            logger.warning("%d resumed item(s) kept the metadata stored with them, which differs from "
                           "metadata_list (delete their records to redo them with the new metadata)",
                           self.intake.meta_differs)
        if checkpoint is not None and (interrupted or (in_flight and self.stopped_reason == "consumer stopped")):
            kept = self._kept
            logger.warning("batch %s: results so far are kept in %s (%d answer(s) that were in flight "
                           "included); rerun to resume", "interrupted" if interrupted else "stopped by its consumer",
                           checkpoint.path, kept)

    def _drain(self, pool: Workers) -> None:
        """After Ctrl-C/SIGTERM: keep the answers already on their way; a second Ctrl-C abandons them."""
        if not pool.outstanding:
            return
        logger.warning("interrupted: waiting for %d request(s) in flight to keep their results "
                       "(Ctrl-C again to abandon them)", pool.running)
        try:
            self._kept += pool.drain()
        except KeyboardInterrupt:
            abort = getattr(self.runner, "abort", None)
            if abort is not None:
                abort()  # fail the rest now instead of waiting up to their timeout

    def _work(self, index: int, messages: List[dict], meta: Optional[dict], model: str, params: Dict[str, Any],
              plain: Optional[dict], checkpoint: Optional[Checkpoint],
              progress: BatchProgress) -> Optional[BatchResultItem]:
        """Run one item on a worker thread and record it there at once (file, counters, progress)."""
        if self._stop.is_set() or self._capped.is_set():
            return None
        budget, hold = self.budget, None
        if budget is not None:
            hold = budget.reserve(messages, self._priced(model), params)
            if hold is None:
                self._stop_for_budget()
                return None
            if self._stop.is_set():  # stopped (Ctrl-C, quota) while it waited for the first reply
                budget.settle(hold, 0.0)
                return None
        started = time.perf_counter()
        try:
            outcome = self.runner.complete(messages, model, params, skip_cache=self.skip_cache, read_cache=False)
        except _cancel.Interrupted:  # the batch stopped while this item waited to retry: not finished
            if hold is not None:
                budget.settle(hold, 0.0)
            return None
        except Exception as exc:  # recorded as this item's error; the batch goes on
            paid = getattr(exc, "usage", None) if isinstance(getattr(exc, "usage", None), dict) else None
            cost = request_cost(paid, self._priced(model))  # replies that failed validation were paid for
            if hold is not None:
                budget.settle(hold, cost, paid)
            attempts = getattr(exc, "attempts", 1)
            kind, error = type(exc).__name__, f"{type(exc).__name__}: {exc}"
            if "UnicodeEncodeError" in error or isinstance(exc, UnicodeError):  # looked for on failure only
                found = find_lone_surrogate(messages)  # e.g. half of a JSON \ud83d\ude00 escape pair
                if found:
                    kind, error = "ValueError", (f"ValueError: item {index}: its messages hold {found}, which is "
                                                 "not valid Unicode and cannot be sent; fix the input")
            item = BatchResultItem(index, None, paid, "error", error, time.perf_counter() - started, meta,
                                   attempts=attempts, params=plain)
            with self._lock:
                self.retries += max(0, attempts - 1)
                self.errors[kind] += 1
                refused = isinstance(exc, AuthenticationError) and exc.status_code == 401  # the key: every item
                if (refused or isinstance(exc, (QuotaExceededError, RateLimitStoreError))) and not self._stop.is_set():
                    self.stopped_reason = (f"quota exhausted: {exc}" if isinstance(exc, QuotaExceededError)
                                           else f"authentication failed: {exc}" if refused
                                           else f"rate-limit store unusable: {exc.message}")
                    logger.error("stopping the batch early: %s (finished results are kept; rerun later to "
                                 "resume)", exc)
                    self._stop.set()
            self._record(item, checkpoint, progress, messages, cost)
            return item
        r: ChatCompletionResult = outcome.result
        cost = 0.0 if outcome.cached else request_cost(r.usage, self._priced(model))
        if hold is not None:
            budget.settle(hold, cost, r.usage)
        item = item_of(index, r, "cached" if outcome.cached else "success", outcome.latency, meta, outcome.attempts,
                     plain)
        with self._lock:
            self.retries += max(0, outcome.attempts - 1)
        self._record(item, checkpoint, progress, messages, cost)
        return item

    def _stop_for_budget(self) -> None:
        """No new item starts; requests under way (their reservations fit) finish and are recorded."""
        with self._lock:
            if self._stop.is_set() or self._capped.is_set():
                return
            self.stopped_reason = "budget"
            self._capped.set()
        logger.warning("stopping the batch: max_cost_usd=%s would be passed (spent $%.4f); finished results are "
                       "kept, rerun with a higher cap to resume", self.budget.cap if self.budget else None,
                       self.budget.spent if self.budget else 0.0)

    def _priced(self, model: str) -> str:
        """The model name prices are looked up by (a pool's items run on its endpoints' model)."""
        return model or getattr(self.runner, "model", None) or ""

    def _record(self, item: BatchResultItem, checkpoint: Optional[Checkpoint], progress: BatchProgress,
                messages: Any = None, cost: float = 0.0) -> None:
        """Count, write and show one finished item, from any thread (counters, file and display each lock)."""
        with self._lock:
            if self._closed:
                return  # a straggler finishing after the batch ended: nothing is written any more
            status = "resumed" if item.resumed else ("failed" if item.status == "error" else item.status)
            self.counts[status] += 1
            self.cost += cost
            if item.status != "cached" and item.usage and not item.resumed:  # tokens paid in this run only
                for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                    value = item.usage.get(key)
                    if isinstance(value, int):
                        self.tokens[key] += value
        if checkpoint is not None and not item.resumed:
            checkpoint.write(item, messages)
        tokens = (item.usage or {}).get("total_tokens") or 0
        progress.advance(item.status, tokens if isinstance(tokens, int) else 0, item.resumed, cost)

    def _record_finished(self, finished: List[Tuple[BatchResultItem, Any]], checkpoint: Optional[Checkpoint],
                         progress: BatchProgress) -> None:
        """`_record` for a chunk's items finished without a request (resumed, invalid, cached): one lock
        and one progress update for the lot. They cost nothing and their tokens were paid earlier."""
        with self._lock:
            if self._closed:
                return
            counts = self.counts
            for item, _ in finished:
                counts["resumed" if item.resumed else ("failed" if item.status == "error" else item.status)] += 1
        if checkpoint is not None:
            for item, messages in finished:
                if not item.resumed:
                    checkpoint.write(item, messages)
        progress.advance_many([item for item, _ in finished])

    def _invalid(self) -> None:
        """Count an item refused before any request (bad messages or params) in the errors by type."""
        with self._lock:
            self.errors["ValueError"] += 1
