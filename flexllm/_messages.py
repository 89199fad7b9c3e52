"""Validation of one conversation, shared by single calls and batch items (below both _api and batch)."""
from __future__ import annotations

import re
from typing import Any, List

__all__ = ["check_messages", "find_lone_surrogate"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_messages(messages: Any) -> List[dict]:
    """`messages` if it is a non-empty list of message dicts, else a ValueError saying what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list of dicts like {{'role': 'user', 'content': '...'}}, "
                         f"got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError(f"messages[{i}] must be a dict with a 'role', got {type(m).__name__}")
    return messages


def find_lone_surrogate(obj: Any) -> str:
    """A description of the first lone surrogate in `obj`'s strings ('' when there is none).

    Such a string is not valid Unicode (often a JSON `\\ud83d` escape cut in half) and cannot be sent.
    """
    if isinstance(obj, str):
        m = _SURROGATE.search(obj)
        if not m:
            return ""
        code = ord(m.group())
        if 0xDC80 <= code <= 0xDCFF:  # how Python reads a byte that is not UTF-8 (errors="surrogateescape")
            return (f"a lone surrogate \\u{code:04x} at position {m.start()} (the byte 0x{code - 0xDC00:02x}, not "
                    "UTF-8: save the input as UTF-8)")
        return f"a lone surrogate \\u{code:04x} at position {m.start()}"
    if isinstance(obj, dict):
        obj = list(obj.keys()) + list(obj.values())
    if isinstance(obj, (list, tuple)):
        for value in obj:
            found = find_lone_surrogate(value)
            if found:
                return found
    return ""
