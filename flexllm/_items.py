"""What each batch item is asked with: its own parameters over the call's, and which finished items to redo.

`params_list` is either a sequence (one entry per input, checked before any request) or an iterable
consumed alongside the inputs (a generator for a generator). An entry is a dict of call kwargs —
`model`, `temperature`, `max_tokens`, `response_format`, … — or None for "the call's kwargs as they are".
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Set, Tuple

from ._record import dumps
from .structured import prepare

__all__ = ["BATCH_OPTIONS", "REDO_CHOICES", "ItemParams", "redo_rule"]

REDO_CHOICES = ("error", "length", "all")
#: keywords of a whole batch call: never request parameters (a single call or a params_list entry refuses them)
BATCH_OPTIONS = frozenset(("output_file", "metadata_list", "params_list", "redo", "max_cost_usd", "show_progress",
                           "return_summary", "flush_interval"))


def redo_rule(redo: Any) -> Optional[Callable[[Dict[str, Any]], bool]]:
    """The predicate `record -> bool` that marks a finished record to be asked again; None = errors only."""
    if redo is None or redo == "error":
        return None  # error records are never finished: every rerun asks them again
    if redo == "length":
        return _cut_off
    if redo == "all":
        return _always
    if callable(redo):
        return redo
    raise ValueError(f"redo must be one of {REDO_CHOICES} or a callable(record) -> bool, got {redo!r}")


def _cut_off(record: Dict[str, Any]) -> bool:
    return record.get("finish_reason") == "length"


def _always(record: Dict[str, Any]) -> bool:
    return True


class ItemParams:
    """The effective `(model, params, own)` of each item: the call's kwargs with the item's entry on top."""

    def __init__(self, model: str, params: Dict[str, Any], params_list: Any, total: Optional[int]) -> None:
        self.model = model
        self.params = params
        prepare(params)  # a bad call-level response_format fails before any request
        self.models: Set[str] = {model}
        self._list: Optional[Sequence] = None
        self._iter: Optional[Iterable] = None
        if params_list is None:
            return
        if isinstance(params_list, (str, bytes, Mapping)):
            raise ValueError("params_list must be a list with one dict of parameters per item (or an iterable "
                             f"of them), got {type(params_list).__name__}")
        if isinstance(params_list, Sequence):
            if total is not None and len(params_list) != total:
                raise ValueError(f"params_list has {len(params_list)} entries but messages_list has {total}; "
                                 "they must be the same length")
            for i, own in enumerate(params_list):
                self._check(i, own)
            self._list = params_list
        elif isinstance(params_list, Iterable):
            self._iter = params_list
        else:
            raise ValueError(f"params_list must be a list or an iterable of dicts, got {type(params_list).__name__}")

    @property
    def given(self) -> bool:
        """True when the items have parameters of their own."""
        return self._list is not None or self._iter is not None

    def _check(self, index: int, own: Any) -> None:
        if own is None:
            return
        if not isinstance(own, Mapping):
            raise ValueError(f"params_list[{index}] must be a dict of parameters, got {type(own).__name__}")
        settings = sorted(k for k in ("api_key", "base_url", "api_base") if k in own)
        if settings:  # checked before the record (which keeps the entry) is written: a key never lands in a file
            raise ValueError(f"params_list[{index}] has {settings}: client settings, not request parameters "
                             "(pass them to the client)")
        if not BATCH_OPTIONS.isdisjoint(own):  # per item: one C-level check
            options = sorted(BATCH_OPTIONS.intersection(own))
            raise ValueError(f"params_list[{index}] has {options}: options of the whole batch call, not of one item")
        model = own.get("model")
        if model is not None:
            if not isinstance(model, str) or not model:
                raise ValueError(f"params_list[{index}]['model'] must be a model name, got {model!r}")
            self.models.add(model)
        try:
            prepare({**self.params, **own})
        except ValueError as exc:
            raise ValueError(f"params_list[{index}]: {exc}") from None

    def pair(self, messages_list: Iterable[Any]) -> Iterator[Tuple[int, Any, Optional[dict]]]:
        """`(index, messages, own params)` for every input, taking params_list along."""
        if self._list is not None:
            entries = self._list
            for index, messages in enumerate(messages_list):
                if index >= len(entries):
                    raise ValueError(f"params_list has no entry for item {index}: it must match messages_list")
                yield index, messages, entries[index]
            return
        if self._iter is None:
            for index, messages in enumerate(messages_list):
                yield index, messages, None
            return
        own_iter = iter(self._iter)
        for index, messages in enumerate(messages_list):
            try:
                own = next(own_iter)
            except StopIteration:
                raise ValueError(f"params_list ran out at item {index}: it must give one entry per input") from None
            self._check(index, own)
            yield index, messages, own

    def plain(self, own: Optional[Mapping]) -> Optional[Dict[str, Any]]:
        """The item's own params as JSON data, the way its record stores them (a model class as its schema)."""
        if not own:
            return None
        out = dict(own)
        if isinstance(out.get("response_format"), type):
            out["response_format"] = prepare(out)[0]["response_format"]
        return json.loads(dumps(out))

    def effective(self, own: Optional[Mapping]) -> Tuple[str, Dict[str, Any]]:
        """`(model, params)` an item is asked with."""
        if not own:
            return self.model, self.params
        params = {**self.params, **own}
        model = params.pop("model", None) or self.model
        return model, params
