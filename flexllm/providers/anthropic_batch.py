"""Anthropic Message Batches (`/v1/messages/batches`).

Create body: `{"requests": [{"custom_id", "params": <Messages API body>}]}`; the batch object has
`processing_status` (in_progress, canceling, ended), `request_counts` (processing, succeeded, errored,
canceled, expired), `expires_at` and, once ended, `results_url`: JSON Lines of
`{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error"} | {"type": "canceled"}
| {"type": "expired"}}`. Caps: 100,000 requests or 256 MB per batch.

A message batch carries no metadata, so a submission interrupted around `create` is matched by time and
size among the batches the ledger does not know, and confirmed by its custom_ids once it has ended.
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit
from typing import Any, Collection, Dict, Iterator, List, Optional

from ..errors import LLMError
from .base import RequestSpec
from .batch_base import COMPLETED, RUNNING, BatchAPI, BatchState, ItemResult, read_lines, rfc3339

__all__ = ["BATCH_API", "AnthropicBatchAPI"]

#: result types meaning "never ran": the item is submitted again, nothing is recorded
RETURNED = frozenset({"canceled", "expired"})
_MATCH_WINDOW = 600.0  # seconds of clock skew allowed between our intent line and the provider's created_at


class AmbiguousBatchError(LLMError):
    """Several unknown batches could be the interrupted submission; decided once they have ended."""


class AnthropicBatchAPI(BatchAPI):
    """The Message Batches API at the adapter's base_url."""

    name = "anthropic"
    MAX_REQUESTS = 100_000
    MAX_BYTES = 256_000_000

    def __init__(self, adapter: Any, call: Any) -> None:
        super().__init__(adapter, call)
        self.root = self.chat_url() + "/batches"  # …/v1/messages/batches

    def line(self, custom_id: str, spec: RequestSpec) -> Dict[str, Any]:
        return {"custom_id": custom_id, "params": spec.json}

    def create(self, model: str, tag: str, file_id: Optional[str], path: str) -> BatchState:
        content = b'{"requests":[' + b",".join(read_lines(path)) + b"]}"
        return self._state(self.call("POST", self.root, content=content, retry=False))

    def status(self, batch_id: str) -> BatchState:
        return self._state(self.call("GET", f"{self.root}/{batch_id}"))

    def _state(self, data: Dict[str, Any]) -> BatchState:
        status = str(data.get("processing_status"))
        return BatchState(COMPLETED if status == "ended" else RUNNING, status, str(data.get("id")),
                          data.get("request_counts") or {}, rfc3339(data.get("expires_at")), None, data)

    def results(self, batch_id: str, state: BatchState, custom_ids: List[str]) -> Iterator[ItemResult]:
        url = f"{self.root}/{batch_id}/results"
        given = state.raw.get("results_url")
        if given and urlsplit(given).netloc == urlsplit(self.root).netloc:
            url = given  # our key goes only to the host we talk to, never to a URL a reply names elsewhere
        for line in self.call("GET", url, raw=True).splitlines():
            if line.strip():
                yield self._item(json.loads(line))

    def _item(self, row: Dict[str, Any]) -> ItemResult:
        custom_id = str(row.get("custom_id"))
        result = row.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            return ItemResult(custom_id, body=result["message"])
        if kind in RETURNED:
            return ItemResult(custom_id, returned=True)
        from .anthropic import ERROR_STATUS

        error = result.get("error") or {}
        inner = error.get("error") if isinstance(error.get("error"), dict) else error
        err = self.adapter.map_error(ERROR_STATUS.get(inner.get("type"), 500), error, {}, model="")
        return ItemResult(custom_id, error=f"{type(err).__name__}: {err.message}")

    def find(self, tag: str, since: float, *, size: int = 0, known: Collection[str] = (),
             expected_ids: Collection[str] = ()) -> Optional[BatchState]:
        candidates: List[BatchState] = []
        after = None
        for _ in range(50):
            page = self.call("GET", f"{self.root}?limit=100" + (f"&after_id={after}" if after else ""))
            rows = page.get("data") or []
            for row in rows:
                created = rfc3339(row.get("created_at")) or 0.0
                total = sum(int(v or 0) for v in (row.get("request_counts") or {}).values())
                if created >= since - _MATCH_WINDOW and row.get("id") not in known and total == size:
                    candidates.append(self._state(row))
            oldest = min((rfc3339(r.get("created_at")) or 0.0 for r in rows), default=0.0)
            if not page.get("has_more") or not rows or oldest < since - _MATCH_WINDOW:
                break
            after = page.get("last_id") or rows[-1].get("id")
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        expected = set(expected_ids)
        undecided = False
        for state in candidates:
            if state.status != "ended":
                undecided = True
                continue
            first = next(self.results(state.batch_id, state, []), None)
            if first is not None and first.custom_id in expected:
                return state
        if undecided:
            raise AmbiguousBatchError(f"{len(candidates)} unknown batches of {size} requests were created around "
                                      f"the interrupted submission {tag}; it is matched once they have ended",
                                      provider=self.name, model="")
        return None

    def cancel(self, batch_id: str) -> None:
        self.call("POST", f"{self.root}/{batch_id}/cancel", json={})


BATCH_API = AnthropicBatchAPI
