"""Provider batch mode: half-price batches that a cron job submits, leaves, and collects on its next run.

`client.submit_batch(messages_list, output_file=...)` (and `flexllm batch --provider-batch`) does, in one
run: (1) read the ledger `<output>.batches` (format in `flexllm._batch_ledger`) and the output file;
(2) resolve submissions a killed run left half-done (list the provider's batches, match our tag);
(3) collect every finished provider batch into the output file (same record format as live batches,
plus `"via": "provider-batch"`) and the response cache; (4) submit every item that is neither done nor
in flight, split to the provider's caps, one model per batch; (5) return a summary. With `wait=True` it
polls until nothing is in flight. Items of expired, failed or cancelled batches are free again and are
submitted by the next run; per-item errors are recorded like live errors (and retried by the next run).
Each run submits an item at most once.

The ledger `<output>.batches` is JSON Lines, one event per line, appended with one whole-line write each
(every line: `"v": 1, "event", "tag", "time"`): `intent` (provider, model, indexes as compact ranges
"0-99,120", n, bytes, file_id; written before `create`), `created` (batch_id, expires_at), `abandoned`
(no batch exists for the intent), `status` (the provider's status name, counts), `fallback` (sent live),
`collected` (status, succeeded, errored, returned). Full format: `flexllm._batch_ledger`.

Crash safety: the payload is uploaded first; an `intent` line (with a unique tag that also goes into
the provider batch's metadata) is on disk before `create`; `created` right after. A run killed between
the two is resolved by the next run from the provider's list of batches, so an item is never in two
live batches without the ledger knowing. Results are appended before the `collected` line, and items
already done are skipped, so a run killed during download loses nothing and writes nothing twice.
"""
from __future__ import annotations

import glob
import os
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ._batch_api import BatchCaller, batch_api_for, custom_id
from ._batch_ledger import Ledger, LedgerBatch
from ._batch_submit import SubmitMixin
from ._cancel import sigterm_as_interrupt
from ._checkpoint import Checkpoint
from ._logging import get_logger
from ._results import cache_entry, wire_params
from .errors import LLMError, NotFoundError
from .pricing import BATCH_DISCOUNT, get_model_pricing, usage_cost
from .progress import BatchProgress
from .providers.batch_base import TERMINAL, BatchState
from .structured import fill_parsed, response_schema
from .types import BatchResultItem

__all__ = ["ProviderBatchJob"]

logger = get_logger("flexllm")

VIA = "provider-batch"
GONE = "gone"  # our state for a batch the provider no longer knows (HTTP 404)


def _iso(ts: Optional[float]) -> Optional[str]:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds") if ts else None


