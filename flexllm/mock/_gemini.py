"""The Gemini dialect of the mock server (Developer API and Vertex paths)."""
from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ._common import Turn, bearer, pieces, sse, words
from ._directives import extract, strip

__all__ = ["api_key", "error_body", "is_stream", "matches", "reply", "route", "stream", "texts"]

PATH = re.compile(r"^/(?:v1beta|v1)/(?:projects/[^/]+/locations/[^/]+/publishers/google/)?models/"
                  r"([^/:]+):(generateContent|streamGenerateContent)")
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def route(path: str) -> Optional[Tuple[str, bool]]:
    """(model, streaming) for a Gemini path, else None."""
    m = PATH.match(path.split("?", 1)[0])
    if not m:
        return None
    return m.group(1), m.group(2) == "streamGenerateContent"


def matches(path: str) -> bool:
    """Whether `path` is this dialect's endpoint."""
    return route(path) is not None


def is_stream(path: str, body: Dict[str, Any]) -> bool:
    r = route(path)
    return bool(r and r[1])


def api_key(headers: Any) -> str:
    """The key the client sent (x-goog-api-key, or a Vertex bearer token)."""
    return headers.get("x-goog-api-key") or bearer(headers)


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return " ".join(p.get("text", "") for p in parts if isinstance(p, dict) and "text" in p)


def texts(body: Dict[str, Any]) -> Tuple[str, str]:
    contents = body.get("contents") or []
    chunks = [_parts_text((body.get("systemInstruction") or {}).get("parts"))]
    last = ""
    for c in contents:
        if isinstance(c, dict):
            t = _parts_text(c.get("parts"))
            chunks.append(t)
            if c.get("role", "user") == "user":
                last = t
    return "\n".join(chunks), last


def error_body(status: int, message: str, quota: bool = False, retry_delay: Optional[str] = None,
               **_: Any) -> Dict[str, Any]:
    details: List[Dict[str, Any]] = []
    if quota:
        message = "Quota exceeded for metric: generate_content_free_tier_requests, limit: 250 per day"
        details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
             "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]})
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_delay}s"})
    err: Dict[str, Any] = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        err["details"] = details
    return {"error": err}


def _usage(body: Dict[str, Any], answer: str, reasoning: Optional[str], n: int = 1) -> Dict[str, int]:
    all_text, _ = texts(body)
    prompt = words(strip(all_text))
    cached = int(extract(all_text).get("cache_read", 0)) if "[[mock:" in all_text else 0
    prompt += cached  # Gemini counts cached content inside promptTokenCount
    cand = words(answer) * n
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": cand}
    if cached:
        usage["cachedContentTokenCount"] = cached
    thoughts = words(reasoning or "") * n
    if reasoning is not None:
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = prompt + cand + thoughts
    return usage


def wants_thoughts(body: Dict[str, Any]) -> bool:
    cfg = ((body.get("generationConfig") or {}).get("thinkingConfig") or {})
    return bool(cfg.get("includeThoughts"))


def _reasoning(turn: Turn) -> Optional[str]:
    return turn.thought() if ("think" in turn.directives or wants_thoughts(turn.body)) else None


def reply(turn: Turn) -> Dict[str, Any]:
    """The JSON of a non-streamed reply (`block` directive: a prompt blocked by safety filters)."""
    model = (route(turn.path) or ("", False))[0]
    return _reply(turn.body, turn.seq, model, turn.answer, _reasoning(turn), turn.directives.get("finish", "STOP"),
                  turn.directives.get("block"), turn.calls)


#: finishReason of a reply cut at the token limit
CUT_OFF = "MAX_TOKENS"


def token_limit(body: Dict[str, Any]) -> Optional[int]:
    """generationConfig.maxOutputTokens, or None."""
    value = (body.get("generationConfig") or {}).get("maxOutputTokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def requested_schema(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The JSON schema in generationConfig (`responseJsonSchema` or `responseSchema`), or None."""
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    return schema if isinstance(schema, dict) else None


def stream(turn: Turn) -> Iterator[bytes]:
    """The SSE frames of a streamed reply (no end marker: the last chunk carries finishReason)."""
    model = (route(turn.path) or ("", False))[0]
    if turn.directives.get("block"):  # a blocked prompt streams one chunk: the same promptFeedback, no candidates
        yield from sse([_reply(turn.body, turn.seq, model, "", None, "STOP", turn.directives["block"])],
                       sep=b"\r\n\r\n")
        return
    yield from sse(stream_events(turn.body, turn.seq, model, turn.answer, _reasoning(turn),
                                 turn.directives.get("finish", "STOP"), turn.truncate, turn.calls), sep=b"\r\n\r\n")


def _reply(body: Dict[str, Any], seq: int, model: str, answer: str, reasoning: Optional[str], finish: str,
           block: Optional[str], calls: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    if block:
        return {"promptFeedback": {"blockReason": block}, "usageMetadata": _usage(body, "", None),
                "modelVersion": model, "responseId": f"mock-{seq}"}
    n = max(1, int((body.get("generationConfig") or {}).get("candidateCount") or 1))
    parts: List[Dict[str, Any]] = []
    if reasoning is not None:
        parts.append({"text": reasoning, "thought": True})
    if finish == "STOP" or answer:
        parts.append({"text": answer})
    if calls:
        parts = [p for p in parts if p.get("thought") or p.get("text")]
        parts += [{"functionCall": {"name": c["function"]["name"], "args": json.loads(c["function"]["arguments"])}}
                  for c in calls]
    if finish not in ("STOP", "MAX_TOKENS"):
        parts = []
    candidates = [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": i}
                  for i in range(n)]
    return {"candidates": candidates, "usageMetadata": _usage(body, answer, reasoning, n), "modelVersion": model,
            "responseId": f"mock-{seq}"}


def stream_events(body: Dict[str, Any], seq: int, model: str, answer: str, reasoning: Optional[str], finish: str,
                  truncate: bool, calls: Optional[List[Dict[str, Any]]] = None) -> Iterator[Dict[str, Any]]:
    chunks: List[Dict[str, Any]] = []
    if reasoning is not None:
        chunks += [{"text": p, "thought": True} for p in pieces(reasoning)]
    chunks += [{"text": p} for p in pieces(answer)]
    chunks += [{"functionCall": {"name": c["function"]["name"], "args": json.loads(c["function"]["arguments"])}}
               for c in calls or ()]
    if finish not in ("STOP", "MAX_TOKENS"):  # a blocked reply (SAFETY, …) streams no parts, like the non-stream one
        chunks = []
    if truncate:
        chunks = chunks[: max(1, len(chunks) // 2)]
    base = {"modelVersion": model, "responseId": f"mock-{seq}"}
    last = len(chunks) - 1
    for i, part in enumerate(chunks):
        cand: Dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
        event = dict(base, candidates=[cand])
        if i == last and not truncate:
            cand["finishReason"] = finish
            event["usageMetadata"] = _usage(body, answer, reasoning)
        yield event
    if not chunks and not truncate:
        yield dict(base, candidates=[{"content": {"role": "model", "parts": []}, "finishReason": finish,
                                      "index": 0}], usageMetadata=_usage(body, answer, reasoning))
