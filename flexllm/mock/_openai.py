"""The OpenAI-compatible dialect of the mock server (pure: request dict in, reply dicts out)."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ._common import Turn, bearer, pieces, sse, text_of, words
from ._directives import extract, strip

__all__ = ["api_key", "error_body", "is_stream", "matches", "pieces", "reply", "stream", "texts", "words"]

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 429: "rate_limit_error"}


def matches(path: str) -> bool:
    """Whether `path` is this dialect's endpoint."""
    return path.startswith("/v1/chat/completions")


def is_stream(path: str, body: Dict[str, Any]) -> bool:
    return bool(body.get("stream"))


def api_key(headers: Any) -> str:
    """The key the client sent (Bearer, or Azure's api-key header)."""
    return bearer(headers) or headers.get("api-key", "")



def texts(body: Dict[str, Any]) -> Tuple[str, str]:
    """(all message text, last user message text)."""
    messages = body.get("messages") or []
    all_text = "\n".join(text_of(m.get("content")) for m in messages if isinstance(m, dict))
    last = ""
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            last = text_of(m.get("content"))
    return all_text, last


def error_body(status: int, message: str, quota: bool = False, **_: Any) -> Dict[str, Any]:
    if quota:
        return {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                          "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error" if status >= 500
                                                                   else "invalid_request_error"),
                      "param": None, "code": None}}


def _message(answer: str, reasoning: Optional[str], think: Optional[str]) -> Dict[str, Any]:
    msg: Dict[str, Any] = {"role": "assistant", "content": answer}
    if reasoning is None:
        return msg
    if think == "reasoning":
        msg["reasoning"] = reasoning
    elif think == "tags":
        msg["content"] = f"<think>{reasoning}</think>{answer}"
    elif think == "closing":
        msg["content"] = f"{reasoning}</think>{answer}"
    else:
        msg["reasoning_content"] = reasoning
    return msg


def usage(body: Dict[str, Any], answer: str, reasoning: Optional[str], n: int = 1) -> Dict[str, Any]:
    all_text, _ = texts(body)
    prompt = words(strip(all_text)) + 3 * len(body.get("messages") or [])
    completion = (words(answer) + words(reasoning or "")) * n
    out: Dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    d = extract(all_text) if "[[mock:" in all_text else {}
    if "cache_read" in d:  # OpenAI's shape: cached tokens are counted inside prompt_tokens
        out["prompt_tokens"] += int(d["cache_read"])
        out["prompt_tokens_details"] = {"cached_tokens": int(d["cache_read"])}
    if "cache_hit" in d:  # DeepSeek's shape
        out["prompt_tokens"] += int(d["cache_hit"])
        out["prompt_cache_hit_tokens"], out["prompt_cache_miss_tokens"] = int(d["cache_hit"]), prompt
    out["total_tokens"] = out["prompt_tokens"] + completion
    return out


def _reasoning(turn: Turn) -> Tuple[Optional[str], Optional[str]]:
    think = turn.directives.get("think")
    return (turn.thought() if think else None), think


def reply(turn: Turn) -> Dict[str, Any]:
    """The JSON of a non-streamed reply."""
    reasoning, think = _reasoning(turn)
    out = _reply(turn.body, turn.seq, turn.answer, reasoning, think,
                 turn.directives.get("finish", "tool_calls" if turn.calls else "stop"), turn.calls)
    if "refusal" in turn.directives:  # a model that declines: content null, the reason in `refusal`
        for choice in out["choices"]:
            choice["message"].update(content=None, refusal=turn.directives["refusal"])
    return out


#: finish_reason of a reply cut at the token limit
CUT_OFF = "length"


def token_limit(body: Dict[str, Any]) -> Optional[int]:
    """The reply's token limit (`max_completion_tokens` or `max_tokens`), or None."""
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def requested_schema(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The JSON schema of a `response_format` json_schema request, or None."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None
    return None


def stream(turn: Turn) -> Iterator[bytes]:
    """The SSE frames of a streamed reply, ending with `data: [DONE]` unless truncated."""
    reasoning, think = _reasoning(turn)
    yield from sse(stream_events(turn.body, turn.seq, turn.answer, reasoning, think,
                                 turn.directives.get("finish", "tool_calls" if turn.calls else "stop"), turn.truncate,
                                 turn.calls, turn.directives.get("refusal")))
    if not turn.truncate:
        yield b"data: [DONE]\n\n"


def _reply(body: Dict[str, Any], seq: int, answer: str, reasoning: Optional[str], think: Optional[str],
           finish: str, calls: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    n = max(1, int(body.get("n") or 1))
    choices = [{"index": i, "message": _message(answer, reasoning, think), "finish_reason": finish}
               for i in range(n)]
    if calls:
        for choice in choices:
            choice["message"]["tool_calls"] = calls
            choice["message"]["content"] = answer or None
    return {"id": f"chatcmpl-mock-{seq}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "choices": choices, "usage": usage(body, answer, reasoning, n)}


def stream_events(body: Dict[str, Any], seq: int, answer: str, reasoning: Optional[str], think: Optional[str],
                  finish: str, truncate: bool, calls: Optional[List[Dict[str, Any]]] = None,
                  refusal: Optional[str] = None) -> Iterator[Dict[str, Any]]:
    """The chunk objects of a streamed reply (the caller frames them as SSE and adds [DONE])."""
    base = {"id": f"chatcmpl-mock-{seq}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body.get("model")}
    field = "reasoning" if think == "reasoning" else "reasoning_content"
    content = answer
    if reasoning is not None and think in ("tags", "closing"):
        content = _message(answer, reasoning, think)["content"]
    deltas: List[Dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if reasoning is not None and think not in ("tags", "closing"):
        deltas += [{field: p} for p in pieces(reasoning)]
    if refusal is not None:
        deltas += [{"refusal": p} for p in pieces(refusal)]
    else:
        deltas += [{"content": p} for p in pieces(content)]
    for i, call in enumerate(calls or ()):  # OpenAI's shape: id and name first, then the arguments in pieces
        deltas.append({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        args = call["function"]["arguments"]
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": args[j:j + 7]}}]}
                   for j in range(0, len(args), 7)]
    if truncate:
        deltas = deltas[: max(2, len(deltas) // 2)]
    for d in deltas:
        yield dict(base, choices=[{"index": 0, "delta": d, "finish_reason": None}])
    if truncate:
        return
    yield dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": finish}])
    if (body.get("stream_options") or {}).get("include_usage"):
        yield dict(base, choices=[], usage=usage(body, answer, reasoning))
