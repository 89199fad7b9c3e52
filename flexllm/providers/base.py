"""The contract every provider adapter fulfils.

An adapter is pure: it holds immutable settings (base URL, key, thinking default) and turns data into
data. It never does I/O. Transport, retry, rate limit, cache and batch are shared by all adapters.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .._logging import redact_secrets
from ..errors import APIStatusError, LLMError, ResponseParseError
from ..types import ChatCompletionResult, StreamEvent

__all__ = ["LIBRARY_KWARGS", "MAX_ERROR_TEXT", "ProviderAdapter", "RequestSpec", "SHAPE_ERRORS", "StreamReply", "as_dict",
           "as_str", "check_headers", "check_token_limits", "clean_secret", "decode_sse_json", "shape_guard",
           "unmatched_tool_result"]

#: server text quoted in an error message is cut to this many characters (after redaction)
MAX_ERROR_TEXT = 500

#: words a caller may pass that are for flexllm, never for the request body
LIBRARY_KWARGS = frozenset({"skip_cache", "metadata", "thinking", "thinking_style", "timeout", "return_raw",
                            "return_usage", "validation_retries", "events"})


def clean_secret(value: Optional[str], name: str = "api_key") -> str:
    """`value` without surrounding whitespace (a key read from a file or a CRLF .env keeps its newline).

    A key that still holds whitespace, a control character or non-ASCII text cannot be sent in a header:
    ValueError naming the position, never quoting the key.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    value = value.strip().strip("\ufeff").strip()
    for i, ch in enumerate(value):
        if not "!" <= ch <= "~":
            kind = "whitespace" if ch.isspace() else "a control character" if ord(ch) < 32 or ord(ch) == 127 \
                else "a non-ASCII character"
            raise ValueError(f"{name} contains {kind} at position {i + 1} of {len(value)}; a key is printable "
                             "ASCII without spaces (check how it was read: a file, a CRLF .env, a copied quote)")
    return value


