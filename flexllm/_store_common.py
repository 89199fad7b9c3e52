"""What every rate-budget store shares, below all of them: the shape of a reservation, the "unavailable just
now" signal, and store URLs (the SQLite file a URL names; passwords found and masked for messages and logs).

`_stores` (memory, SQLite, the registry) and `_redis_store` both import from here, never from each other.
"""
from __future__ import annotations

import os
from typing import Sequence, Tuple
from urllib.parse import unquote, urlsplit

__all__ = ["Dims", "StoreUnavailable", "safe_url", "sqlite_path", "url_secrets"]

#: (dimension, cost in seconds, tolerance in seconds) for each dimension a reservation touches
Dims = Sequence[Tuple[str, float, float]]


class StoreUnavailable(Exception):
    """The store could not be reached or used just now (the limiter decides: wait, fall back or raise)."""


def url_secrets(url: str) -> Tuple[str, ...]:
    """The passwords a store URL carries, as written and decoded: in the netloc and in a `password=` query
    field (redis-py reads both)."""
    try:
        parts = urlsplit(url)
        found = [parts.password] + [v for k, _, v in (p.partition("=") for p in parts.query.split("&"))
                                    if k == "password"]
    except ValueError:
        return ()
    return tuple({x for s in found if s for x in (s, unquote(s)) if x})


def safe_url(url: str) -> str:
    """`url` with any password (netloc or `password=` query field) replaced by `***` (for messages and logs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if password is None and "password=" not in parts.query:
        return url
    netloc = parts.netloc if password is None else f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}"
    query = "&".join("password=***" if p.partition("=")[0] == "password" else p for p in parts.query.split("&"))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + \
        (f"#{parts.fragment}" if parts.fragment else "")


def sqlite_path(url: str) -> str:
    """The file of a SQLite store URL: `sqlite:///var/lib/app/limits.db` is absolute (as in file:// URLs;
    extra leading slashes are ignored), `sqlite://relative/limits.db` and `sqlite://~/limits.db` are not."""
    if not url.lower().startswith("sqlite://"):
        raise ValueError(f"shared={safe_url(url)!r}: a SQLite store is 'sqlite:///absolute/path/limits.db'")
    rest = url[len("sqlite://"):]
    if "?" in rest or "#" in rest:  # no SQLite option is read from the URL: `x.db?mode=ro` would be the file name
        raise ValueError(f"shared={safe_url(url)!r}: a SQLite store URL takes no query string or fragment "
                         "('?…', '#…'); name only the file, e.g. 'sqlite:///var/lib/myapp/limits.db'")
    path = "/" + rest.lstrip("/") if rest.startswith("/") else rest
    if not path.strip("/") or path.endswith("/"):
        raise ValueError(f"shared={safe_url(url)!r}: name a file, e.g. 'sqlite:///var/lib/myapp/limits.db'")
    return os.path.expanduser(path)
