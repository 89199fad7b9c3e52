"""The response cache: replies stored in SQLite through sqlitedict, as JSON, keyed by what changes them.

One file, `<cache_dir>/responses.sqlite` (directory 0700, file 0600), in WAL mode with a 30 s busy
timeout, so many processes (cron jobs, gunicorn workers) and many clients share it. `use_ipc=True` commits
with `synchronous=NORMAL` (what other processes see is durable); `use_ipc=False` skips even that sync for
a single process that accepts losing the last entries on a power cut (never corruption). A cache that cannot be opened logs one
warning and the client runs uncached: the cache never fails a request.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ._hashing import _C_ENCODE, canonical_json, strip_inline_media
from ._logging import get_logger
from ._sqlite import switch_to_wal
from ._workers import default_policy
from .config import ResponseCacheConfig

__all__ = ["CACHE_FILENAME", "ResponseCache", "cache_key", "cache_keys", "keys_of"]

logger = get_logger(__name__)

CACHE_FILENAME = "responses.sqlite"
_TABLE = "responses"
_CHUNK = 500
_OPEN: Dict[Any, "ResponseCache"] = {}
_OPEN_LOCK = threading.Lock()  # keys per SELECT … IN (…): below SQLite's default variable limit
_BUSY_TIMEOUT_MS = 30_000


def cache_key(provider: str, model: str, messages: List[dict], params: Mapping[str, Any]) -> str:
    """SHA-256 of everything that changes the answer: provider, model, messages (media hashed), params.

    `params` are the output-affecting parameters (the adapter filters out library words); None values
    are dropped so `{"temperature": None}` keys the same as `{}`.
    """
    return cache_keys(provider, [(model, messages, params)])[0]


def cache_keys(provider: str, requests: Iterable[Tuple[str, List[dict], Mapping[str, Any]]]) -> List[str]:
    """`cache_key` of many `(model, messages, params)`: what a batch's items share is encoded once.

    The key hashes the canonical JSON of `{"m": model, "msg": messages, "p": provider, "params": params}`
    (sorted keys, so exactly that order): only the messages part differs from item to item.
    """
    return keys_of(provider, ((messages, model, params) for model, messages, params in requests))


def keys_of(provider: str, requests: Iterable[Tuple[List[dict], str, Mapping[str, Any]]],
            key_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict) -> List[str]:
    """`cache_keys` of `(messages, model, params)` triples (a batch's order), `key_params` applied to each
    distinct params object first; runs once per cached item, so the shared frame is reused by identity."""
    frames: Dict[Tuple[str, int], Tuple[str, str, Any]] = {}
    sha256, encode, out = hashlib.sha256, _C_ENCODE, []
    append = out.append
    last_model: Any = None
    last_params: Any = None
    head = tail = ""
    for messages, model, params in requests:
        if params is not last_params or model != last_model:
            frame = frames.get((model, id(params)))
            if frame is None:  # the params object is held in the frame, so its id is not reused meanwhile
                kept = {k: v for k, v in key_params(params).items() if v is not None}
                frame = frames[(model, id(params))] = (
                    '{"m":' + canonical_json(model) + ',"msg":',
                    ',"p":' + canonical_json(provider) + ',"params":' + canonical_json(kept) + "}", params)
            head, tail, _ = frame
            last_model, last_params = model, params
        try:
            text = "".join(encode(messages, 0)) if encode is not None and type(messages) is list else canonical_json(messages)
        except RecursionError:
            text = canonical_json(messages)  # a circular structure: the plain encoder names it
        if "base64," in text or '"mimeType"' in text:  # only then walk the messages to hash inline media
            text = canonical_json(strip_inline_media(messages))
        append(sha256((head + text + tail).encode("utf-8", "surrogatepass")).hexdigest())
    return out


class ResponseCache:
    """A thread-safe, fork-safe SQLite cache of replies (JSON values, never pickle)."""

    def __init__(self, config: ResponseCacheConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.ttl = config.ttl  # checked by the config; 0.5 s stays 0.5 s (int() made it 0: never expires)
        self.directory = _cache_directory(config.cache_dir)
        self.path = os.path.join(self.directory, CACHE_FILENAME)
        self._clock = clock
        self._lock = threading.Lock()
        self._warned = False
        self._broken = False  # a corrupt file: every operation is skipped (one warning was logged)
        self._db: Any = None
        self._pid = 0
        self._local = threading.local()
        self._open()

    @classmethod
    def open(cls, config: Optional[ResponseCacheConfig], *,
             clock: Callable[[], float] = time.time) -> Optional["ResponseCache"]:
        """The cache for `config`, or None when disabled or unusable (with one warning)."""
        if config is None or not config.enabled:
            return None
        shared = clock is time.time
        with _OPEN_LOCK:
            try:
                key = (_cache_directory(config.cache_dir), config.ttl, config.use_ipc)
                if shared and key in _OPEN:  # clients of one process share one handle: one ordered writer
                    return _OPEN[key]
                cache = cls(config, clock=clock)
            except Exception as exc:
                cls._warn_unusable(config, exc)
                return None
            if shared:
                _OPEN[key] = cache
            return cache

    @staticmethod
    def _warn_unusable(config: ResponseCacheConfig, exc: Exception) -> None:
        # any failure to open means "run uncached", never a failed request
        logger.warning("response cache disabled: cannot open %s (%s: %s)",
                       os.path.join(os.path.expanduser(config.cache_dir), CACHE_FILENAME), type(exc).__name__, exc)

    def _open(self) -> None:
        from sqlitedict import SqliteDict

        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        if os.stat(self.path).st_uid == os.getuid():
            os.chmod(self.path, 0o600)
        probe = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:  # a corrupt file or a lock race fails here, quietly, instead of inside sqlitedict's thread
            probe.execute("PRAGMA schema_version").fetchone()
            switch_to_wal(probe, _BUSY_TIMEOUT_MS / 1000)  # then sqlitedict's own pragma is a no-op
        finally:
            probe.close()
        with default_policy():  # its writer thread must not inherit a batch worker's SCHED_BATCH
            db = SqliteDict(self.path, tablename=_TABLE, autocommit=True, outer_stack=False,
                            journal_mode="WAL", encode=_encode, decode=json.loads)
        # sqlitedict's worker logs ~18 ERROR lines per failed statement: ours keeps them at DEBUG (one warning
        # from _fail says it all); only this handle's logger is swapped, no logging config is touched
        db.conn.log = _QUIET
        try:
            # wait for other processes' writes instead of failing; NORMAL is durable enough in WAL mode
            db.conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            db.conn.execute("PRAGMA synchronous = %s" % ("NORMAL" if self.config.use_ipc else "OFF"))
            db.conn.select_one(f'SELECT COUNT(*) FROM "{_TABLE}" WHERE 0')  # surfaces a corrupt file now
        except Exception:
            db.close(force=True)
            raise
        self._db, self._pid = db, os.getpid()

    def _handle(self) -> Any:
        if self._db is None or self._pid != os.getpid():  # closed, or forked: no connection thread here
            with self._lock:
                if self._db is None or self._pid != os.getpid():
                    self._open()
        return self._db

    def _reader(self) -> sqlite3.Connection:
        """This thread's own read connection, for bulk lookups.

        sqlitedict hands every row through a queue from its worker thread; a batch looking up thousands
        of keys reads directly instead (WAL readers never block the writer).
        """
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or getattr(local, "pid", None) != os.getpid():
            conn = local.conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000)
            local.pid = os.getpid()
        return conn

    def _fail(self, what: str, exc: BaseException) -> None:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            # the file is corrupt (not a lock or a full disk): stop touching it, run uncached from now on
            self._broken = True
        if not self._warned:
            self._warned = True
            logger.warning("response cache %s failed (%s: %s); requests go on uncached%s", what, type(exc).__name__,
                           exc, "" if self._broken else " where it fails")

    def _fresh(self, value: Any) -> Optional[dict]:
        if not isinstance(value, dict):
            return None
        if self.ttl > 0 and float(value.get("created", 0.0)) + self.ttl < self._clock():
            return None
        return value

    def get(self, key: str) -> Optional[dict]:
        """The stored entry, or None when absent or expired."""
        if self._broken:
            return None
        try:
            return self._fresh(self._handle().get(key))
        except Exception as exc:
            self._fail("read", exc)
            return None

    def get_many(self, keys: Sequence[str]) -> Dict[str, dict]:
        """The fresh entries among `keys` (hits only), in one SELECT per 500 keys."""
        out: Dict[str, dict] = {}
        if not keys or self._broken:
            return out
        try:
            conn = self._reader()
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f'SELECT key, value FROM "{_TABLE}" WHERE key IN ({marks})', chunk).fetchall()
                oldest = self._clock() - self.ttl if self.ttl > 0 else None
                for key, raw in rows:
                    try:
                        value = _loads(raw)
                    except (ValueError, TypeError):  # one unreadable entry is a miss, not a failed lookup
                        continue
                    if type(value) is dict and (oldest is None or float(value.get("created", 0.0)) >= oldest):
                        out[key] = value
        except Exception as exc:
            self._fail("read", exc)
        return out

    def set(self, key: str, value: Mapping[str, Any]) -> None:
        """Store `value` (plus its creation time); errors are logged once, never raised."""
        if self._broken:
            return
        try:
            self._handle()[key] = dict(value, created=self._clock())
        except Exception as exc:
            self._fail("write", exc)

    def set_many(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        """Store several entries."""
        for key, value in items.items():
            self.set(key, value)

    def close(self) -> None:
        """Flush pending writes and close (only a connection this process opened)."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None and self._pid == os.getpid():
                try:
                    db.close()
                except Exception as exc:
                    self._fail("close", exc)

    def __repr__(self) -> str:
        return f"ResponseCache(path={self.path!r}, ttl={self.ttl})"


def _cache_directory(cache_dir: str) -> str:
    """The absolute cache directory; an OSError (so: one warning, then uncached) when `~` names no home
    (HOME unset and a user without a passwd entry, as containers run with an arbitrary uid) — never a
    directory literally named `~` in the working directory."""
    path = os.path.expanduser(cache_dir)
    if path.startswith("~"):
        raise OSError(f"{cache_dir!r} starts with '~' but there is no home directory (HOME is not set); set HOME "
                      "or give cache_dir an absolute path")
    return os.path.abspath(path)


class _QuietLog:
    """A logger stand-in for sqlitedict's worker thread: every record goes to flexllm.cache at DEBUG."""

    def _debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        logger.debug("sqlitedict: " + str(msg), *args)

    debug = info = warning = error = exception = critical = _debug


_QUIET = _QuietLog()


_SCAN = json.JSONDecoder().scan_once


def _loads(raw: Any) -> Any:
    """json.loads for the values we wrote (compact JSON text), minus json.loads' per-call Python layers."""
    if type(raw) is str:
        try:
            value, end = _SCAN(raw, 0)
            if end == len(raw):
                return value
        except StopIteration:
            pass
    return json.loads(raw)  # anything else (bytes, padding, garbage) the usual way, with its usual errors


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

