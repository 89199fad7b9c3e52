"""The rate limiter: the interface shared by the request pipeline and the pool (DESIGN §12).

`Limiter` is a `RateLimit` in use in this process: `acquire` (reserve a start and its tokens, sleep
until then), `try_acquire` (only if free now), `settle` (learn from the reply: real token usage, the
provider's rate-limit headers as `_ratelimit_headers` reads them, a 429's retry delay), `delay` (how
long a start would wait now). The state lives in a store (`_stores`), so every thread, process or host
naming the same store and name shares one budget. `AdaptiveWindow` is the opt-in AIMD policy on the
in-flight count, on top of it.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ._constants import MAX_RETRY_AFTER, QPS_SAFETY_MARGIN, SHARED_QPS_SAFETY_MARGIN
from ._logging import get_logger
from ._ratelimit_headers import parse_duration as parse_duration  # importable from here, as before the split
from ._ratelimit_headers import provider_waits
from ._stores import Dims, MemoryStore, RateLimitStoreError, StoreUnavailable, open_store, safe_url
from .errors import QuotaExceededError, RateLimitError
from .ratelimit import RateLimit
from .retry import parse_retry_after

__all__ = ["AdaptiveWindow", "BudgetStats", "Limiter", "Reservation", "TokenNeed", "limiter_for", "take_turns"]

logger = get_logger("flexllm")

#: (prompt tokens, max_tokens asked for or None) of one request
TokenNeed = Tuple[int, Optional[int]]
_STORE_POLL = 0.5  # seconds between tries while a shared store is unreachable
_FALLBACK_RETRY = 30.0  # seconds on the local fallback before trying the shared store again
_TURN_FRACTION = 0.97  # shared turns at 97 % of the interval: even catching up, 21 starts span > 1 s


class Reservation:
    """One request's claim on a limiter: the tokens it reserved, settled once."""

    __slots__ = ("limiter", "tokens", "waited", "settled")

    def __init__(self, limiter: "Limiter", tokens: int, waited: float) -> None:
        self.limiter = limiter
        self.tokens = tokens
        self.waited = waited
        self.settled = False


class BudgetStats:
    """What a client's limiters did: seconds waited, tokens reserved and used, 429s seen. Thread-safe."""

    __slots__ = ("_lock", "wait_s", "tokens_reserved", "tokens_used", "rate_limited")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.wait_s = 0.0
        self.tokens_reserved = self.tokens_used = self.rate_limited = 0

    def add(self, wait_s: float = 0.0, reserved: int = 0, used: int = 0, rate_limited: int = 0) -> None:
        with self._lock:
            self.wait_s += wait_s
            self.tokens_reserved += reserved
            self.tokens_used += used
            self.rate_limited += rate_limited

    def snapshot(self) -> Dict[str, float]:
        """The counters now (a batch subtracts the snapshot taken at its start)."""
        with self._lock:
            return {"budget_wait_s": self.wait_s, "tokens_reserved": self.tokens_reserved,
                    "tokens_used": self.tokens_used, "rate_limited_429": self.rate_limited}


def retry_hint(exc: BaseException) -> Optional[float]:
    """The retry delay a 429 carried (Retry-After and friends, Gemini RetryInfo), in seconds."""
    headers = getattr(exc, "headers", None) or {}
    hint = parse_retry_after(headers)
    if hint is None:
        hint = getattr(exc, "retry_after", None)
    return None if hint is None else min(float(hint), MAX_RETRY_AFTER)


