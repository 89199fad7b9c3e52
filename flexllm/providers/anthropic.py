"""The Anthropic Claude adapter: the Messages API (`POST /v1/messages`), plain and streamed.

OpenAI-shaped input (messages, tools, tool_choice, response_format, stop, thinking) is mapped to the
Messages API and the replies back to OpenAI's shape (content, reasoning_content, tool_calls, finish
reasons, usage). `max_tokens` is required by the API: when the caller gives none, DEFAULT_MAX_TOKENS
(4096) is sent, plus the thinking budget when extended thinking is on.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import APIStatusError, ContentBlockedError, QuotaExceededError, ResponseParseError, status_error_class
from ..types import ChatCompletionResult, StreamEvent
from ._anthropic_request import content_blocks, output_format, to_messages, tool_choice, tools
from .base import LIBRARY_KWARGS, MAX_ERROR_TEXT, ProviderAdapter, RequestSpec, StreamReply, as_dict, as_str, \
    check_headers, check_token_limits, clean_secret, shape_guard
from .registry import Provider, register

__all__ = ["DEFAULT_MAX_TOKENS", "THINKING_BUDGETS", "AnthropicAdapter", "split_claude_thoughts", "to_messages",
           "to_usage"]

DEFAULT_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
#: sent as max_tokens when the caller gives none (the Messages API requires it)
DEFAULT_MAX_TOKENS = 4096
#: thinking= value → budget_tokens (True means "medium"; an int is the budget itself, at least 1024)
THINKING_BUDGETS = {"low": 2048, "medium": 8192, "high": 24576}
MIN_THINKING_BUDGET = 1024
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "refusal": "content_filter", "model_context_window_exceeded": "length", "pause_turn": "pause_turn"}
#: error type → HTTP status, for error events inside a stream (which arrive on a 200)
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}
#: OpenAI-style kwarg → Messages API field
PARAM_MAP = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens", "temperature": "temperature",
             "top_p": "top_p", "top_k": "top_k", "stop": "stop_sequences"}
#: the Messages API's own fields, accepted as kwargs and sent as given
NATIVE = frozenset({"system", "stop_sequences", "service_tier", "output_config", "container", "mcp_servers",
                    "context_management", "inference_geo"})
HANDLED = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "user", "stream",
                     "stream_options", "extra_body", "extra_headers", "anthropic_beta"})


def _budget(thinking: Any) -> Optional[int]:
    """budget_tokens for a thinking value; None = no extended thinking; 0 = adaptive (Claude decides)."""
    if thinking is None or thinking is False:
        return None
    if thinking == "adaptive":
        return 0
    if thinking is True:
        return THINKING_BUDGETS["medium"]
    if isinstance(thinking, str) and thinking in THINKING_BUDGETS:
        return THINKING_BUDGETS[thinking]
    if isinstance(thinking, int) and not isinstance(thinking, bool) and thinking >= MIN_THINKING_BUDGET:
        return thinking
    raise ValueError(f"thinking must be True, False, None, one of {tuple(THINKING_BUDGETS) + ('adaptive',)} or a "
                     f"token budget >= {MIN_THINKING_BUDGET} for Claude, got {thinking!r}")


# -- replies ------------------------------------------------------------------------------------------------
def _count(value: Any) -> int:
    """A token count, or 0 for anything that is not a finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (_INF, -_INF):
        return 0
    return max(0, int(value))


_INF = float("inf")


