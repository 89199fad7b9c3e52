"""Retry policy: small pure decisions (retry? how long?) and the tenacity loop built from them.

The semantics are openai-python's (DESIGN.md §4): connection errors, timeouts, 408, 409, 429, 5xx and
unparseable 2xx bodies are retried; other 4xx and exhausted quotas are not; `x-should-retry` wins.
The wait is the server's hint when it gave one, else capped exponential backoff with jitter.
"""
from __future__ import annotations

import email.utils
import random
import time
from typing import Any, Callable, Mapping, Optional, TypeVar

import tenacity

from . import _cancel
from ._constants import JITTER_MIN, MAX_BACKOFF_FACTOR, MAX_RETRY_AFTER, RETRY_STATUSES
from ._logging import get_logger
from ._ratelimit_headers import parse_duration
from .errors import (
    APIConnectionError,
    APIStatusError,
    LLMError,
    QuotaExceededError,
    ResponseParseError,
    StreamTruncatedError,
)

__all__ = ["RetryPolicy", "backoff_delay", "check_retry_settings", "is_retryable", "parse_retry_after",
           "ratelimit_reset", "retry_wait"]

logger = get_logger(__name__)
T = TypeVar("T")


def _positive(value: Optional[float]) -> Optional[float]:
    """A usable wait: finite and above zero. 0 ("retry now"), negative, NaN or infinite → None (our backoff)."""
    return value if value is not None and 0.0 < value < float("inf") else None


def check_retry_settings(retry_times: Any, retry_delay: Any) -> None:
    """ValueError naming the setting unless retry_times is a whole number >= 0 and retry_delay finite >= 0
    (a negative or NaN delay would only fail later, inside the first retry's sleep)."""
    if isinstance(retry_times, bool) or not isinstance(retry_times, (int, float)) or retry_times < 0 \
            or retry_times != int(retry_times):
        raise ValueError(f"retry_times must be a whole number >= 0, got {retry_times!r}")
    if isinstance(retry_delay, bool) or not isinstance(retry_delay, (int, float)) or not 0 <= retry_delay < float("inf"):
        raise ValueError(f"retry_delay must be a finite number of seconds >= 0, got {retry_delay!r}")


def parse_retry_after(headers: Mapping[str, str], *, now: Optional[float] = None) -> Optional[float]:
    """Seconds the server asked us to wait (`retry-after-ms`, then `retry-after` seconds or HTTP date).

    A proxy's relayed copy of the upstream's hint counts too (LiteLLM: `llm_provider-retry-after`).
    None when there is no usable hint: absent, garbage, zero, negative or a date in the past. A zero would
    make the retries follow each other within milliseconds, so our own backoff is used instead.
    """
    for prefix in _RELAY_PREFIXES:
        value = headers.get(prefix + "retry-after-ms")
        if value is not None:
            try:
                wait = _positive(float(value) / 1000.0)
            except ValueError:
                wait = None
            if wait is not None:
                return wait
        value = headers.get(prefix + "retry-after")
        if value is None:
            continue
        try:
            wait = _positive(float(value))
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            wait = None if parsed is None else \
                _positive(email.utils.mktime_tz(parsed) - (time.time() if now is None else now))
        if wait is not None:
            return wait
    return None


_RELAY_PREFIXES = ("", "llm_provider-")


def _duration(value: str) -> Optional[float]:
    """Seconds in an `x-ratelimit-reset-*` value: OpenAI's "1m30s" / "250ms" / "2.5s", or plain seconds."""
    return _positive(parse_duration(value))  # 0 or garbage: no hint


