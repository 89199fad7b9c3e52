"""The provider-batch ledger `<output>.batches`: which input indexes went into which provider batch.

Append-only JSON Lines, one event per line, each handed to the OS as one whole-line `os.write` (like the
output file), so a SIGKILL never leaves half an event; a torn last line is dropped on open. The run that
writes it holds the output file's lock (`<output>.lock`), so two runs never interleave. Every line has
`"v": 1`, `"event"`, `"tag"` (our unique id of one submission, also put in the provider batch's
metadata / display name) and `"time"` (unix seconds). Events:

    {"event": "intent",  "tag", "provider", "model", "indexes": "0-99,120", "n": 101, "bytes", "file_id"?}
        written after the upload and BEFORE the provider's create call
    {"event": "created", "tag", "batch_id", "expires_at"?}        the provider accepted the batch
    {"event": "abandoned", "tag", "reason"}                       no batch exists for the intent (create
        failed, or a later run listed the provider's batches and found no batch with the tag)
    {"event": "status",  "tag", "batch_id", "status", "counts"?}  a status change seen while polling
    {"event": "fallback", "tag", "batch_id"}                      unfinished after --fallback-online-after:
        cancelled at the provider, its items sent through the live engine
    {"event": "collected", "tag", "batch_id", "status", "succeeded", "errored", "returned", "failed"?}
        results joined into the output file; "returned" items (expired, cancelled, missing) are free again;
        "failed" lists the custom_ids ("<index>-<input digest>") of items the provider answered with an error
        (counted against max_batch_attempts: an item failing that often is not submitted again)

An intent with neither `created` nor `abandoned` means a run died around the create call: the next run
lists the provider's recent batches and matches the tag before anything is resubmitted.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Optional

from ._logging import get_logger

__all__ = ["Ledger", "LedgerBatch", "format_ranges", "parse_ranges"]

logger = get_logger("flexllm")


def format_ranges(indexes: Iterable[int]) -> str:
    """`[0, 1, 2, 5, 7, 8]` → `"0-2,5,7-8"` (compact, so a 50,000-item batch is one short line)."""
    out: List[str] = []
    start = prev = None
    for i in sorted(indexes):
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)


def parse_ranges(text: str) -> Iterator[int]:
    """The indexes of a `format_ranges` string."""
    for part in text.split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        yield from range(int(lo), int(hi or lo) + 1)


@dataclass
class LedgerBatch:
    """What the ledger knows about one submission (one tag)."""

    tag: str
    provider: str
    model: str
    indexes: str
    n: int
    submitted_at: float
    file_id: Optional[str] = None
    batch_id: Optional[str] = None
    expires_at: Optional[float] = None
    status: Optional[str] = None
    abandoned: bool = False
    fallback: bool = False
    collected: bool = False
    failed: List[str] = field(default_factory=list)  # custom_ids the provider answered with an error
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Created at the provider and not yet collected: its items are in flight."""
        return self.batch_id is not None and not self.collected

    @property
    def unresolved(self) -> bool:
        """An intent whose create call may or may not have happened."""
        return self.batch_id is None and not self.abandoned

    def index_set(self) -> set:
        return set(parse_ranges(self.indexes))


class Ledger:
    """Reads and appends `<output>.batches`. Used by one run at a time (the caller holds the output lock)."""

    def __init__(self, path: str, *, clock=time.time) -> None:
        self.path = path
        self._clock = clock
        self._fd: Optional[int] = None
        self.batches: Dict[str, LedgerBatch] = {}

    def open(self) -> "Ledger":
        """Read every event (dropping a torn last line) and open for appending."""
        if os.path.exists(self.path):
            self._read()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self

    def _read(self) -> None:
        good_end = 0
        with open(self.path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run",
                                   self.path, len(raw))
                    break
                good_end += len(raw)
                try:
                    event = json.loads(raw)
                except ValueError:
                    logger.warning("%s: skipping an unreadable line", self.path)
                    continue
                if isinstance(event, dict):
                    self._apply(event)
        if good_end < os.path.getsize(self.path):
            os.truncate(self.path, good_end)

    def _apply(self, e: Dict[str, Any]) -> None:
        kind, tag = e.get("event"), e.get("tag")
        if kind == "intent":
            self.batches[tag] = LedgerBatch(tag, e.get("provider", ""), e.get("model", ""), e.get("indexes", ""),
                                            int(e.get("n") or 0), float(e.get("time") or 0), e.get("file_id"))
            return
        b = self.batches.get(tag)
        if b is None:
            logger.warning("%s: event %r for unknown tag %r ignored", self.path, kind, tag)
            return
        if kind == "created":
            b.batch_id, b.expires_at = e.get("batch_id"), e.get("expires_at")
        elif kind == "abandoned":
            b.abandoned = True
        elif kind == "status":
            b.status = e.get("status")
        elif kind == "fallback":
            b.fallback = True
        elif kind == "collected":
            b.collected, b.status = True, e.get("status")
            failed = e.get("failed")
            b.failed = [str(c) for c in failed] if isinstance(failed, list) else []

    def append(self, event: str, tag: str, **fields: Any) -> None:
        """Write one event as one whole line (on disk before the next step), then apply it."""
        if self._fd is None:
            raise ValueError("ledger is closed")
        record = {"v": 1, "event": event, "tag": tag, "time": round(self._clock(), 3)}
        record.update({k: v for k, v in fields.items() if v is not None})
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)  # a handful of lines per run: each one is worth an fsync
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the provider-batch ledger {self.path}: {exc.strerror}") from exc
        self._apply(record)

    def in_flight(self) -> List[LedgerBatch]:
        """Submissions whose items are still at the provider (or may be: unresolved intents)."""
        return [b for b in self.batches.values() if b.live or b.unresolved]

    def failures(self) -> Counter:
        """custom_id → in how many collected batches the provider answered that item with an error."""
        return Counter(cid for b in self.batches.values() for cid in b.failed)

    def busy_indexes(self) -> set:
        """Indexes in a live batch or an unresolved intent (never submitted again while so)."""
        busy: set = set()
        for b in self.in_flight():
            busy.update(parse_ranges(b.indexes))
        return busy

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
