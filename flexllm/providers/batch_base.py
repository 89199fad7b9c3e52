"""The contract of a provider's batch API (OpenAI Batch, Anthropic Message Batches, Gemini batch mode).

Each provider with a batch API has a module `flexllm/providers/<name>_batch.py` whose `BATCH_API` is a
`BatchAPI` subclass (looked up by the provider's registered name). A `BatchAPI` turns our requests into the provider's batch payload and the provider's batch objects and
result files back into normalised values. It does its I/O only through the `call` it is given (the
shared transport with retries and error mapping), and the per-request bodies come from the provider's
own chat adapter (`build_request` / `parse_response`): there is one mapping per provider, not two.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Collection, Dict, Iterator, List, Optional

from .base import ProviderAdapter, RequestSpec

__all__ = ["BatchAPI", "BatchState", "ItemResult", "Call", "RUNNING", "COMPLETED", "EXPIRED", "FAILED",
           "CANCELLED", "PROBE", "TERMINAL", "read_lines", "rfc3339"]

#: normalised states (each provider maps its own names onto these)
RUNNING, COMPLETED, EXPIRED, FAILED, CANCELLED = "running", "completed", "expired", "failed", "cancelled"
TERMINAL = frozenset({COMPLETED, EXPIRED, FAILED, CANCELLED})

#: a minimal conversation, to ask an adapter for its URL and headers
PROBE = [{"role": "user", "content": "x"}]
#: call(method, url, *, retry=True, content=None, files=None, data=None, extra_headers=None) -> decoded body
Call = Callable[..., Any]


@dataclass
class BatchState:
    """One look at a provider batch."""

    state: str  # one of RUNNING, COMPLETED, EXPIRED, FAILED, CANCELLED
    status: str  # the provider's own status name ("in_progress", "BATCH_STATE_RUNNING", "ended", …)
    batch_id: str = ""
    counts: Dict[str, Any] = field(default_factory=dict)
    expires_at: Optional[float] = None
    error: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class ItemResult:
    """One request's outcome inside a finished batch.

    `body` is the provider's reply (parse it with the chat adapter); `error` a per-item failure that is
    recorded like a live error; `returned=True` means the provider never ran it (expired, cancelled):
    the item is free to be submitted again and nothing is recorded.
    """

    custom_id: str
    body: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    returned: bool = False


class BatchAPI:
    """Base class: one provider's batch endpoints. Subclasses set the caps and override every method."""

    name = "base"
    #: the provider's caps per batch (requests, bytes of the payload)
    MAX_REQUESTS = 50_000
    MAX_BYTES = 200_000_000
    #: True when the payload is uploaded as a file before `create` (OpenAI)
    uploads_file = False

    def __init__(self, adapter: ProviderAdapter, call: Call) -> None:
        self.adapter = adapter
        self.call = call

    def chat_url(self, model: str = "m") -> str:
        """The live chat endpoint of `model` (batch endpoints are found beside it)."""
        return self.adapter.build_request(PROBE, model, {}).url

    def line(self, custom_id: str, spec: RequestSpec) -> Dict[str, Any]:
        """The payload entry of one request (an input-file line, an inlined request)."""
        raise NotImplementedError

    def upload(self, path: str, tag: str) -> Optional[str]:
        """Upload the JSONL payload file when the provider needs it first; its file id (else None)."""
        return None

    def create(self, model: str, tag: str, file_id: Optional[str], path: str) -> BatchState:
        """Create the batch carrying `tag` and return its first state. Never retried (not idempotent)."""
        raise NotImplementedError

    def status(self, batch_id: str) -> BatchState:
        raise NotImplementedError

    def results(self, batch_id: str, state: BatchState, custom_ids: List[str]) -> Iterator[ItemResult]:
        """Every result the provider has for a finished batch (`custom_ids` in submission order)."""
        raise NotImplementedError

    def find(self, tag: str, since: float, *, size: int = 0, known: Collection[str] = (),
             expected_ids: Collection[str] = ()) -> Optional[BatchState]:
        """The batch created for the submission `tag` (`since` its intent; `size` requests; `known` batch ids
        are someone else's; `expected_ids` its custom_ids), or None when it was never created."""
        raise NotImplementedError

    def cancel(self, batch_id: str) -> None:
        raise NotImplementedError


def read_lines(path: str) -> Iterator[bytes]:
    """The lines of a payload file, without their newlines."""
    with open(path, "rb") as f:
        for raw in f:
            raw = raw.rstrip(b"\n")
            if raw:
                yield raw


def rfc3339(value: Any) -> Optional[float]:
    """Unix seconds of an RFC 3339 timestamp (any number of fraction digits), None when unreadable."""
    if not value:
        return None
    try:
        text = str(value).replace("Z", "+00:00")
        if "." in text:  # Python < 3.11 accepts at most 6 fraction digits
            head, _, tail = text.partition(".")
            digits = re.match(r"\d*", tail).group(0)  # type: ignore[union-attr]
            text = f"{head}.{digits[:6]}{tail[len(digits):]}"
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
