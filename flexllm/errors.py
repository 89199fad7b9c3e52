"""The exception tree of flexllm.

    LLMError                          every error flexllm raises on purpose
    ├── APIConnectionError            no HTTP response: refused, reset, DNS, dropped mid-body
    │   └── APITimeoutError           connect / read / write / pool timeout
    ├── APIStatusError                the server answered with a non-2xx status
    │   ├── BadRequestError           400 (and other 4xx not listed below)
    │   ├── AuthenticationError       401, 403
    │   ├── NotFoundError             404
    │   ├── RateLimitError            429
    │   │   └── QuotaExceededError    429 that says the quota is exhausted: never retried
    │   └── ServerError               5xx
    ├── ResponseParseError            a 2xx whose body is not what the provider promises
    │   └── StreamTruncatedError      a stream that ended before its end marker
    ├── ContentBlockedError           the provider refused the prompt or the reply (safety)
    │   └── RefusalError              the model declined to answer (OpenAI `refusal`); `.refusal` says why
    └── ResponseValidationError       the reply does not match the requested response schema (after re-asks)

Every error names the provider and model and carries the server's own message. None ever holds an
API key: messages are built from the response body and our own words, never from request headers.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ContentBlockedError",
    "LLMError",
    "NotFoundError",
    "QuotaExceededError",
    "RateLimitError",
    "RefusalError",
    "ResponseParseError",
    "ResponseValidationError",
    "ServerError",
    "StreamTruncatedError",
    "status_error_class",
]


class LLMError(Exception):
    """Base of every flexllm error; `provider` and `model` say where it happened."""

    def __init__(self, message: str, *, provider: Optional[str] = None, model: Optional[str] = None) -> None:
        self.message = message
        self.provider = provider
        self.model = model
        where = "/".join(p for p in (provider, model) if p)
        super().__init__(f"[{where}] {message}" if where else message)

    def __reduce__(self) -> Any:
        """Pickle as the same class with the same fields (multiprocessing, Ray): __init__'s keyword-only
        arguments would otherwise make every APIStatusError fail to unpickle in the receiving process."""
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: Type[LLMError], args: Any, state: Dict[str, Any]) -> LLMError:
    """An unpickled error: `cls` with `args` and `state`, without running its __init__ again."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class APIConnectionError(LLMError):
    """The request got no HTTP response (connection refused, reset, dropped)."""


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read, write or pool)."""


class APIStatusError(LLMError):
    """The server answered with a non-success status code.

    `body` is the decoded JSON body when there was one (else the text), `headers` the response headers
    (retry hints live there), `code` the provider's machine-readable error code when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        code: Optional[str] = None,
        retry_after: Optional[float] = None,
        provider: Optional[str] = None,
        model: Optional[str] = None,
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.headers: Dict[str, str] = dict(headers or {})
        self.code = code
        #: a retry delay the provider put in the body (Gemini RetryInfo), in seconds
        self.retry_after = retry_after
        super().__init__(f"HTTP {status_code}: {message}", provider=provider, model=model)


class BadRequestError(APIStatusError):
    """400, or another 4xx without a class of its own: the request itself is wrong."""


class AuthenticationError(APIStatusError):
    """401 or 403: the key is missing, wrong, or lacks permission."""


class NotFoundError(APIStatusError):
    """404: wrong base_url or model name."""


class RateLimitError(APIStatusError):
    """429: too many requests; retried after the server's hint."""


class QuotaExceededError(RateLimitError):
    """429 whose body says the quota is used up (insufficient_quota, a daily QuotaFailure).

    Waiting will not help, so it is not retried and a batch stops early, keeping its results.
    """


class ServerError(APIStatusError):
    """5xx: the server failed; retried."""


class ResponseParseError(LLMError):
    """A success status whose body is not valid JSON or lacks what the provider promises."""


class StreamTruncatedError(ResponseParseError):
    """A stream closed before its end marker (`data: [DONE]` or a finish reason)."""


class ContentBlockedError(LLMError):
    """The provider blocked the prompt or the reply; `reason` is its code (e.g. SAFETY)."""

    def __init__(self, message: str, *, reason: Optional[str] = None, provider: Optional[str] = None,
                 model: Optional[str] = None) -> None:
        self.reason = reason
        super().__init__(message, provider=provider, model=model)


class ResponseValidationError(LLMError):
    """The reply is not valid JSON for the requested response schema, even after the re-asks.

    `error` is the first validation error, `reply` the first 200 characters of the last reply, `usage` the
    tokens of every reply it took (they were paid for). Not a ResponseParseError: the transport worked, so
    neither the retry loop nor a pool's failover repeats it.
    """

    def __init__(self, message: str, *, error: str = "", reply: str = "", provider: Optional[str] = None,
                 model: Optional[str] = None) -> None:
        self.error = error
        self.reply = reply
        self.usage: Optional[dict] = None
        super().__init__(message, provider=provider, model=model)


class RefusalError(ContentBlockedError):
    """The model declined to answer (OpenAI's `message.refusal`); `refusal` is its own words.

    Never retried (asking again gets the same refusal), never cached, never an empty success.
    """

    def __init__(self, refusal: str, *, provider: Optional[str] = None, model: Optional[str] = None) -> None:
        self.refusal = refusal
        super().__init__(f"the model refused: {refusal[:500]}", reason="refusal", provider=provider, model=model)


_STATUS_CLASSES: Dict[int, Type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> Type[APIStatusError]:
    """The exception class for an HTTP status (5xx → ServerError, unknown 4xx → BadRequestError)."""
    if status_code >= 500:
        return ServerError
    return _STATUS_CLASSES.get(status_code, BadRequestError if status_code >= 400 else APIStatusError)
