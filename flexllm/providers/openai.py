"""The OpenAI-compatible adapter (OpenAI, DeepSeek, Qwen/DashScope, vLLM, SGLang, Ollama, …)."""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import urlsplit

from ..errors import (
    APIStatusError,
    ContentBlockedError,
    QuotaExceededError,
    RefusalError,
    ResponseParseError,
    status_error_class,
)
from ..types import ChatCompletionResult, StreamEvent
from .base import LIBRARY_KWARGS, MAX_ERROR_TEXT, ProviderAdapter, RequestSpec, StreamReply, as_dict, as_str, \
    check_headers, check_token_limits, clean_secret, decode_sse_json
from .registry import Provider, foreign_params, register

__all__ = ["OpenAIAdapter", "endpoint_kind", "split_thoughts", "thinking_params"]

THINKING_LEVELS = ("minimal", "low", "medium", "high")
_OMIT = LIBRARY_KWARGS | {"extra_body", "extra_headers"}
#: request words that change how the answer travels, not what it is (a stream and a call share a cache entry)
_NOT_IN_KEY = frozenset({"stream", "stream_options"})


def endpoint_kind(base_url: str) -> str:
    """Which dialect of thinking control a server speaks: openai, dashscope, ollama or generic."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host.endswith("openai.com") or host.endswith("openai.azure.com"):
        return "openai"
    if "dashscope" in host:
        return "dashscope"
    if "ollama" in host or parts.port == 11434:
        return "ollama"
    return "generic"


#: `thinking_style=` values → the dialect they name (vLLM and SGLang read chat_template_kwargs)
THINKING_STYLES = {"openai": "openai", "vllm": "generic", "sglang": "generic", "dashscope": "dashscope",
                   "qwen": "dashscope", "ollama": "ollama"}


def style_kind(style: Any, default: str) -> str:
    """The dialect for a `thinking_style` (None: `default`, detected from the URL); ValueError if unknown."""
    if style is None:
        return default
    if not isinstance(style, str) or style not in THINKING_STYLES:
        raise ValueError(f"thinking_style must be None or one of {sorted(THINKING_STYLES)}, got {style!r}")
    return THINKING_STYLES[style]


def thinking_params(kind: str, thinking: Any) -> Dict[str, Any]:
    """Body fields that turn thinking on/off (or set its level) for one endpoint kind (DESIGN §8)."""
    if thinking is None:
        return {}
    if isinstance(thinking, str):
        if thinking not in THINKING_LEVELS:
            raise ValueError(f"thinking must be True, False, None or one of {THINKING_LEVELS}, got {thinking!r}")
        return {"reasoning_effort": thinking}
    if not isinstance(thinking, bool):
        raise ValueError(f"thinking must be True, False, None or one of {THINKING_LEVELS}, got {thinking!r}")
    if kind == "openai":
        return {"reasoning_effort": "medium" if thinking else "minimal"}
    if kind == "dashscope":
        return {"enable_thinking": thinking}
    if kind == "ollama":
        return {"think": thinking}
    return {"chat_template_kwargs": {"enable_thinking": thinking}}


def split_thoughts(message: Mapping[str, Any]) -> Dict[str, str]:
    """`{"thought", "answer"}` of one assistant message: reasoning field, else `<think>` tags in the content."""
    content = message.get("content") or ""
    if not isinstance(content, str):  # list of parts
        content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)) \
            if isinstance(content, list) else ""
    for field in ("reasoning_content", "reasoning"):
        thought = message.get(field)
        if isinstance(thought, str) and thought:
            return {"thought": thought, "answer": content}
    end = content.find("</think>")
    if end >= 0:
        start = content.find("<think>", 0, end)
        thought = content[start + 7 if start >= 0 else 0:end]
        return {"thought": thought.strip(), "answer": content[end + 8:].lstrip()}
    return {"thought": "", "answer": content}


class OpenAIAdapter(ProviderAdapter):
    """Builds `/chat/completions` requests and parses their replies. Pure; safe to share."""

    name = "openai"

    def __init__(self, *, base_url: str, api_key: Optional[str] = "EMPTY", thinking: Any = None,
                 default_headers: Optional[Mapping[str, str]] = None, thinking_style: Optional[str] = None) -> None:
        if not base_url:
            raise ValueError("base_url is required for an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.kind = style_kind(thinking_style, endpoint_kind(self.base_url))
        thinking_params(self.kind, thinking)  # validate early
        self.thinking = thinking
        self._url = self.base_url if self.base_url.endswith("/chat/completions") else self.base_url + "/chat/completions"
        self._api_key = clean_secret(api_key)
        self._secrets = (self._api_key,) if self._api_key else ()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        headers.update(check_headers(default_headers, "default_headers"))
        self._headers = headers
        self._stream_headers = dict(headers, Accept="text/event-stream")

    def build_request(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                      stream: bool = False) -> RequestSpec:
        check_token_limits(params)
        foreign = foreign_params(self.name, params)
        if foreign:
            raise ValueError(f"OpenAI-compatible servers do not take {foreign} (another provider's parameters)")
        settings = sorted(k for k in _CLIENT_SETTINGS if k in params)
        if settings:  # never into the request body (a key there reaches the server's request logs and our files)
            raise ValueError(f"{settings} are client settings, not request parameters: pass them to the client, "
                             "e.g. LLMClient(model=..., base_url=..., api_key=...)")
        body: Dict[str, Any] = {"model": model, "messages": messages}
        for key, value in params.items():
            if key not in _OMIT:
                body[key] = value
        thinking = params["thinking"] if "thinking" in params else self.thinking
        kind = style_kind(params["thinking_style"], self.kind) if "thinking_style" in params else self.kind
        for key, value in thinking_params(kind, thinking).items():
            if key == "chat_template_kwargs":  # merge; the caller's explicit keys win
                body[key] = {**value, **(body.get(key) or {})}
            else:
                body.setdefault(key, value)
        extra = params.get("extra_body")
        if extra:
            body.update(extra)
        if stream:
            body["stream"] = True
            # usage arrives in a last chunk only when asked for; the caller's own stream_options win
            body.setdefault("stream_options", {"include_usage": True})
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        headers = self._stream_headers if stream else self._headers
        if params.get("extra_headers"):
            headers = {**headers, **check_headers(params["extra_headers"], "extra_headers")}
        return RequestSpec("POST", self._url, headers, body, params.get("timeout"))

    def parse_response(self, data: Dict[str, Any], *, model: str) -> ChatCompletionResult:
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            detail = data.get("error")
            raise ResponseParseError(
                "reply has no choices[0].message object"
                + (f" (server said: {self.redact(str(detail))[:MAX_ERROR_TEXT]})" if detail else ""),
                provider=self.name, model=model)
        content = message.get("content")
        if content is not None and not isinstance(content, str) and not (
                isinstance(content, list) and all(isinstance(p, dict) for p in content)):
            raise self.shape_error("choices[0].message.content", content, "a string or a list of content parts",
                                   model=model)
        tool_calls = message.get("tool_calls") or None
        if tool_calls is not None and not (isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)):
            raise self.shape_error("choices[0].message.tool_calls", tool_calls, "a list of objects", model=model)
        parts = split_thoughts(message)
        result = ChatCompletionResult(
            content=parts["answer"],
            usage=as_dict(data.get("usage")),
            reasoning_content=parts["thought"] or None,
            tool_calls=tool_calls,
            finish_reason=as_str(choice.get("finish_reason")),
        )
        return self._answer(result, as_str(message.get("refusal")), model)

    def _answer(self, result: ChatCompletionResult, refusal: Optional[str], model: str) -> ChatCompletionResult:
        """`result`, unless it is no answer: a refusal (RefusalError) or a filtered reply (ContentBlockedError)."""
        if not result.content and not result.tool_calls:
            if refusal:
                raise RefusalError(refusal, provider=self.name, model=model)
            if result.finish_reason == "content_filter":
                raise ContentBlockedError("reply blocked by the provider's content filter (finish_reason: "
                                          "content_filter)", reason="content_filter", provider=self.name, model=model)
        return result

    def stream_result(self, reply: StreamReply, *, model: str) -> ChatCompletionResult:
        result = reply.result()
        if not result.reasoning_content and "</think>" in result.content:  # same split as a non-stream reply
            parts = split_thoughts({"content": result.content})
            result.content, result.reasoning_content = parts["answer"], parts["thought"] or None
        return self._answer(result, "".join(reply.refusal), model)

    def parse_stream_line(self, line: str, *, model: str) -> Optional[StreamEvent]:
        if not line.startswith("data:"):
            return None  # blank separators, ": keep-alive" comments, "event:" lines
        payload = line[5:].strip()
        if payload == "[DONE]":
            return StreamEvent(done=True)
        chunk = decode_sse_json(payload, provider=self.name, model=model, redact=self.redact)
        event = StreamEvent(usage=as_dict(chunk.get("usage")), raw=chunk)
        choices = chunk.get("choices")
        if choices:
            choice = choices[0] if isinstance(choices, list) else None
            if not isinstance(choice, dict):
                raise self.shape_error("stream choices[0]", choice if choice is not None else choices, "an object",
                                       model=model)
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise self.shape_error("stream choices[0].delta", delta, "an object", model=model)
            content = delta.get("content") or ""
            if not isinstance(content, str):
                raise self.shape_error("stream choices[0].delta.content", content, "a string", model=model)
            event.content = content
            event.reasoning = as_str(delta.get("reasoning_content")) or as_str(delta.get("reasoning")) or ""
            event.refusal = as_str(delta.get("refusal")) or ""
            event.finish_reason = as_str(choice.get("finish_reason"))
            calls = delta.get("tool_calls")
            if calls:
                if not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
                    raise self.shape_error("stream choices[0].delta.tool_calls", calls, "a list of objects",
                                           model=model)
                event.tool_calls = calls
        return event

    def stream_complete(self, saw_done: bool, finish_reason: Optional[str]) -> bool:
        return saw_done

    def map_error(self, status_code: int, body: Any, headers: Mapping[str, str], *, model: str) -> APIStatusError:
        message, code = _error_text(body)
        cls = status_error_class(status_code)
        if status_code == 429 and (code in _QUOTA_CODES or _QUOTA_TEXT.search(message)):
            cls = QuotaExceededError
        return self.status_error(cls, message, status_code=status_code, body=body, headers=headers, model=model,
                                 code=code)

    def cache_params(self, params: Dict[str, Any]) -> Dict[str, Any]:
        out = {k: v for k, v in params.items() if k not in _OMIT and k not in _NOT_IN_KEY and v is not None}
        thinking = params["thinking"] if "thinking" in params else self.thinking
        if thinking is not None:
            out["thinking"] = thinking
            out["thinking_style"] = style_kind(params.get("thinking_style"), self.kind)  # it changes the request
        if params.get("extra_body"):
            out["extra_body"] = params["extra_body"]
        return out


#: client settings a caller may mistake for per-call keywords (the Gemini and Claude adapters reject unknown ones)
_CLIENT_SETTINGS = frozenset({"api_key", "base_url", "api_base"})

_QUOTA_CODES = ("insufficient_quota", "quota_exceeded", "billing_hard_limit_reached")
# a proxy (LiteLLM) relays an upstream quota error as {"type": "throttling_error", "code": "429"}: only the
# message still says so. OpenAI's own wording counts; a per-minute "quota" of requests/tokens does not.
_QUOTA_TEXT = re.compile(r"insufficient_quota|billing_hard_limit_reached|exceeded your current quota", re.I)


def _error_text(body: Any) -> "tuple[str, Optional[str]]":
    """The server's whole error message and code from an OpenAI-style (or FastAPI / plain) error body.

    Never cut here: the caller redacts first, then cuts (a cut key prefix would escape redaction).
    """
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err, default=str)
            code = err.get("code") or err.get("type")
            if err.get("type") == "insufficient_quota":
                code = "insufficient_quota"
            return str(message), (str(code) if code is not None else None)
        if isinstance(err, str):
            return err, None
        if "detail" in body:
            return str(body["detail"]), None
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text.strip(), None


def _make_adapter(*, base_url: Optional[str], api_key: Optional[str], model: Optional[str] = None, thinking: Any = None,
                  default_headers: Optional[Mapping[str, str]] = None,
                  thinking_style: Optional[str] = None) -> OpenAIAdapter:
    if not base_url:
        raise ValueError("base_url is required for an OpenAI-compatible provider, "
                         "e.g. LLMClient(model='gpt-4o', base_url='https://api.openai.com/v1')")
    return OpenAIAdapter(base_url=base_url, api_key=api_key, thinking=thinking, default_headers=default_headers,
                         thinking_style=thinking_style)


# the fallback: any server not recognised as another provider speaks the OpenAI dialect; OPENAI_API_KEY
# is read for OpenAI's own hosts only (a DeepSeek or vLLM server never receives it)
register(Provider("openai", _make_adapter, hosts=("openai.com", "openai.azure.com"), env_keys=("OPENAI_API_KEY",),
                  env_keys_own_hosts_only=True, fallback=True, options=("thinking_style",)))
