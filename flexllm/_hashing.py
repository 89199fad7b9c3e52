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


# one encoder for every call: json.dumps with these options builds a new JSONEncoder, and JSONEncoder.encode
# a new C encoder, on each call (most of the cost of hashing a short conversation)
_OPTIONS = dict(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
_ENCODE = json.JSONEncoder(**_OPTIONS).encode  # type: ignore[arg-type]


def _c_encoder() -> Any:
    """The C encoder with the canonical options, made once; None where it is unavailable or differs."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:  # markers=None: no shared circular-reference state, so one encoder serves every thread
        encoder = make(None, str, json.encoder.encode_basestring, None, ":", ",", True, False, True)
        sample = {"b": [1, 2.5, None, True, "é\u2028", float("inf")], "a": {"z": "x"}}
        return encoder if "".join(encoder(sample, 0)) == _ENCODE(sample) else None
    except Exception:  # another interpreter's signature: the plain encoder below is always right
        return None


_C_ENCODE = _c_encoder()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    if _C_ENCODE is not None and not isinstance(obj, str):
        try:
            return "".join(_C_ENCODE(obj, 0))
        except RecursionError:
            pass  # a circular structure: let the plain encoder name it
    return _ENCODE(obj)


def messages_hash(messages: List[dict]) -> str:
    """A stable SHA-256 hex digest of one conversation (inline media hashed, key order ignored)."""
    return hashlib.sha256(canonical_json(strip_inline_media(messages)).encode("utf-8", "surrogatepass")).hexdigest()