def ratelimit_reset(headers: Mapping[str, str]) -> Optional[float]:
    """When an exhausted rate limit resets, from `x-ratelimit-reset-requests|tokens` (also relayed by a proxy).

    The limit whose `x-ratelimit-remaining-*` is 0 is the one that matters; without remaining counts, the
    latest reset (all limits have room again). None when the headers say nothing usable.
    """
    resets = []
    exhausted = []
    for prefix in _RELAY_PREFIXES:
        for kind in ("requests", "tokens"):
            value = headers.get(f"{prefix}x-ratelimit-reset-{kind}")
            seconds = _duration(value) if value else None
            if seconds is None:
                continue
            resets.append(seconds)
            if (headers.get(f"{prefix}x-ratelimit-remaining-{kind}") or "").strip() == "0":
                exhausted.append(seconds)
    if exhausted:
        return max(exhausted)
    return max(resets) if resets else None


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt could succeed where `exc` failed."""
    if isinstance(exc, APIStatusError):
        hint = exc.headers.get("x-should-retry")
        if hint == "true":
            return True
        if hint == "false" or isinstance(exc, QuotaExceededError):
            return False
        return exc.status_code in RETRY_STATUSES or exc.status_code >= 500
    if isinstance(exc, StreamTruncatedError):
        return True
    if isinstance(exc, (APIConnectionError, ResponseParseError)):
        return True
    return False


def backoff_delay(retry_index: int, retry_delay: float, rng: Callable[[], float] = random.random) -> float:
    """`min(retry_delay·2^k, 8·retry_delay) · U(0.75, 1)` for the k-th retry (k from 0)."""
    base = min(retry_delay * (2 ** retry_index), MAX_BACKOFF_FACTOR * retry_delay)
    return base * (JITTER_MIN + (1.0 - JITTER_MIN) * rng())


def retry_wait(exc: BaseException, retry_index: int, retry_delay: float,
               rng: Callable[[], float] = random.random) -> float:
    """How long to wait before the next attempt: the server's hint (≤ 120 s) or backoff."""
    if isinstance(exc, APIStatusError):
        hint = parse_retry_after(exc.headers)
        if hint is None:
            hint = _positive(exc.retry_after)
        if hint is None and exc.status_code == 429:  # reset times matter only when a limit was hit
            hint = ratelimit_reset(exc.headers)
        if hint is not None:
            return min(hint, MAX_RETRY_AFTER)
    return backoff_delay(retry_index, retry_delay, rng)


class RetryPolicy:
    """Runs a call with retries. Immutable after construction; one instance serves every thread.

    `sleep` is injectable so tests never wait on the wall clock; `retryable` narrows what is retried
    (a pool retries connection errors on another endpoint instead).
    """

    def __init__(self, retry_times: int = 3, retry_delay: float = 1.0, *,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random,
                 retryable: Callable[[BaseException], bool] = is_retryable) -> None:
        check_retry_settings(retry_times, retry_delay)
        self.retry_times = int(retry_times)
        self.retry_delay = float(retry_delay)
        self._rng = rng
        self._sleep = sleep
        self._retryable = retryable

        # tenacity runs the retries after the first failure; k-th retry waits retry_wait(exc, k)
        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return retry_wait(exc, state.attempt_number, self.retry_delay, self._rng) if exc else 0.0

        def before_sleep(state: tenacity.RetryCallState) -> None:
            _cancel.check()  # a stopped batch / cancelled await: no "retrying in …" for a retry that never comes
            self._log(state.outcome.exception() if state.outcome else None, state.upcoming_sleep,
                      state.attempt_number + 2)

        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.retry_times)),
            retry=tenacity.retry_if_exception(retryable),
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        ) if self.retry_times else None

    def _log(self, exc: Optional[BaseException], delay: float, attempt: int) -> None:
        logger.warning("retrying in %.2fs (attempt %d of %d) after %s", delay, attempt, self.retry_times + 1,
                       _describe(exc))

    def call(self, fn: Callable[[], T]) -> T:
        """Call `fn` until it succeeds, fails with a non-retryable error, or retries run out.

        The first attempt runs bare (most calls succeed at once and pay nothing for retry bookkeeping);
        after a retryable failure the remaining attempts run under tenacity.
        """
        try:
            return fn()
        except Exception as exc:
            if self._retrying is None or not self._retryable(exc):
                raise
            delay = retry_wait(exc, 0, self.retry_delay, self._rng)
            _cancel.check()
            self._log(exc, delay, 2)
        self._sleep(delay)
        return self._retrying(fn)


def _describe(exc: Optional[BaseException]) -> str:
    if exc is None:
        return "no error"
    if isinstance(exc, LLMError):
        return f"{type(exc).__name__}: {exc.message}"
    return type(exc).__name__

