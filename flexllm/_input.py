"""The `flexllm batch` / `tokens` input: JSONL lines read one at a time (memory does not grow with the file).

A line is `{"messages": [...]}` or `{"prompt": "..."}`; its other fields are the item's metadata. A bad
line is a `UsageError` naming `path:line`. A line holding text that is not valid Unicode (a lone
surrogate such as half of a `\\ud83d\\ude00` pair, or bytes that are not UTF-8) is not an error here: it
is named on stderr and its item fails alone in the batch.
"""
from __future__ import annotations

import collections
import json
import re
import sys
from typing import Any, Deque, Iterator, List, Optional, Set, Tuple

from ._messages import find_lone_surrogate

__all__ = ["BatchInput", "UsageError", "iter_rows", "read_jsonl"]

# a JSON escape of a surrogate, or a surrogate itself (undecodable bytes read with surrogateescape)
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


class UsageError(Exception):
    """Bad arguments or input: exit 2 with this message."""


def iter_rows(path: str, system: Optional[str], limit: Optional[int],
              warn: bool = True) -> Iterator[Tuple[int, List[dict], dict]]:
    """`(line number, messages, metadata)` of each input line, one line in memory at a time."""
    if path == "-":
        handle = open(sys.stdin.fileno(), encoding="utf-8-sig", errors="surrogateescape", closefd=False)
    else:
        try:
            handle = open(path, encoding="utf-8-sig", errors="surrogateescape")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    count = 0
    with handle:
        for lineno, line in enumerate(handle, 1):
            if limit is not None and count >= limit:
                break
            if not line.strip():
                continue
            messages, row = _parse(path, lineno, line, system)
            if warn and _MAYBE_SURROGATE.search(line):
                found = find_lone_surrogate(messages)
                if found:
                    print(f"flexllm: {path}:{lineno}: holds {found}, which is not valid Unicode: this item will "
                          "fail (fix the line and rerun to retry it)", file=sys.stderr)
            count += 1
            yield lineno, messages, row


def _parse(path: str, lineno: int, line: str, system: Optional[str]) -> Tuple[List[dict], dict]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{path}:{lineno}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(row, dict):
        raise UsageError(f"{path}:{lineno}: each line must be a JSON object")
    if "params" in row and not isinstance(row["params"], dict):
        raise UsageError(f"{path}:{lineno}: \"params\" must be a JSON object of request parameters")
    if "messages" in row:
        messages = row.pop("messages")
        if not isinstance(messages, list) or not messages or \
                not all(isinstance(m, dict) and "role" in m for m in messages):
            raise UsageError(f"{path}:{lineno}: \"messages\" must be a non-empty list of "
                             "{\"role\": ..., \"content\": ...} objects")
    elif "prompt" in row:
        prompt = row.pop("prompt")
        if not isinstance(prompt, str):
            raise UsageError(f"{path}:{lineno}: \"prompt\" must be a string")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    else:
        raise UsageError(f"{path}:{lineno}: needs \"messages\" or \"prompt\"")
    return messages, row


def read_jsonl(path: str, system: Optional[str], limit: Optional[int]) -> Tuple[List[List[dict]], List[dict]]:
    """Messages and metadata of every input line as two lists (for commands that need them all)."""
    messages_list: List[List[dict]] = []
    metadata: List[dict] = []
    for _, messages, row in iter_rows(path, system, limit):
        messages_list.append(messages)
        metadata.append(row)
    return messages_list, metadata


class BatchInput:
    """A live batch's input as `messages`, `metadata` and `params` iterables read in step, a line at a time.

    A file is read twice: first to check every line (a bad line fails before any request) and count
    them, then while the batch runs. Standard input is read once and checked as it is read. A line's
    `params` object (its own request parameters) is taken out of its metadata.
    """

    def __init__(self, path: str, system: Optional[str], limit: Optional[int], priced: bool = False) -> None:
        self.path, self.system, self.limit = path, system, limit
        self.total: Optional[int] = None
        self.has_params = True  # unknown for stdin: every item then gets an entry (None = the call's params)
        #: `priced` (--max-cost): a line's own model must have a price. A file is checked before any request;
        #: stdin, read once, as each line is reached (the run stops there; what finished is kept)
        self._priced: Optional[Set[str]] = set() if priced else None
        if path != "-":
            self.total = self.has_params = 0
            for lineno, _, row in iter_rows(path, system, limit):
                self.total += 1
                self.has_params = self.has_params or "params" in row
                self._check_price(row, lineno)
        # what items drawn from `messages` but not yet paired carry: a few entries, never the file
        self._meta: Deque[dict] = collections.deque()
        self._params: Deque[Optional[dict]] = collections.deque()

    def messages(self) -> Any:
        """The messages of each line (sized when the input is a file)."""
        rows = self._messages()
        return rows if self.total is None else _Sized(rows, self.total)

    def _check_price(self, row: dict, lineno: int) -> None:
        """UsageError naming the line when --max-cost is set and the line's own model has no known price."""
        own = row.get("params") if self._priced is not None else None
        model = own.get("model") if isinstance(own, dict) else None
        if not isinstance(model, str) or model in self._priced:
            return
        from .pricing import get_model_pricing

        if get_model_pricing(model) is None:
            later = "" if self.total is not None else ("; the lines before it that finished are kept: fix the line "
                                                        "(or price the model) and rerun the same command to resume")
            raise UsageError(f"{self.path}:{lineno}: --max-cost is set but no price is known for model {model!r}, "
                             f"so the cap could not be kept; add it to flexllm.MODEL_PRICING{later}")
        self._priced.add(model)

    def _messages(self) -> Iterator[List[dict]]:
        for lineno, messages, row in iter_rows(self.path, self.system, self.limit, warn=self.total is None):
            if self.total is None:  # stdin: checked as read (a file was checked before any request)
                self._check_price(row, lineno)
            own = row.pop("params", None)
            if self.has_params:
                self._params.append(own)
            self._meta.append(row)
            yield messages

    def params(self) -> Optional[Iterator[Optional[dict]]]:
        """Each line's own request parameters (None when no line of a file has any)."""
        return self._take(self._params) if self.has_params else None

    def metadata(self) -> Iterator[dict]:
        """The metadata of each line, taken after its messages (the batch reads them in step)."""
        return self._take(self._meta)

    @staticmethod
    def _take(pending: Deque[Any]) -> Iterator[Any]:
        while True:
            yield pending.popleft()


class _Sized:
    """An iterator that also knows its length (the batch shows a total and checks metadata against it)."""

    def __init__(self, iterator: Iterator[Any], length: int) -> None:
        self._iterator, self._length = iterator, length

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __len__(self) -> int:
        return self._length
