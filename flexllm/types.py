"""Result values returned by flexllm clients."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["BatchResultItem", "ChatCompletionResult", "StreamEvent"]


@dataclass
class ChatCompletionResult:
    """One reply: its text, token usage and the model's reasoning (thinking) when it gave one."""

    content: str
    usage: Optional[dict] = None
    reasoning_content: Optional[str] = None
    #: tool / function calls requested by the model (OpenAI shape), when any
    tool_calls: Optional[List[dict]] = None
    finish_reason: Optional[str] = None
    #: the reply parsed and validated against `response_format` (a model instance or JSON value), else None
    parsed: Any = None

    @property
    def text(self) -> str:
        """What the text-returning APIs give: the content, or, for a reply that only calls tools, the tool
        calls as a JSON array (OpenAI shape) — never an empty string standing for a tool call."""
        return reply_text(self.content, self.tool_calls)


def reply_text(content: str, tool_calls: Optional[List[dict]]) -> str:
    """`ChatCompletionResult.text` of these parts (the batch engine builds cached items without the result)."""
    if not content and tool_calls:
        return json.dumps(tool_calls, ensure_ascii=False)
    return content


@dataclass
class BatchResultItem:
    """The outcome of one batch item, as yielded by `iter_chat_completions_batch`."""

    index: int
    content: Optional[str]
    usage: Optional[dict]
    status: str  # "success", "error", "cached"
    error: Optional[str]
    latency: float
    metadata: Optional[dict] = None
    reasoning_content: Optional[str] = None
    #: True when the item was read back from an earlier run's output file
    resumed: bool = False
    #: why the model stopped: "stop", "length" (cut off at max_tokens), "tool_calls", …
    finish_reason: Optional[str] = None
    #: tool / function calls the model made (OpenAI shape), when any
    tool_calls: Optional[List[dict]] = None
    #: the reply validated against `response_format` (a model instance or JSON value), when one was given
    parsed: Any = None
    #: HTTP requests this item took (retries and structured-output re-asks included; 0 from the cache)
    attempts: int = 0
    #: the item's own entry of `params_list` (None when it has none)
    params: Optional[dict] = None
    #: how a provider-batch run obtained it: "provider-batch" (the provider's batch API) or "live" (fallback)
    via: Optional[str] = None
    #: the provider batch that answered it (provider-batch mode)
    batch_id: Optional[str] = None


@dataclass
class StreamEvent:
    """One piece of a streamed reply, the same for every provider (`chat_completions_stream_sync(..., events=True)`).

    `content` / `reasoning`: text and thinking deltas; `tool_calls`: tool-call deltas in OpenAI's
    streaming shape (the first delta of a call has its `id` and `function.name`, later ones add
    `function.arguments` pieces; join them by `index`); `usage`: token counts so far (OpenAI-shaped);
    `finish_reason`: OpenAI's vocabulary ("stop", "length", "tool_calls", …); `done`: True on the
    last event of a reply that arrived complete (a cut stream raises `StreamTruncatedError` instead).
    """

    content: str = ""
    reasoning: str = ""
    usage: Optional[dict] = None
    finish_reason: Optional[str] = None
    #: True on the provider's explicit end marker (OpenAI `data: [DONE]`)
    done: bool = False
    raw: Optional[Dict[str, Any]] = field(default=None, repr=False)
    #: tool-call deltas in OpenAI's streaming shape: `[{"index", "id"?, "type"?, "function": {"name"?, "arguments"}}]`
    tool_calls: Optional[List[dict]] = None
    #: a piece of the model's refusal (OpenAI `delta.refusal`)
    refusal: str = ""
    #: on the last event of a stream that ended properly: the whole reply, as a non-stream call returns it
    result: Optional["ChatCompletionResult"] = field(default=None, repr=False)

