"""The submitting half of a provider batch run (`provider_batch.ProviderBatchJob` mixes it in): the items that
are neither done, in flight nor cached are packed into payload files at the provider's caps (requests,
bytes; one model per batch) and each file becomes a provider batch in the crash-safe order: upload, the
ledger's `intent` line, `create`, the `created` line. A create that may or may not have happened is
resolved from the provider's list of batches (our tag is in its metadata), never guessed.
"""
from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Set

from ._batch_api import custom_id, definitive
from ._batch_ledger import Ledger, format_ranges
from ._checkpoint import Checkpoint
from ._logging import get_logger
from ._messages import check_messages
from ._results import result_from_hit
from .errors import LLMError, NotFoundError
from .providers.batch_base import BatchAPI

__all__ = ["SubmitMixin"]

logger = get_logger("flexllm")


class SubmitMixin:
    """Submission for `ProviderBatchJob`: reads the job's state below and writes through its record methods
    (`_append`, `_item`, `_write_error`) and `_resolve`."""

    messages: Any
    model: str
    params: dict
    wire: dict
    adapter: Any
    pipeline: Any
    api: BatchAPI
    ledger: Ledger
    checkpoint: Checkpoint
    max_requests: Optional[int]
    skip_cache: bool
    counts: Counter
    errors: Counter
    _submitted_now: Set[int]
    _gave_up: Set[int]
    max_batch_attempts: Optional[int]

    def _free(self) -> Iterable[int]:
        busy = self.ledger.busy_indexes()
        done = self.checkpoint.done
        spent, before = self._spent(), len(self._gave_up)
        for i in range(len(self.messages)):
            if i not in done and i not in busy:
                if i in spent and custom_id(i, self.messages[i]) in spent[i]:
                    self._gave_up.add(i)  # the same input failed max_batch_attempts times: not again
                elif i not in self._submitted_now:
                    yield i
        if len(self._gave_up) > before:  # once per run, not at every poll of a waiting run
            logger.warning("%d item(s) failed in %d provider batches each and are not submitted again (indexes %s): "
                           "their error records say why; fix those inputs (an edited input counts afresh) or "
                           "raise max_batch_attempts", len(self._gave_up), self.max_batch_attempts,
                           format_ranges(sorted(self._gave_up)))

    def _spent(self) -> Dict[int, Set[str]]:
        """index → custom_ids that failed max_batch_attempts times (only those: failures are few)."""
        cap = self.max_batch_attempts
        out: Dict[int, Set[str]] = {}
        if cap is None:
            return out
        for cid, n in self.ledger.failures().items():
            index = cid.partition("-")[0]
            if n >= cap and index.isdigit():
                out.setdefault(int(index), set()).add(cid)
        return out

    def _submit(self) -> None:
        cap_n = min(self.api.MAX_REQUESTS, self.max_requests or self.api.MAX_REQUESTS)
        cap_bytes = self.api.MAX_BYTES
        chunk: List[int] = []
        tag = path = None
        f = None
        size = 0
        try:
            for index in self._cache_filtered(self._free()):
                line = self._line(index)
                if line is None:
                    continue
                if chunk and (len(chunk) >= cap_n or size + len(line) > cap_bytes):
                    f.close()  # type: ignore[union-attr]
                    self._create(tag, chunk, path, size)  # type: ignore[arg-type]
                    chunk, size, f = [], 0, None
                if f is None:
                    tag = f"flexllm-{uuid.uuid4().hex[:20]}"
                    path = f"{self.checkpoint.path}.upload-{tag}.jsonl"
                    f = open(path, "wb")
                f.write(line)
                size += len(line)
                chunk.append(index)
            if chunk:
                f.close()  # type: ignore[union-attr]
                self._create(tag, chunk, path, size)  # type: ignore[arg-type]
        finally:
            if f is not None and not f.closed:
                f.close()
                os.unlink(path)  # type: ignore[arg-type]

    def _cache_filtered(self, indexes: Iterable[int]) -> Iterable[int]:
        """Indexes whose answer is not in the response cache (cached ones are recorded at once)."""
        cache = None if self.skip_cache else self.pipeline.cache
        if cache is None:
            yield from indexes
            return
        batch: List[int] = []
        for index in list(indexes) + [-1]:
            if index >= 0:
                batch.append(index)
                if len(batch) < 256:
                    continue
            valid = [i for i in batch if _valid(self.messages[i])]
            hits = self.pipeline.cached_many([(self.messages[i], self.model, self.wire) for i in valid])
            hit_of = dict(zip(valid, hits))
            for i in batch:
                hit = hit_of.get(i)
                result = result_from_hit(hit, self.params, self.model) if hit is not None else None
                if result is None:  # a miss, or an entry that does not fit the schema
                    yield i
                    continue
                self._append(self._item(i, "cached", result, via=None), rate=0.0)
            batch = []

    def _line(self, index: int) -> Optional[bytes]:
        messages = self.messages[index]
        try:
            check_messages(messages)
            spec = self.adapter.build_request(messages, self.model, self.wire)
        except ValueError as exc:  # this item fails alone, like in a live batch
            self._write_error(index, f"ValueError: item {index}: {exc}", None)
            self._submitted_now.add(index)
            return None
        entry = self.api.line(custom_id(index, messages), spec)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"

    def _create(self, tag: str, chunk: List[int], path: str, size: int) -> None:
        """Upload, write the intent, create, write `created` (the order that makes SIGKILL safe)."""
        self._submitted_now.update(chunk)
        try:
            try:
                file_id = self.api.upload(path, tag) if self.api.uploads_file else None
            except LLMError as exc:
                hint = " (this server has no Batch API: run without --provider-batch)" \
                    if isinstance(exc, NotFoundError) else ""
                self._submit_failed(chunk, f"upload failed: {exc}{hint}", exc)
                return
            self.ledger.append("intent", tag, provider=self.api.name, model=self.model,
                               indexes=format_ranges(chunk), n=len(chunk), bytes=size, file_id=file_id)
            try:
                state = self.api.create(self.model, tag, file_id, path)
            except LLMError as exc:
                if definitive(exc):
                    self.ledger.append("abandoned", tag, reason=f"create failed: {exc}"[:500])
                    self._submit_failed(chunk, f"create failed: {exc}", exc)
                else:  # the batch may exist: ask the provider (tag match) instead of guessing
                    logger.warning("create of batch %s failed (%s): checking whether it exists", tag, exc)
                    self._resolve(self.ledger.batches[tag])
                    if self.ledger.batches[tag].abandoned:
                        self._submit_failed(chunk, f"create failed: {exc}", exc)
                return
        finally:
            if os.path.exists(path):
                os.unlink(path)
        self.ledger.append("created", tag, batch_id=state.batch_id, expires_at=state.expires_at)
        self.counts["submitted"] += len(chunk)
        self.counts["batches_submitted"] += 1
        logger.info("submitted %d items as %s batch %s", len(chunk), self.api.name, state.batch_id)

    def _submit_failed(self, chunk: List[int], message: str, exc: BaseException) -> None:
        self.errors[type(exc).__name__] += 1
        self.counts["submit_failed"] += len(chunk)
        logger.error("could not submit %d items: %s (they stay unsubmitted; rerun to try again)", len(chunk),
                     message)


def _valid(messages: Any) -> bool:
    try:
        check_messages(messages)
        return True
    except ValueError:
        return False
