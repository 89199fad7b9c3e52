"""What every mock dialect shares: the decided reply for one request (`Turn`) and text helpers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional

__all__ = ["Turn", "bearer", "pieces", "sse", "text_of", "words"]


@dataclass
class Turn:
    """One request the server decided to answer successfully, handed to its dialect to shape."""

    body: Dict[str, Any]
    path: str
    seq: int
    answer: str
    #: the user's last message without directives (dialects derive thinking text from it)
    last_user: str
    directives: Dict[str, str] = field(default_factory=dict)
    truncate: bool = False
    #: tool calls to reply with (OpenAI shape, `tool=` directive), when any
    calls: Optional[List[Dict[str, Any]]] = None
    #: whether fault directives apply to this attempt (`times=N` limits them to the first N attempts)
    faults: bool = True

    def thought(self) -> str:
        return "thinking about: " + self.last_user


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the `type: text` blocks of a list (OpenAI and Claude)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> List[str]:
    """Split text into word-ish pieces whose concatenation is exactly `text`."""
    out: List[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch == " " and i > start:
            out.append(text[start:i])
            start = i
    if start < len(text):
        out.append(text[start:])
    return out


def sse(events: Iterable[Dict[str, Any]], *, named: bool = False, sep: bytes = b"\n\n") -> Iterator[bytes]:
    """SSE frames of JSON events; `named` adds the `event: <type>` line (Anthropic's framing)."""
    for e in events:
        data = b"data: " + json.dumps(e).encode() + sep
        yield (b"event: " + str(e.get("type", "message")).encode() + b"\n" + data) if named else data


def bearer(headers: Any) -> str:
    """The token of an `Authorization: Bearer …` header ("" when absent)."""
    value = headers.get("Authorization", "") or ""
    return value[7:] if value.lower().startswith("bearer ") else value
