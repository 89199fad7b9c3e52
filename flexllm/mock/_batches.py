"""Provider batch endpoints of the mock server: OpenAI `/v1/files` + `/v1/batches`, Gemini batch mode,
Anthropic `/v1/messages/batches`.

Batches live in memory and move through the providers' real status names on the server's clock, sped
up by a time scale (mock seconds per real second; server setting `batch_time_scale`, default 3600, or
the `[[mock:batch_time_scale=N]]` directive in any item): a batch takes `batch_hours` mock hours
(default 1) and expires after the 24 h window. Directives in an item's text (with `times=N`: only the
first N submissions of that item):

    batch_fault=expire    the batch never finishes: at 24 h it expires, the first half answered and the
                          rest returned with `batch_expired`
    batch_fault=invalid   the batch fails validation (OpenAI: status `failed` with `errors.data`; Gemini:
                          BATCH_STATE_FAILED; Anthropic validates at create: HTTP 400)
    batch_error=STATUS    this item fails with STATUS in the error file (a partially failed batch)
    reply=TEXT            this item's answer (default "echo: <last user message>")
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

from ._batch_anthropic import AnthropicBatches
from ._batch_core import dialect
from ._batch_gemini import GeminiBatches
from ._batch_openai import OpenAIBatches

__all__ = ["BatchStore", "dialect", "route"]

_OPENAI = re.compile(r"^/v1/(files|batches)(?:/([^/?]+))?(?:/(content|cancel))?$")
_GEMINI_CREATE = re.compile(r"^/(v1beta|v1)/models/([^/:]+):batchGenerateContent$")
_GEMINI_BATCH = re.compile(r"^/(v1beta|v1)/batches(?:/([^/:?]+))?(?::(cancel))?$")
_ANTHROPIC = re.compile(r"^/v1/messages/batches(?:/([^/?]+))?(?:/(results|cancel))?$")


def route(method: str, path: str) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """(handler name, path groups) for a batch endpoint, else None."""
    bare = path.split("?", 1)[0]
    m = _OPENAI.match(bare)
    if m:
        return "openai", m.groups()
    m = _GEMINI_CREATE.match(bare)
    if m and method == "POST":
        return "gemini_create", m.groups()
    m = _GEMINI_BATCH.match(bare)
    if m:
        return "gemini", m.groups()
    m = _ANTHROPIC.match(bare)
    if m:
        return "anthropic", m.groups()
    return None


class BatchStore(OpenAIBatches, GeminiBatches, AnthropicBatches):
    """Every provider's batch endpoints over one store of batches and files. Thread-safe."""
