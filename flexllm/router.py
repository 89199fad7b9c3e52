"""ProviderRouter: pick the next endpoint by strategy, track health, rest failing ones, probe them back.

Health follows a circuit breaker: `failure_threshold` consecutive failures make a provider unhealthy
for `recovery_time` seconds; then exactly one caller gets it as a probe (half-open). A success heals it
at once; a failed probe rests it again. A probe never reported is re-offered after another rest.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Collection, Dict, List, Optional

__all__ = ["STRATEGIES", "ProviderConfig", "ProviderRouter", "create_router_from_urls"]

STRATEGIES = ("round_robin", "weighted", "random", "fallback")


@dataclass
class ProviderConfig:
    """One endpoint. Two configs are different providers even with equal fields (identity counts)."""

    base_url: str
    api_key: str = field(default="EMPTY", repr=False)
    model: Optional[str] = None
    weight: float = 1.0
    provider: Optional[str] = None
    concurrency_limit: Optional[int] = None
    max_qps: Optional[float] = None

    __hash__ = object.__hash__  # identity: same URL with another key is another provider

    def __eq__(self, other: object) -> bool:
        return self is other


@dataclass
class _Health:
    consecutive_failures: int = 0
    successes: int = 0
    failures: int = 0
    unhealthy_until: Optional[float] = None  # None = healthy
    probing_until: Optional[float] = None  # a probe is out until this time


class ProviderRouter:
    """Chooses providers by strategy, skipping unhealthy ones. Thread-safe (one lock, one condition).

    `get_next()` blocks while every provider rests, until the earliest recovery (never spins);
    `clock` and `rng` are injectable for tests.
    """

    def __init__(self, providers: List[ProviderConfig], strategy: str = "round_robin",
                 failure_threshold: int = 3, recovery_time: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic, rng: Optional[random.Random] = None) -> None:
        if not providers:
            raise ValueError("ProviderRouter needs at least one provider")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.providers = list(providers)
        self.strategy = strategy
        self.failure_threshold = int(failure_threshold)
        self.recovery_time = float(recovery_time)
        self._clock = clock
        self._rng = rng or random.Random()
        self._health: Dict[int, _Health] = {id(p): _Health() for p in self.providers}
        self._next = 0
        self._cond = threading.Condition()

    # -- state --------------------------------------------------------------------------------------
    def _state(self, provider: ProviderConfig) -> _Health:
        try:
            return self._health[id(provider)]
        except KeyError:
            raise ValueError("provider is not one of this router's providers") from None

    def _available(self, p: ProviderConfig, now: float) -> bool:
        h = self._health[id(p)]
        if h.unhealthy_until is None:
            return True
        if now < h.unhealthy_until:
            return False
        return h.probing_until is None or now >= h.probing_until  # half-open: one probe at a time

    def healthy_count(self) -> int:
        """How many providers could be handed out now (healthy, or due for a probe)."""
        with self._cond:
            now = self._clock()
            return sum(self._available(p, now) for p in self.providers)

    def is_healthy(self, provider: ProviderConfig) -> bool:
        """Whether `provider` is healthy (not resting and not waiting on a probe)."""
        with self._cond:
            return self._state(provider).unhealthy_until is None

    def stats(self) -> List[dict]:
        """Per-provider health, in order (no keys)."""
        with self._cond:
            return [{"base_url": p.base_url, "model": p.model, "healthy": h.unhealthy_until is None,
                     "consecutive_failures": h.consecutive_failures, "successes": h.successes,
                     "failures": h.failures, "unhealthy_until": h.unhealthy_until}
                    for p, h in ((p, self._health[id(p)]) for p in self.providers)]

    # -- choice -------------------------------------------------------------------------------------
    def _pick(self, candidates: List[ProviderConfig]) -> ProviderConfig:
        if self.strategy == "fallback":
            return candidates[0]
        if self.strategy == "random":
            return candidates[self._rng.randrange(len(candidates))]
        if self.strategy == "weighted":
            total = sum(max(p.weight, 0.0) for p in candidates)
            if total <= 0:
                return candidates[self._rng.randrange(len(candidates))]
            x = self._rng.random() * total
            for p in candidates:
                x -= max(p.weight, 0.0)
                if x < 0:
                    return p
            return candidates[-1]
        n = len(self.providers)  # round robin over the full list, skipping the ones not offered
        allowed = {id(p) for p in candidates}
        for step in range(n):
            p = self.providers[(self._next + step) % n]
            if id(p) in allowed:
                self._next = (self._next + step + 1) % n
                return p
        return candidates[0]

    def _try(self, exclude: Collection[ProviderConfig],
             accept: Optional[Callable[[ProviderConfig], bool]]) -> Optional[ProviderConfig]:
        now = self._clock()
        excluded = {id(p) for p in exclude}
        ready = [p for p in self.providers if self._available(p, now) and (accept is None or accept(p))]
        if not ready:
            return None
        # a provider whose rest is over is half-open: offered like a healthy one, to one caller at a time
        preferred = [p for p in ready if id(p) not in excluded] or ready
        choice = self._pick(preferred)
        h = self._health[id(choice)]
        if h.unhealthy_until is not None:  # hand it out as the single probe
            h.probing_until = now + self.recovery_time
        return choice

    def get_next(self, block: bool = True, timeout: Optional[float] = None,
                 exclude: Collection[ProviderConfig] = (),
                 accept: Optional[Callable[[ProviderConfig], bool]] = None) -> Optional[ProviderConfig]:
        """The next provider by strategy: never an unhealthy one while a healthy one exists.

        `exclude` skips providers (used for failover) unless only they are left; `accept` is a predicate
        a pool uses for "has a free slot". When none is ready: with `block` wait until the earliest
        recovery (or `timeout`), else return None.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                choice = self._try(exclude, accept)
                if choice is not None or not block:
                    return choice
                now = self._clock()
                waits = [h.probing_until if h.probing_until and h.probing_until > now else h.unhealthy_until
                         for h in self._health.values() if h.unhealthy_until is not None]
                wake = min((w for w in waits if w is not None), default=now + 1.0)
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wake = min(wake, deadline)
                self._cond.wait(max(0.001, wake - now))

    # -- reports ------------------------------------------------------------------------------------
    def mark_success(self, provider: ProviderConfig) -> None:
        """A request succeeded: the provider is healthy at once and its failure count resets."""
        with self._cond:
            h = self._state(provider)
            h.successes += 1
            h.consecutive_failures = 0
            h.unhealthy_until = h.probing_until = None
            self._cond.notify_all()

    def mark_failed(self, provider: ProviderConfig) -> None:
        """A request failed: after `failure_threshold` in a row (or a failed probe) it rests."""
        with self._cond:
            h = self._state(provider)
            h.failures += 1
            h.consecutive_failures += 1
            if h.unhealthy_until is not None or h.consecutive_failures >= self.failure_threshold:
                h.unhealthy_until = self._clock() + self.recovery_time
                h.probing_until = None
            self._cond.notify_all()


def create_router_from_urls(urls: List[str], api_key: str = "EMPTY", strategy: str = "round_robin",
                            **kwargs) -> ProviderRouter:
    """A router over `urls`, all with the same key."""
    return ProviderRouter([ProviderConfig(base_url=u, api_key=api_key) for u in urls], strategy=strategy, **kwargs)
