"""Fault directives: `[[mock:key=value;key=value]]` inside message text, or server-level rules."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["MARK", "Rule", "extract", "strip"]

MARK = "[[mock:"
_DIRECTIVE = re.compile(r"\[\[mock:([^\]]*)\]\]")


def _parse(spec: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for part in spec.split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def extract(text: str) -> Dict[str, str]:
    """Every directive in `text`, later ones overriding earlier ones."""
    out: Dict[str, str] = {}
    if MARK in text:
        for m in _DIRECTIVE.finditer(text):
            out.update(_parse(m.group(1)))
    return out


def strip(text: str) -> str:
    """`text` without its directives."""
    return _DIRECTIVE.sub("", text) if MARK in text else text


@dataclass
class Rule:
    """A server-level directive set applied to requests whose text/path contain the given strings."""

    directives: Dict[str, str]
    contains: Optional[str] = None
    path_contains: Optional[str] = None

    def matches(self, text: str, path: str) -> bool:
        return (self.contains is None or self.contains in text) and \
               (self.path_contains is None or self.path_contains in path)


@dataclass
class Plan:
    """What the server does with one request, decided from rules + directives + server settings."""

    directives: Dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.directives.get(key, default)

    def fault_applies(self, attempt: int) -> bool:
        times = self.directives.get("times")
        return times is None or attempt <= int(times)


def collect(rules: List[Rule], text: str, path: str) -> Dict[str, str]:
    """Rule values first (in order), then the message's own directives on top."""
    out: Dict[str, str] = {}
    for rule in rules:
        if rule.matches(text, path):
            out.update(rule.directives)
    out.update(extract(text))
    return out