class Limiter:
    """A `RateLimit` in use in this process. Thread-safe; one per (RateLimit, process) via `limiter_for`.

    `store` defaults to the process-wide store of `limit.shared`; a private `MemoryStore` (e.g. one
    with a fake clock) may be given instead.
    """

    def __init__(self, limit: RateLimit, *, store: object = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.name = limit.name
        self._store = store if store is not None else open_store(limit.store_url)
        self._shared = limit.is_shared and not isinstance(self._store, MemoryStore)
        margin = SHARED_QPS_SAFETY_MARGIN if self._shared else QPS_SAFETY_MARGIN
        dims: List[Tuple[str, float, float]] = []
        if limit.max_qps:
            dims.append(("qps", (1.0 + margin) / limit.max_qps, 0.0))
        if limit.max_rpm:
            dims.append(("rpm", 60.0 * (1.0 + margin) / limit.max_rpm, 0.0))
        self._dims: Dims = tuple(dims)
        self._min_interval = min((cost for _d, cost, _t in dims), default=0.0)
        self._clock = clock
        self._turn_lock = threading.Lock()
        self._pid = os.getpid()
        self._last_start = float("-inf")
        #: seconds of budget one token costs (0.0 = tokens are not limited)
        self.token_cost = 60.0 * (1.0 + margin) / limit.max_tpm if limit.max_tpm else 0.0
        self._lock = threading.Lock()
        self._avg_completion = float(limit.expected_completion_tokens)
        self._completions = 0
        self._fallback: Optional[MemoryStore] = None
        self._fallback_since = 0.0
        self._outage = False
        self._worked = False  # the store answered once in this process (an outage after that is waited out)

    # -- the interface -------------------------------------------------------------------------------
    @property
    def counts_tokens(self) -> bool:
        """Whether requests reserve tokens here (`max_tpm` is set)."""
        return self.token_cost > 0.0

    def check(self, need: TokenNeed) -> None:
        """ValueError when one request could never fit in this budget (before anything is sent)."""
        prompt, max_out = need
        if self.limit.max_tpm and prompt + (max_out or 0) > self.limit.max_tpm:
            raise ValueError(f"this request needs about {prompt + (max_out or 0)} tokens ({prompt} prompt"
                             f"{f' + {max_out} max_tokens' if max_out else ''}), more than the whole budget "
                             f"{self.limit!r} allows in a minute (max_tpm={self.limit.max_tpm:g})")

    def tokens_for(self, need: Optional[TokenNeed]) -> int:
        """Tokens to reserve for one request: prompt + max_tokens, else prompt + the running average."""
        if need is None or not self.token_cost:
            return 0
        prompt, max_out = need
        expected = max_out if max_out else int(self._avg_completion)
        return int(min(prompt + expected, self.limit.max_tpm or 0))

    def _dims_for(self, tokens: int) -> Dims:
        return self._dims + (("tpm", tokens * self.token_cost, 0.0),) if self.token_cost else self._dims

    def reserve(self, need: Optional[TokenNeed] = None, *, timeout: Optional[float] = None,
                sleep: Callable[[float], None] = time.sleep) -> Reservation:
        """Reserve a start (and its tokens) without waiting for it: `reservation.waited` says how long
        until it; `take_turn` sleeps until then. Settled after the reply."""
        tokens = self.tokens_for(need)
        dims = self._dims_for(tokens)
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = self._call(lambda s: s.reserve(self.name, dims), deadline, sleep=sleep) or 0.0
        return Reservation(self, tokens, wait)

    def acquire(self, need: Optional[TokenNeed] = None, *, sleep: Callable[[float], None] = time.sleep,
                timeout: Optional[float] = None) -> Reservation:
        """Reserve a start (and its tokens) and sleep until it; the reservation is settled after the reply."""
        reservation = self.reserve(need, timeout=timeout, sleep=sleep)
        take_turns([reservation], sleep)
        return reservation

    def _after_pause(self, reservation: Reservation, sleep: Callable[[float], None]) -> None:
        """If the budget was paused after this start was reserved, reserve a new start after the pause."""
        for _ in range(8):  # each round waits out a pause: bounded by its (capped) length
            left = self._call(lambda s: s.delay(self.name, ()), None, sleep=sleep)
            if left <= 0:
                return
            wait = self._call(lambda s: s.reserve(self.name, self._dims), None, sleep=sleep) or 0.0
            sleep(wait)
            reservation.waited += wait

    def _turn(self, sleep: Callable[[float], None]) -> float:
        """Starts keep their spacing even when a thread wakes late: a start waits until `interval` after
        the previous one actually began (so a late waker does not bunch up with the next on the server's
        clock). In a shared store the turn is one more GCRA dimension ("turn", at 97 % of the interval:
        so a late start never bunches up with the next) taken only when free, so it spans processes and
        hosts; in process it is a lock. Returns the extra seconds waited."""
        if self._shared:
            return self._shared_turn(sleep)
        if self._pid != os.getpid():  # forked (gunicorn): a lock held by a parent's thread stays held here
            self._turn_lock, self._pid, self._last_start = threading.Lock(), os.getpid(), float("-inf")
        with self._turn_lock:
            now = self._clock()
            extra = self._last_start + self._min_interval - now
            if extra > 0:
                sleep(extra)
                now = max(self._clock(), now + extra)  # when this start really happens (a late wake counts)
            self._last_start = now
            return max(extra, 0.0)

    def _shared_turn(self, sleep: Callable[[float], None]) -> float:
        dims = (("turn", self._min_interval * _TURN_FRACTION, 0.0),)
        waited = 0.0
        for _ in range(64):  # a turn is free within one interval unless a 429 paused the budget
            if self._call(lambda s: s.reserve(self.name, dims, True), None, sleep=sleep) is not None:
                break
            wait = max(self._call(lambda s: s.delay(self.name, dims), None, sleep=sleep), 0.001)
            sleep(wait)
            waited += wait
        return waited

    def try_acquire(self, need: Optional[TokenNeed] = None) -> Optional[Reservation]:
        """A reservation if a start is free right now, else None (nothing reserved)."""
        tokens = self.tokens_for(need)
        dims = self._dims_for(tokens)
        if self._call(lambda s: s.reserve(self.name, dims, True), None) is None:
            return None
        return Reservation(self, tokens, 0.0)

    def delay(self) -> float:
        """Seconds until a start (without tokens) would be allowed now; reserves nothing."""
        dims = self._dims_for(0)
        return self._call(lambda s: s.delay(self.name, dims), None)

    def settle(self, reservation: Reservation, *, usage: Optional[Mapping] = None,
               headers: Optional[Mapping[str, str]] = None, error: Optional[BaseException] = None,
               final: bool = True) -> int:
        """Learn from a reply: charge/refund tokens to the real usage (all of them back when the request
        failed), take the provider's headers, pause everyone on a 429's retry delay. Returns tokens used.
        `final=False`: headers only (a stream that just opened); its tokens are settled when it ends."""
        shifts: Dict[str, float] = {}
        floors: Dict[str, float] = {}
        pause = 0.0
        used = 0
        if self.token_cost and not reservation.settled and (final or error is not None):
            reservation.settled = True
            total = (usage or {}).get("total_tokens") if usage else None
            if isinstance(total, int):
                used = total
                completion = usage.get("completion_tokens") if usage else None
                if isinstance(completion, int):
                    self._learn_completion(completion)
            elif error is not None:
                used = 0  # the provider did not serve it: give the tokens back (a retry reserves again)
            else:
                used = reservation.tokens  # served, usage unknown: keep the estimate
            if used != reservation.tokens:
                shifts["tpm"] = (used - reservation.tokens) * self.token_cost
        if headers:
            need = {"requests": 1.0, "tokens": float(self.tokens_for((0, None)) or 1)}
            for kind, wait in provider_waits(headers, need).items():
                if kind == "tokens" and self.token_cost:
                    floors["tpm"] = wait
                elif kind == "requests" and self._dims:
                    for dim, _cost, _tol in self._dims:
                        floors[dim] = wait
                else:
                    pause = max(pause, wait)
        if isinstance(error, RateLimitError) and not isinstance(error, QuotaExceededError):
            hint = retry_hint(error)
            if hint:
                pause = max(pause, hint)
                logger.warning("rate budget %r: the provider answered 429 with a retry delay of %.1fs; every "
                               "request sharing this budget pauses until then", self.name, hint)
        if shifts or floors or pause > 0:
            try:
                self._call(lambda s: s.settle(self.name, shifts, floors, pause), None, wait=False)
            except RateLimitStoreError as exc:  # settling is best effort: the reply is what matters
                logger.debug("rate budget %r: could not settle: %s", self.name, exc)
        return used

    def _learn_completion(self, completion: int) -> None:
        with self._lock:
            self._completions += 1
            weight = max(1.0 / self._completions, 0.05)  # a plain mean first, then a moving one
            self._avg_completion += (completion - self._avg_completion) * weight

    # -- store faults --------------------------------------------------------------------------------
    def _call(self, op: Callable, deadline: Optional[float], wait: bool = True,
              sleep: Callable[[float], None] = time.sleep):
        """Run `op(store)`; on an unreachable shared store fall back, wait for it, or raise (RateLimit's
        `on_store_error`). The store is reached lazily: a store that never answered in this process is a
        RateLimitStoreError at once; one that goes away later is waited for, up to the request timeout."""
        fallback = self._fallback
        if fallback is not None:
            if time.monotonic() - self._fallback_since < _FALLBACK_RETRY:
                return op(fallback)
            self._fallback = None  # time to try the shared store again
        try:
            result = op(self._store)
        except StoreUnavailable as exc:
            return self._unavailable(op, exc, deadline, wait, sleep)
        self._worked = True
        if self._outage:
            self._outage = False
            logger.warning("rate-limit store %s is reachable again; requests continue", safe_url(self._store.url))
        return result

    def _unavailable(self, op: Callable, exc: StoreUnavailable, deadline: Optional[float], wait: bool,
                     sleep: Callable[[float], None]):
        url = safe_url(self._store.url)
        if self.limit.on_store_error == "local":
            with self._lock:  # threads failing together: one fallback, one warning
                fallback = self._fallback
                if fallback is None:
                    logger.warning("rate-limit store %s unusable (%s); using a per-process budget instead "
                                   "(on_store_error='local')", url, exc)
                    fallback = self._fallback = MemoryStore()
                    self._fallback_since = time.monotonic()
            return op(fallback)
        if not self._worked or not wait:
            raise RateLimitStoreError(f"rate-limit store {url} cannot be used: {exc}") from None
        if not self._outage:
            self._outage = True
            logger.warning("rate-limit store %s unreachable (%s); requests wait for it%s", url, exc,
                           "" if deadline is None else f" (up to {deadline - time.monotonic():.0f}s each)")
        while deadline is None or time.monotonic() < deadline:
            sleep(_STORE_POLL)  # interruptible when the caller's sleep is (a cancelled batch stops here)
            try:
                result = op(self._store)
            except StoreUnavailable as again:
                exc = again
                continue
            self._outage = False
            logger.warning("rate-limit store %s is reachable again; requests continue", url)
            return result
        raise RateLimitStoreError(f"rate-limit store {url} still unreachable after the request timeout: "
                                  f"{exc}") from None

    def __repr__(self) -> str:
        return f"Limiter({self.limit!r})"


class AdaptiveWindow:
    """AIMD on the requests in flight: a 429 halves the window, each window's worth of clean replies
    grows it by one, never above `limit` (the client's concurrency_limit). Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.window = self.limit
        self._in_flight = 0
        self._clean = 0
        self._ticket = 0  # sequence of entries: a 429 of a request sent before the last cut cuts no more
        self._cut_at = 0
        self._cond = threading.Condition()

    def enter(self) -> int:
        """Wait for room in the window; returns this request's ticket."""
        with self._cond:
            while self._in_flight >= self.window:
                self._cond.wait()
            self._in_flight += 1
            self._ticket += 1
            return self._ticket

    def leave(self, ticket: int, rate_limited: bool = False) -> None:
        """A request finished; `rate_limited` = it got a 429."""
        with self._cond:
            self._in_flight -= 1
            if rate_limited:
                if ticket > self._cut_at:
                    self.window = max(1, self.window // 2)
                    self._cut_at = self._ticket
                    self._clean = 0
                    logger.info("adaptive concurrency: 429 seen, window now %d", self.window)
            elif self.window < self.limit:
                self._clean += 1
                if self._clean >= self.window:
                    self.window += 1
                    self._clean = 0
            self._cond.notify_all()


_limiters: Dict[RateLimit, Limiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(limit: RateLimit) -> Limiter:
    """The process-wide limiter of `limit`: every client given an equal RateLimit shares it."""
    with _limiters_lock:
        limiter = _limiters.get(limit)
        if limiter is None:
            limiter = _limiters[limit] = Limiter(limit)
        return limiter


def take_turns(reservations: Sequence[Reservation], sleep: Callable[[float], None]) -> None:
    """Sleep until every reservation's start has come, then take each spaced limiter's turn.

    A start that had to wait looks at the budget once more when it comes: if a 429 paused the budget
    meanwhile (in any process), the start is reserved again after the pause, so starts reserved ahead
    neither go out during the pause nor all at once when it ends."""
    wait = max((r.waited for r in reservations), default=0.0)
    if wait > 0:
        sleep(wait)
        for r in reservations:
            r.limiter._after_pause(r, sleep)
    for r in reservations:
        if r.limiter._min_interval:
            r.waited += r.limiter._turn(sleep)
