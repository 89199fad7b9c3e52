"""Typed stream events (`events=True`) for every provider, over HTTP to the mock server."""
import asyncio
import json

import pytest

from flexllm import (
    ClaudeClient,
    GeminiClient,
    LLMClientPool,
    OpenAIClient,
    ResponseCacheConfig,
    StreamEvent,
    StreamTruncatedError,
)
from flexllm.types import StreamEvent as TypesStreamEvent

from .conftest import user

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {
    "q": {"type": "string"}}}}}]


def make(provider, server, **kw):
    kw.setdefault("retry_delay", 0.01)
    if provider == "openai":
        return OpenAIClient(base_url=server.url, model="m", **kw)
    if provider == "gemini":
        return GeminiClient(api_key="AIza-test", base_url=server.root_url, **kw)
    return ClaudeClient(api_key="sk-ant-test", base_url=server.root_url, **kw)


PROVIDERS = ["openai", "gemini", "anthropic"]
FINISH = {"openai": "stop", "gemini": "stop", "anthropic": "stop"}


def merged_calls(events):
    calls = {}
    for e in events:
        for d in e.tool_calls or ():
            c = calls.setdefault(d["index"], {"id": None, "name": None, "arguments": ""})
            c["id"] = c["id"] or d.get("id")
            c["name"] = c["name"] or (d.get("function") or {}).get("name")
            c["arguments"] += (d.get("function") or {}).get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_default_stream_is_text_pieces(server, provider):
    pieces = list(make(provider, server).chat_completions_stream_sync(user("a b c")))
    assert all(isinstance(p, str) for p in pieces) and "".join(pieces) == "echo: a b c"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_events_carry_content_reasoning_usage_finish_and_done(server, provider):
    events = list(make(provider, server).chat_completions_stream_sync(
        user("[[mock:think=1]] one two"), events=True, stream_options={"include_usage": True}
        if provider == "openai" else None))
    assert all(type(e) is StreamEvent for e in events) and StreamEvent is TypesStreamEvent
    assert "".join(e.content for e in events) == "echo: one two"
    assert "".join(e.reasoning for e in events) == "thinking about: one two"
    assert [e.finish_reason for e in events if e.finish_reason] == [FINISH[provider]]
    usage = [e.usage for e in events if e.usage][-1]
    assert usage["completion_tokens"] > 0 and usage["total_tokens"] >= usage["prompt_tokens"] > 0
    assert events[-1].done and not any(e.done for e in events[:-1])
    assert events[-1].content == "" and events[-1].tool_calls is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_events_carry_tool_call_deltas(server, provider):
    q = '[[mock:tool=lookup;tool_args={"q": "paris weather"}]] go'
    events = list(make(provider, server).chat_completions_stream_sync(user(q), events=True, tools=TOOLS))
    calls = merged_calls(events)
    assert len(calls) == 1 and calls[0]["name"] == "lookup" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"q": "paris weather"}
    if provider != "gemini":  # Gemini reports STOP even when it calls a function
        assert [e.finish_reason for e in events if e.finish_reason] == ["tool_calls"]
    assert events[-1].done


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_streamed_tool_call_is_cached_whole(server, provider, tmp_path):
    c = make(provider, server, cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    q = user('[[mock:tool=lookup;tool_args={"q": "x"}]] cached')
    list(c.chat_completions_stream_sync(q, tools=TOOLS))
    r = c.chat_completions_sync(q, tools=TOOLS, return_usage=True)
    assert len(server.requests) == 1  # the second answer came from the cache
    assert r.tool_calls[0]["function"]["name"] == "lookup"
    assert json.loads(r.tool_calls[0]["function"]["arguments"]) == {"q": "x"}
    replay = list(c.chat_completions_stream_sync(q, events=True, tools=TOOLS))
    assert merged_calls(replay)[0]["name"] == "lookup" and replay[-1].done
    assert sum(e.done for e in replay) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_truncated_stream_never_says_done(server, provider):
    seen = []
    with pytest.raises(StreamTruncatedError):
        for e in make(provider, server, retry_times=0).chat_completions_stream_sync(
                user("[[mock:truncate=1]] a b c d e f g h"), events=True):
            seen.append(e)
    assert seen and not any(e.done for e in seen)


def test_async_twin_and_pool_yield_events(server):
    c = make("anthropic", server)

    async def main():
        return [e async for e in c.chat_completions_stream(user("as one"), events=True)]

    events = asyncio.run(main())
    assert "".join(e.content for e in events) == "echo: as one" and events[-1].done
    pool = LLMClientPool(endpoints=[{"base_url": server.url, "model": "m"},
                                    {"base_url": server.root_url, "model": "claude-haiku-4-5", "api_key": "sk-ant-x",
                                     "provider": "anthropic"}])
    for _ in range(2):  # both endpoints, round robin
        events = list(pool.chat_completions_stream_sync(user("p q"), events=True))
        assert "".join(e.content for e in events) == "echo: p q" and events[-1].done
    assert {r.path for r in server.requests} >= {"/v1/chat/completions", "/v1/messages"}
