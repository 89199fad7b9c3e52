"""Gemini batch mode of the mock: `batchGenerateContent` operations with inlined responses."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Tuple

from . import _gemini
from ._batch_core import BatchCore, _Batch, _Item

__all__ = ["GeminiBatches"]


class GeminiBatches(BatchCore):
    """Mixin of `BatchStore`: Gemini batch mode over the shared batch store."""

    def gemini_create(self, groups: Tuple[str, ...], raw: bytes) -> Tuple[int, Any]:
        _, model = groups
        try:
            batch = json.loads(raw)["batch"]
            rows = batch["inputConfig"]["requests"]["requests"]
            items = [_Item(str((r.get("metadata") or {}).get("key", n)), r["request"]) for n, r in enumerate(rows)]
        except (ValueError, KeyError, TypeError):
            return 400, _gemini.error_body(400, "batch.inputConfig.requests.requests is required")
        if len(raw) > 20_000_000:
            return 400, _gemini.error_body(400, "inlined requests exceed 20 MB; use a file")
        b = self._new("gemini", model, items, batch.get("displayName"))
        b.metadata = {"displayName": batch.get("displayName")}
        with self._lock:
            self.batches[b.id] = b
        return 200, self._gemini_op(b)

    def gemini(self, method: str, groups: Tuple[str, ...]) -> Tuple[int, Any]:
        _, batch_id, action = groups
        if batch_id is None:
            with self._lock:
                rows = sorted((b for b in self.batches.values() if b.provider == "gemini"), key=lambda b: -b.created)
            return 200, {"operations": [self._gemini_op(b) for b in rows[:100]]}
        with self._lock:
            b = self.batches.get("batches/" + batch_id)
        if b is None:
            return 404, _gemini.error_body(404, f"Batch batches/{batch_id} not found.")
        if action == "cancel" and method == "POST":
            with self._lock:
                if b.cancelled_at is None and self._phase(b) not in ("completed", "failed", "expired"):
                    b.cancelled_at = time.time()
            return 200, {}
        return 200, self._gemini_op(b)

    def _gemini_op(self, b: _Batch) -> Dict[str, Any]:
        phase = self._phase(b)
        state = {"validating": "PENDING", "in_progress": "RUNNING", "finalizing": "RUNNING", "cancelling": "RUNNING",
                 "completed": "SUCCEEDED", "failed": "FAILED", "expired": "EXPIRED",
                 "cancelled": "CANCELLED"}[phase]
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(b.created)) + f".{int(b.created % 1 * 1e6):06d}Z"
        meta: Dict[str, Any] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
                                "model": f"models/{b.model}", "displayName": b.metadata.get("displayName"),
                                "createTime": created, "updateTime": created, "name": b.id,
                                "batchStats": {"requestCount": str(len(b.items))}, "state": "BATCH_STATE_" + state}
        op: Dict[str, Any] = {"name": b.id, "metadata": meta}
        if phase in ("completed", "failed", "expired", "cancelled"):
            op["done"] = True
        if phase == "failed":
            op["error"] = {"code": 3, "message": "mock: batch failed validation"}
        if phase == "completed":
            rows = []
            for item in b.items:
                row: Dict[str, Any] = {"metadata": {"key": item.custom_id}}
                if item.error_status is not None:
                    row["error"] = {"code": item.error_status, "message": "mock: injected batch item error"}
                else:
                    row["response"] = self._reply("gemini", item, self.mock._next_seq(), b.model)
                rows.append(row)
            output = {"inlinedResponses": {"inlinedResponses": rows}}
            meta["output"] = output
            op["response"] = dict(output, **{"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                                                       "GenerateContentBatchOutput"})
        return op
