"""Rate budgets: the `RateLimit` value users pass around, and `TokenBucket`, its simplest in-process form.

A `RateLimit` says how fast (starts per second / minute, tokens per minute) and where the budget lives:
in this process (`shared=None`), in a SQLite file every process on a host shares (`sqlite:///path`), or
on a Redis server shared across hosts (`redis://…`). It is a frozen, picklable value: it holds no lock,
socket or connection (stores connect lazily, once per process). `flexllm._limiter.Limiter` is the
running side: it reserves starts and tokens in the store and learns from the replies (DESIGN §12).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional
from urllib.parse import urlsplit

from ._constants import QPS_SAFETY_MARGIN
from ._stores import MemoryStore, RateLimitStoreError, safe_url, sqlite_path

__all__ = ["RATE_LIMIT_STORE_ENV", "RateLimit", "RateLimitStoreError", "TokenBucket", "safe_url"]

#: environment variable that supplies `RateLimit(shared=...)` when it is not given
RATE_LIMIT_STORE_ENV = "FLEXLLM_RATE_LIMIT_STORE"
_SCHEMES = ("memory", "sqlite", "redis", "rediss", "unix")
_ON_STORE_ERROR = ("raise", "local")


def _positive(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    value = float(value)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number (or None for no limit), got {value!r}")
    return value


def _check_store(shared: str) -> str:
    if not isinstance(shared, str) or not shared.strip():
        raise ValueError(f"shared must be None, 'sqlite:///path' or 'redis://host:port/db', got {shared!r}")
    shared = shared.strip()
    if shared.lower() == "memory":
        return "memory"
    scheme = shared.split(":", 1)[0].lower() if ":" in shared else ""
    if scheme not in _SCHEMES:
        raise ValueError(f"shared={safe_url(shared)!r}: unknown store scheme {scheme or '(none)'!r}; "
                         "use 'sqlite:///path/to/limits.db' or 'redis://host:6379/0'")
    if scheme == "sqlite":
        path = sqlite_path(shared)
        directory = os.path.dirname(path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"shared={shared!r}: cannot create the directory {directory!r} "
                             f"({exc.strerror or exc})") from None
        if os.path.isdir(path):
            raise ValueError(f"shared={shared!r}: {path!r} is a directory; name a file")
    elif scheme in ("redis", "rediss"):
        parts = urlsplit(shared)
        if not parts.hostname:
            raise ValueError(f"shared={safe_url(shared)!r}: a Redis URL needs a host, e.g. redis://localhost:6379/0")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"shared={safe_url(shared)!r}: the port is not a number") from None
    return shared


@dataclass(frozen=True)
class RateLimit:
    """A rate budget: request starts and tokens, in this process or shared by many processes and hosts.

    >>> limit = RateLimit(max_rpm=500, max_tpm=200_000, shared="sqlite:///var/lib/app/limits.db",
    ...                   name="openai-prod")
    >>> client = LLMClient(model="gpt-4o-mini", base_url=url, rate_limit=limit)

    - `max_qps` / `max_rpm`: request starts per second / per minute, evenly spaced (burst of one).
    - `max_tpm`: tokens per minute. Each request reserves its prompt tokens plus the expected completion
      (`max_tokens`, else a running average) and is settled against the real usage after the reply.
    - `shared`: None (this process; or the `FLEXLLM_RATE_LIMIT_STORE` environment variable when set),
      `"memory"` (this process, ignoring the environment), `"sqlite:///path"` (every process on this host
      naming the same file and `name`), `"redis://host:port/db"` (every host using that server).
    - `name`: the budget's identity in the store: give every budget sharing a key the same name.
    - `adaptive=True`: halve the requests in flight on a 429 and grow back one per window of clean
      replies (AIMD), never above the client's `concurrency_limit`.
    - `on_store_error`: `"raise"` (a clear `RateLimitStoreError`; a store that goes away mid-run is
      waited for up to the request timeout) or `"local"` (fall back to a per-process budget, one warning).
    - `expected_completion_tokens`: the completion estimate before any reply has been seen.
    """

    max_qps: Optional[float] = None
    max_rpm: Optional[float] = None
    max_tpm: Optional[float] = None
    shared: Optional[str] = None
    name: str = "default"
    adaptive: bool = False
    on_store_error: str = "raise"
    expected_completion_tokens: int = 256

    def __post_init__(self) -> None:
        for field_name in ("max_qps", "max_rpm", "max_tpm"):
            object.__setattr__(self, field_name, _positive(field_name, getattr(self, field_name)))
        if not isinstance(self.name, str) or not self.name or len(self.name) > 200:
            raise ValueError(f"name must be a non-empty string of at most 200 characters, got {self.name!r}")
        if self.on_store_error not in _ON_STORE_ERROR:
            raise ValueError(f"on_store_error must be 'raise' or 'local', got {self.on_store_error!r}")
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"adaptive must be True or False, got {self.adaptive!r}")
        ect = self.expected_completion_tokens
        if isinstance(ect, bool) or not isinstance(ect, int) or ect < 0:
            raise ValueError(f"expected_completion_tokens must be an int >= 0, got {ect!r}")
        shared = self.shared
        if shared is None:
            shared = os.environ.get(RATE_LIMIT_STORE_ENV) or None
            if shared is not None:
                try:
                    shared = _check_store(shared)
                except ValueError as exc:
                    raise ValueError(f"{RATE_LIMIT_STORE_ENV}: {exc}") from None
        else:
            shared = _check_store(shared)
        object.__setattr__(self, "shared", shared)

    @property
    def store_url(self) -> str:
        """Where the budget lives: "memory" or the store URL."""
        return self.shared or "memory"

    @property
    def is_shared(self) -> bool:
        """Whether other processes can share this budget (a SQLite or Redis store)."""
        return self.store_url.split(":", 1)[0].lower() != "memory"

    def __repr__(self) -> str:
        given = [f"{k}={getattr(self, k)!r}" for k in ("max_qps", "max_rpm", "max_tpm") if getattr(self, k)]
        extra = [f"shared={safe_url(self.shared)!r}"] if self.shared else []
        return f"RateLimit({', '.join(given + extra + [f'name={self.name!r}'])})"


class TokenBucket:
    """Spaces request starts so that at most `rate` begin in any one-second window. Thread-safe.

    The in-process GCRA (virtual scheduling) of the rate budget with one dimension: each `acquire()`
    reserves the next start slot under a lock and sleeps outside it, so waiting threads never hold the
    lock and start in FIFO order of reservation. With `burst=1` (the default) starts are evenly spaced
    by `(1 + margin) / rate`; the small margin absorbs scheduling/network jitter so the *server* never
    counts more than `rate` in a second. `clock` and `sleep` are injectable so tests run on a fake clock.
    """

    def __init__(self, rate: float, burst: int = 1, *, margin: float = QPS_SAFETY_MARGIN,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate or rate <= 0 or math.isinf(rate) or math.isnan(rate):
            raise ValueError(f"rate must be a positive number of requests per second, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        interval = (1.0 + margin) / self.rate
        self._dims = (("qps", interval, (self.burst - 1) * interval),)
        self._store = MemoryStore(clock)
        self._sleep = sleep

    def reserve(self) -> float:
        """Reserve the next start slot; returns how many seconds the caller must wait for it."""
        return self._store.reserve("bucket", self._dims)  # type: ignore[return-value]

    def delay(self) -> float:
        """Seconds until a start would be allowed, without reserving it (0.0 = now)."""
        return self._store.delay("bucket", self._dims)

    def try_acquire(self) -> bool:
        """Take a start slot only if one is free right now (no waiting); True if taken."""
        return self._store.reserve("bucket", self._dims, only_if_free=True) is not None

    def acquire(self) -> float:
        """Block until this caller may start a request; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"
