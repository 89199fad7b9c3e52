"""Token-bucket rate limiting of request starts, shared by every thread of a client."""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

from ._constants import QPS_SAFETY_MARGIN

__all__ = ["TokenBucket"]


class TokenBucket:
    """Spaces request starts so that at most `rate` begin in any one-second window. Thread-safe.

    A GCRA (virtual scheduling) bucket: each `acquire()` reserves the next start slot under a lock and
    sleeps outside it, so waiting threads never hold the lock and start in FIFO order of reservation.
    With `burst=1` (the default) starts are evenly spaced by `(1 + margin) / rate`; the small margin
    absorbs scheduling/network jitter so the *server* never counts more than `rate` in a second.
    `clock` and `sleep` are injectable so tests run on a fake clock.
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
        self._interval = (1.0 + margin) / self.rate
        self._tolerance = (self.burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat: Optional[float] = None  # theoretical arrival time of the next start

    def reserve(self) -> float:
        """Reserve the next start slot; returns how many seconds the caller must wait for it."""
        with self._lock:
            now = self._clock()
            tat = now if self._tat is None or self._tat < now else self._tat
            start = max(now, tat - self._tolerance)
            self._tat = tat + self._interval
            return start - now

    def delay(self) -> float:
        """Seconds until a start would be allowed, without reserving it (0.0 = now)."""
        with self._lock:
            now = self._clock()
            if self._tat is None:
                return 0.0
            return max(0.0, self._tat - self._tolerance - now)

    def try_acquire(self) -> bool:
        """Take a start slot only if one is free right now (no waiting); True if taken."""
        with self._lock:
            now = self._clock()
            if self._tat is not None and self._tat - self._tolerance > now:
                return False
            tat = now if self._tat is None or self._tat < now else self._tat
            self._tat = tat + self._interval
            return True

    def acquire(self) -> float:
        """Block until this caller may start a request; returns the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"
