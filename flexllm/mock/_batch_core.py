"""The mock's provider batches: their state and lifecycle on a sped-up clock (see `_batches`)."""
from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

from . import _anthropic, _gemini, _openai
from ._common import Turn
from ._directives import collect, strip
from ._routes import answer

__all__ = ["BatchCore", "WINDOW_HOURS", "dialect"]

WINDOW_HOURS = 24.0


def dialect(kind: str) -> ModuleType:
    """The chat dialect whose error bodies, keys and replies a batch endpoint uses."""
    return {"openai": _openai, "anthropic": _anthropic}.get(kind, _gemini)


@dataclass
class _Item:
    custom_id: str
    body: Dict[str, Any]
    error_status: Optional[int] = None


@dataclass
class _Batch:
    id: str
    provider: str
    model: str
    created: float
    duration: float  # real seconds until done
    window: float  # real seconds until expiry
    items: List[_Item]
    fault: Optional[str] = None
    tag: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    input_file_id: Optional[str] = None
    cancelled_at: Optional[float] = None
    outputs: Optional[Tuple[Optional[str], Optional[str]]] = None  # OpenAI output/error file ids


class BatchCore:
    """The mock's batches and files and their lifecycle. Thread-safe (one lock)."""

    def __init__(self, mock: Any, time_scale: float = 3600.0) -> None:
        self.mock = mock
        self.default_scale = self.time_scale = float(time_scale)
        self._lock = threading.Lock()
        self.files: Dict[str, Dict[str, Any]] = {}
        self.batches: Dict[str, _Batch] = {}
        self.submissions: Counter = Counter()

    def clear(self) -> None:
        """Forget every batch and file; back to the server's own time scale."""
        with self._lock:
            self.time_scale = self.default_scale
            self.files.clear()
            self.batches.clear()
            self.submissions.clear()

    def snapshot(self) -> List[Dict[str, Any]]:
        """Every batch: id, provider, tag, custom_ids, fault and current status (for tests' assertions)."""
        with self._lock:
            batches = list(self.batches.values())
        return [{"id": b.id, "provider": b.provider, "model": b.model, "tag": b.tag, "fault": b.fault,
                 "custom_ids": [i.custom_id for i in b.items], "status": self._phase(b)} for b in batches]

    # -- lifecycle ------------------------------------------------------------------------------------
    def _new(self, provider: str, model: str, items: List[_Item], tag: Optional[str]) -> _Batch:
        fault, hours, scale = None, 1.0, self.time_scale
        rules = self.mock._rules_snapshot()
        for item in items:
            all_text, last = dialect(provider).texts(item.body)
            d = collect(rules, all_text, "/batch")
            key = hashlib.sha256(json.dumps(item.body, sort_keys=True).encode()).hexdigest()
            with self._lock:
                self.submissions[key] += 1
                attempt = self.submissions[key]
            active = "times" not in d or attempt <= int(d["times"])
            if active and d.get("batch_fault"):
                fault = d["batch_fault"]
            if active and d.get("batch_error"):
                item.error_status = int(d["batch_error"])
            hours = float(d.get("batch_hours", hours))
            scale = float(d.get("batch_time_scale", scale))
        prefix = {"openai": "batch_", "gemini": "batches/", "anthropic": "msgbatch_"}[provider]
        return _Batch(prefix + uuid.uuid4().hex[:24], provider, model, time.time(), hours * 3600 / scale,
                      WINDOW_HOURS * 3600 / scale, items, fault, tag)

    def _phase(self, b: _Batch) -> str:
        """Normalised phase: validating, in_progress, finalizing, completed, failed, expired, cancelled."""
        now = time.time()
        elapsed = now - b.created
        if b.cancelled_at is not None:
            return "cancelled" if now - b.cancelled_at >= min(0.05, b.duration) else "cancelling"
        if b.fault == "invalid":
            return "validating" if elapsed < 0.05 * b.duration else "failed"
        if b.fault == "expire":
            return "expired" if elapsed >= b.window else ("validating" if elapsed < 0.05 * b.window
                                                           else "in_progress")
        if elapsed >= b.duration:
            return "completed"
        if elapsed < 0.1 * b.duration:
            return "validating"
        return "in_progress" if elapsed < 0.9 * b.duration else "finalizing"

    def _answered(self, b: _Batch, phase: str) -> List[_Item]:
        if phase == "completed":
            return b.items
        if phase == "expired":
            return b.items[: len(b.items) // 2]
        return []

    def _reply(self, provider: str, item: _Item, seq: int, model: str) -> Dict[str, Any]:
        """The same reply the live endpoint gives for this body (directives, echo, schema-shaped JSON)."""
        chat = dialect(provider)
        all_text, last = chat.texts(item.body)
        d = collect(self.mock._rules_snapshot(), all_text, "/batch")
        last = strip(last).strip()
        path = {"gemini": f"/v1beta/models/{model}:generateContent", "anthropic": "/v1/messages"}.get(
            provider, "/v1/chat/completions")
        return chat.reply(Turn(item.body, path, seq, answer(d, chat, item.body, last, None), last, d))

    def _page(self, provider: str, query: str, after_key: str) -> Tuple[List[_Batch], bool]:
        """One page of a provider's batches, newest first (`limit`, and a cursor named `after_key`)."""
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        limit = int(params.get("limit", 20))
        with self._lock:
            rows = sorted((b for b in self.batches.values() if b.provider == provider), key=lambda b: -b.created)
        after = params.get(after_key)
        if after:
            ids = [b.id for b in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        return rows[:limit], len(rows) > limit
