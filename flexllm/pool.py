"""LLMClientPool: one client interface over several endpoints, with load balancing and failover.

Every method of LLMClient is here (from `ClientAPI`). A batch runs one shared window of work; each
request takes a free slot on a healthy endpoint (so a faster endpoint, freeing slots sooner, takes
more items), and each endpoint keeps its own concurrency and QPS limits. With `fallback=True` a request
that fails on one endpoint moves to another at once (no backoff while an untried endpoint is left).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ._api import ClientAPI
from ._logging import get_logger
from ._pipeline import Outcome, Pipeline, result_from_hit
from .client import LLMClient, _BaseClient
from .config import ResponseCacheConfig
from .errors import APIConnectionError, AuthenticationError, LLMError, NotFoundError, QuotaExceededError
from .retry import is_retryable, retry_wait
from .router import ProviderConfig, ProviderRouter
from .types import StreamEvent

__all__ = ["LLMClientPool"]

logger = get_logger("flexllm")

_ENDPOINT_KEYS = {"base_url", "api_key", "model", "provider", "weight", "concurrency_limit", "max_qps", "proxy",
                  "verify", "http2"}
_SLOT_WAIT = 0.5  # seconds between re-checks while every healthy endpoint is busy


def _retry_here(exc: BaseException) -> bool:
    """What an endpoint retries itself: transient answers. A dead connection moves on at once."""
    return is_retryable(exc) and not isinstance(exc, APIConnectionError)


def _fails_over(exc: BaseException) -> bool:
    """Errors another endpoint may not have: transient ones, and this endpoint's key/model/quota problems."""
    return is_retryable(exc) or isinstance(exc, (AuthenticationError, NotFoundError, QuotaExceededError))


