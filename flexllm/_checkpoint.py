"""The batch output file: a JSON Lines checkpoint that is appended, resumed, locked and compacted.

Every record reaches the operating system as one whole-line `os.write` on an O_APPEND descriptor the
moment it is handed over, so a killed process (SIGKILL, OOM) loses no result that had arrived and never
leaves half a line behind; `fsync` runs every `flush_interval` seconds and at close.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

try:  # POSIX advisory locks; Windows runs without the overlapping-run guard
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

from ._logging import get_logger
from ._record import DONE_STATUSES, decode
from .errors import LLMError

__all__ = ["Checkpoint", "OutputFileLockedError", "DONE_STATUSES"]

logger = get_logger("flexllm")

class OutputFileLockedError(LLMError):
    """Another run is writing the same output file right now."""


class Checkpoint:
    """Owns one output file for the duration of a batch. Used from one thread (the batch's consumer)."""

    def __init__(self, path: str, *, flush_interval: float = 1.0, clock=time.monotonic,
                 redo: Optional[Callable[[Dict[str, Any]], bool]] = None) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        #: `record -> bool`: finished records to ask again (their new record replaces them at compaction)
        self.redo = redo
        self.redone = 0
        self.flush_interval = float(flush_interval)
        self._clock = clock
        self._fd: Optional[int] = None
        self._lock_fd: Optional[int] = None
        self._last_sync = 0.0
        self._dirty = False
        #: index → the latest finished (success/cached) record read from the file
        self.done: Dict[int, Dict[str, Any]] = {}
        #: indices that have an error record in the file (retried by this run)
        self.failed_before: set = set()
        self.needs_compaction = False
        self.records_read = 0

    # -- open / resume -------------------------------------------------------------------------------
    def open(self) -> "Checkpoint":
        """Lock the file against a second run, read what earlier runs finished, drop a torn last line."""
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        self._lock()
        try:
            if os.path.exists(self.path):
                self._read_existing()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            self._unlock()
            raise
        self._last_sync = self._clock()
        return self

    def _lock(self) -> None:
        if fcntl is None:
            logger.warning("no advisory file locks on this platform: overlapping runs are not detected")
            return
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputFileLockedError(
                f"{self.path} is being written by another running batch (lock {self.path}.lock is held); "
                "wait for it to finish or use another output file") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _read_existing(self) -> None:
        good_end = 0
        seen: set = set()
        with open(self.path, "rb") as f:
            for raw, end in _lines_with_offsets(f):
                record = decode(raw)
                if record is None:
                    if raw.endswith(b"\n"):
                        logger.warning("%s: skipping an unreadable line at byte %d", self.path, end - len(raw))
                        self.needs_compaction = True
                        good_end = end
                        continue
                    logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run",
                                   self.path, len(raw))
                    break
                good_end = end
                self.records_read += 1
                index = record["index"]
                if index in seen:
                    self.needs_compaction = True
                seen.add(index)
                if record.get("status") in DONE_STATUSES:
                    if self.redo is not None and self.redo(record):
                        self.done.pop(index, None)
                        self.failed_before.add(index)
                        self.redone += 1
                        continue
                    self.done[index] = record
                    self.failed_before.discard(index)
                elif index not in self.done:
                    self.failed_before.add(index)
        if good_end < os.path.getsize(self.path):
            os.truncate(self.path, good_end)
        if self.failed_before:
            self.needs_compaction = True

    def validate(self, messages_list: Any, total: int,
                 params_of: Optional[Callable[[int], Optional[Dict[str, Any]]]] = None) -> None:
        """Raise ValueError (before anything is written) if a finished record belongs to other inputs.

        `params_of(index)`: the item's own params as its record stores them (None without params_list).
        """
        for index in sorted(self.done):
            if index >= total:
                raise ValueError(f"{self.path} has a finished record for index {index} but there are only "
                                 f"{total} inputs: it was written for other inputs; use another output file")
            self.check(index, messages_list[index], params_of(index) if params_of is not None else None)

    def check(self, index: int, messages: Any, params: Optional[Dict[str, Any]] = None) -> None:
        """Raise ValueError if the finished record at `index` was written for other messages or item params."""
        record = self.done.get(index)
        if record is None:
            return
        if record.get("input") != messages:
            raise ValueError(f"{self.path}: the record for index {index} was written for different input "
                             "messages than the ones given now; the file belongs to another batch "
                             "(use another output_file, or delete it to start over)")
        if (record.get("params") or None) != (params or None):
            raise ValueError(f"{self.path}: the record for index {index} was written with params_list entry "
                             f"{record.get('params')!r}, not {params!r}; the file belongs to another batch (use another "
                             "output_file)")

    # -- append --------------------------------------------------------------------------------------
    def append(self, data: bytes) -> None:
        """Hand one encoded record (see `_record.encode`) to the OS at once; fsync when flush_interval has passed."""
        if self._fd is None:
            raise ValueError("checkpoint is closed")
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # short writes are rare (disk full raises instead) but possible
                written += os.write(self._fd, data[written:])
            self._dirty = True
            now = self._clock()
            if now - self._last_sync >= self.flush_interval:
                os.fsync(self._fd)
                self._dirty = False
                self._last_sync = now
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write to the batch output file {self.path}: {exc.strerror}. "
                          "Every record before this one is on disk; free space and rerun to resume") from exc

    def close(self, *, compact: bool = False) -> None:
        """fsync, close, optionally compact (one record per index, sorted), release the lock."""
        try:
            if self._fd is not None:
                if self._dirty:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
                if compact and self.needs_compaction:
                    self._compact()
        finally:
            self._unlock()

    def _compact(self) -> None:
        latest: Dict[int, Tuple[bool, bytes]] = {}
        with open(self.path, "rb") as f:
            for raw, _ in _lines_with_offsets(f):
                record = decode(raw)
                if record is None:
                    continue
                done = record.get("status") in DONE_STATUSES
                prev = latest.get(record["index"])
                if prev is None or done or not prev[0]:
                    latest[record["index"]] = (done, raw if raw.endswith(b"\n") else raw + b"\n")
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as out:
            for index in sorted(latest):
                out.write(latest[index][1])
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def _lines_with_offsets(f) -> Iterator[Tuple[bytes, int]]:
    offset = 0
    for raw in f:
        offset += len(raw)
        yield raw, offset


