"""ProviderRouter: pick the next endpoint by strategy, track health, rest failing ones, probe them back.

Health is a circuit breaker per provider:

    healthy ──(failure_threshold failures in a row)──► resting ──(recovery_time passes)──► half-open
       ▲                                                  ▲                                  │ one caller
       └────────────── mark_success (at any time) ────────┼──────────── probing ◄────────────┘ gets it
                                                          └──── mark_failed (probe failed) ──┘

A probe that is never reported does not block the provider forever: after another `recovery_time` it
is half-open again and the next caller probes it.
"""
from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, List, Optional

from ._logging import get_logger

__all__ = ["STRATEGIES", "ProviderConfig", "ProviderRouter", "create_router_from_urls"]

logger = get_logger(__name__)

STRATEGIES = ("round_robin", "weighted", "random", "fallback")

# How often a blocked get_next() re-asks an `accept` predicate: the router cannot see the caller's own
# state change, so it polls (and a caller can wake it sooner with notify()).
_ACCEPT_POLL = 0.1


@dataclass(eq=False)
class ProviderConfig:
    """One endpoint for a router or pool.

    >>> ProviderConfig("http://gpu1:8000/v1", api_key="sk-...", model="qwen", weight=2)

    Compared by identity (eq=False): two configs with the same URL and other keys, or even equal fields,
    are two providers. The key never appears in repr().
    """

    base_url: str
    api_key: str = field(default="EMPTY", repr=False)
    model: Optional[str] = None
    weight: float = 1.0
    provider: Optional[str] = None
    concurrency_limit: Optional[int] = None
    max_qps: Optional[float] = None


class _Health:
    """One provider's breaker state and counters (guarded by the router's lock)."""

    __slots__ = ("consecutive_failures", "successes", "failures", "unhealthy_until", "probe_until")

    def __init__(self) -> None:
        self.consecutive_failures = 0
        self.successes = 0
        self.failures = 0
        self.unhealthy_until: Optional[float] = None  # None = healthy; else resting until, then half-open
        self.probe_until: Optional[float] = None  # a probe is out; re-offered after this time

    def ready(self, now: float) -> bool:
        """Healthy, or half-open with no probe out: may be handed out now."""
        if self.unhealthy_until is None:
            return True
        if now < self.unhealthy_until:
            return False
        return self.probe_until is None or now >= self.probe_until


