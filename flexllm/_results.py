"""Results and cache entries: the small pure conversions the request pipeline, its streaming half and the
batch engines share (no I/O, no state)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from .errors import ResponseValidationError
from .structured import fill_parsed, prepare, response_schema
from .types import ChatCompletionResult

__all__ = ["add_usage", "cache_entry", "is_answer", "result_from_cache", "result_from_hit", "wire_params"]


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


def add_usage(total: Optional[dict], usage: Optional[dict]) -> Optional[dict]:
    """Token counts of two replies added up (numeric fields only); either may be None."""
    if not total:
        return dict(usage) if usage else total
    if not usage:
        return total
    out = dict(total)
    for k, v in usage.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            prev = out.get(k)
            out[k] = (prev if isinstance(prev, (int, float)) else 0) + v
    return out


def result_from_hit(entry: dict, params: Dict[str, Any], model: str = "") -> Optional[ChatCompletionResult]:
    """A cache entry as a result, parsed against `params`' response_format schema; None when it does not fit
    (the caller asks the provider again, and the valid reply replaces the entry)."""
    result = result_from_cache(entry)
    fmt = params.get("response_format")
    schema = response_schema(fmt) if fmt is not None else None
    if schema is not None:
        try:
            fill_parsed(result, schema, model=model)
        except ResponseValidationError:
            return None
    return result
