"""One request end to end: cache → concurrency slot → rate limit → transport → retry → parse.

Shared by every provider: provider differences stay in the adapter. One Pipeline per client object,
shared by all of its threads.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _cancel
from ._limiter import AdaptiveWindow, BudgetStats, Limiter, Reservation, TokenNeed, limiter_for, take_turns
from ._logging import get_logger
from ._stores import MemoryStore
from .config import ResponseCacheConfig
from .errors import LLMError, RateLimitError, ResponseParseError, ResponseValidationError
from ._netconfig import TransportOptions
from .http import Transport, dumps, seconds
from .providers.base import ProviderAdapter, RequestSpec
from .ratelimit import RateLimit
from .retry import RetryPolicy, is_retryable
from .structured import ResponseSchema, fill_parsed, prepare
from .types import ChatCompletionResult
from ._results import add_usage, cache_entry, is_answer, result_from_cache, wire_params
from ._streaming import Opened, StreamingMixin  # noqa: F401  (Opened: re-exported for the pool)

if TYPE_CHECKING:
    from .cache import ResponseCache

__all__ = ["Outcome", "Pipeline"]

logger = get_logger("flexllm")

#: the messages a parameter check builds a request with (nothing is sent)
_PROBE = [{"role": "user", "content": "x"}]

#: a pool's retry loop standing in for the pipeline's own: `via(params)` → (result, raw, attempts made)
Via = Callable[[Dict[str, Any]], Tuple[ChatCompletionResult, dict, int]]


@dataclass
class Outcome:
    """What one completed request produced, with how it was obtained."""

    result: ChatCompletionResult
    raw: Optional[dict]
    cached: bool
    attempts: int
    latency: float


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


class Pipeline(StreamingMixin):
    """Runs requests for one client. Thread-safe: slots, budgets, transport and cache each own a lock."""

    def __init__(self, adapter: ProviderAdapter, *, timeout: float, concurrency_limit: int,
                 max_qps: Optional[float], retry_times: int, retry_delay: float,
                 cache: Optional[ResponseCacheConfig] = None,
                 sleep: Callable[[float], None] = _cancel.sleep,
                 transport: Optional[Transport] = None,
                 retryable: Callable[[BaseException], bool] = is_retryable,
                 rate_limit: Optional[RateLimit] = None, options: Optional[TransportOptions] = None) -> None:
        if isinstance(concurrency_limit, bool) or not isinstance(concurrency_limit, (int, float)) \
                or not concurrency_limit >= 1 or concurrency_limit != int(concurrency_limit):
            raise ValueError(f"concurrency_limit must be a whole number >= 1, got {concurrency_limit!r}")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(f"rate_limit must be a flexllm.RateLimit, got {type(rate_limit).__name__}")
        self.adapter = adapter
        self.concurrency_limit = int(concurrency_limit)
        self._slots = _cancel.Slots(self.concurrency_limit)
        limiters: List[Limiter] = []
        if max_qps is not None:  # the client's own private budget; None = no limit (RateLimit refuses 0)
            limiters.append(Limiter(RateLimit(max_qps=max_qps, shared="memory", name="max_qps"),
                                    store=MemoryStore()))
        if rate_limit is not None:
            limiters.append(limiter_for(rate_limit))
        self.limiters: Tuple[Limiter, ...] = tuple(limiters)
        #: AIMD window on requests in flight when a RateLimit asks for it (adaptive=True), else None
        self.window = AdaptiveWindow(self.concurrency_limit) \
            if rate_limit is not None and rate_limit.adaptive else None
        self.budget_stats = BudgetStats()
        self._sleep = sleep
        self._timeout = seconds(timeout)
        self.retry = RetryPolicy(retry_times, retry_delay, sleep=sleep, retryable=retryable)
        self._options = options
        redact = adapter.redact if options is None else (lambda text: options.redact(adapter.redact(text)))
        self.transport = transport or Transport(timeout=self._timeout, max_connections=self.concurrency_limit,
                                                provider=adapter.name, redact=redact, options=options)
        self._cache_config = cache if cache is not None and cache.enabled else None
        self._cache: Optional["ResponseCache"] = None
        self._cache_opened = False
        self._cache_lock = threading.Lock()

    def check_params(self, model: str, params: Dict[str, Any]) -> None:
        """ValueError now when the adapter refuses these call parameters (e.g. a thinking level the provider
        lacks): a batch checks its shared parameters once, before any request, instead of failing each item."""
        spec = self.adapter.build_request(_PROBE, model, wire_params(params))
        dumps(spec.json)  # NaN, sets, objects: not JSON
        self.transport._total_of(spec)  # a per-call timeout <= 0

    def _decode_error(self, body: bytes) -> Any:
        """An error body, decoded, without the proxy's password (a proxy may answer with its own page)."""
        if self._options is not None and self._options.has_secrets:
            body = self._options.redact(body.decode("utf-8", "replace")).encode("utf-8")
        return _decode(body)

    # -- cache ---------------------------------------------------------------------------------------
    @property
    def cache(self) -> Optional["ResponseCache"]:
        """The open response cache, or None (disabled, or it could not be opened: warned once)."""
        if not self._cache_opened and self._cache_config is not None:
            with self._cache_lock:
                if not self._cache_opened:
                    from .cache import ResponseCache  # sqlite is loaded only when a cache is configured

                    self._cache = ResponseCache.open(self._cache_config)
                    self._cache_opened = True
        return self._cache

    def cache_key(self, messages: List[dict], model: str, params: Dict[str, Any]) -> str:
        """The cache key of one request (everything that changes the answer, nothing else)."""
        from .cache import cache_key

        return cache_key(self.adapter.name, model, messages, self.adapter.cache_params(params))

    def cached_many(self, requests: Sequence[Tuple[List[dict], str, Dict[str, Any]]]) -> List[Optional[dict]]:
        """Cache entries for many requests in one lookup (None where missing)."""
        cache = self.cache
        if cache is None:
            return [None] * len(requests)
        from .cache import keys_of

        key_params = self.adapter.cache_params
        keys = keys_of(self.adapter.name, requests, lambda p: key_params(wire_params(p)))
        hits = cache.get_many(keys)
        return [hits.get(k) for k in keys]

    # -- the rate budget ------------------------------------------------------------------------------
    def token_need(self, messages: List[dict], model: str, params: Dict[str, Any],
                   extra: Sequence[Limiter] = ()) -> Optional[TokenNeed]:
        """(prompt tokens, max_tokens) when a budget counts tokens, else None; ValueError (before anything
        is sent) when the request could never fit in a budget's minute."""
        limiters = self.limiters + tuple(extra)
        if not any(limiter.counts_tokens for limiter in limiters):
            return None
        from .tokens import count_messages_tokens

        max_out = params.get("max_tokens") or params.get("max_completion_tokens")
        need = (count_messages_tokens(messages, model), int(max_out) if isinstance(max_out, (int, float)) else None)
        for limiter in limiters:
            limiter.check(need)
        return need

    def _start(self, need: Optional[TokenNeed], extra: Sequence[Limiter],
               on_start: Optional[Callable[[], None]]) -> List[Reservation]:
        """Take every budget's start right before the request goes out; returns the reservations.

        `on_start` runs once the starts are reserved (a pool may then offer this endpoint to others)."""
        limiters = tuple(extra) + self.limiters
        reservations = [lim.reserve(need, timeout=self._timeout, sleep=self._sleep) for lim in limiters] \
            if limiters else []
        if on_start is not None:
            on_start()
        if reservations:
            take_turns(reservations, self._sleep)
        return reservations

    def _settle(self, reservations: List[Reservation], *, usage: Optional[dict] = None,
                headers: Optional[Any] = None, error: Optional[BaseException] = None, final: bool = True) -> None:
        """Tell every budget how the request went (tokens used, provider headers, a 429's delay)."""
        limited = isinstance(error, RateLimitError)
        used = 0
        for r in reservations:
            used = max(used, r.limiter.settle(r, usage=usage, headers=headers, error=error, final=final))
        if reservations and final:
            self.budget_stats.add(wait_s=max(r.waited for r in reservations),
                                  reserved=max(r.tokens for r in reservations), used=used, rate_limited=int(limited))
        elif limited:
            self.budget_stats.add(rate_limited=1)

    def budget_snapshot(self) -> Dict[str, float]:
        """Budget counters so far: seconds waited, tokens reserved/used, 429s seen (a batch diffs two)."""
        return self.budget_stats.snapshot()

    def budget_status(self) -> str:
        """A short progress-line note: the adaptive window and the budget's waits and 429s ("" if none)."""
        if not self.limiters and self.window is None:
            return ""
        snap = self.budget_stats.snapshot()
        parts = [f"window {self.window.window}/{self.window.limit}"] if self.window is not None else []
        parts.append(f"budget wait {snap['budget_wait_s']:.1f}s")
        if snap["rate_limited_429"]:
            parts.append(f"429s {snap['rate_limited_429']}")
        return ", ".join(parts)

    # -- single request ------------------------------------------------------------------------------
    def complete(self, messages: List[dict], model: str, params: Dict[str, Any], *, skip_cache: bool = False,
                 read_cache: bool = True, via: Optional[Via] = None) -> Outcome:
        """One reply, from the cache or the provider (with retries). Raises a typed LLMError on failure.

        `via`: a pool's retry loop over its endpoints runs the attempts instead of this pipeline's own.
        With a schema `response_format` the reply is validated (`result.parsed`); an invalid reply is asked
        again — a new request with its own transport retries — up to `validation_retries` times, never
        cached, and counted in `attempts` and in the usage paid.
        """
        started = time.perf_counter()
        schema = None
        reasks = 0
        if "response_format" in params or "validation_retries" in params:
            params, schema, reasks = prepare(params)
        cache = None if skip_cache else self.cache
        key = None
        if cache is not None:
            key = self.cache_key(messages, model, params)
            if read_cache:
                entry = cache.get(key)
                if entry is not None:
                    result = result_from_cache(entry)
                    if schema is None or self._parsed(result, schema, model, quiet=True):
                        return Outcome(result, None, True, 0, time.perf_counter() - started)
        attempts = 0
        if via is None:
            spec = self.adapter.build_request(messages, model, params)
            need = self.token_need(messages, model, params)

            def attempt() -> Tuple[ChatCompletionResult, dict]:
                nonlocal attempts
                attempts += 1
                return self._attempt(spec, model, need)

            def run() -> Tuple[ChatCompletionResult, dict]:
                return self.retry.call(attempt)
        else:
            def run() -> Tuple[ChatCompletionResult, dict]:
                nonlocal attempts
                try:
                    result, raw, n = via(params)
                except LLMError as exc:
                    attempts += getattr(exc, "attempts", 1)
                    raise
                attempts += n
                return result, raw

        paid: Optional[dict] = None
        try:
            while True:
                result, raw = run()
                if schema is None:
                    break
                paid = add_usage(paid, result.usage)
                try:
                    self._parsed(result, schema, model)
                    break
                except ResponseValidationError as exc:
                    if reasks <= 0:
                        raise
                    reasks -= 1
                    logger.warning("asking again (%d left): %s", reasks, exc.message)
        except LLMError as exc:
            exc.attempts = attempts  # type: ignore[attr-defined]  # the batch summary counts retries
            if paid is not None:
                exc.usage = paid  # type: ignore[attr-defined]  # invalid replies were paid for all the same
            raise
        if paid is not None:
            result.usage = paid  # every re-ask was paid for
        if key is not None and is_answer(result):
            cache.set(key, cache_entry(result))
        return Outcome(result, raw, False, attempts, time.perf_counter() - started)

    def _parsed(self, result: ChatCompletionResult, schema: ResponseSchema, model: str, quiet: bool = False) -> bool:
        """Fill `result.parsed`; False (quiet) or ResponseValidationError when the reply does not fit."""
        try:
            fill_parsed(result, schema, provider=self.adapter.name, model=model)
        except ResponseValidationError:
            if quiet:
                return False
            raise
        return True

    def attempt(self, messages: List[dict], model: str, params: Dict[str, Any], need: Optional[TokenNeed], *,
                extra: Sequence[Limiter] = (), on_start: Optional[Callable[[], None]] = None
                ) -> Tuple[ChatCompletionResult, dict]:
        """Exactly one HTTP attempt (no retry, no cache): the pool's unit of work on an endpoint."""
        return self._attempt(self.adapter.build_request(messages, model, params), model, need, extra, on_start)

    def store(self, messages: List[dict], model: str, params: Dict[str, Any], result: ChatCompletionResult) -> None:
        """Put a live result in the cache (when one is configured)."""
        cache = self.cache
        if cache is not None:
            cache.set(self.cache_key(messages, model, params), cache_entry(result))

    def _attempt(self, spec: RequestSpec, model: str, need: Optional[TokenNeed] = None,
                 extra: Sequence[Limiter] = (), on_start: Optional[Callable[[], None]] = None
                 ) -> Tuple[ChatCompletionResult, dict]:
        request = self.transport.prepare(spec, model=model)
        window = self.window
        ticket = window.enter() if window is not None else 0
        limited = False
        scope = _cancel.current()
        slots = self._slots
        try:
            slots.acquire()
            abandon = scope is not None and scope.abandon
            if abandon:
                scope.hold(slots)  # a cancelled await hands this slot back at once (see _cancel.Scope)
            try:
                reservations = self._start(need, extra, on_start)
                try:
                    if scope is not None and scope.event.is_set():
                        raise _cancel.Interrupted("stopped before the request was sent")
                    status, headers, body = self.transport.send(request, model=model)
                except BaseException as exc:
                    if reservations:
                        self._settle(reservations, error=exc)
                    raise
            finally:
                if abandon:
                    scope.release(slots)
                else:
                    slots.release()
            if not 200 <= status < 300:
                error = self.adapter.map_error(status, self._decode_error(body), headers, model=model)
                del body  # the raw body may echo the key: keep it out of the traceback's locals
                limited = isinstance(error, RateLimitError)
                self._settle(reservations, headers=headers, error=error)
                raise error
            try:
                data = json.loads(body)
            except ValueError:
                text = self.adapter.redact(body[:65536].decode("utf-8", "replace"))
                raise ResponseParseError(f"HTTP {status} reply is not valid JSON: {text[:200]!r}",
                                         provider=self.adapter.name, model=model) from None
            if not isinstance(data, dict):
                raise ResponseParseError(f"HTTP {status} reply is not a JSON object", provider=self.adapter.name,
                                         model=model)
            result = self.adapter.parse_response(data, model=model)
            if reservations:
                self._settle(reservations, usage=result.usage, headers=headers)
            return result, data
        finally:
            if window is not None:
                window.leave(ticket, limited)

    def abort(self) -> None:
        """Fail every in-flight request at once (Ctrl-C in a batch); the pool reopens on next use."""
        self.transport.abort()

    def close(self) -> None:
        """Close the connection pool and the cache."""
        self.transport.close()
        if self._cache is not None:
            self._cache.close()
