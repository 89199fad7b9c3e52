"""OpenAI's Batch API (`/v1/files` + `/v1/batches`), also served by OpenAI-compatible servers.

Input file line: `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": <chat body>}`.
Output file line: `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}`;
the error file has the same shape with a non-2xx `response`, or `"response": null` and an `error`
(`batch_expired`, `batch_cancelled`, …). Statuses: validating, failed, in_progress, finalizing,
completed, expired, cancelling, cancelled.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional

from .base import RequestSpec
from .batch_base import CANCELLED, COMPLETED, EXPIRED, FAILED, RUNNING, BatchAPI, BatchState, ItemResult

__all__ = ["BATCH_API", "OpenAIBatchAPI"]

STATES = {"validating": RUNNING, "in_progress": RUNNING, "finalizing": RUNNING, "cancelling": RUNNING,
          "completed": COMPLETED, "expired": EXPIRED, "failed": FAILED, "cancelled": CANCELLED}
#: per-item error codes meaning "never ran": the item is submitted again, nothing is recorded
RETURNED_CODES = frozenset({"batch_expired", "batch_cancelled", "batch_failed"})
TAG_KEY = "flexllm_tag"
ENDPOINT = "/v1/chat/completions"


class OpenAIBatchAPI(BatchAPI):
    """The Batch API of an OpenAI-compatible server at the adapter's base_url."""

    name = "openai"
    MAX_REQUESTS = 50_000
    MAX_BYTES = 200_000_000
    uploads_file = True

    def __init__(self, adapter: Any, call: Any) -> None:
        super().__init__(adapter, call)
        base = adapter.base_url
        if base.endswith("/chat/completions"):
            base = base[: -len("/chat/completions")]
        self.base = base

    def line(self, custom_id: str, spec: RequestSpec) -> Dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": spec.json}

    def upload(self, path: str, tag: str) -> Optional[str]:
        with open(path, "rb") as f:
            data = self.call("POST", f"{self.base}/files", files={"file": (f"{tag}.jsonl", f, "application/jsonl")},
                             data={"purpose": "batch"})
        return str(data["id"])

    def create(self, model: str, tag: str, file_id: Optional[str], path: str) -> BatchState:
        body = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h",
                "metadata": {TAG_KEY: tag, "model": model}}
        return self._state(self.call("POST", f"{self.base}/batches", json=body, retry=False))

    def status(self, batch_id: str) -> BatchState:
        return self._state(self.call("GET", f"{self.base}/batches/{batch_id}"))

    def _state(self, data: Dict[str, Any]) -> BatchState:
        status = str(data.get("status"))
        errors = (data.get("errors") or {}).get("data") or []
        error = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)) or None
        return BatchState(STATES.get(status, RUNNING), status, str(data.get("id")), data.get("request_counts") or {},
                          data.get("expires_at"), error, data)

    def results(self, batch_id: str, state: BatchState, custom_ids: List[str]) -> Iterator[ItemResult]:
        for key in ("output_file_id", "error_file_id"):
            file_id = state.raw.get(key)
            if not file_id:
                continue
            raw = self.call("GET", f"{self.base}/files/{file_id}/content", raw=True)
            for line in raw.splitlines():
                if line.strip():
                    yield self._item(json.loads(line))

    def _item(self, row: Dict[str, Any]) -> ItemResult:
        custom_id = str(row.get("custom_id"))
        response = row.get("response") or None
        if response is not None:
            status, body = int(response.get("status_code") or 0), response.get("body")
            if 200 <= status < 300 and isinstance(body, dict):
                return ItemResult(custom_id, body=body)
            err = self.adapter.map_error(status, body, {}, model=str((body or {}).get("model", "")) if
                                         isinstance(body, dict) else "")
            return ItemResult(custom_id, error=f"{type(err).__name__}: {err.message}")
        error = row.get("error") or {}
        code = error.get("code") if isinstance(error, dict) else None
        if code in RETURNED_CODES:
            return ItemResult(custom_id, returned=True)
        message = error.get("message") if isinstance(error, dict) else error
        return ItemResult(custom_id, error=f"BatchItemError: {code}: {message}")

    def find(self, tag: str, since: float, **_: Any) -> Optional[BatchState]:
        after = None
        for _ in range(50):  # at most 5,000 recent batches
            url = f"{self.base}/batches?limit=100" + (f"&after={after}" if after else "")
            page = self.call("GET", url)
            rows = page.get("data") or []
            for row in rows:
                if (row.get("metadata") or {}).get(TAG_KEY) == tag:
                    return self._state(row)
            older = [r for r in rows if (r.get("created_at") or 0) < since - 3600]
            if not page.get("has_more") or not rows or older:
                return None
            after = rows[-1].get("id")
        return None

    def cancel(self, batch_id: str) -> None:
        self.call("POST", f"{self.base}/batches/{batch_id}/cancel", json={})


BATCH_API = OpenAIBatchAPI
