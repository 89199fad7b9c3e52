"""Where a rate budget's state lives: this process (memory), a SQLite file (one host), Redis (many hosts).

Every store runs the same GCRA (virtual scheduling): the state of one budget is one timestamp per
dimension ("qps", "rpm", "tpm", and "turn", which spaces the actual starts) — the theoretical arrival time
(TAT) of the next start — plus one "paused until" timestamp set by a 429's retry delay. A reservation over dimensions `(dim, cost_s, tolerance_s)` starts at
`max(now, paused, TAT_d - tolerance_d for every d)` and moves each `TAT_d` to `max(TAT_d, start) + cost_d`
("pay after": a start is never delayed by its own cost, so in any window the budget is exceeded by at
most one request). Refunds and charges move a TAT; provider headers and 429s only ever push it later.

All times a caller sees are relative (seconds to wait), so each store may use its own clock: the
memory store an injectable one, SQLite the host's wall clock, Redis the server's `TIME`.

SQLite schema (one small table; one row per (name, dimension); `dim = 'pause'` holds "paused until"):

    CREATE TABLE flexllm_rate_budget (name TEXT NOT NULL, dim TEXT NOT NULL, tat REAL NOT NULL,
                                      PRIMARY KEY (name, dim)) WITHOUT ROWID

Each reservation is one `BEGIN IMMEDIATE` transaction (read the rows, compute, write, commit): no lock is
held across a request, and a process killed mid-transaction leaves nothing behind (SQLite rolls back).
"""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Tuple

from ._logging import get_logger
from ._sqlite import switch_to_wal
from ._store_common import Dims, StoreUnavailable, safe_url, sqlite_path, url_secrets
from .errors import LLMError

if TYPE_CHECKING:
    import sqlite3

__all__ = ["PAUSE", "Dims", "MemoryStore", "RateLimitStoreError", "SQLiteStore", "StoreUnavailable", "gcra",
           "open_store", "safe_url", "shifted", "sqlite_path", "url_secrets"]

logger = get_logger("flexllm")

PAUSE = "pause"
_SQLITE_BUSY_TIMEOUT = 30.0


class RateLimitStoreError(LLMError):
    """The shared rate-limit store (SQLite file, Redis server) cannot be used; names it, never a password."""


def gcra(tats: Mapping[str, float], dims: Dims, now: float,
         only_if_free: bool = False) -> Tuple[Optional[float], Dict[str, float]]:
    """(seconds to wait, new TATs) of one reservation; (None, {}) when `only_if_free` and it would wait."""
    start = max(now, tats.get(PAUSE, 0.0))
    for dim, _cost, tolerance in dims:
        tat = tats.get(dim)
        if tat is not None and tat - tolerance > start:
            start = tat - tolerance
    if only_if_free and start > now:
        return None, {}
    new: Dict[str, float] = {}
    for dim, cost, _tolerance in dims:
        tat = tats.get(dim)
        new[dim] = (start if tat is None or tat < start else tat) + cost
    return start - now, new


def delay_of(tats: Mapping[str, float], dims: Dims, now: float) -> float:
    """Seconds until a reservation over `dims` could start (0.0 = now), reserving nothing."""
    wait, _ = gcra(tats, dims, now)
    return wait or 0.0


def shifted(tats: Mapping[str, float], now: float, shifts: Mapping[str, float], floors: Mapping[str, float],
            pause: float) -> Dict[str, float]:
    """The TATs that change when a reply is settled: refunds/charges, provider floors, a 429 pause."""
    new: Dict[str, float] = {}
    for dim, delta in shifts.items():
        if dim in tats and delta:
            new[dim] = tats[dim] + delta
    for dim, seconds in floors.items():
        current = new.get(dim, tats.get(dim, now))
        if now + seconds > current:
            new[dim] = now + seconds
    if pause > 0 and now + pause > tats.get(PAUSE, 0.0):
        new[PAUSE] = now + pause
    return new


class MemoryStore:
    """The budgets of this process (threads share it). `clock` is injectable for tests."""

    url = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tats: Dict[str, Dict[str, float]] = {}

    def reserve(self, name: str, dims: Dims, only_if_free: bool = False) -> Optional[float]:
        """Reserve a start; seconds to wait for it, or None when `only_if_free` and it is not free now."""
        with self._lock:
            tats = self._tats.setdefault(name, {})
            wait, new = gcra(tats, dims, self._clock(), only_if_free)
            tats.update(new)
            return wait

    def delay(self, name: str, dims: Dims) -> float:
        """Seconds until a start would be free, reserving nothing."""
        with self._lock:
            return delay_of(self._tats.get(name, {}), dims, self._clock())

    def settle(self, name: str, shifts: Mapping[str, float], floors: Mapping[str, float], pause: float) -> None:
        """Apply what a reply taught: token refunds/charges, provider floors, a 429 pause."""
        with self._lock:
            tats = self._tats.setdefault(name, {})
            tats.update(shifted(tats, self._clock(), shifts, floors, pause))

    def check(self) -> None:
        """Nothing to reach: always usable."""


