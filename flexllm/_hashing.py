"""Canonical JSON and stable hashes of conversations (the building blocks of cache keys)."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, List

__all__ = ["canonical_json", "messages_hash", "strip_inline_media"]

# data:<mime>;base64,<payload> — payloads are replaced by their hash so keys stay small
_DATA_URL = re.compile(r"^data:([^;,]*);base64,", re.IGNORECASE)


def _media_digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def strip_inline_media(obj: Any) -> Any:
    """A copy of `obj` with every inline base64 payload (data URLs, Gemini inlineData) replaced by its hash."""
    if isinstance(obj, str):
        m = _DATA_URL.match(obj)
        if m and len(obj) > 256:
            return f"data:{m.group(1)};{_media_digest(obj)}"
        return obj
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "data" and isinstance(v, str) and len(v) > 256 and "mimeType" in obj:
                out[k] = _media_digest(v)
            else:
                out[k] = strip_inline_media(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [strip_inline_media(v) for v in obj]
    return obj


# one encoder for every call: json.dumps with these options would build a new JSONEncoder each time
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return _CANONICAL(obj)


def messages_hash(messages: List[dict]) -> str:
    """A stable SHA-256 hex digest of one conversation (inline media hashed, key order ignored)."""
    return hashlib.sha256(canonical_json(strip_inline_media(messages)).encode("utf-8", "surrogatepass")).hexdigest()
