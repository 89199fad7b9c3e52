"""The batch output file: a JSON Lines checkpoint that is appended, resumed, locked and compacted.

Every record reaches the operating system as one whole-line `os.write` on an O_APPEND descriptor the
moment it is handed over, so a killed process (SIGKILL, OOM) loses no result that had arrived; a write
that fails part-way (disk full) is cut back to the last whole line. A flusher thread `fsync`s every
`flush_interval` seconds outside the append lock, and at close.

What the file holds in memory is an index → offset table (8 bytes per index); records are read back
from the file when a resumed item is handed out, checked or compacted. A file that is not ours (any
complete line that is not one of our records) is refused before anything is written. A pipe, terminal
or device (`-` is standard output) is written as a plain stream: no lock, no resume, no compaction.
"""
from __future__ import annotations

import glob
import os
import stat
import sys
import threading
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

try:  # POSIX advisory locks; Windows runs without the overlapping-run guard
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

from ._index_table import IndexSet, IndexTable
from ._logging import get_logger
from ._record import DONE_STATUSES, decode, encode, torn_tail_is_ours
from .errors import LLMError
from .types import BatchResultItem

__all__ = ["Checkpoint", "OutputFileLockedError"]

logger = get_logger("flexllm")


class OutputFileLockedError(LLMError):
    """Another run is writing the same output file right now."""


def _foreign(path: str, where: str) -> ValueError:
    return ValueError(f"{path} is not a flexllm batch output file ({where} is not one of its records): refusing "
                      "to write to it, it was left as it was. Is it the input file? Choose another output file")


