"""Which dialect answers a POST path, and what the answer's text is: shared by the live endpoints and the
mock's provider batches, so a batched item gets the reply the live endpoint would give."""
from __future__ import annotations

import importlib
import json
from types import ModuleType
from typing import Any, Dict, Optional, Tuple

from . import _schema

__all__ = ["DIALECTS", "answer", "dialect_for"]


def answer(d: Dict[str, str], dialect: ModuleType, body: Dict[str, Any], last: str, calls: Any) -> str:
    """The reply text: `reply=`, else none beside tool calls, else JSON fitting a requested schema, else an echo."""
    if "reply" in d:
        return d["reply"]
    if calls:
        return ""
    requested = getattr(dialect, "requested_schema", None)
    schema = requested(body) if requested is not None else None
    if schema is not None:
        return json.dumps(_schema.example(schema, last))
    return "echo: " + last


def _dialects() -> Tuple[ModuleType, ...]:
    """The dialect module of every registered provider that has one (`flexllm.mock._<name>`)."""
    from .. import providers

    found = []
    for name in providers.names():
        try:
            found.append(importlib.import_module(f"{__package__}._{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}._{name}":
                raise
    return tuple(found)


#: the dispatch table: each dialect module says which paths it answers (`matches(path)`)
DIALECTS = _dialects()


def dialect_for(path: str) -> Optional[ModuleType]:
    """The dialect module that answers POST `path`, or None (404)."""
    for dialect in DIALECTS:
        if dialect.matches(path):
            return dialect
    return None