class LLMClientPool(ClientAPI):
    """A pool of endpoints behaving like one client. Thread-safe.

    >>> pool = LLMClientPool(endpoints=[{"base_url": "http://gpu1:8000/v1", "model": "qwen"},
    ...                                 {"base_url": "http://gpu2:8000/v1", "model": "qwen"}])
    >>> pool.chat_completions_batch_sync(messages_list, output_file="out.jsonl")

    `load_balance`: round_robin | weighted | random | fallback. An endpoint that fails
    `failure_threshold` times in a row rests `recovery_time` seconds, then gets one probe request.
    """

    def __init__(self, endpoints: Optional[List[dict]] = None, clients: Optional[List[_BaseClient]] = None,
                 load_balance: str = "round_robin", fallback: bool = True, failure_threshold: int = 3,
                 recovery_time: float = 60.0, *, model: Optional[str] = None,
                 cache: Optional[ResponseCacheConfig] = None, retry_times: int = 3, retry_delay: float = 1.0,
                 timeout: float = 120, concurrency_limit: int = 50, max_qps: Optional[float] = None,
                 router_options: Optional[Dict[str, Any]] = None, proxy: Optional[str] = None, verify: Any = True,
                 http2: bool = False) -> None:
        if bool(endpoints) == bool(clients):
            raise ValueError("give exactly one of endpoints=[{...}, ...] or clients=[...], and not an empty list")
        self.fallback = fallback
        self.retry_times = int(retry_times)
        self.retry_delay = float(retry_delay)
        self._clients: List[_BaseClient] = list(clients) if clients else [
            self._make_client(i, e, model=model, cache=cache, timeout=timeout, concurrency_limit=concurrency_limit,
                              max_qps=max_qps, retry_times=retry_times, retry_delay=retry_delay,
                              retryable=_retry_here if fallback else None, proxy=proxy, verify=verify, http2=http2)
            for i, e in enumerate(endpoints or [])]
        weights = [float(e.get("weight", 1.0)) for e in endpoints] if endpoints else [1.0] * len(self._clients)
        self._configs = [ProviderConfig(base_url=getattr(c.adapter, "base_url", "") or "", model=c.model,
                                        weight=w) for c, w in zip(self._clients, weights)]
        self._client_of = {id(cfg): c for cfg, c in zip(self._configs, self._clients)}
        self.router = ProviderRouter(self._configs, strategy=load_balance, failure_threshold=failure_threshold,
                                     recovery_time=recovery_time, **(router_options or {}))
        self.model = model or self._clients[0].model
        self.concurrency_limit = sum(c.concurrency_limit for c in self._clients)
        self._busy = {id(cfg): 0 for cfg in self._configs}
        self._slots = threading.Condition()

    @staticmethod
    def _make_client(i: int, endpoint: dict, *, model: Optional[str], **defaults: Any) -> LLMClient:
        if not isinstance(endpoint, dict):
            raise ValueError(f"endpoints[{i}] must be a dict with at least base_url (or a provider that needs none)")
        unknown = set(endpoint) - _ENDPOINT_KEYS
        if unknown:
            raise ValueError(f"endpoints[{i}] has unknown keys {sorted(unknown)}; known: {sorted(_ENDPOINT_KEYS)}")
        options = dict(defaults)
        for key in ("concurrency_limit", "max_qps", "proxy", "verify", "http2"):
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
        """A free concurrency slot, and a rate-limit token available now (a QPS-capped endpoint is busy)."""
        client = self._client_of[id(cfg)]
        if self._busy[id(cfg)] >= client.concurrency_limit:
            return False
        bucket = client._pipeline.bucket
        return bucket is None or bucket.delay() <= 0.0

    def _next_free_in(self) -> float:
        """How long until a rate-limited endpoint with a free slot can start (capped at _SLOT_WAIT)."""
        waits = [c._pipeline.bucket.delay() for cfg, c in zip(self._configs, self._clients)
                 if c._pipeline.bucket is not None and self._busy[id(cfg)] < c.concurrency_limit]
        return min([_SLOT_WAIT] + [max(w, 0.001) for w in waits])

    def _acquire(self, exclude: Sequence[ProviderConfig]) -> Tuple[ProviderConfig, bool]:
        """A healthy endpoint with a free slot (not in `exclude` if another exists) and whether its first
        rate-limit token was taken here; waits, never spins.

        The token is claimed under the pool's lock together with the slot, so two workers never both see a
        rate-limited endpoint as free and then queue in its bucket.
        """
        while True:
            with self._slots:
                cfg = self.router.get_next(block=False, exclude=exclude, accept=self._has_slot)
                if cfg is not None:
                    bucket = self._client_of[id(cfg)]._pipeline.bucket
                    if bucket is not None and not bucket.try_acquire():
                        continue  # someone outside the pool took it: choose again
                    self._busy[id(cfg)] += 1
                    return cfg, bucket is not None
                if self.router.healthy_count() > 0:  # healthy ones exist but are all busy
                    self._slots.wait(self._next_free_in())
                    continue
            # nothing healthy: wait (outside our lock) for the earliest recovery, then retry
            probe = self.router.get_next(block=True, exclude=exclude, accept=None, timeout=_SLOT_WAIT * 4)
            if probe is not None:
                with self._slots:
                    self._busy[id(probe)] += 1
                return probe, False

    def _release(self, cfg: ProviderConfig) -> None:
        with self._slots:
            self._busy[id(cfg)] -= 1
            self._slots.notify()

    def _run(self, call, model: str) -> Tuple[Any, ProviderConfig]:
        tried: List[ProviderConfig] = []
        retries_left = self.retry_times
        attempts = 0
        while True:
            cfg, token_taken = self._acquire(tried)
            client = self._client_of[id(cfg)]
            attempts += 1
            try:
                result = call(client._pipeline, model or client.model, token_taken)
            except LLMError as exc:
                self._release(cfg)
                exc.attempts = attempts  # type: ignore[attr-defined]
                if not _fails_over(exc):
                    raise  # the request itself is wrong (400 …): every endpoint would refuse it
                self.router.mark_failed(cfg)
                if not self.fallback:
                    raise
                untried = [c for c in self._configs if c not in tried and c is not cfg]
                tried.append(cfg)
                if untried:
                    logger.warning("endpoint %s failed (%s); trying another endpoint", cfg.base_url,
                                   type(exc).__name__)
                    continue
                if retries_left <= 0:
                    raise
                retries_left -= 1
                tried = []
                time.sleep(retry_wait(exc, self.retry_times - retries_left - 1, self.retry_delay))
                continue
            except BaseException:
                self._release(cfg)
                raise
            return result, cfg

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
        """One reply through the pool (the batch engine's entry point)."""
        if read_cache and not skip_cache:
            [hit] = self.cached_many([(messages, model, params)])
            result = result_from_hit(hit, params, model) if hit is not None else None
            if result is not None:
                return Outcome(result, None, True, 0, 0.0)
        started = time.perf_counter()
        outcome, cfg = self._run(lambda p, m, t: p.complete(messages, m, params, skip_cache=skip_cache,
                                                            read_cache=False, token_taken=t), model)
        self.router.mark_success(cfg)
        self._release(cfg)
        outcome.latency = time.perf_counter() - started
        return outcome

    _complete = complete

    def cached_many(self, requests: Sequence[Tuple[List[dict], str, Dict[str, Any]]]) -> List[Optional[dict]]:
        """Cache entries for many requests (the endpoints share one cache; the key ignores base_url)."""
        return self._pipeline0().cached_many([(m, model or self.model, p) for m, model, p in requests])

    def _stream(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                skip_cache: bool) -> Iterator[StreamEvent]:
        def open_stream(pipeline: Pipeline, m: str,
                        token_taken: bool) -> Tuple[Iterator[StreamEvent], Optional[StreamEvent]]:
            events = pipeline.stream(messages, m, params, skip_cache=skip_cache, token_taken=token_taken)
            try:
                return events, next(events, None)  # failover is possible until the first event
            except BaseException:
                events.close()
                raise

        (events, first), cfg = self._run(open_stream, model)
        try:
            if first is not None:
                yield first
            yield from events
            self.router.mark_success(cfg)
        finally:
            events.close()
            self._release(cfg)

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