class SQLiteStore:
    """Budgets in one SQLite file, shared by every process on the host that names it. Fork-safe.

    One connection per process (guarded by a lock: transactions take microseconds); WAL journal, so
    readers never wait; a file that is not ours (not SQLite, or another program's database) is refused
    untouched, a damaged budget file is moved aside with one warning and recreated.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._lock = threading.Lock()
        self._conn: Optional["sqlite3.Connection"] = None
        self._pid = os.getpid()
        self._orphans: list = []  # a parent's connections after fork: never used, never closed here

    def _connect(self) -> "sqlite3.Connection":
        import sqlite3  # loaded only when a SQLite store is used

        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._pid != os.getpid():
            self._orphans.append(self._conn)
            self._conn, self._pid = None, os.getpid()
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            _refuse_foreign_file(self.path)
            conn = sqlite3.connect(self.path, timeout=_SQLITE_BUSY_TIMEOUT, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "flexllm_rate_budget" not in tables:  # another program's database: never touched
                conn.close()
                raise StoreUnavailable(f"{self.path} is another program's SQLite database (tables: "
                                       f"{', '.join(sorted(tables)[:5])}), not a flexllm budget file; it was left "
                                       "as it is: name another path")
            switch_to_wal(conn, _SQLITE_BUSY_TIMEOUT)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS flexllm_rate_budget (name TEXT NOT NULL, dim TEXT NOT NULL, "
                         "tat REAL NOT NULL, PRIMARY KEY (name, dim)) WITHOUT ROWID")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if _corrupt(exc):
                self._recreate(exc)
                return self._connect()
            raise StoreUnavailable(f"cannot use {self.path}: {exc}") from None
        self._conn = conn
        return conn

    def _recreate(self, exc: BaseException) -> None:
        """Move a damaged budget file aside (once, whoever sees it first) and start a fresh one.

        Only a file that says it is SQLite gets here: anything else was refused untouched before opening.
        """
        aside = f"{self.path}.corrupt-{os.getpid()}-{int(time.time())}"
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # another process moved it already
        except OSError as err:
            raise StoreUnavailable(f"{self.path} is corrupt ({exc}) and cannot be moved aside: {err}") from None
        for suffix in ("-wal", "-shm"):
            try:
                os.remove(self.path + suffix)
            except OSError:
                pass
        logger.warning("rate-limit store %s was not a valid budget file (%s); moved it to %s and started a "
                       "fresh one", self.path, exc, aside)

    def _transaction(self, name: str, work: Callable[[Dict[str, float], float], Tuple[object, Dict[str, float]]]):
        import sqlite3

        with self._lock:
            for attempt in (1, 2):
                conn = self._connect()
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        tats = dict(conn.execute("SELECT dim, tat FROM flexllm_rate_budget WHERE name = ?",
                                                 (name,)).fetchall())
                        result, new = work(tats, time.time())
                        if new:
                            conn.executemany("INSERT OR REPLACE INTO flexllm_rate_budget (name, dim, tat) "
                                             "VALUES (?, ?, ?)", [(name, d, t) for d, t in new.items()])
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                    return result
                except sqlite3.DatabaseError as exc:
                    if attempt == 1 and _corrupt(exc):
                        self._conn = None
                        conn.close()
                        self._recreate(exc)
                        continue
                    raise StoreUnavailable(f"{self.path}: {exc}") from None
        raise AssertionError("unreachable")

    def reserve(self, name: str, dims: Dims, only_if_free: bool = False) -> Optional[float]:
        """Reserve a start in one transaction; seconds to wait, or None when `only_if_free` and busy."""
        return self._transaction(name, lambda tats, now: gcra(tats, dims, now, only_if_free))  # type: ignore

    def delay(self, name: str, dims: Dims) -> float:
        """Seconds until a start would be free, reserving nothing."""
        return self._transaction(name, lambda tats, now: (delay_of(tats, dims, now), {}))  # type: ignore

    def settle(self, name: str, shifts: Mapping[str, float], floors: Mapping[str, float], pause: float) -> None:
        """Apply what a reply taught, in one transaction."""
        self._transaction(name, lambda tats, now: (None, shifted(tats, now, shifts, floors, pause)))

    def check(self) -> None:
        """Open the file now, so a bad path fails at construction rather than mid-batch."""
        with self._lock:
            self._connect()


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _refuse_foreign_file(path: str) -> None:
    """StoreUnavailable for an existing, non-empty file that is not SQLite (a typo onto `out.jsonl`, say):
    it is left byte for byte as it is, never moved aside or replaced by a database."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    if head and head != _SQLITE_MAGIC:
        raise StoreUnavailable(f"{path} exists and is not a SQLite file, so it is not a flexllm budget file; it "
                               "was left as it is: name another path")


def _corrupt(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


_registry: Dict[str, object] = {}
_registry_lock = threading.Lock()
_registry_pid = os.getpid()


def open_store(url: str):
    """The process-wide store for `url` ("memory", "sqlite:///…", "redis://…"), created on first use."""
    global _registry_pid
    with _registry_lock:
        if _registry_pid != os.getpid():  # after fork each store reconnects by itself; the registry is kept
            _registry_pid = os.getpid()
        store = _registry.get(url)
        if store is None:
            scheme = url.split(":", 1)[0].lower()
            if scheme == "memory":
                store = MemoryStore()
            elif scheme == "sqlite":
                store = SQLiteStore(url)
            else:
                try:
                    from ._redis_store import RedisStore
                except ImportError as exc:  # the extra is not installed
                    raise RateLimitStoreError(f"shared={safe_url(url)!r} needs the redis package: "
                                              f"pip install 'flexllm[redis]' ({exc})") from None
                store = RedisStore(url)
            _registry[url] = store
        return store
