"""A batch's intake: what it knows of each input before any request — its metadata, its own params, a
record an earlier run finished (resume), an answer in the cache — so only the rest reaches the workers.

Runs on the consumer's thread once per input line; a million-line cached or resumed re-run is this
module's loop, so cached items are built straight from their cache entry.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from ._checkpoint import Checkpoint
from ._items import ItemParams
from ._logging import get_logger
from ._messages import check_messages
from ._results import result_from_hit
from ._record import same_json, to_item
from .structured import response_schema
from .types import BatchResultItem, ChatCompletionResult, reply_text

__all__ = ["Intake", "chunks", "item_of"]

logger = get_logger("flexllm")

Finished = List[Tuple[BatchResultItem, Any]]  # (item, its messages) of items done without a request


class Intake:
    """Splits chunks of `(index, messages, own params)` into finished items and work for the workers."""

    def __init__(self, runner: Any, items: ItemParams, metadata_list: Optional[Sequence[dict]],
                 total: Optional[int], skip_cache: bool, on_invalid: Callable[[], None]) -> None:
        meta = metadata_list
        self._meta_iter: Optional[Iterator[Optional[dict]]] = None
        if meta is not None and not (hasattr(meta, "__len__") and hasattr(meta, "__getitem__")):
            if not hasattr(meta, "__iter__"):
                raise ValueError("metadata_list must be a list (or an iterable) with one dict per item")
            self._meta_iter = iter(meta)  # read in step with messages_list, so neither is held in memory
        elif meta is not None and total is not None and len(meta) != total:
            raise ValueError(f"metadata_list has {len(meta)} entries but messages_list has {total}; "
                             "they must be the same length")
        self.runner = runner
        self.items = items
        self.metadata_list = metadata_list
        self.skip_cache = skip_cache
        self._on_invalid = on_invalid  # counts a ValueError item in the batch's errors
        self.meta_differs = 0  # resumed items whose stored metadata differs from metadata_list

    def prepare(self, chunk: List[Tuple[int, Any, Optional[dict]]],
                checkpoint: Optional[Checkpoint]) -> Tuple[Finished, List[tuple]]:
        """`(finished, todo)`: items already finished (resumed, invalid, cached) with their messages, and the
        work tuples `(index, messages, meta, model, params, plain)` of the rest, in input order."""
        finished: Finished = []
        todo: List[tuple] = []
        base = self.items.effective(None)
        for index, messages, own in chunk:
            meta = self.metadata(index) if self.metadata_list is not None else None
            plain = None
            if checkpoint is not None:
                plain = self.items.plain(own)  # a JSON round trip for own params: done once, used below too
                record = checkpoint.resume(index, messages, plain)
                if record is not None:
                    if meta is not None and "metadata" in record and not same_json(record["metadata"], meta):
                        self._differs_at(index)
                    finished.append((self.resumed(record, meta, own), messages))
                    continue
            try:
                check_messages(messages)
                if own is None:
                    model, params = base
                else:
                    model, params = self.items.effective(own)
                    if checkpoint is None:
                        plain = self.items.plain(own)
            except ValueError as exc:  # this item fails alone; the batch goes on
                self._on_invalid()
                finished.append((BatchResultItem(index, None, None, "error", f"ValueError: item {index}: {exc}", 0.0,
                                                 meta), messages))
                continue
            todo.append((index, messages, meta, model, params, plain))
        if not todo or self.skip_cache:
            return finished, todo
        return finished, self._cached(todo, finished)

    def _cached(self, todo: List[tuple], finished: Finished) -> List[tuple]:
        """Appends the cache hits among `todo` to `finished`; returns the misses."""
        left: List[tuple] = []
        for work, hit in zip(todo, self.runner.cached_many([(t[1], t[3], t[4]) for t in todo])):
            if hit is None:
                left.append(work)
                continue
            index, messages, meta, model, params, plain = work
            if params.get("response_format") is None:  # the common case, without a result object in between
                content, tool_calls = hit.get("content") or "", hit.get("tool_calls")
                finished.append((BatchResultItem(index, reply_text(content, tool_calls), hit.get("usage"), "cached",
                                                 None, 0.0, meta, hit.get("reasoning_content"), False,
                                                 hit.get("finish_reason"), tool_calls, None, 0, plain), messages))
                continue
            result = result_from_hit(hit, params, model)  # None: the entry no longer fits the schema
            if result is None:
                left.append(work)
            else:
                finished.append((item_of(index, result, "cached", 0.0, meta, 0, plain), messages))
        return left

    def resumed(self, record: Dict[str, Any], meta: Optional[dict], own: Optional[dict]) -> BatchResultItem:
        """The item of a record an earlier run finished (a Pydantic response_format gets its instance back)."""
        item = to_item(record, meta)
        if item.parsed is not None:
            schema = response_schema(self.items.effective(own)[1].get("response_format"))
            if schema is not None and schema.model is not None:
                try:
                    item.parsed = schema.model.model_validate(item.parsed)
                except ValueError:
                    pass  # the model changed since: the record's JSON stays as it is
        return item

    def metadata(self, index: int) -> Optional[dict]:
        """Item `index`'s entry of metadata_list (asked for in index order, once per item)."""
        if self.metadata_list is None:
            return None
        if self._meta_iter is not None:
            try:
                return next(self._meta_iter)
            except StopIteration:
                raise ValueError(f"metadata_list ended before item {index}: it must match messages_list") from None
        try:
            return self.metadata_list[index]
        except IndexError:
            raise ValueError(f"metadata_list has no entry for item {index}: it must match messages_list") from None

    def _differs_at(self, index: int) -> None:
        self.meta_differs += 1
        if self.meta_differs == 1:
            logger.warning("metadata_list differs from the metadata stored with resumed item index %d: the "
                           "stored metadata is kept (it is what the file says that answer was for)", index)


def item_of(index: int, r: ChatCompletionResult, status: str, latency: float, meta: Optional[dict], attempts: int,
            params: Optional[dict]) -> BatchResultItem:
    """The BatchResultItem of a result."""
    return BatchResultItem(index, r.text, r.usage, status, None, latency, meta, r.reasoning_content,
                           finish_reason=r.finish_reason, tool_calls=r.tool_calls, parsed=r.parsed, attempts=attempts,
                           params=params)


def chunks(items: Iterable[Any], size: int) -> Iterator[List[Any]]:
    """Lists of up to `size` items (the last one shorter)."""
    iterator = iter(items)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk
