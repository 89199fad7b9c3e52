"""An id-keyed checkpoint for row-oriented engines (Ray Data): a directory of append-only JSONL parts.

Layout: `checkpoint_dir/flexllm-<host>-<pid>-<random>.jsonl`, one file per writer process (an actor),
so writers never share a file and never need a lock. One line per finished row:

    {"id": <the row's id>, "input_hash": "<sha256 of the conversation>", "status": "success"|"cached",
     "output": "...", "reasoning_content": ..., "finish_reason": ..., "usage": {...}}

Only answers are written (failed rows are asked again on the next run). A line is handed to the OS as one
whole-line `write`, so a SIGKILL loses no finished row and at worst leaves a torn last line, which readers
skip. A row whose conversation changed since it was written (`input_hash` differs) is asked again.

Memory: the reader keeps, per finished row, a 64-bit hash of its id and a 64-bit location (file number and
byte offset) in two sorted arrays — 16 bytes a row, not the records; a record is read back from its file
when its row comes up. URLs other than local paths (`s3://…`, `gs://…`) go through `fsspec` when it is
installed; object stores cannot append, so there each block's rows are written as new part files.

This module owns this file format (reading and writing).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._hashing import canonical_json, messages_hash
from .._logging import get_logger

__all__ = ["RowCheckpoint", "row_key"]

logger = get_logger("flexllm")

_PREFIX = "flexllm-"
_SUFFIX = ".jsonl"
_OFFSET_BITS = 40  # byte offsets up to 1 TiB per part file; the rest of the 64 bits numbers the file
_BUFFERED_ROWS = 500  # object stores: rows written per part file at most


def row_key(row_id: Any) -> str:
    """The canonical form of a row id (so 7, numpy's int64(7) and 7 read back from JSON are one id)."""
    return canonical_json(row_id)


def _hash64(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


class RowCheckpoint:
    """Finished rows of a distributed job, keyed by the user's row id. One instance per process."""

    def __init__(self, directory: str) -> None:
        if not directory or not isinstance(directory, str):
            raise ValueError("checkpoint_dir must be a directory path or URL")
        if directory.startswith("file://"):
            directory = directory[len("file://"):]
        self.directory = directory.rstrip("/") or "/"
        self._url = _is_url(directory)
        self._fs: Any = None
        if self._url:
            try:
                import fsspec  # type: ignore[import-not-found]
            except ImportError:
                raise ValueError(f"checkpoint_dir {directory!r} is a URL: install fsspec (and its driver for "
                                 "that scheme) to use it, or give a local/NFS path") from None
            self._fs, _ = fsspec.core.url_to_fs(directory)
            self._fs.makedirs(self.directory, exist_ok=True)
        else:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"checkpoint_dir {directory!r} cannot be created: {exc.strerror}") from None
        self._name = f"{_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._fd: Optional[int] = None
        self._parts = 0
        self._buffer: List[bytes] = []
        self._lock = threading.Lock()
        self._files: List[str] = []
        self._scanned: Dict[str, Tuple[int, int]] = {}  # path -> (file number, bytes indexed so far)
        self._recent: Dict[int, List[int]] = {}  # rows found by refresh(), not yet in the sorted arrays
        self._keys: Any = None  # sorted uint64 id hashes
        self._locs: Any = None  # uint64 (file number << 40 | offset), in the same order
        self._load()

    # -- reading -------------------------------------------------------------------------------------
    def _list(self) -> List[str]:
        if self._url:
            names = [p for p in self._fs.ls(self.directory, detail=False)]
            return sorted(p for p in names if p.rsplit("/", 1)[-1].startswith(_PREFIX) and p.endswith(_SUFFIX))
        return sorted(os.path.join(self.directory, n) for n in os.listdir(self.directory)
                      if n.startswith(_PREFIX) and n.endswith(_SUFFIX))

    def _open(self, path: str):
        return self._fs.open(path, "rb") if self._url else open(path, "rb")

    def _load(self) -> None:
        """Index every finished row in the directory: id hash → where its record starts."""
        import numpy as np

        keys: List[int] = []
        locs: List[int] = []
        self._scan(keys, locs)
        order = np.argsort(np.asarray(keys, dtype=np.uint64), kind="stable")
        self._keys = np.asarray(keys, dtype=np.uint64)[order]
        self._locs = np.asarray(locs, dtype=np.uint64)[order]
        if len(keys):
            logger.info("checkpoint %s: %d finished rows in %d file(s)", self.directory, len(keys), len(self._files))

    def _scan(self, keys: List[int], locs: List[int]) -> None:
        """Read what was appended since the last scan (new files, and new whole lines of known files)."""
        for path in self._list():
            if path not in self._scanned:
                self._scanned[path] = (len(self._files), 0)
                self._files.append(path)
            number, offset = self._scanned[path]
            with self._open(path) as f:
                f.seek(offset)
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # a torn (or still being written) last line: not a finished row
                    start, offset = offset, offset + len(line)
                    try:
                        key = row_key(json.loads(line)["id"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    keys.append(_hash64(key))
                    locs.append((number << _OFFSET_BITS) | start)
            self._scanned[path] = (number, offset)

    def refresh(self) -> None:
        """Take in rows other writers (or a writer that died) appended since this index was built."""
        keys: List[int] = []
        locs: List[int] = []
        self._scan(keys, locs)
        for k, loc in zip(keys, locs):
            self._recent.setdefault(k, []).append(loc)
        if len(self._recent) > max(100_000, len(self._keys) // 4):  # fold into the sorted arrays now and then
            import numpy as np

            pairs = [(k, loc) for k, ls in self._recent.items() for loc in ls]
            all_keys = np.concatenate([self._keys, np.asarray([k for k, _ in pairs], dtype=np.uint64)])
            all_locs = np.concatenate([self._locs, np.asarray([v for _, v in pairs], dtype=np.uint64)])
            order = np.argsort(all_keys, kind="stable")
            self._keys, self._locs = all_keys[order], all_locs[order]
            self._recent.clear()

    def __len__(self) -> int:
        return int(len(self._keys)) + sum(len(v) for v in self._recent.values())

    def lookup(self, ids: Sequence[Any], conversations: Sequence[Any]) -> Dict[int, Dict[str, Any]]:
        """Records of the rows (by position in `ids`) that are finished for the same conversation."""
        import numpy as np

        found: Dict[int, Dict[str, Any]] = {}
        self.refresh()
        if not len(self) or not len(ids):
            return found
        keys = [row_key(i) for i in ids]
        hashes = np.asarray([_hash64(k) for k in keys], dtype=np.uint64)
        left = np.searchsorted(self._keys, hashes, side="left")
        right = np.searchsorted(self._keys, hashes, side="right")
        mask = (1 << _OFFSET_BITS) - 1
        wanted: List[Tuple[int, int, int]] = []  # (file number, offset, row position)
        for pos, h in enumerate(hashes.tolist()):
            locs = [int(self._locs[j]) for j in range(int(left[pos]), int(right[pos]))] + self._recent.get(h, [])
            wanted.extend((loc >> _OFFSET_BITS, loc & mask, pos) for loc in locs)
        wanted.sort()
        changed = set()  # rows with a record for another prompt (counted unless one for theirs turns up too)
        handle: Any = None
        current = -1
        try:
            for number, offset, pos in wanted:
                if number != current:
                    if handle is not None:
                        handle.close()
                    handle, current = self._open(self._files[number]), number
                handle.seek(offset)
                record = json.loads(handle.readline())
                if row_key(record.get("id")) != keys[pos]:
                    continue  # a 64-bit hash collision: another id
                if record.get("status") not in ("success", "cached") or not isinstance(record.get("output"), str):
                    continue  # not an answer (a hand-edited or foreign line): ask again
                try:
                    same = record.get("input_hash") == messages_hash(conversations[pos])
                except (TypeError, ValueError):
                    same = False
                if same:
                    found[pos] = record
                else:
                    changed.add(pos)
        finally:
            if handle is not None:
                handle.close()
        changed.difference_update(found)
        if changed:
            logger.warning("%d checkpointed row(s) have a different prompt now: they are asked again", len(changed))
        return found

    # -- writing -------------------------------------------------------------------------------------
    def append(self, row_id: Any, conversation: Any, result: Dict[str, Any]) -> None:
        """Record one finished row (an answer) at once."""
        record = {"id": row_id, "input_hash": messages_hash(conversation)}
        record.update(result)
        line = (json.dumps(record, ensure_ascii=True, default=str) + "\n").encode("ascii")
        with self._lock:
            if self._url:
                self._buffer.append(line)
                if len(self._buffer) >= _BUFFERED_ROWS:
                    self._write_part()
                return
            if self._fd is None:
                path = os.path.join(self.directory, self._name + _SUFFIX)
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            view = memoryview(line)
            while view:  # one write in practice; loop only if the OS takes part of it
                view = view[os.write(self._fd, view):]

    def _write_part(self) -> None:
        if not self._buffer:
            return
        self._parts += 1
        path = f"{self.directory}/{self._name}-{self._parts:06d}{_SUFFIX}"
        with self._fs.open(path, "wb") as f:
            f.write(b"".join(self._buffer))
        self._buffer.clear()

    def flush(self) -> None:
        """Make what was appended durable: fsync the local file, or write the buffered part to the store."""
        with self._lock:
            if self._url:
                self._write_part()
            elif self._fd is not None:
                os.fsync(self._fd)

    def close(self) -> None:
        """Flush and release the file."""
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
