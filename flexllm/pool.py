"""LLMClientPool: one client interface over several endpoints, with load balancing and failover.

Every method of LLMClient is here (from `ClientAPI`). A batch runs one shared window of work; each
request takes a free slot on a healthy endpoint (so a faster endpoint, freeing slots sooner, takes
more items), and each endpoint keeps its own concurrency and rate limits; `rate_limit=` adds one
budget across all endpoints. A call runs in ONE retry loop (`LLMClientPool._run`; the endpoints' own
retry policies are not used through the pool): an endpoint retries transient answers itself, a dead
one hands over at once, and one call makes at most `retry_times + 1` attempts per endpoint it tries,
reported truly.
An endpoint's permanent failures (bad key, exhausted quota, model it does not serve) take it out of
the call: when every endpoint is out, the call fails at once with an error naming each failure.
Which failure does what, and the error naming them all, are decided in `_failover`.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import _cancel
from ._api import ClientAPI
from ._failover import CallState, combined_error, fails_over, permanent, retry_here
from ._failover import model_missing as model_missing  # importable from here, as before the split
from ._limiter import AdaptiveWindow, Limiter, limiter_for
from ._logging import get_logger
from ._pipeline import Outcome, Pipeline
from .client import LLMClient, _BaseClient
from .config import ResponseCacheConfig
from .errors import LLMError, RateLimitError
from .ratelimit import RateLimit
from .retry import check_retry_settings, retry_wait
from .router import ProviderConfig, ProviderRouter
from .types import StreamEvent

__all__ = ["LLMClientPool"]

logger = get_logger("flexllm")

_ENDPOINT_KEYS = {"base_url", "api_key", "model", "provider", "weight", "concurrency_limit", "max_qps",
                  "rate_limit", "proxy", "verify", "http2"}
_SLOT_WAIT = 0.5  # seconds between re-checks while every healthy endpoint is busy
class _Claim:
    """Called by the pipeline right after an endpoint's budget start is taken: the next worker may choose
    that endpoint again (before that, a second worker would only queue behind this one)."""

    __slots__ = ("pool", "key", "fired")

    def __init__(self, pool: "LLMClientPool", key: int) -> None:
        self.pool, self.key, self.fired = pool, key, False

    def __call__(self) -> None:
        with self.pool._slots:
            if not self.fired:
                self.fired = True
                if self.pool._starting[self.key] > 0:
                    self.pool._starting[self.key] -= 1


class LLMClientPool(ClientAPI):
    """A pool of endpoints behaving like one client. Thread-safe.

    >>> pool = LLMClientPool(endpoints=[{"base_url": "http://gpu1:8000/v1", "model": "qwen"},
    ...                                 {"base_url": "http://gpu2:8000/v1", "model": "qwen"}])
    >>> pool.chat_completions_batch_sync(messages_list, output_file="out.jsonl")

    `load_balance`: round_robin | weighted | random | fallback. An endpoint that fails
    `failure_threshold` times in a row rests `recovery_time` seconds, then gets one probe request.
    `rate_limit=RateLimit(...)`: one budget across all endpoints (each endpoint's own `max_qps` /
    `rate_limit` still apply too).
    """

    def __init__(self, endpoints: Optional[List[dict]] = None, clients: Optional[List[_BaseClient]] = None,
                 load_balance: str = "round_robin", fallback: bool = True, failure_threshold: int = 3,
                 recovery_time: float = 60.0, *, model: Optional[str] = None,
                 cache: Optional[ResponseCacheConfig] = None, retry_times: int = 3, retry_delay: float = 1.0,
                 timeout: float = 120, concurrency_limit: int = 50, max_qps: Optional[float] = None,
                 rate_limit: Optional[RateLimit] = None, router_options: Optional[Dict[str, Any]] = None,
                 sleep: Callable[[float], None] = _cancel.sleep, proxy: Optional[str] = None, verify: Any = True,
                 http2: bool = False) -> None:
        if bool(endpoints) == bool(clients):
            raise ValueError("give exactly one of endpoints=[{...}, ...] or clients=[...], and not an empty list")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(f"rate_limit must be a flexllm.RateLimit, got {type(rate_limit).__name__}")
        check_retry_settings(retry_times, retry_delay)  # the pool's own retry loop uses them, not the endpoints'
        if clients:  # given clients keep their own transport, limits and cache: never drop these silently
            ignored = [name for name, value, default in (
                ("cache", cache, None), ("timeout", timeout, 120), ("concurrency_limit", concurrency_limit, 50),
                ("max_qps", max_qps, None), ("proxy", proxy, None), ("verify", verify, True), ("http2", http2, False))
                if value is not default and value != default]
            if ignored:
                raise ValueError(f"{', '.join(ignored)} belong to each client when clients=[...] is given: pass "
                                 "them to the clients' constructors (or use endpoints=[...])")
        self.fallback = fallback
        self.retry_times = int(retry_times)
        self.retry_delay = float(retry_delay)
        self.rate_limit = rate_limit
        self._clients: List[_BaseClient] = list(clients) if clients else [
            self._make_client(i, e, model=model, cache=cache, timeout=timeout, concurrency_limit=concurrency_limit,
                              max_qps=max_qps, retry_times=retry_times, retry_delay=retry_delay, sleep=sleep,
                              proxy=proxy, verify=verify, http2=http2)
            for i, e in enumerate(endpoints or [])]
        weights = [float(e.get("weight", 1.0)) for e in endpoints] if endpoints else [1.0] * len(self._clients)
        self._configs = [ProviderConfig(base_url=getattr(c.adapter, "base_url", "") or "", model=c.model,
                                        weight=w) for c, w in zip(self._clients, weights)]
        self._client_of = {id(cfg): c for cfg, c in zip(self._configs, self._clients)}
        self.router = ProviderRouter(self._configs, strategy=load_balance, failure_threshold=failure_threshold,
                                     recovery_time=recovery_time, **(router_options or {}))
        self.model = model or self._clients[0].model
        self.concurrency_limit = sum(c.concurrency_limit for c in self._clients)
        self._limiters: Tuple[Limiter, ...] = (limiter_for(rate_limit),) if rate_limit is not None else ()
        #: AIMD window over the whole pool's attempts in flight (rate_limit with adaptive=True), else None
        self.window = AdaptiveWindow(self.concurrency_limit) if rate_limit is not None and rate_limit.adaptive \
            else None
        self._busy = {id(cfg): 0 for cfg in self._configs}
        self._starting = {id(cfg): 0 for cfg in self._configs}  # chosen, budget start not yet taken
        self._last_failure: Dict[int, LLMError] = {}
        self._slots = threading.Condition()
        self._sleep = sleep  # the pool's retry waits (each endpoint's own retry policy is not used here)

    @staticmethod
    def _make_client(i: int, endpoint: dict, *, model: Optional[str], **defaults: Any) -> LLMClient:
        if not isinstance(endpoint, dict):
            raise ValueError(f"endpoints[{i}] must be a dict with at least base_url (or a provider that needs none)")
        unknown = set(endpoint) - _ENDPOINT_KEYS
        if unknown:
            raise ValueError(f"endpoints[{i}] has unknown keys {sorted(unknown)}; known: {sorted(_ENDPOINT_KEYS)}")
        options = dict(defaults)
        for key in ("concurrency_limit", "max_qps", "rate_limit", "proxy", "verify", "http2"):
            if endpoint.get(key) is not None:
                options[key] = endpoint[key]
        chosen = endpoint.get("model") or model
        if not chosen:
            raise ValueError(f"endpoints[{i}] has no model and the pool was given none")
        try:  # the provider registry decides whether this endpoint needs a base_url
            return LLMClient(model=chosen, base_url=endpoint.get("base_url"), api_key=endpoint.get("api_key", "EMPTY"),
                             provider=endpoint.get("provider", "auto"), **options)
        except ValueError as exc:
            raise ValueError(f"endpoints[{i}]: {exc}") from None

    @property
    def clients(self) -> Sequence[_BaseClient]:
        """The endpoint clients, in the order given."""
        return tuple(self._clients)

    # -- endpoint choice -----------------------------------------------------------------------------
    def _has_slot(self, cfg: ProviderConfig) -> bool:
        """A free concurrency slot, and (on a rate-limited endpoint) a start free now that no other worker
        is about to take: an endpoint whose budget would make the caller wait counts as busy."""
        key = id(cfg)
        client = self._client_of[key]
        if self._busy[key] >= client.concurrency_limit:
            return False
        limiters = client._pipeline.limiters
        if not limiters:
            return True
        return self._starting[key] == 0 and all(lim.delay() <= 0.0 for lim in limiters)

    def _next_free_in(self) -> float:
        """How long until a rate-limited endpoint with a free slot can start (capped at _SLOT_WAIT)."""
        waits = [max(lim.delay() for lim in c._pipeline.limiters) for cfg, c in zip(self._configs, self._clients)
                 if c._pipeline.limiters and self._busy[id(cfg)] < c.concurrency_limit]
        return min([_SLOT_WAIT] + [max(w, 0.001) for w in waits])

    def _take(self, cfg: ProviderConfig) -> ProviderConfig:
        self._busy[id(cfg)] += 1
        if self._client_of[id(cfg)]._pipeline.limiters:
            self._starting[id(cfg)] += 1
        return cfg

    def _acquire(self, call: CallState, only: Optional[ProviderConfig] = None) -> Optional[ProviderConfig]:
        """An endpoint with attempts left for this call (untried ones first), with a free slot; None when
        there is none. Waits for a slot; waits for a resting endpoint's recovery only before a call's first
        attempt (later attempts probe it at once); fails at once when every endpoint is out for good."""
        limit = self.retry_times + 1
        if only is not None:
            candidates = [only]
        else:
            left = [c for c in self._configs if id(c) not in call.out and call.used.get(id(c), 0) < limit]
            untried = [c for c in left if id(c) not in call.used]
            candidates = untried or left
        if not candidates:
            return None
        ids = {id(c) for c in candidates}
        others = [c for c in self._configs if id(c) not in ids]

        def usable(c: ProviderConfig) -> bool:
            return id(c) in ids and self._has_slot(c)

        while True:
            _cancel.check()  # a stopped batch picks no endpoint
            with self._slots:
                if only is not None:  # the same endpoint again (a transient answer): just its slot
                    if self._has_slot(only) or not self._client_of[id(only)]._pipeline.limiters and \
                            self._busy[id(only)] < self._client_of[id(only)].concurrency_limit:
                        return self._take(only)
                    self._slots.wait(self._next_free_in())
                    continue
                cfg = self.router.get_next(block=False, exclude=others, accept=usable)
                if cfg is not None and id(cfg) in ids:
                    return self._take(cfg)
                if any(self.router.available(c) for c in candidates):  # healthy ones, all busy
                    self._slots.wait(self._next_free_in())
                    continue
                if call.attempts:  # a retry: probe a resting endpoint now rather than wait out its rest
                    free = [c for c in candidates if self._busy[id(c)] < self._client_of[id(c)].concurrency_limit]
                    if free:
                        return self._take(free[0])
                    self._slots.wait(_SLOT_WAIT)
                    continue
                last = {c.base_url or str(id(c)): self._last_failure.get(id(c)) for c in self._configs}
                if all(e is not None and permanent(e) for e in last.values()):
                    raise combined_error(last, 0)  # type: ignore[arg-type]  # every endpoint refuses us
            # nothing healthy: wait (outside our lock) for the earliest recovery, then look again
            self.router.get_next(block=True, exclude=others, accept=lambda c: id(c) in ids, timeout=_SLOT_WAIT * 4)

    def _release(self, cfg: ProviderConfig, claim: Optional[_Claim] = None) -> None:
        with self._slots:
            self._busy[id(cfg)] -= 1
            if claim is not None and not claim.fired and self._starting[id(cfg)] > 0:
                self._starting[id(cfg)] -= 1  # it never reached its start: free the claim
            self._slots.notify()

    # -- the one retry loop --------------------------------------------------------------------------
    def _run(self, work: Callable[[Pipeline, str, Callable[[], None]], Any],
             model: str) -> Tuple[Any, ProviderConfig, int]:
        """`work(pipeline, model, on_start)` (one HTTP attempt) until an endpoint succeeds: (its result,
        the endpoint, the attempts made).

        The pool's only retry loop: a transient answer (5xx, 429, bad body) is retried on the same endpoint
        after the usual wait; a dead connection or a permanent refusal (key, quota, model) hands over to
        an untried endpoint at once; each endpoint gets at most `retry_times + 1` attempts per call, and
        once every endpoint is tried the rest wait like a single client's retries.
        """
        call = CallState()
        limit = self.retry_times + 1
        stay: Optional[ProviderConfig] = None  # retry here after a transient answer
        last: Optional[LLMError] = None
        while True:
            cfg = None
            if stay is not None:  # each endpoint's backoff counts its own retries (a fresh start after failover)
                self._wait_before_retry(last, call.used[id(stay)] - 1)
                cfg = self._acquire(call, only=stay)
            elif not call.attempts or any(id(c) not in call.used and id(c) not in call.out for c in self._configs):
                cfg = self._acquire(call)  # the first attempt, or an untried endpoint: at once
            else:
                tried = [call.used[id(c)] for c in self._configs if id(c) not in call.out and call.used[id(c)] < limit]
                if tried:  # every endpoint tried: wait like a single client's next retry (the least-tried one's)
                    self._wait_before_retry(last, min(tried) - 1)
                    cfg = self._acquire(call)
            if cfg is None:
                raise combined_error(call.errors, call.attempts)
            client = self._client_of[id(cfg)]
            call.attempts += 1
            call.used[id(cfg)] = call.used.get(id(cfg), 0) + 1
            claim = _Claim(self, id(cfg))
            try:
                result = self._attempt(work, client._pipeline, model or client.model, claim)
            except LLMError as exc:
                self._release(cfg, claim)
                exc.attempts = call.attempts  # type: ignore[attr-defined]
                if not fails_over(exc):
                    raise  # the request itself is wrong (400 …): every endpoint would refuse it
                call.errors[cfg.base_url or str(id(cfg))] = exc
                last = exc
                if retry_here(exc) and call.used[id(cfg)] < limit:
                    stay = cfg
                    continue
                stay = None
                self.router.mark_failed(cfg)
                self._last_failure[id(cfg)] = exc
                if permanent(exc):
                    call.out.add(id(cfg))
                if not self.fallback:
                    raise combined_error(call.errors, call.attempts) from None
                if any(id(c) not in call.used and id(c) not in call.out for c in self._configs):
                    logger.warning("endpoint %s failed (%s); trying another endpoint", cfg.base_url,
                                   type(exc).__name__)
                continue
            except BaseException:
                self._release(cfg, claim)
                raise
            self._last_failure.pop(id(cfg), None)
            return result, cfg, call.attempts

    def _attempt(self, work: Callable[[Pipeline, str, Callable[[], None]], Any], pipeline: Pipeline, model: str,
                 claim: Callable[[], None]) -> Any:
        """One attempt, inside the pool's adaptive window when its rate_limit asks for one (adaptive=True)."""
        window = self.window
        if window is None:
            return work(pipeline, model, claim)
        ticket = window.enter()
        limited = False
        try:
            return work(pipeline, model, claim)
        except RateLimitError:
            limited = True
            raise
        finally:
            window.leave(ticket, limited)

    def _wait_before_retry(self, exc: Optional[LLMError], retries: int) -> None:
        delay = retry_wait(exc, retries, self.retry_delay) if exc is not None else 0.0
        if delay > 0:
            logger.warning("retrying in %.2fs after %s", delay,
                           f"{type(exc).__name__}: {exc.message}" if exc is not None else "an error")
            self._sleep(delay)

    # -- ClientAPI hooks -----------------------------------------------------------------------------
    def _model(self, model: Optional[str]) -> str:
        return model or ""  # "" = each endpoint's own model

    def _pipeline0(self) -> Pipeline:
        return self._clients[0]._pipeline

    @property
    def cache(self) -> Any:
        """The response cache the endpoints share (the first endpoint's handle), or None."""
        return self._pipeline0().cache

    def complete(self, messages: List[dict], model: str, params: Dict[str, Any], *, skip_cache: bool = False,
                 read_cache: bool = True) -> Outcome:
        """One reply through the pool (the batch engine's entry point): the first endpoint's pipeline does
        the cache and structured output, the pool's loop does the attempts."""

        def via(wire: Dict[str, Any]) -> Tuple[Any, dict, int]:
            def work(pipeline: Pipeline, m: str, on_start: Callable[[], None]) -> Any:
                need = pipeline.token_need(messages, m, wire, self._limiters)
                return pipeline.attempt(messages, m, wire, need, extra=self._limiters, on_start=on_start)

            (result, raw), cfg, attempts = self._run(work, model)
            self.router.mark_success(cfg)
            self._release(cfg)
            return result, raw, attempts

        return self._pipeline0().complete(messages, model or self.model, params, skip_cache=skip_cache,
                                          read_cache=read_cache, via=via)

    _complete = complete

    def check_params(self, model: str, params: Dict[str, Any]) -> None:
        """ValueError now when any endpoint's provider refuses these call parameters (items would fail there)."""
        for c in self._clients:
            c._pipeline.check_params(model or c.model or "", params)

    def cached_many(self, requests: Sequence[Tuple[List[dict], str, Dict[str, Any]]]) -> List[Optional[dict]]:
        """Cache entries for many requests (the endpoints share one cache; the key ignores base_url)."""
        return self._pipeline0().cached_many([(m, model or self.model, p) for m, model, p in requests])

    def _stream(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                skip_cache: bool) -> Iterator[StreamEvent]:
        def via(wire: Dict[str, Any], key: Optional[str]) -> Iterator[StreamEvent]:
            def work(pipeline: Pipeline, m: str, on_start: Callable[[], None]) -> Any:
                need = pipeline.token_need(messages, m, wire, self._limiters)
                return pipeline, m, pipeline.attempt_stream(messages, m, wire, need, extra=self._limiters,
                                                            on_start=on_start)

            (pipeline, used_model, opened), cfg, _ = self._run(work, model)
            ok = False
            try:
                yield from pipeline.relay(opened, used_model, key)
                ok = True
            finally:
                if ok:
                    self.router.mark_success(cfg)
                self._release(cfg)

        return self._pipeline0().stream(messages, model or self.model, params, skip_cache=skip_cache, via=via)

    def budget_snapshot(self) -> Dict[str, float]:
        """Budget counters summed over the endpoints (seconds waited, tokens reserved/used, 429s)."""
        total: Dict[str, float] = {}
        for c in self._clients:
            for k, v in c._pipeline.budget_snapshot().items():
                total[k] = total.get(k, 0) + v
        return total

    def budget_status(self) -> str:
        """A short progress-line note on the endpoints' budgets ("" when none is limited)."""
        own = [f"window {self.window.window}/{self.window.limit}"] if self.window is not None else []
        return "; ".join(own + [s for s in (c._pipeline.budget_status() for c in self._clients) if s])

    def _batch_runner(self) -> "LLMClientPool":
        return self

    def abort(self) -> None:
        """Fail every in-flight request of every endpoint (Ctrl-C in a batch)."""
        for c in self._clients:
            c._pipeline.abort()

    def close(self) -> None:
        """Close every endpoint client."""
        super().close()
        for c in self._clients:
            c.close()

    def __repr__(self) -> str:
        return f"LLMClientPool({len(self._clients)} endpoints, model={self.model!r})"
