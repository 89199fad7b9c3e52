"""The contract every provider adapter fulfils.

An adapter is pure: it holds immutable settings (base URL, key, thinking default) and turns data into
data. It never does I/O. Transport, retry, rate limit, cache and batch are shared by all adapters.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from ..errors import APIStatusError, ResponseParseError
from ..types import ChatCompletionResult, StreamEvent

__all__ = ["LIBRARY_KWARGS", "ProviderAdapter", "RequestSpec", "decode_sse_json"]

#: words a caller may pass that are for flexllm, never for the request body
LIBRARY_KWARGS = frozenset({"skip_cache", "metadata", "thinking", "timeout", "return_raw", "return_usage",
                            "validation_retries"})


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request, fully built: the transport sends exactly this."""

    method: str
    url: str
    headers: Dict[str, str]
    json: Dict[str, Any]
    #: a read timeout for this request only (seconds); None = the client's
    timeout: Optional[float] = None


def decode_sse_json(payload: str, *, provider: str, model: str) -> Dict[str, Any]:
    """The JSON object in one SSE `data:` payload; ResponseParseError if it is not one or reports an error."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise ResponseParseError(f"stream chunk is not JSON: {payload[:200]!r}", provider=provider,
                                 model=model) from None
    if not isinstance(chunk, dict):
        raise ResponseParseError("stream chunk is not a JSON object", provider=provider, model=model)
    if chunk.get("error"):
        raise ResponseParseError(f"server error inside stream: {str(chunk['error'])[:500]}", provider=provider,
                                 model=model)
    return chunk


class ProviderAdapter:
    """Base class of provider adapters. Subclasses override every method below."""

    #: short provider name used in errors, logs and cache keys ("openai", "gemini")
    name: str = "base"

    def build_request(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                      stream: bool = False) -> RequestSpec:
        """The request for `messages` to `model`; `params` are the caller's kwargs (incl. `thinking`)."""
        raise NotImplementedError

    def parse_response(self, data: Dict[str, Any], *, model: str) -> ChatCompletionResult:
        """The result in a decoded 2xx body; raises ResponseParseError / ContentBlockedError."""
        raise NotImplementedError

    def parse_stream_line(self, line: str, *, model: str) -> Optional[StreamEvent]:
        """One line of the SSE stream → an event, or None for lines that carry nothing (comments, blanks)."""
        raise NotImplementedError

    def stream_complete(self, saw_done: bool, finish_reason: Optional[str]) -> bool:
        """Whether a stream that ended here ended properly (else it was truncated)."""
        return saw_done or finish_reason is not None

    def map_error(self, status_code: int, body: Any, headers: Mapping[str, str], *, model: str) -> APIStatusError:
        """The typed error for a non-2xx response (body decoded JSON when possible, else text)."""
        raise NotImplementedError

    def cache_params(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """The parts of `params` that change the answer (for the cache key). Default: all but library words."""
        return {k: v for k, v in params.items() if k not in LIBRARY_KWARGS or k == "thinking"}

    def redact(self, text: str) -> str:
        """`text` with this adapter's secrets removed (defence in depth for messages and logs)."""
        return text
