"""Results and cache entries: the small pure conversions the request pipeline and its streaming half share."""
from __future__ import annotations

from typing import Any, Dict

from .structured import prepare
from .types import ChatCompletionResult

__all__ = ["cache_entry", "is_answer", "result_from_cache", "wire_params"]


def result_from_cache(entry: dict) -> ChatCompletionResult:
    """A ChatCompletionResult rebuilt from a cache entry."""
    return ChatCompletionResult(content=entry.get("content") or "", usage=entry.get("usage"),
                                reasoning_content=entry.get("reasoning_content"),
                                tool_calls=entry.get("tool_calls"), finish_reason=entry.get("finish_reason"))


def is_answer(result: ChatCompletionResult) -> bool:
    """Whether a reply is worth caching: it has text or tool calls (an empty reply is asked again next time)."""
    return bool(result.content or result.tool_calls)


def cache_entry(result: ChatCompletionResult) -> dict:
    """The JSON-able cache value of a result (never any request data or secret)."""
    return {"content": result.content, "usage": result.usage, "reasoning_content": result.reasoning_content,
            "tool_calls": result.tool_calls, "finish_reason": result.finish_reason}


def wire_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """`params` with a schema response_format in its wire form (what the adapter and the cache key see)."""
    if "response_format" in params:
        return prepare(params)[0]
    return params
