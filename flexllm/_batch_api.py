"""How a provider-batch run reaches a provider's batch API: the lookup, the HTTP caller, the custom_ids.

Each provider with a batch API has `flexllm/providers/<name>_batch.py` exporting `BATCH_API` (a
`BatchAPI` subclass); its I/O goes through `BatchCaller`: the client's own transport, retry policy and
error mapping, so batch calls get the same timeouts, retries and secret redaction as live calls.
"""
from __future__ import annotations

import importlib
import json as _json
from typing import Any, Callable, Dict, Optional

from ._hashing import messages_hash
from ._pipeline import _decode
from .errors import APIStatusError, LLMError, ResponseParseError
from .http import dumps
from .providers.batch_base import PROBE, BatchAPI

__all__ = ["BatchCaller", "batch_api_for", "custom_id", "definitive"]

_HASH_LEN = 12


def batch_api_for(adapter: Any, call: Callable[..., Any]) -> BatchAPI:
    """The batch API of the adapter's provider (`flexllm.providers.<name>_batch`); ValueError if it has none."""
    try:
        module = importlib.import_module(f"flexllm.providers.{adapter.name}_batch")
    except ModuleNotFoundError as exc:
        if exc.name != f"flexllm.providers.{adapter.name}_batch":
            raise
        raise ValueError(f"provider batch mode is not available for provider {adapter.name!r}") from None
    return module.BATCH_API(adapter, call)


class BatchCaller:
    """HTTP for the batch API: the client's transport, retry policy and error mapping."""

    def __init__(self, pipeline: Any, model: str) -> None:
        self.pipeline, self.adapter, self.model = pipeline, pipeline.adapter, model
        spec = self.adapter.build_request(PROBE, model, {})
        self.headers = {k: v for k, v in spec.headers.items() if k.lower() not in ("content-type", "accept")}

    def __call__(self, method: str, url: str, *, json: Any = None, content: Optional[bytes] = None,
                 files: Optional[Dict[str, Any]] = None, data: Any = None, retry: bool = True,
                 raw: bool = False) -> Any:
        headers = dict(self.headers)
        if json is not None:
            content = dumps(json)
        if content is not None:
            headers["Content-Type"] = "application/json"

        def once() -> Any:
            for value in (files or {}).values():
                value[1].seek(0)  # a retried upload starts from the top of the file
            status, reply_headers, body = self.pipeline.transport.request(
                method, url, headers=headers, model=self.model, content=content, files=files, data=data)
            if not 200 <= status < 300:
                raise self.adapter.map_error(status, _decode(body), reply_headers, model=self.model)
            if raw:
                return body
            try:
                return _json.loads(body)
            except ValueError:
                raise ResponseParseError(f"HTTP {status} reply to {method} is not JSON: {body[:200]!r}",
                                         provider=self.adapter.name, model=self.model) from None

        return self.pipeline.retry.call(once) if retry else once()


def custom_id(index: int, messages: Any) -> str:
    """`<index>-<hash of the messages>`: joins results to inputs and notices inputs edited meanwhile."""
    return f"{index}-{messages_hash(messages)[:_HASH_LEN]}"


def definitive(exc: LLMError) -> bool:
    """A create that the provider clearly refused (4xx other than 408/409/429): no batch exists."""
    status = getattr(exc, "status_code", None)
    return isinstance(exc, APIStatusError) and status is not None and 400 <= status < 500 and \
        status not in (408, 409, 429)