class Checkpoint:
    """Owns one output file for one batch. Thread-safe: workers `write` concurrently (one append lock);
    `open`, `resume`, `validate`, `rollback` and `close` run on the batch's consumer thread."""

    def __init__(self, path: str, *, flush_interval: float = 1.0,
                 redo: Optional[Callable[[Dict[str, Any]], bool]] = None) -> None:
        self.path = os.path.abspath(os.path.expanduser(path)) if path != "-" else "-"
        #: `record -> bool`: finished records to ask again (their new record replaces them at compaction)
        self.redo = redo
        self.redone = 0
        if isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float)) \
                or not flush_interval >= 0:  # NaN would never fsync until the end, silently
            raise ValueError(f"flush_interval must be a number of seconds >= 0 (0 = after every record), "
                             f"got {flush_interval!r}")
        self.flush_interval = float(flush_interval)
        #: a pipe, terminal or device: written as a stream (no lock, resume or compaction)
        self.stream = False
        self.real = self.path  # the regular file written (symlinks resolved)
        self._fd: Optional[int] = None
        self._lock_fd: Optional[int] = None
        self._reader: Any = None
        self._append_lock = threading.Lock()
        self._size = 0  # bytes of whole lines in the file: a failed write is cut back to this
        self._start: Tuple[int, bytes] = (0, b"")  # size and torn tail at open: what `rollback` restores
        self._dirty = False
        self._discarded = False
        self._flusher: Optional[threading.Thread] = None
        self._closing = threading.Event()
        #: finished indexes, a bitmap (earlier runs' and this run's): `index in checkpoint.done`, `len(...)`
        self.done = IndexSet()
        self._offsets = IndexTable()  # where the records found at open are (a resumed item is read back)
        self._written = IndexSet()  # indexes written by this run (a second record for one needs compaction)
        self.needs_compaction = False
        self.records_read = 0

    # -- open / resume -------------------------------------------------------------------------------
    def open(self) -> "Checkpoint":
        """Refuse a foreign file, lock, read what earlier runs finished, drop a torn last line."""
        if self.is_stream_path(self.path):
            return self._open_stream()
        self.real = os.path.realpath(self.path)
        if os.path.exists(self.real):
            self._check_first_line()  # before the lock file is created next to a file that is not ours
        os.makedirs(os.path.dirname(self.real), exist_ok=True)
        self._lock()
        try:
            if os.path.exists(self.real):
                self._read_existing()
            self._fd = os.open(self.real, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size
            self._reader = open(self.real, "rb")
            self._clean_stale_temp_files()
        except BaseException:
            self._close_fds()
            self._unlock()
            raise
        if self.flush_interval > 0:
            self._flusher = threading.Thread(target=self._flush_loop, name="flexllm-fsync", daemon=True)
            self._flusher.start()
        return self

    @staticmethod
    def is_stream_path(path: str) -> bool:
        """Whether `path` is written as a plain stream (a pipe, FIFO or device; `-` is standard output)."""
        return path == "-" or Checkpoint._is_special(path)

    @staticmethod
    def _is_special(path: str) -> bool:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(f"output file {path} is a directory")
        return not stat.S_ISREG(mode)

    def _open_stream(self) -> "Checkpoint":
        self.stream = True
        if self.path == "-":
            self._fd = os.dup(sys.stdout.fileno())
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return self

    def _check_first_line(self) -> None:
        with open(self.real, "rb") as f:
            first = f.readline()
        if first and decode(first) is None and (first.endswith(b"\n") or not torn_tail_is_ours(first)):
            raise _foreign(self.path, "line 1")

    def _lock(self) -> None:
        if fcntl is None:
            logger.warning("no advisory file locks on this platform: overlapping runs are not detected")
            return
        fd = os.open(self.real + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputFileLockedError(
                f"{self.path} is being written by another running batch (lock {self.real}.lock is held); "
                "wait for it to finish or use another output file") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _read_existing(self) -> None:
        offset = 0
        with open(self.real, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                record = decode(raw)
                if record is None:
                    if raw.endswith(b"\n") or not torn_tail_is_ours(raw):
                        raise _foreign(self.path, f"line {lineno}")
                    logger.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run",
                                   self.path, len(raw))
                    self._start = (offset, raw)
                    break
                self.records_read += 1
                index, done = record["index"], record["status"] in DONE_STATUSES
                if index > self.records_read + (1 << 24):  # never ours: no run skips so many indexes
                    raise _foreign(self.path, f"line {lineno} (index {index})")
                if done and self.redo is not None and self.redo(record):
                    done = self._offsets.forget(index)
                    self.redone += 1
                if self._offsets.note(index, offset, done):
                    self.needs_compaction = True
                offset += len(raw)
        for index in self._offsets:
            self.done.add(index)
        if self._start[1]:
            os.truncate(self.real, offset)
        self._start = (offset, self._start[1])

    def _clean_stale_temp_files(self) -> None:
        """Remove compaction temp files of runs that died (we hold the lock: no live run compacts)."""
        for tmp in glob.glob(glob.escape(self.real) + ".tmp-*"):
            pid = tmp.rsplit(".tmp-", 1)[1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            try:
                with open(tmp, "rb") as f:
                    first = f.readline()
                if first == b"" or decode(first) is not None:
                    os.unlink(tmp)
                    logger.info("removed %s left by an interrupted compaction", tmp)
            except OSError:
                pass

    def resume(self, index: int, messages: Any, params: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
        """The finished record of `index` (read back from the file), or None when it is not finished.

        Raises ValueError when that record was written for other messages or item params (`params_list`
        entry); the file is first put back the way it was before this run (see `rollback`).
        """
        if index not in self._offsets:  # finished by an earlier run (this run's records are not resumed)
            return None
        record = self._read(index)
        if record.get("input") != messages:
            self.rollback()
            raise ValueError(f"{self.path}: the record for index {index} was written for different input "
                             "messages than the ones given now; the file belongs to another batch "
                             "(use another output_file, or delete it to start over). The file was left as it "
                             "was before this run")
        if (record.get("params") or None) != (params or None):
            self.rollback()
            raise ValueError(f"{self.path}: the record for index {index} was written with params_list entry "
                             f"{record.get('params')!r}, not {params!r}; the file belongs to another batch (use "
                             "another output_file). The file was left as it was before this run")
        return record

    def validate(self, messages_list: Any, total: int,
                 params_of: Optional[Callable[[int], Optional[Dict[str, Any]]]] = None) -> None:
        """Raise ValueError (before anything is written) if a finished record belongs to other inputs.

        `params_of(index)`: the item's own params as its record stores them (None without params_list).
        """
        for index in self._offsets:
            if index >= total:
                raise ValueError(f"{self.path} has a finished record for index {index} but there are only "
                                 f"{total} inputs: it was written for other inputs; use another output file")
            self.resume(index, messages_list[index], params_of(index) if params_of is not None else None)

    def finished_records(self) -> Iterator[Dict[str, Any]]:
        """Every finished record (the one compaction keeps), read back from the file one at a time, by index."""
        table = self._scan()
        with open(self.real, "rb") as f:
            for index in table:
                f.seek(table.get(index)[0])
                record = decode(f.readline())
                if record is not None:
                    yield record

    def _scan(self) -> IndexTable:
        """Where the kept record of every index is (a full table: built only for compaction and summaries)."""
        table = IndexTable()
        offset = 0
        with open(self.real, "rb") as f:
            for raw in f:
                record = decode(raw)
                if record is not None:
                    table.note(record["index"], offset, record["status"] in DONE_STATUSES)
                offset += len(raw)
        return table

    def _read(self, index: int) -> Dict[str, Any]:
        offset, _ = self._offsets.get(index)
        self._reader.seek(offset)
        record = decode(self._reader.readline())
        if record is None or record["index"] != index:  # pragma: no cover - the file changed under our lock
            raise OSError(f"{self.path} changed while this batch held its lock (no record for index {index} "
                          f"at byte {offset})")
        return record

    # -- append --------------------------------------------------------------------------------------
    def write(self, item: BatchResultItem, messages: Any) -> None:
        """Append `item`'s record (its input was `messages`). Safe from any thread; dropped once closed."""
        self.append(encode(item, messages), item.index, item.status in DONE_STATUSES)

    def append(self, data: bytes, index: int = -1, done: bool = False) -> None:
        """Hand one encoded line to the OS at once; a write that fails part-way is cut back to the last line."""
        with self._append_lock:
            fd = self._fd
            if fd is None:
                return  # closed (a straggler after the batch ended) or rolled back: nothing is written
            offset = self._size
            try:
                written = os.write(fd, data)
                while written < len(data):  # short writes: pipes, and a disk filling up
                    written += os.write(fd, data[written:])
            except OSError as exc:
                if not self.stream:
                    self._cut_back(fd, offset)
                raise OSError(exc.errno, f"cannot write to the batch output file {self.path}: {exc.strerror}. "
                              "Every record before this one is on disk; free space and rerun to resume") from exc
            self._size = offset + len(data)
            self._dirty = True
            if index >= 0 and not self.stream:
                if index in self._written or self._offsets.has(index):
                    self.needs_compaction = True  # it supersedes a record: compaction keeps the newer one
                self._written.add(index)
                if done:
                    self.done.add(index)
        if self.flush_interval <= 0 and not self.stream:
            self._fsync()

    def _cut_back(self, fd: int, offset: int) -> None:
        try:
            os.ftruncate(fd, offset)
        except OSError as exc:  # pragma: no cover - the file system refuses even to shrink the file
            logger.error("%s: could not cut a partly written record back (%s); the next run drops it", self.path,
                         exc)

    def _fsync(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        try:
            fd = self._fd
            if fd is not None:
                os.fsync(fd)
        except OSError as exc:
            logger.error("fsync of %s failed: %s", self.path, exc)

    def _flush_loop(self) -> None:
        """fsync every flush_interval seconds, outside the append lock (a worker never waits on the disk)."""
        while not self._closing.wait(self.flush_interval):
            self._fsync()

    def rollback(self) -> None:
        """Put the file back as it was when this run opened it, and write nothing more (nor compact)."""
        with self._append_lock:
            if self._fd is None or self.stream:
                return
            self._discarded = True
            size, tail = self._start
            os.ftruncate(self._fd, size)
            if tail:
                os.write(self._fd, tail)
            os.fsync(self._fd)
            self._close_fds()

    # -- close ---------------------------------------------------------------------------------------
    def close(self, *, compact: bool = False) -> None:
        """fsync, close, compact when asked and records were superseded, release the lock."""
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        try:
            with self._append_lock:
                if self._fd is not None and not self.stream:
                    self._fsync()
                self._close_fds()
            if compact and self.needs_compaction and not self._discarded and not self.stream:
                self._compact()
        finally:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._unlock()

    def _close_fds(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _compact(self) -> None:
        """Rewrite the file with one record per index, in index order, in bounded memory (an offset table).

        The copy is written beside the real file (through a symlink), gets its mode and owner, and
        replaces it atomically. A failure (disk full) keeps the uncompacted file, which is complete.
        """
        st = os.stat(self.real)
        if st.st_nlink > 1:
            logger.info("%s has %d hard links: not compacted (a replace would break them)", self.path, st.st_nlink)
            return
        tmp = f"{self.real}.tmp-{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out, open(self.real, "rb") as src:
                for _, offset in self._scan().kept():
                    src.seek(offset)
                    out.write(src.readline())
                out.flush()
                os.fsync(out.fileno())
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
                if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                    try:
                        os.chown(tmp, st.st_uid, st.st_gid)
                    except PermissionError:
                        logger.warning("%s: compaction cannot keep its owner (not permitted)", self.path)
            os.replace(tmp, self.real)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            logger.warning("could not compact %s (%s): the file is complete but keeps records that later ones "
                           "replaced; a later run compacts it", self.path, exc.strerror or exc)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from a compaction of an earlier batch in this process that could not clean up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
