"""The Anthropic Messages API dialect of the mock server (`POST /v1/messages`, plain and streamed).

Directives beyond the shared ones (`tool=`/`tool_args=` become tool_use blocks): `think` (a thinking
block), `finish=<stop_reason>`, `block` (a refusal), `cache_read=N` / `cache_write=N` (cache usage; with
`cache_write_1h=M`, M of the writes are 1-hour ones in `usage.cache_creation`),
`stream_error=<error type>` (an `event: error` halfway through a stream, or after `at=N` events).
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ._common import Turn, bearer, pieces, sse, text_of, words
from ._directives import strip

__all__ = ["CUT_OFF", "api_key", "error_body", "is_stream", "matches", "reply", "requested_schema", "stream", "texts",
           "token_limit", "validate"]

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 504: "timeout_error", 529: "overloaded_error"}


def matches(path: str) -> bool:
    """Whether `path` is this dialect's endpoint."""
    return path.split("?", 1)[0] == "/v1/messages"


def is_stream(path: str, body: Dict[str, Any]) -> bool:
    return bool(body.get("stream"))


def api_key(headers: Any) -> str:
    return headers.get("x-api-key") or bearer(headers)


def validate(headers: Any, body: Dict[str, Any]) -> Optional[str]:
    """What the real API rejects with a 400 before generating anything (None when the request is fine)."""
    if not headers.get("anthropic-version"):
        return "anthropic-version: header is required"
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            return f"{field}: Field required"
    for i, m in enumerate(body["messages"] if isinstance(body["messages"], list) else ()):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled" and not 1024 <= int(thinking.get("budget_tokens") or 0) < body["max_tokens"]:
        return "thinking.budget_tokens: must be >= 1024 and less than max_tokens"
    return None



def texts(body: Dict[str, Any]) -> Tuple[str, str]:
    """(all text incl. the system prompt, last user text)."""
    chunks = [text_of(body.get("system"))]
    last = ""
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            t = text_of(m.get("content"))
            chunks.append(t)
            if m.get("role") == "user" and t:
                last = t
    return "\n".join(chunks), last


def error_body(status: int, message: str, quota: bool = False, **_: Any) -> Dict[str, Any]:
    if quota:
        status, message = 400, "Your credit balance is too low to access the Anthropic API."
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}


#: stop_reason of a reply cut at the token limit
CUT_OFF = "max_tokens"


def token_limit(body: Dict[str, Any]) -> Optional[int]:
    """The reply's token limit (`max_tokens`, which the API requires)."""
    value = body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def requested_schema(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The JSON schema of a structured-output request (`output_config.format`), or None."""
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
    schema = fmt.get("schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    return schema if isinstance(schema, dict) else None


def _usage(turn: Turn, output: int) -> Dict[str, Any]:
    d = turn.directives
    out = {"input_tokens": words(strip(texts(turn.body)[0])) + 3 * len(turn.body.get("messages") or ()),
           "cache_creation_input_tokens": int(d.get("cache_write", 0)),
           "cache_read_input_tokens": int(d.get("cache_read", 0)), "output_tokens": output}
    if "cache_write_1h" in d:  # the TTL split of cache_write (which counts both)
        hour = int(d["cache_write_1h"])
        out["cache_creation"] = {"ephemeral_5m_input_tokens": max(0, out["cache_creation_input_tokens"] - hour),
                                 "ephemeral_1h_input_tokens": hour}
    return out


def _blocks(turn: Turn) -> List[Dict[str, Any]]:
    d = turn.directives
    blocks: List[Dict[str, Any]] = []
    if "think" in d or (turn.body.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
        blocks.append({"type": "thinking", "thinking": turn.thought(), "signature": "mock-signature"})
    if "block" in d:
        return blocks
    if turn.answer or not turn.calls:
        blocks.append({"type": "text", "text": turn.answer})
    for call in turn.calls or ():
        fn = call["function"]
        blocks.append({"type": "tool_use", "id": call["id"].replace("call_", "toolu_"), "name": fn["name"],
                       "input": json.loads(fn["arguments"] or "{}")})
    return blocks


def _stop_reason(turn: Turn) -> str:
    d = turn.directives
    return d.get("finish") or ("refusal" if "block" in d else "tool_use" if turn.calls else "end_turn")


def _output_tokens(blocks: List[Dict[str, Any]]) -> int:
    return sum(words(b.get("text") or b.get("thinking") or json.dumps(b.get("input", ""))) for b in blocks)


def reply(turn: Turn) -> Dict[str, Any]:
    """The JSON of a non-streamed reply."""
    blocks = _blocks(turn)
    return {"id": f"msg_mock_{turn.seq}", "type": "message", "role": "assistant", "model": turn.body.get("model"),
            "content": blocks, "stop_reason": _stop_reason(turn), "stop_sequence": None,
            "usage": _usage(turn, _output_tokens(blocks))}


def _block_events(i: int, block: Dict[str, Any]) -> List[Dict[str, Any]]:
    kind = block["type"]
    if kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        raw = json.dumps(block["input"])
        deltas = [{"type": "input_json_delta", "partial_json": raw[k:k + 8]} for k in range(0, len(raw), 8)]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
    return ([{"type": "content_block_start", "index": i, "content_block": start}]
            + [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
            + [{"type": "content_block_stop", "index": i}])


def stream(turn: Turn) -> Iterator[bytes]:
    """The named SSE events of a streamed reply, ending with message_stop unless truncated or failed."""
    blocks = _blocks(turn)
    usage = _usage(turn, 1)
    start = {"id": f"msg_mock_{turn.seq}", "type": "message", "role": "assistant", "model": turn.body.get("model"),
             "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    events: List[Dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for i, block in enumerate(blocks):
        events += _block_events(i, block)
    failing = turn.faults and "stream_error" in turn.directives
    if turn.truncate or failing:
        events = events[: int(turn.directives.get("at", max(3, len(events) // 2)))]
        if failing:
            kind = turn.directives["stream_error"]
            events.append({"type": "error", "error": {"type": kind, "message": f"mock: {kind} in stream"}})
    else:
        final = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")}
        events += [{"type": "message_delta", "delta": {"stop_reason": _stop_reason(turn), "stop_sequence": None},
                    "usage": dict(final, output_tokens=_output_tokens(blocks))},
                   {"type": "message_stop"}]
    return sse(events, named=True)