def check_token_limits(params: Mapping[str, Any]) -> None:
    """ValueError naming the parameter unless each reply-length limit given is a whole number >= 1 (None = not
    set). Every adapter's build_request calls it, so 0, a bool or "100" never reaches a server (they answer 400,
    or a proxy an empty reply)."""
    for name in ("max_tokens", "max_completion_tokens", "maxOutputTokens"):  # the last: Gemini's own name
        value = params.get(name)
        if value is not None and (value.__class__ is bool or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def unmatched_tool_result(call_id: Any, where: str = "", also: str = "") -> ValueError:
    """The error for a tool message whose tool_call_id names no earlier assistant tool call: refused before
    sending (the provider could not pair it with its call: a 400, or a result given to the wrong call)."""
    return ValueError(f"{where + ': ' if where else ''}tool message with tool_call_id {call_id!r} matches no earlier "
                      f"assistant tool call; keep the assistant message with its tool_calls{also}")


def check_headers(headers: Optional[Mapping[str, Any]], what: str) -> Dict[str, str]:
    """`headers` as a dict, or ValueError naming the header (never its value) that cannot be sent."""
    out: Dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not name or any(not "!" <= ch <= "~" or ch == ":" for ch in name):
            raise ValueError(f"{what}: invalid header name {name!r}")
        if not isinstance(value, str):
            raise ValueError(f"{what}: the value of header {name!r} must be a string, got {type(value).__name__}")
        if any(not " " <= ch <= "~" and ch != "\t" for ch in value):
            raise ValueError(f"{what}: the value of header {name!r} contains a line break, a control character or "
                             "non-ASCII text")
        out[name] = value
    return out


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request, fully built: the transport sends exactly this. Its repr never shows the headers."""

    method: str
    url: str
    headers: Dict[str, str] = field(repr=False)
    json: Dict[str, Any]
    #: a read timeout for this request only (seconds); None = the client's
    timeout: Optional[float] = None


def decode_sse_json(payload: str, *, provider: str, model: str,
                    redact: Callable[[str], str] = redact_secrets) -> Dict[str, Any]:
    """The JSON object in one SSE `data:` payload; ResponseParseError if it is not one or reports an error."""
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise ResponseParseError(f"stream chunk is not JSON: {redact(payload)[:200]!r}", provider=provider,
                                 model=model) from None
    if not isinstance(chunk, dict):
        raise ResponseParseError("stream chunk is not a JSON object", provider=provider, model=model)
    if chunk.get("error"):
        raise ResponseParseError(f"server error inside stream: {redact(str(chunk['error']))[:MAX_ERROR_TEXT]}",
                                 provider=provider, model=model)
    return chunk


#: what a parser hits on a reply of the wrong shape; `shape_guard` turns them into ResponseParseError
SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def shape_guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a reply parser: a reply of the wrong shape raises ResponseParseError, never a TypeError.

    A backstop for parsers that index into replies directly; flexllm's own errors pass through untouched.
    """
    @functools.wraps(fn)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except LLMError:
            raise
        except SHAPE_ERRORS as exc:
            name = getattr(self, "name", None) or getattr(getattr(self, "adapter", None), "name", None)
            raise ResponseParseError(f"reply has an unexpected shape ({type(exc).__name__}: {str(exc)[:100]})",
                                     provider=name, model=kwargs.get("model") or getattr(self, "model", None)) \
                from None
    return guarded


def as_dict(value: Any) -> Optional[Dict[str, Any]]:
    """`value` if it is a JSON object, else None (an optional field of the wrong type counts as absent)."""
    return value if isinstance(value, dict) else None


def as_str(value: Any) -> Optional[str]:
    """`value` if it is a string, else None."""
    return value if isinstance(value, str) else None


class StreamReply:
    """A stream's events collected into the reply a non-stream call returns (tool-call deltas merged by index)."""

    __slots__ = ("content", "reasoning", "refusal", "usage", "finish_reason", "_calls")

    def __init__(self) -> None:
        self.content: List[str] = []
        self.reasoning: List[str] = []
        self.refusal: List[str] = []
        self.usage: Optional[dict] = None
        self.finish_reason: Optional[str] = None
        self._calls: Dict[int, Dict[str, Any]] = {}

    def add(self, event: StreamEvent) -> None:
        """Take in one event."""
        if event.content:
            self.content.append(event.content)
        if event.reasoning:
            self.reasoning.append(event.reasoning)
        if event.refusal:
            self.refusal.append(event.refusal)
        self.usage = event.usage or self.usage
        self.finish_reason = event.finish_reason or self.finish_reason
        for delta in event.tool_calls or ():
            self._merge_call(delta)

    def _merge_call(self, delta: Dict[str, Any]) -> None:
        index = delta.get("index")
        call = self._calls.setdefault(index if isinstance(index, int) else len(self._calls),
                                      {"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
        for key in ("id", "type"):
            if isinstance(delta.get(key), str):
                call[key] = delta[key]
        fn = delta.get("function")
        if isinstance(fn, dict):
            if isinstance(fn.get("name"), str) and not call["function"]["name"]:  # some servers repeat it
                call["function"]["name"] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                call["function"]["arguments"] += fn["arguments"]

    def result(self) -> ChatCompletionResult:
        """The collected reply (content and reasoning joined, tool calls in index order)."""
        calls = [self._calls[i] for i in sorted(self._calls)] or None
        return ChatCompletionResult("".join(self.content), self.usage, "".join(self.reasoning) or None,
                                    tool_calls=calls, finish_reason=self.finish_reason)


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

    def stream_parser(self, model: str) -> Callable[[str], Optional[StreamEvent]]:
        """A line parser for one stream; adapters whose events need earlier lines return a stateful one."""
        return functools.partial(self.parse_stream_line, model=model)

    def stream_result(self, reply: StreamReply, *, model: str) -> ChatCompletionResult:
        """The reply a finished stream amounts to: what `parse_response` would return for the same answer
        (and the same errors: a blocked or refused reply raises here, at the end of the stream)."""
        return reply.result()

    def stream_complete(self, saw_done: bool, finish_reason: Optional[str]) -> bool:
        """Whether a stream that ended here ended properly (else it was truncated)."""
        return saw_done or finish_reason is not None

    def map_error(self, status_code: int, body: Any, headers: Mapping[str, str], *, model: str) -> APIStatusError:
        """The typed error for a non-2xx response (body decoded JSON when possible, else text)."""
        raise NotImplementedError

    def cache_params(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """The parts of `params` that change the answer (for the cache key): all but library words, transport
        options and unset values, plus the thinking setting in effect (the call's, else the client's default)."""
        out = {k: v for k, v in params.items()
               if k not in LIBRARY_KWARGS and k not in ("extra_headers", "stream", "stream_options") and v is not None}
        thinking = params["thinking"] if "thinking" in params else getattr(self, "thinking", None)
        if thinking is not None:
            out["thinking"] = thinking
        return out

    def shape_error(self, where: str, value: Any, expected: str, *, model: str) -> ResponseParseError:
        """The error for a 2xx reply whose `where` has the wrong type (never a bare TypeError)."""
        return ResponseParseError(f"reply's {where} is {type(value).__name__}, expected {expected}",
                                  provider=self.name, model=model)

    #: the secrets this adapter sends (set by subclasses); `redact` removes each wherever it appears
    _secrets: Tuple[str, ...] = ()

    def redact(self, text: str) -> str:
        """`text` with this adapter's secrets and anything shaped like a key removed (for errors and logs)."""
        for secret in self._secrets:
            if len(secret) >= 4 and secret in text:
                text = text.replace(secret, "***")
        return redact_secrets(text)

    def redact_value(self, value: Any) -> Any:
        """A decoded error body with every string in it redacted (so `exc.body` holds no key either)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v) for v in value]
        return value

    def status_error(self, cls: "type[APIStatusError]", message: str, *, status_code: int, body: Any,
                     headers: Mapping[str, str], model: str, **extra: Any) -> APIStatusError:
        """An APIStatusError whose message, body and headers are redacted first, then cut."""
        return cls(self.redact(message)[:MAX_ERROR_TEXT] or "(empty body)", status_code=status_code,
                   body=self.redact_value(body), headers={k: self.redact(v) for k, v in headers.items()},
                   provider=self.name, model=model, **extra)