class ProviderRouter:
    """Chooses providers by strategy, skipping unhealthy ones. Thread-safe (one lock and its condition).

    >>> router = ProviderRouter([ProviderConfig(url1), ProviderConfig(url2)], strategy="round_robin")
    >>> p = router.get_next(); ...; router.mark_success(p)   # or router.mark_failed(p)

    Strategies: `round_robin` (first pick is the first provider, then in order), `weighted` (random in
    proportion to `weight`, read once here), `random` (uniform), `fallback` (first ready in list order).
    A half-open provider takes part like a healthy one, so it is probed in its turn; when only half-open
    ones are left, the one whose recovery came first is probed first.

    Times are on `clock` (default `time.monotonic`); a blocked `get_next()` sleeps on the condition
    for the clock's remaining seconds. With a fake clock in tests, either call `get_next(block=False)`
    after moving the clock, or move it and call `notify()` to wake blocked callers at once.
    """

    def __init__(self, providers: List[ProviderConfig], strategy: str = "round_robin",
                 failure_threshold: int = 3, recovery_time: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic, rng: Optional[random.Random] = None) -> None:
        providers = tuple(providers)
        if not providers:
            raise ValueError("ProviderRouter needs at least one provider")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, (int, float)) \
                or not failure_threshold >= 1 or failure_threshold != int(failure_threshold):  # 1.5 acted as 2
            raise ValueError(f"failure_threshold must be a whole number >= 1, got {failure_threshold!r}")
        if not recovery_time >= 0 or math.isinf(recovery_time):
            raise ValueError(f"recovery_time must be a finite number of seconds >= 0, got {recovery_time!r}")
        index: Dict[int, int] = {}
        for i, p in enumerate(providers):
            if id(p) in index:
                raise ValueError(f"providers[{i}] is the same object as providers[{index[id(p)]}]; "
                                 "pass two ProviderConfig objects to have two providers")
            weight = float(p.weight)
            if not weight >= 0 or math.isinf(weight):
                raise ValueError(f"providers[{i}] ({p.base_url}) has weight {p.weight!r}; it must be finite and >= 0")
            index[id(p)] = i
        self.providers = providers
        self.strategy = strategy
        self.failure_threshold = int(failure_threshold)
        self.recovery_time = float(recovery_time)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._index = index  # id(config) -> position: identity, not equality, names a provider
        self._weights = tuple(float(p.weight) for p in providers)
        self._health = [_Health() for _ in providers]
        self._cursor = 0  # round robin: the position to try first next time
        self._cond = threading.Condition()  # RLock inside: an `accept` predicate may call back in
        self._pick: Callable[[List[int]], int] = getattr(self, "_pick_" + strategy)

    def __repr__(self) -> str:
        return (f"ProviderRouter({len(self.providers)} providers, strategy={self.strategy!r}, "
                f"healthy={self.healthy_count()})")

    # -- state ---------------------------------------------------------------------------------------
    def _position(self, provider: ProviderConfig) -> int:
        try:
            return self._index[id(provider)]
        except KeyError:
            raise ValueError(f"provider {getattr(provider, 'base_url', provider)!r} is not one of this "
                             "router's providers (they are told apart by identity)") from None

    def available(self, provider: ProviderConfig) -> bool:
        """Whether get_next() could hand out `provider` now (healthy, or due for a probe and none is out)."""
        with self._cond:
            return self._health[self._position(provider)].ready(self._clock())

    def is_healthy(self, provider: ProviderConfig) -> bool:
        """Whether `provider` is healthy (neither resting nor half-open)."""
        with self._cond:
            return self._health[self._position(provider)].unhealthy_until is None

    def healthy_count(self) -> int:
        """How many providers could be handed out now: healthy ones plus half-open ones due for a probe."""
        with self._cond:
            now = self._clock()
            return sum(h.ready(now) for h in self._health)

    def stats(self) -> List[dict]:
        """Per-provider health, in the order given (never the key): base_url, model, healthy,
        consecutive_failures, successes, failures, unhealthy_until (on the router's clock, or None)."""
        with self._cond:
            return [{"base_url": p.base_url, "model": p.model, "healthy": h.unhealthy_until is None,
                     "consecutive_failures": h.consecutive_failures, "successes": h.successes,
                     "failures": h.failures, "unhealthy_until": h.unhealthy_until}
                    for p, h in zip(self.providers, self._health)]

    def notify(self) -> None:
        """Wake blocked get_next() callers to look again (a caller's `accept` state or a fake clock moved)."""
        with self._cond:
            self._cond.notify_all()

    # -- strategies: each picks one position from a non-empty ascending list -------------------------
    def _pick_fallback(self, candidates: List[int]) -> int:
        return candidates[0]

    def _pick_random(self, candidates: List[int]) -> int:
        return candidates[self._rng.randrange(len(candidates))]

    def _pick_weighted(self, candidates: List[int]) -> int:
        weights = self._weights
        total = sum(weights[i] for i in candidates)
        if total <= 0:  # only zero-weight providers are left: better used evenly than not at all
            return self._pick_random(candidates)
        x = self._rng.random() * total
        chosen = candidates[0]
        for i in candidates:
            if weights[i] > 0:
                chosen = i  # the last positive one also absorbs float rounding at the top end
                x -= weights[i]
                if x < 0:
                    break
        return chosen

    def _pick_round_robin(self, candidates: List[int]) -> int:
        chosen = next((i for i in candidates if i >= self._cursor), candidates[0])
        self._cursor = (chosen + 1) % len(self.providers)
        return chosen

    # -- choice --------------------------------------------------------------------------------------
    def _choose(self, now: float, exclude: Collection[ProviderConfig],
                accept: Optional[Callable[[ProviderConfig], bool]]) -> Optional[int]:
        excluded = {id(p) for p in exclude} if exclude else ()
        preferred: List[int] = []
        only_excluded: List[int] = []
        for i, h in enumerate(self._health):
            if not h.ready(now):
                continue
            p = self.providers[i]
            if accept is not None and not accept(p):
                continue
            (only_excluded if id(p) in excluded else preferred).append(i)
        candidates = preferred or only_excluded  # an excluded provider beats failing the caller
        if not candidates:
            return None
        health = self._health
        if all(health[i].unhealthy_until is not None for i in candidates):
            # only half-open ones are left: probe the one that has rested longest (earliest recovery)
            i = min(candidates, key=lambda j: health[j].unhealthy_until)
        else:
            i = self._pick(candidates)
        h = health[i]
        if h.unhealthy_until is not None:  # half-open: this caller is its single probe
            h.probe_until = now + self.recovery_time
            logger.info("provider %s: recovery time over, sending one probe request", self.providers[i].base_url)
        return i

    def _next_change(self, now: float) -> Optional[float]:
        """The earliest future time at which a provider becomes ready by itself."""
        times = [h.probe_until if h.probe_until is not None and h.probe_until > now else h.unhealthy_until
                 for h in self._health if h.unhealthy_until is not None]
        return min((t for t in times if t is not None and t > now), default=None)

    def get_next(self, block: bool = True, timeout: Optional[float] = None,
                 exclude: Collection[ProviderConfig] = (),
                 accept: Optional[Callable[[ProviderConfig], bool]] = None) -> Optional[ProviderConfig]:
        """The next provider by strategy; never an unhealthy one while a ready one exists.

        `exclude`: providers to avoid this time (failover: "another endpoint than the one that failed");
        if only excluded ones are ready, one of them is returned rather than none. `accept`: a predicate
        (called under the router's lock) that skips providers this time, e.g. "has a free slot".
        When none is ready: `block=False` returns None; `block=True` waits on the condition (never spins)
        until the earliest recovery and returns that provider as its probe, or None after `timeout`
        seconds on the router's clock.
        """
        with self._cond:
            now = self._clock()
            deadline = None if timeout is None else now + timeout
            while True:
                i = self._choose(now, exclude, accept)
                if i is not None:
                    return self.providers[i]
                if not block or (deadline is not None and now >= deadline):
                    return None
                wake = self._next_change(now)
                if deadline is not None:
                    wake = deadline if wake is None else min(wake, deadline)
                wait = None if wake is None else wake - now
                if accept is not None:
                    wait = _ACCEPT_POLL if wait is None else min(wait, _ACCEPT_POLL)
                self._cond.wait(wait)
                now = self._clock()

    # -- reports -------------------------------------------------------------------------------------
    def mark_success(self, provider: ProviderConfig) -> None:
        """A request on `provider` succeeded: it is healthy at once and its failure run resets."""
        with self._cond:
            h = self._health[self._position(provider)]
            h.successes += 1
            h.consecutive_failures = 0
            if h.unhealthy_until is not None:
                h.unhealthy_until = h.probe_until = None
                logger.info("provider %s is healthy again", provider.base_url)
                self._cond.notify_all()

    def mark_failed(self, provider: ProviderConfig) -> None:
        """A request on `provider` failed: `failure_threshold` in a row, or a failed probe, rest it.

        While it rests, late failures of requests sent before are counted but do not extend the rest.
        """
        with self._cond:
            h = self._health[self._position(provider)]
            now = self._clock()
            h.failures += 1
            h.consecutive_failures += 1
            if h.unhealthy_until is None:
                if h.consecutive_failures < self.failure_threshold:
                    return
                why = f"{h.consecutive_failures} consecutive failures"
            elif now >= h.unhealthy_until:  # half-open: the probe (or a report after the rest) failed
                why = "failed probe"
            else:
                return
            h.unhealthy_until = now + self.recovery_time
            h.probe_until = None
            logger.warning("provider %s unhealthy after %s; resting %.1fs", provider.base_url, why,
                           self.recovery_time)


def create_router_from_urls(urls: List[str], api_key: str = "EMPTY", strategy: str = "round_robin",
                            **kwargs) -> ProviderRouter:
    """A router over `urls`, all with the same key; `kwargs` go to ProviderRouter (failure_threshold, ...)."""
    if isinstance(urls, str):
        raise TypeError("urls must be a list of URLs, not one string")
    return ProviderRouter([ProviderConfig(base_url=u, api_key=api_key) for u in urls], strategy=strategy, **kwargs)
