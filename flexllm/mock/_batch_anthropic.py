"""Anthropic Message Batches of the mock: `/v1/messages/batches`, results as JSON Lines."""
from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, Tuple

from . import _anthropic
from ._batch_core import BatchCore, _Batch, _Item

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

__all__ = ["AnthropicBatches"]


class AnthropicBatches(BatchCore):
    """Mixin of `BatchStore`: Anthropic Message Batches over the shared batch store."""

    def anthropic(self, method: str, groups: Tuple[str, ...], headers: Any, raw: bytes,
                  query: str) -> Tuple[int, Any]:
        batch_id, action = groups
        if batch_id is None:
            if method == "POST":
                return self._anthropic_create(headers, raw)
            return 200, self._anthropic_list(query)
        with self._lock:
            b = self.batches.get(batch_id)
        if b is None or b.provider != "anthropic":
            return 404, _anthropic.error_body(404, f"Batch {batch_id} not found")
        phase = self._phase(b)
        if action == "cancel" and method == "POST":
            with self._lock:
                if b.cancelled_at is None and phase not in ("completed", "expired"):
                    b.cancelled_at = time.time()
            return 200, self._anthropic_object(b)
        if action == "results":
            if phase not in ("completed", "expired", "cancelled"):
                return 400, _anthropic.error_body(400, f"Batch {batch_id} is still processing; results are "
                                                       "available once processing_status is ended")
            return 200, self._anthropic_results(b, phase)
        return 200, self._anthropic_object(b)

    def _anthropic_create(self, headers: Any, raw: bytes) -> Tuple[int, Any]:
        try:
            rows = json.loads(raw)["requests"]
            items = [_Item(str(r["custom_id"]), r["params"]) for r in rows]
        except (ValueError, KeyError, TypeError):
            return 400, _anthropic.error_body(400, "requests: Field required (a list of {custom_id, params})")
        if not items or len(items) > 100_000 or len(raw) > 256_000_000:
            return 400, _anthropic.error_body(400, "requests: between 1 and 100,000 requests, at most 256 MB")
        seen: set = set()
        for n, item in enumerate(items):
            problem = None if _CUSTOM_ID.match(item.custom_id) else "custom_id: must match ^[a-zA-Z0-9_-]{1,64}$"
            problem = problem or ("custom_id: duplicate" if item.custom_id in seen else None)
            problem = problem or _anthropic.validate(headers, item.body)
            if problem:
                return 400, _anthropic.error_body(400, f"requests.{n}.{problem}")
            seen.add(item.custom_id)
        b = self._new("anthropic", str(items[0].body.get("model")), items, None)
        if b.fault == "invalid":  # the real API validates synchronously: nothing is created
            return 400, _anthropic.error_body(400, "mock: batch failed validation")
        with self._lock:
            self.batches[b.id] = b
        return 200, self._anthropic_object(b)

    def _anthropic_object(self, b: _Batch) -> Dict[str, Any]:
        phase = self._phase(b)
        ended = phase in ("completed", "expired", "cancelled")
        rfc = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"  # noqa: E731
        counts = {"processing": len(b.items), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            answered = self._answered(b, phase)
            counts["processing"] = 0
            counts["errored"] = sum(1 for i in answered if i.error_status is not None)
            counts["succeeded"] = len(answered) - counts["errored"]
            counts["expired" if phase == "expired" else "canceled"] = len(b.items) - len(answered)
        return {"id": b.id, "type": "message_batch",
                "processing_status": "ended" if ended else ("canceling" if phase == "cancelling" else "in_progress"),
                "request_counts": counts, "ended_at": rfc(time.time()) if ended else None,
                "created_at": rfc(b.created), "expires_at": rfc(b.created + b.window), "archived_at": None,
                "cancel_initiated_at": rfc(b.cancelled_at) if b.cancelled_at else None,
                "results_url": f"http://{self.mock.host}:{self.mock.port}/v1/messages/batches/{b.id}/results"
                if ended else None}

    def _anthropic_results(self, b: _Batch, phase: str) -> bytes:
        done = {id(i) for i in self._answered(b, phase)}
        lines = []
        for item in b.items:
            if id(item) not in done:
                result: Dict[str, Any] = {"type": "expired" if phase == "expired" else "canceled"}
            elif item.error_status is not None:
                result = {"type": "errored", "error": _anthropic.error_body(item.error_status,
                                                                            "mock: injected batch item error")}
            else:
                result = {"type": "succeeded", "message": self._reply("anthropic", item, self.mock._next_seq(),
                                                                      b.model)}
            lines.append(json.dumps({"custom_id": item.custom_id, "result": result}).encode())
        return b"\n".join(lines) + b"\n"

    def _anthropic_list(self, query: str) -> Dict[str, Any]:
        page, more = self._page("anthropic", query, "after_id")
        data = [self._anthropic_object(b) for b in page]
        return {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