def to_usage(usage: Any) -> Optional[Dict[str, Any]]:
    """Messages API usage → OpenAI-style usage; prompt_tokens counts cached input too (as OpenAI's does)."""
    if not usage or not isinstance(usage, dict):
        return None
    fresh = _count(usage.get("input_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    write = _count(usage.get("cache_creation_input_tokens"))
    completion = _count(usage.get("output_tokens"))
    prompt = fresh + read + write
    out = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if read or write:
        out["cache_read_input_tokens"] = read
        out["cache_creation_input_tokens"] = write
        out["prompt_tokens_details"] = {"cached_tokens": read}
        split = usage.get("cache_creation")  # writes by cache lifetime: 1-hour ones cost more (pricing.py)
        if write and isinstance(split, dict):
            out["cache_creation"] = {k: _count(split.get(k)) for k in _TTL_KEYS}
    return out


_TTL_KEYS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def _tool_call(block: Mapping[str, Any]) -> Dict[str, Any]:
    return {"id": as_str(block.get("id")), "type": "function",
            "function": {"name": as_str(block.get("name")), "arguments": json.dumps(block.get("input") or {})}}


def split_claude_thoughts(content: Any) -> Tuple[str, str, List[Dict[str, Any]]]:
    """(text, thinking, OpenAI-shaped tool_calls) of a reply's content blocks."""
    text: List[str] = []
    thought: List[str] = []
    calls: List[Dict[str, Any]] = []
    for block in content if isinstance(content, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text.append(as_str(block.get("text")) or "")
        elif kind == "thinking":
            thought.append(as_str(block.get("thinking")) or "")
        elif kind == "tool_use":
            calls.append(_tool_call(block))
    return "".join(text), "".join(thought), calls


def _error_of(body: Any) -> Tuple[str, Optional[str]]:
    """The whole error message and type (never cut here: `status_error` redacts first, then cuts)."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        kind = err.get("type")
        return str(err.get("message") or kind or ""), (kind if isinstance(kind, str) else None)
    if isinstance(err, str):
        return err, None
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text.strip(), None


class _StreamParser:
    """Turns one stream's SSE lines into StreamEvents; keeps the little state the events need
    (input usage from message_start, which content blocks are tool calls)."""

    def __init__(self, adapter: "AnthropicAdapter", model: str) -> None:
        self.adapter, self.model = adapter, model
        self.usage: Dict[str, Any] = {}
        self.tools: Dict[int, int] = {}  # content block index → tool call index

    @shape_guard
    def __call__(self, line: str) -> Optional[StreamEvent]:
        if not line.startswith("data:"):
            return None  # "event:" names repeat the data's type; blanks and comments carry nothing
        try:
            chunk = json.loads(line[5:])
        except ValueError:
            raise ResponseParseError(f"stream chunk is not JSON: {self.adapter.redact(line[5:])[:200]!r}",
                                     provider=self.adapter.name, model=self.model) from None
        if not isinstance(chunk, dict):
            raise ResponseParseError("stream chunk is not a JSON object", provider=self.adapter.name, model=self.model)
        kind = chunk.get("type")
        index = chunk.get("index")
        index = index if isinstance(index, int) else None
        if kind == "content_block_delta":
            delta = as_dict(chunk.get("delta")) or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return StreamEvent(content=as_str(delta.get("text")) or "", raw=chunk)
            if dtype == "thinking_delta":
                return StreamEvent(reasoning=as_str(delta.get("thinking")) or "", raw=chunk)
            if dtype == "input_json_delta" and index in self.tools:
                return StreamEvent(raw=chunk, tool_calls=[{"index": self.tools[index], "function": {
                    "arguments": as_str(delta.get("partial_json")) or ""}}])
            return None  # signature_delta, citations_delta
        if kind == "content_block_start":
            block = as_dict(chunk.get("content_block")) or {}
            if block.get("type") == "tool_use" and index is not None:
                n = self.tools[index] = len(self.tools)
                return StreamEvent(raw=chunk, tool_calls=[{"index": n, "id": as_str(block.get("id")), "type": "function",
                                                           "function": {"name": as_str(block.get("name")),
                                                                        "arguments": ""}}])
            if block.get("type") == "text" and as_str(block.get("text")):
                return StreamEvent(content=block["text"], raw=chunk)
            if block.get("type") == "thinking" and as_str(block.get("thinking")):
                return StreamEvent(reasoning=block["thinking"], raw=chunk)
            return None
        if kind == "message_start":  # input usage is kept and reported with message_delta's totals, so the
            self.usage.update(as_dict((as_dict(chunk.get("message")) or {}).get("usage")) or {})  # first event
            return None  # is real content
        if kind == "message_delta":
            self.usage.update({k: v for k, v in (as_dict(chunk.get("usage")) or {}).items() if v is not None})
            reason = as_str((as_dict(chunk.get("delta")) or {}).get("stop_reason"))
            return StreamEvent(usage=to_usage(self.usage), raw=chunk,
                               finish_reason=STOP_REASONS.get(reason, reason) if reason else None)
        if kind == "message_stop":
            return StreamEvent(done=True, raw=chunk)
        if kind == "error" or "error" in chunk:
            status = ERROR_STATUS.get(_error_of(chunk)[1] or "", 500)
            raise self.adapter.map_error(status, chunk, {}, model=self.model)
        return None  # ping, content_block_stop, and event types added later


class AnthropicAdapter(ProviderAdapter):
    """Builds Messages API requests and parses their replies. Pure; safe to share."""

    name = "anthropic"

    def __init__(self, *, api_key: Optional[str] = None, base_url: Optional[str] = None, thinking: Any = None,
                 default_headers: Optional[Mapping[str, str]] = None, api_version: str = API_VERSION) -> None:
        base = (base_url or DEFAULT_BASE).rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        _budget(thinking)  # validate early
        self.thinking = thinking
        self.base_url = base
        if base.endswith("/v1/messages"):
            self._url = base
        else:
            self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        self._api_key = clean_secret(api_key)
        self._secrets = (self._api_key,) if self._api_key else ()
        headers = {"Content-Type": "application/json", "Accept": "application/json", "anthropic-version": api_version}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        headers.update(check_headers(default_headers, "default_headers"))
        self._headers = headers
        self._stream_headers = dict(headers, Accept="text/event-stream")

    def build_request(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                      stream: bool = False) -> RequestSpec:
        check_token_limits(params)
        unknown = [k for k in params if k not in LIBRARY_KWARGS and k not in PARAM_MAP and k not in NATIVE
                   and k not in HANDLED]
        if unknown:
            raise ValueError(f"Claude does not support {sorted(unknown)}; supported: {sorted(PARAM_MAP)}, tools, "
                             f"tool_choice, parallel_tool_calls, response_format, user, thinking, the Messages API's "
                             f"own {sorted(NATIVE)}, extra_body=, extra_headers=")
        system, msgs = to_messages(messages)
        body: Dict[str, Any] = {"model": model, "messages": msgs}
        for key, value in params.items():
            if value is None:
                continue
            if key in PARAM_MAP:
                body[PARAM_MAP[key]] = [value] if key == "stop" and isinstance(value, str) else value
            elif key in NATIVE:
                body[key] = value
        if system:
            given = body.get("system")
            system = system + (content_blocks(given, "system=") if given else [])
            plain = all(b["type"] == "text" and len(b) == 2 for b in system)
            body["system"] = "\n\n".join(b["text"] for b in system) if plain else system
        budget = _budget(params["thinking"] if "thinking" in params else self.thinking)
        if budget == 0:  # adaptive: the model decides how much to think, within max_tokens
            body["thinking"] = {"type": "adaptive"}
            body.setdefault("max_tokens", THINKING_BUDGETS["medium"] + DEFAULT_MAX_TOKENS)
        elif budget is not None:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
            body.setdefault("max_tokens", budget + DEFAULT_MAX_TOKENS)
            if body["max_tokens"] <= budget:
                raise ValueError(f"max_tokens ({body['max_tokens']}) must be larger than the thinking budget "
                                 f"({budget}): Claude counts thinking inside max_tokens")
        body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        if params.get("tools"):
            body["tools"] = tools(params["tools"])
        choice = tool_choice(params.get("tool_choice"), params.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
        fmt = output_format(params.get("response_format"))
        if fmt is not None:
            body["output_config"] = dict(body.get("output_config") or {}, format=fmt)
        if params.get("user"):
            body["metadata"] = {"user_id": str(params["user"])}
        if params.get("extra_body"):
            body.update(params["extra_body"])
        if stream:
            body["stream"] = True
        headers = self._stream_headers if stream else self._headers
        beta = params.get("anthropic_beta")
        if beta or params.get("extra_headers"):
            headers = dict(headers, **check_headers(params.get("extra_headers"), "extra_headers"))
            if beta:
                headers["anthropic-beta"] = beta if isinstance(beta, str) else ",".join(beta)
        return RequestSpec("POST", self._url, headers, body, params.get("timeout"))

    @shape_guard
    def parse_response(self, data: Dict[str, Any], *, model: str) -> ChatCompletionResult:
        content = data.get("content")
        if data.get("type") == "error" or not isinstance(content, list):
            message, _ = _error_of(data)
            raise ResponseParseError(f"reply has no content blocks (server said: "
                                     f"{self.redact(message)[:MAX_ERROR_TEXT]})", provider=self.name, model=model)
        text, thought, calls = split_claude_thoughts(content)
        reason = as_str(data.get("stop_reason"))
        if reason == "refusal" and not text and not calls:
            raise ContentBlockedError("Claude refused to answer (stop_reason: refusal)", reason="refusal",
                                      provider=self.name, model=model)
        return ChatCompletionResult(content=text, usage=to_usage(data.get("usage")), reasoning_content=thought or None,
                                    tool_calls=calls or None,
                                    finish_reason=STOP_REASONS.get(reason, reason) if reason else None)

    def stream_result(self, reply: StreamReply, *, model: str) -> ChatCompletionResult:
        result = reply.result()
        if result.finish_reason == "content_filter" and not result.content and not result.tool_calls:
            raise ContentBlockedError("Claude refused to answer (stop_reason: refusal)", reason="refusal",
                                      provider=self.name, model=model)  # as parse_response does
        return result

    def stream_parser(self, model: str) -> "_StreamParser":
        return _StreamParser(self, model)

    def parse_stream_line(self, line: str, *, model: str) -> Optional[StreamEvent]:
        return _StreamParser(self, model)(line)  # stateless use; streams go through stream_parser()

    def stream_complete(self, saw_done: bool, finish_reason: Optional[str]) -> bool:
        return saw_done  # message_stop

    def map_error(self, status_code: int, body: Any, headers: Mapping[str, str], *, model: str) -> APIStatusError:
        message, code = _error_of(body)
        cls = status_error_class(status_code)
        code = as_str(code)
        if "credit balance" in message.lower() or code == "billing_error":
            cls = QuotaExceededError  # no retry can help: stop a batch early
        return self.status_error(cls, message, status_code=status_code, body=body, headers=headers, model=model,
                                 code=code)


def _make_adapter(*, base_url: Optional[str], api_key: Optional[str], model: Optional[str] = None, thinking: Any = None,
                  default_headers: Optional[Mapping[str, str]] = None) -> AnthropicAdapter:
    return AnthropicAdapter(base_url=base_url, api_key=api_key, thinking=thinking, default_headers=default_headers)


register(Provider("anthropic", _make_adapter, hosts=("anthropic.com",), model_prefixes=("claude",),
                  key_prefixes=("sk-ant-",), env_keys=("ANTHROPIC_API_KEY",),
                  exclusive_params=frozenset({"stop_sequences", "anthropic_beta", "container", "mcp_servers",
                                              "context_management", "output_config", "system", "inference_geo"})))