class ProviderBatchJob(SubmitMixin):
    """One run of provider batch mode over one output file (see the module docstring); submitting is in
    `_batch_submit`, collecting and the records here."""

    def __init__(self, client: Any, model: str, params: Dict[str, Any], *, output_file: str,
                 metadata_list: Optional[Sequence[Any]] = None, wait: bool = False,
                 fallback_online_after: Optional[float] = None, poll_interval: float = 30.0,
                 show_progress: bool = False, skip_cache: bool = False, max_requests: Optional[int] = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 stop: Optional[threading.Event] = None, max_batch_attempts: Optional[int] = 3) -> None:
        if not output_file:
            raise ValueError("provider batch mode needs output_file= (results and the ledger live beside it)")
        if Checkpoint.is_stream_path(os.fspath(output_file)):
            raise ValueError(f"submit_batch (--provider-batch) needs a regular output file, not standard output, a "
                             f"pipe or a device ({str(output_file)!r}): later runs collect into it and keep their "
                             "ledger beside it")
        if fallback_online_after is not None and not fallback_online_after >= 0:  # NaN too
            raise ValueError(f"fallback_online_after must be >= 0 hours, got {fallback_online_after!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) \
                or not 0 < poll_interval < float("inf"):  # 0 would poll the provider in a hot loop
            raise ValueError(f"poll_interval must be a finite number of seconds > 0, got {poll_interval!r}")
        live_only = sorted(k for k in ("params_list", "redo", "max_cost_usd", "return_summary", "flush_interval")
                           if k in params)
        if live_only:
            raise ValueError(f"submit_batch does not take {', '.join(live_only)} (live batches do)")
        per_call = sorted(k for k in ("extra_headers", "anthropic_beta") if params.get(k))
        if per_call:  # the requests are the batch's (upload, create, poll), never one item's: never drop them
            raise ValueError(f"submit_batch does not take {', '.join(per_call)}: per-call headers cannot travel "
                             "with batch items; give the client default_headers= (sent on every batch request)")
        if max_batch_attempts is not None and (isinstance(max_batch_attempts, bool)
                                               or not isinstance(max_batch_attempts, int) or max_batch_attempts < 1):
            raise ValueError(f"max_batch_attempts must be an int >= 1 (or None: no cap), got {max_batch_attempts!r}")
        #: provider batches an item may fail in (an error answer for it) before it is no longer submitted
        self.max_batch_attempts = max_batch_attempts
        self.client, self.model, self.params = client, model, params
        #: what the adapter and the cache key see (a schema response_format in its wire form), checked now
        self.wire = wire_params(params)
        fmt = params.get("response_format")
        self.schema = response_schema(fmt) if fmt is not None else None
        self.output_file, self.metadata_list = output_file, metadata_list
        self.wait, self.fallback_after = wait, fallback_online_after
        self.poll_interval, self.show_progress, self.skip_cache = poll_interval, show_progress, skip_cache
        self.max_requests = max_requests
        self._clock, self._sleep = clock, sleep
        #: set by a cancelled await (asubmit_batch): the run ends at its next step, the file is left whole
        self._stop = stop
        if stop is not None and sleep is time.sleep:
            self._sleep = stop.wait
        self.pipeline = client._batch_runner()
        if not hasattr(self.pipeline, "adapter"):
            raise ValueError("provider batch mode needs a single-endpoint client (LLMClient, OpenAIClient, "
                             "GeminiClient), not a pool")
        self.adapter = self.pipeline.adapter
        self.api = batch_api_for(self.adapter, BatchCaller(self.pipeline, model))
        self.counts: Counter = Counter()
        self.tokens: Counter = Counter()
        self.errors: Counter = Counter()
        self._submitted_now: set = set()
        self._gave_up: set = set()  # indexes not submitted again: they failed max_batch_attempts times

    # -- the run -------------------------------------------------------------------------------------
    def run(self, messages_list: Iterable[Any], *, dry_run: bool = False) -> Dict[str, Any]:
        """Collect, submit, (wait,) summarise. Raises ValueError before any request on unusable input;
        SIGTERM (cron's `timeout`, systemd) stops it like Ctrl-C, as it does a live batch."""
        restore = sigterm_as_interrupt()
        try:
            return self._run(messages_list, dry_run=dry_run)
        finally:
            restore()

    def _run(self, messages_list: Iterable[Any], *, dry_run: bool) -> Dict[str, Any]:
        self.messages = messages_list if isinstance(messages_list, Sequence) else list(messages_list)
        total = len(self.messages)
        if self.metadata_list is not None and len(self.metadata_list) != total:
            raise ValueError(f"metadata_list has {len(self.metadata_list)} entries but messages_list has {total}; "
                             "they must be the same length")
        if dry_run and not os.path.exists(self.output_file):  # a dry run on a new job creates no file
            self.checkpoint = Checkpoint(self.output_file)
            self.ledger = Ledger(self.checkpoint.path + ".batches")
            return self._dry_run()
        self.checkpoint = Checkpoint(self.output_file).open()
        clean = False
        try:
            self.checkpoint.validate(self.messages, total)
            self.ledger = Ledger(self.checkpoint.path + ".batches").open()
            try:
                self.counts["resumed"] = len(self.checkpoint.done)
                if dry_run:
                    return self._dry_run()
                for stray in glob.glob(glob.escape(self.checkpoint.path) + ".upload-*.jsonl"):
                    os.unlink(stray)  # payload of a run killed mid-upload (we hold the lock: nobody uses it)
                self.progress = BatchProgress(total, enabled=self.show_progress, description="provider batch")
                try:
                    self._loop()
                finally:
                    self.progress.close()
                clean = True
                return self.summary()
            finally:
                self.ledger.close()
        finally:
            self.checkpoint.close(compact=clean)

    def _loop(self) -> None:
        for b in [b for b in self.ledger.batches.values() if b.unresolved]:
            self._resolve(b)
        while not self._stopped():
            for b in [b for b in self.ledger.batches.values() if b.live]:
                if self._stopped():
                    return
                self._poll(b)
            if self._stopped():
                return
            self._submit()
            if not self.wait or not self.ledger.in_flight():
                return
            self._sleep(self.poll_interval)

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # -- resolve / poll / collect --------------------------------------------------------------------
    def _resolve(self, b: LedgerBatch) -> None:
        """An intent without `created`: ask the provider whether the batch exists (match our tag)."""
        known = {x.batch_id for x in self.ledger.batches.values() if x.batch_id}
        expected = {custom_id(i, self.messages[i]) for i in b.index_set() if i < len(self.messages)}
        try:
            state = self.api.find(b.tag, b.submitted_at, size=b.n, known=known, expected_ids=expected)
        except LLMError as exc:
            logger.warning("cannot list %s batches to resolve submission %s (%s); its %d items stay reserved "
                           "until a later run can", self.api.name, b.tag, exc, b.n)
            return
        if state is None:
            self.ledger.append("abandoned", b.tag, reason="no batch with this tag at the provider")
            logger.info("submission %s was never created at %s: its %d items will be submitted again",
                        b.tag, self.api.name, b.n)
        else:
            self.ledger.append("created", b.tag, batch_id=state.batch_id, expires_at=state.expires_at,
                               resolved=True)

    def _poll(self, b: LedgerBatch) -> None:
        try:
            state = self.api.status(b.batch_id)  # type: ignore[arg-type]
        except NotFoundError as exc:  # deleted, archived, or another account/server: its items come back
            logger.warning("batch %s is unknown to the provider (%s): its unfinished items will be submitted "
                           "again", b.batch_id, exc)
            self._collect(b, BatchState(GONE, "not_found", b.batch_id or ""), download=False)
            return
        except LLMError as exc:
            logger.warning("cannot read the status of batch %s (%s); it stays in flight", b.batch_id, exc)
            return
        if state.status != b.status:
            self.ledger.append("status", b.tag, batch_id=b.batch_id, status=state.status, counts=state.counts or None)
        if state.expires_at and not b.expires_at:
            b.expires_at = state.expires_at
        if state.state in TERMINAL:
            self._collect(b, state)
        elif self._overdue(b):
            self._fallback(b)

    def _collect(self, b: LedgerBatch, state: BatchState, download: bool = True) -> None:
        indexes = sorted(b.index_set())
        ids = [custom_id(i, self.messages[i]) if i < len(self.messages) else "" for i in indexes]
        members = set(indexes)
        succeeded = errored = 0
        answered: set = set()
        failed: List[str] = []  # custom_ids the provider (or the reply's validation) answered with an error
        results = self.api.results(b.batch_id, state, ids) if download else ()  # type: ignore[arg-type]
        for item in results:
            index_text, _, digest = item.custom_id.partition("-")
            if not index_text.isdigit() or int(index_text) not in members:
                logger.warning("batch %s returned an unknown custom_id %r: ignored", b.batch_id, item.custom_id)
                continue
            index = int(index_text)
            if item.returned:
                continue
            answered.add(index)
            if index in self.checkpoint.done:
                continue  # collected by a run that died before its `collected` line, or done live
            messages = self.messages[index]
            if digest != custom_id(index, messages).partition("-")[2]:
                self._write_error(index, "InputChangedError: the input at this index changed after it was "
                                  f"submitted in batch {b.batch_id}; it will be submitted again", b)
                errored += 1
            elif item.body is not None:
                try:
                    result = self.adapter.parse_response(item.body, model=b.model or self.model)
                    if self.schema is not None:  # no re-ask in a batch: an invalid reply is this item's error
                        fill_parsed(result, self.schema, provider=self.adapter.name, model=b.model or self.model)
                except LLMError as exc:
                    self._write_error(index, f"{type(exc).__name__}: {exc}", b)
                    errored += 1
                    failed.append(item.custom_id)
                    continue
                self._write_success(index, result, b)
                succeeded += 1
            else:
                self._write_error(index, item.error or "BatchItemError: no result", b)
                errored += 1
                failed.append(item.custom_id)
        returned = len(indexes) - len(answered)
        if state.error:
            logger.warning("batch %s ended %s: %s", b.batch_id, state.status, state.error)
        if returned:
            self.counts["returned"] += returned
            logger.info("batch %s ended %s: %d items without a result will be submitted again", b.batch_id,
                        state.status, returned)
        self.ledger.append("collected", b.tag, batch_id=b.batch_id, status=state.status, succeeded=succeeded,
                           errored=errored, returned=returned, failed=failed or None)
        self.counts["batches_collected"] += 1

    def _overdue(self, b: LedgerBatch) -> bool:
        return self.fallback_after is not None and not b.fallback and \
            self._clock() - b.submitted_at >= self.fallback_after * 3600

    def _fallback(self, b: LedgerBatch) -> None:
        """Cancel an overdue batch and send its unfinished items through the live engine."""
        try:
            self.api.cancel(b.batch_id)  # type: ignore[arg-type]
        except LLMError as exc:
            logger.warning("could not cancel overdue batch %s (%s); its late results will be ignored",
                           b.batch_id, exc)
        self.ledger.append("fallback", b.tag, batch_id=b.batch_id)
        todo = [i for i in sorted(b.index_set()) if i not in self.checkpoint.done]
        logger.info("batch %s unfinished after %s h: %d items go through the live engine", b.batch_id,
                    self.fallback_after, len(todo))
        items = self.client.iter_chat_completions_batch([self.messages[i] for i in todo], output_file=None,
                                                        show_progress=False, model=self.model,
                                                        skip_cache=self.skip_cache, **self.params)
        for item in items:
            index = todo[item.index]
            self.counts["fallback_online"] += 1
            meta = self.metadata_list[index] if self.metadata_list is not None else None
            item = replace(item, index=index, metadata=meta, via="live")
            self._append(item, rate=1.0)

    # -- records (written through the record module, like live batches) --------------------------------
    def _item(self, index: int, status: str, result: Any = None, error: Optional[str] = None,
              via: Optional[str] = VIA, batch_id: Optional[str] = None) -> BatchResultItem:
        meta = self.metadata_list[index] if self.metadata_list is not None else None
        item = BatchResultItem(index, None, None, status, error, 0.0, meta, via=via, batch_id=batch_id,
                               attempts=1 if via == VIA else 0)
        if result is not None:
            item.content, item.usage, item.reasoning_content = result.content, result.usage, result.reasoning_content
            item.finish_reason, item.tool_calls = result.finish_reason, result.tool_calls
            item.parsed = getattr(result, "parsed", None)
        return item

    def _append(self, item: BatchResultItem, rate: float) -> None:
        self.checkpoint.write(item, self.messages[item.index])
        status, usage = item.status, item.usage
        self.counts["failed" if status == "error" else status] += 1
        if status == "error":
            self.errors[(item.error or "error").split(":", 1)[0]] += 1
        if status == "success" and usage:
            self.tokens["cost"] += usage_cost(self.model, usage) * rate
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                if isinstance(usage.get(key), int):
                    self.tokens[key] += usage[key]
        self.progress.advance(status, (usage or {}).get("total_tokens") or 0)

    def _write_success(self, index: int, result: Any, b: LedgerBatch) -> None:
        self._append(self._item(index, "success", result, batch_id=b.batch_id), rate=BATCH_DISCOUNT)
        self.counts["collected"] += 1
        cache = None if self.skip_cache else self.pipeline.cache
        if cache is not None:
            # keyed by the model the batch ran on (a later run may have been given another one)
            key = self.pipeline.cache_key(self.messages[index], b.model or self.model, self.wire)
            cache.set(key, cache_entry(result))

    def _write_error(self, index: int, error: str, b: Optional[LedgerBatch], via: str = VIA) -> None:
        self._append(self._item(index, "error", error=error, via=via, batch_id=b.batch_id if b else None), rate=0.0)

    # -- summary -------------------------------------------------------------------------------------
    def summary(self) -> Dict[str, Any]:
        """What this run did and where the job stands (see README "Half-price batches")."""
        in_flight = self.ledger.in_flight()
        finishes = [b.expires_at for b in in_flight if b.expires_at]
        job_cost = job_live = 0.0
        for record in self.checkpoint.finished_records():
            if record.get("status") == "success" and record.get("usage"):
                live = usage_cost(self.model, record["usage"])
                job_live += live
                job_cost += live * (BATCH_DISCOUNT if record.get("via") == VIA else 1.0)
        total = len(self.messages)
        done = len(self.checkpoint.done)
        out = {
            "total": total,
            "done": done,
            "resumed": self.counts["resumed"],
            "submitted": self.counts["submitted"],
            "batches_submitted": self.counts["batches_submitted"],
            "in_flight": sum(b.n for b in in_flight),
            "batches_in_flight": len(in_flight),
            "collected": self.counts["collected"],
            "batches_collected": self.counts["batches_collected"],
            "cached": self.counts["cached"],
            "failed": self.counts["failed"],
            "gave_up": len(self._gave_up),
            "returned": self.counts["returned"],
            "fallback_online": self.counts["fallback_online"],
            "submit_failed": self.counts["submit_failed"],
            "earliest_expected_finish": _iso(min(finishes)) if finishes else None,
            "prompt_tokens": self.tokens["prompt_tokens"],
            "completion_tokens": self.tokens["completion_tokens"],
            "total_tokens": self.tokens["total_tokens"],
            "estimated_cost_usd": round(self.tokens["cost"], 8),
            "job_cost_usd": round(job_cost, 8),
            "job_live_cost_usd": round(job_live, 8),
            "complete": done == total,
            "errors": dict(self.errors),
            "provider": self.api.name,
            "model": self.model,
        }
        return out

    def _dry_run(self) -> Dict[str, Any]:
        """What a run would submit and its price at the batch rate (replies bounded by max_tokens, if given)."""
        from .pricing import estimate_batch_cost

        busy = self.ledger.busy_indexes()
        todo = [i for i in range(len(self.messages)) if i not in self.checkpoint.done and i not in busy]
        est = estimate_batch_cost((self.messages[i] for i in todo), model=self.model,
                                  avg_output_tokens=int(self.params.get("max_tokens") or 0))
        cap = min(self.api.MAX_REQUESTS, self.max_requests or self.api.MAX_REQUESTS)
        priced = get_model_pricing(self.model) is not None
        out: Dict[str, Any] = {
            "dry_run": True, "provider": self.api.name, "model": self.model, "total": len(self.messages),
            "done": len(self.checkpoint.done), "in_flight": len(busy & set(range(len(self.messages)))),
            "to_submit": len(todo), "batches": -(-len(todo) // cap), "input_tokens": est["input_tokens"],
            "estimated_input_cost_usd": round(est["input_cost"] * BATCH_DISCOUNT, 8) if priced else None,
            "live_input_cost_usd": round(est["input_cost"], 8) if priced else None}
        if est["estimated_output_tokens"] and priced:
            out["estimated_cost_usd"] = round(est["estimated_cost_usd"] * BATCH_DISCOUNT, 8)
            out["live_cost_usd"] = round(est["estimated_cost_usd"], 8)
        return out
