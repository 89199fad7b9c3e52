"""How a pool call treats an endpoint's failure: retry it there, hand the call to another endpoint, or give up;
and the one error raised when every endpoint failed. Pure decisions over flexllm's errors (like `retry`),
used by `flexllm.pool`'s retry loop, with `CallState`: what one call's endpoints answered so far.
"""
from __future__ import annotations

from typing import Dict

from .errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    LLMError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
)
from .retry import is_retryable

__all__ = ["CallState", "combined_error", "fails_over", "model_missing", "permanent", "retry_here"]

_MODEL_MISSING = ("model_not_found", "invalid model", "model not found", "no such model", "unknown model",
                  "does not exist", "not supported", "is not available", "not found")


def model_missing(exc: BaseException) -> bool:
    """A 400/404 saying this endpoint does not serve the model (another endpoint may)."""
    if isinstance(exc, NotFoundError):
        return True
    if not isinstance(exc, BadRequestError):
        return False
    text = f"{exc.code or ''} {exc.message}".lower()
    return "model" in text and any(marker in text for marker in _MODEL_MISSING)


def permanent(exc: BaseException) -> bool:
    """A failure this endpoint will repeat for this call: bad key, exhausted quota, model not served."""
    return isinstance(exc, (AuthenticationError, QuotaExceededError)) or model_missing(exc)


def retry_here(exc: BaseException) -> bool:
    """What an endpoint retries itself: transient answers. A dead connection moves on at once."""
    return is_retryable(exc) and not isinstance(exc, APIConnectionError)


def fails_over(exc: BaseException) -> bool:
    """Errors another endpoint may not have: transient ones and this endpoint's permanent ones."""
    return is_retryable(exc) or permanent(exc)


def _rank(exc: BaseException) -> int:
    """How much an error tells the user (higher = more): a server's answer beats a dead socket."""
    for rank, kind in enumerate((QuotaExceededError, RateLimitError, AuthenticationError, NotFoundError,
                                 BadRequestError, APIStatusError)):
        if isinstance(exc, kind):
            return 20 - rank
    return 1 if isinstance(exc, APIConnectionError) else 5


def combined_error(errors: Dict[str, LLMError], attempts: int) -> LLMError:
    """One error for a call every endpoint failed: the most informative one's type and details, a message
    naming each endpoint's failure, the most informative as `__cause__`, all in `.endpoint_errors`."""
    best = max(errors.values(), key=_rank)
    if len(errors) == 1:
        best.attempts = attempts  # type: ignore[attr-defined]
        best.endpoint_errors = dict(errors)  # type: ignore[attr-defined]
        return best
    parts = "; ".join(f"{url}: {type(e).__name__}: {e.message}" for url, e in errors.items())
    message = f"all {len(errors)} endpoints failed — {parts}"
    error = type(best).__new__(type(best))
    error.__dict__.update(best.__dict__)
    error.message = message
    where = "/".join(p for p in (best.provider, best.model) if p)
    error.args = (f"[{where}] {message}" if where else message,)
    error.attempts = attempts  # type: ignore[attr-defined]
    error.endpoint_errors = dict(errors)  # type: ignore[attr-defined]
    error.__cause__ = best
    return error


class CallState:
    """One call's state: what each endpoint answered last, which are out, attempts made (per endpoint)."""

    __slots__ = ("errors", "out", "attempts", "used")

    def __init__(self) -> None:
        self.errors: Dict[str, LLMError] = {}
        self.out: set = set()  # ids of endpoints that failed permanently for this call
        self.attempts = 0
        self.used: Dict[int, int] = {}  # id(endpoint) -> attempts it got
