"""The one SQLite detail shared by the response cache and the rate-budget store: switching to WAL."""
from __future__ import annotations

import random
import sqlite3
import time

__all__ = ["switch_to_wal"]


def switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode (persistent), retrying for up to `timeout` s while others hold it.

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once, without its busy
    handler, to some of several connections racing to switch a new file. A filesystem without WAL support
    keeps its mode, as SQLite's own pragma would.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.25)
