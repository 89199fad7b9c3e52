"""Gemini batch mode (Developer API): `models/{model}:batchGenerateContent` with inlined requests.

Create body: `{"batch": {"displayName", "inputConfig": {"requests": {"requests": [{"request": <generateContent
body>, "metadata": {"key": custom_id}}]}}}}`; the reply is a long-running operation `{"name": "batches/…",
"metadata": {<GenerateContentBatch: state, batchStats, output…>}, "done", "response"}`; responses come back
inlined, in input order: `{"response": <GenerateContentResponse>}` or `{"error": <Status>}`. States are
BATCH_STATE_* in REST (JOB_STATE_* in the SDKs): PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED.
Inlined requests are capped at 20 MB per batch, so big jobs are split into several batches.
"""
from __future__ import annotations

import json
import re
from urllib.parse import quote
from typing import Any, Dict, Iterator, List, Optional

from .base import RequestSpec
from .batch_base import (CANCELLED, COMPLETED, EXPIRED, FAILED, RUNNING, BatchAPI, BatchState, ItemResult,
                         read_lines, rfc3339)

__all__ = ["BATCH_API", "GeminiBatchAPI"]

_STATES = {"PENDING": RUNNING, "RUNNING": RUNNING, "SUCCEEDED": COMPLETED, "FAILED": FAILED,
           "CANCELLED": CANCELLED, "EXPIRED": EXPIRED, "UNSPECIFIED": RUNNING, "QUEUED": RUNNING}
#: a Gemini batch that has not finished 48 hours after creation expires
EXPIRES_AFTER = 48 * 3600
_PREFIX = re.compile(r"^(BATCH_STATE_|JOB_STATE_)")


def _state_of(name: str) -> str:
    return _STATES.get(_PREFIX.sub("", name or ""), RUNNING)


class GeminiBatchAPI(BatchAPI):
    """Batch mode of the Gemini Developer API (Vertex AI batch prediction is a different service)."""

    name = "gemini"
    MAX_REQUESTS = 50_000
    MAX_BYTES = 20_000_000

    def __init__(self, adapter: Any, call: Any) -> None:
        super().__init__(adapter, call)
        if getattr(adapter, "use_vertex_ai", False):
            raise ValueError("provider batch mode for Gemini needs the Developer API (api_key); Vertex AI batch "
                             "prediction jobs are not supported")
        self.version_root = self.chat_url().split("/models/", 1)[0]  # …/v1beta

    def line(self, custom_id: str, spec: RequestSpec) -> Dict[str, Any]:
        return {"request": spec.json, "metadata": {"key": custom_id}}

    def create(self, model: str, tag: str, file_id: Optional[str], path: str) -> BatchState:
        model_id = model[len("models/"):] if model.startswith("models/") else model
        head = json.dumps({"displayName": tag, "model": f"models/{model_id}"})[:-1].encode()
        content = b'{"batch":' + head + b',"inputConfig":{"requests":{"requests":[' + \
            b",".join(read_lines(path)) + b"]}}}}"
        url = f"{self.version_root}/models/{quote(model_id, safe='-._~@')}:batchGenerateContent"
        return self._state(self.call("POST", url, content=content, retry=False))

    def status(self, batch_id: str) -> BatchState:
        return self._state(self.call("GET", f"{self.version_root}/{batch_id}"))

    def _state(self, op: Dict[str, Any]) -> BatchState:
        meta = op.get("metadata") or {}
        status = str(meta.get("state") or ("BATCH_STATE_SUCCEEDED" if op.get("done") else "BATCH_STATE_PENDING"))
        error = op.get("error")
        message = f"{error.get('code')}: {error.get('message')}" if isinstance(error, dict) else None
        state = _state_of(status)
        if error and state == RUNNING and op.get("done"):
            state = FAILED
        name = str(op.get("name") or meta.get("name") or "")
        created = rfc3339(meta.get("createTime"))
        expires = created + EXPIRES_AFTER if created is not None else None
        return BatchState(state, status, name, meta.get("batchStats") or {}, expires, message, op)

    def results(self, batch_id: str, state: BatchState, custom_ids: List[str]) -> Iterator[ItemResult]:
        op = state.raw
        output = (op.get("response") or {}) or ((op.get("metadata") or {}).get("output") or {})
        inlined = output.get("inlinedResponses") or {}
        rows = inlined.get("inlinedResponses") if isinstance(inlined, dict) else inlined
        for position, row in enumerate(rows or ()):
            key = (row.get("metadata") or {}).get("key")
            if key is None and position < len(custom_ids):
                key = custom_ids[position]  # responses come in input order
            if key is None:
                continue
            if isinstance(row.get("response"), dict):
                yield ItemResult(str(key), body=row["response"])
            else:
                err = row.get("error") or {}
                yield ItemResult(str(key), error=f"BatchItemError: {err.get('code')}: {err.get('message')}")

    def find(self, tag: str, since: float, **_: Any) -> Optional[BatchState]:
        token = None
        for _ in range(50):
            url = f"{self.version_root}/batches?pageSize=100" + (f"&pageToken={token}" if token else "")
            page = self.call("GET", url)
            ops = page.get("operations") or page.get("batches") or []
            for op in ops:
                meta = op.get("metadata") or op
                if meta.get("displayName") == tag:
                    return self._state(op)
            token = page.get("nextPageToken")
            if not token or not ops:
                return None
        return None

    def cancel(self, batch_id: str) -> None:
        self.call("POST", f"{self.version_root}/{batch_id}:cancel", json={})


BATCH_API = GeminiBatchAPI
