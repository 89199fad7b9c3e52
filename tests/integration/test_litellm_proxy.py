"""flexllm against a real third-party OpenAI-compatible server (the LiteLLM proxy), not only our own mock.

Replies come in the proxy's shapes (its chunking, its error bodies, its relayed headers); attempts are
counted on the upstream mock's clock (arrivals), waits through the injectable sleep — never timed.
"""
import asyncio
import json

import pytest

from flexllm import (
    AuthenticationError,
    LLMClient,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)

from ..conftest import read_records, user
from .conftest import MASTER_KEY, TOOL_CALL

pytestmark = pytest.mark.integration

WEATHER_TOOL = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def client_for(proxy, model, **kwargs):
    sleeps = []
    kwargs.setdefault("retry_times", 2)
    client = LLMClient(model=model, base_url=proxy.url, api_key=MASTER_KEY, sleep=sleeps.append, **kwargs)
    return client, sleeps


def test_plain_reply_sync_async_batch(proxy, tmp_path):
    client, _ = client_for(proxy, "fake-plain")
    assert client.chat_completions_sync(user("hi")) == "Hello from LiteLLM"
    result = client.chat_completions_sync(user("hi"), return_usage=True)
    assert result.finish_reason == "stop" and result.usage["total_tokens"] == 30

    async def run():
        text = await client.chat_completions(user("hi"))
        items = [i async for i in client.aiter_chat_completions_batch([user("a"), user("b")])]
        return text, items

    text, items = asyncio.run(run())
    assert text == "Hello from LiteLLM" and sorted(i.content for i in items) == ["Hello from LiteLLM"] * 2
    out = tmp_path / "out.jsonl"
    results, summary = client.chat_completions_batch_sync([user(f"q{i}") for i in range(5)], output_file=str(out),
                                                          show_progress=False, return_summary=True)
    assert results == ["Hello from LiteLLM"] * 5 and summary["success"] == 5 and summary["failed"] == 0
    assert sorted(r["index"] for r in read_records(out)) == [0, 1, 2, 3, 4]
    assert MASTER_KEY not in out.read_text()
    client.close()


def test_streamed_reply_in_the_proxys_chunks(proxy):
    client, _ = client_for(proxy, "fake-plain")
    pieces = list(client.chat_completions_stream_sync(user("hi")))
    assert "".join(pieces) == "Hello from LiteLLM" and len(pieces) > 1  # really streamed, piece by piece

    async def run():
        return [p async for p in client.chat_completions_stream(user("hi"))]

    assert "".join(asyncio.run(run())) == "Hello from LiteLLM"
    # a relayed upstream stream, re-chunked by the proxy
    relayed, _ = client_for(proxy, "upstream")
    assert "".join(relayed.chat_completions_stream_sync(user("stream me"))) == "echo: stream me"
    client.close()
    relayed.close()


def test_tool_call_replies(proxy, tmp_path):
    client, _ = client_for(proxy, "fake-tools")
    result = client.chat_completions_sync(user("weather?"), tools=WEATHER_TOOL, return_usage=True)
    assert result.content == "" and result.tool_calls[0]["function"] == TOOL_CALL["function"]
    # a tool-call reply is never an empty success: the batch output carries the calls
    out = tmp_path / "tools.jsonl"
    results = client.chat_completions_batch_sync([user("weather?")], output_file=str(out), show_progress=False,
                                                 tools=WEATHER_TOOL)
    assert json.loads(results[0])[0]["function"]["name"] == "get_weather"
    [record] = read_records(out)
    assert record["status"] == "success" and record["output"]
    # streamed tool calls, relayed from the upstream and re-chunked by the proxy
    relayed, _ = client_for(proxy, "upstream")
    text = "".join(relayed.chat_completions_stream_sync(
        user('[[mock:tool=get_weather;tool_args={"city": "Oslo"}]] weather?'), tools=WEATHER_TOOL))
    [call] = json.loads(text)
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    client.close()
    relayed.close()


def test_401_from_the_upstream_is_an_authentication_error_not_retried(proxy):
    client, sleeps = client_for(proxy, "upstream-badkey", retry_times=3)
    with pytest.raises(AuthenticationError) as info:
        client.chat_completions_sync(user("x"))
    assert info.value.status_code == 401 and sleeps == []
    assert len(proxy.upstream.requests) == 1
    assert MASTER_KEY not in str(info.value) and MASTER_KEY not in json.dumps(info.value.body)
    client.close()


@pytest.mark.parametrize("model, error", [("fake-429", RateLimitError), ("fake-500", ServerError)])
def test_429_and_500_in_the_proxys_shape_are_retried(proxy, model, error):
    client, sleeps = client_for(proxy, model, retry_times=2)
    with pytest.raises(error) as info:
        client.chat_completions_sync(user("x"))
    assert not isinstance(info.value, QuotaExceededError)
    assert len(sleeps) == 2 and info.value.attempts == 3  # retry_times=2 → 3 attempts
    client.close()


def test_relayed_5xx_is_retried_until_it_succeeds(proxy):
    client, sleeps = client_for(proxy, "upstream", retry_times=3)
    assert client.chat_completions_sync(user("[[mock:status=503;times=2]] hi")) == "echo: hi"
    assert len(proxy.upstream.requests) == 3 and len(sleeps) == 2
    client.close()


# -- issue 11 item 23: the proxy relays the upstream's Retry-After as llm_provider-retry-after ----------------

def test_relayed_retry_after_is_honoured(proxy):
    client, sleeps = client_for(proxy, "upstream", retry_times=2)
    assert client.chat_completions_sync(user("[[mock:status=429;retry_after=7;times=1]] hi")) == "echo: hi"
    assert sleeps == [7.0]  # the upstream's hint, not our 1 s backoff
    assert len(proxy.upstream.requests) == 2
    client.close()


# -- item 24: an upstream insufficient_quota relayed as a throttling_error is an exhausted quota ------------

def test_relayed_quota_exhaustion_is_not_retried_and_stops_a_batch(proxy, tmp_path):
    client, sleeps = client_for(proxy, "upstream", retry_times=3, concurrency_limit=1)
    with pytest.raises(QuotaExceededError):
        client.chat_completions_sync(user("[[mock:quota=1]] x"))
    assert sleeps == [] and len(proxy.upstream.requests) == 1
    proxy.upstream.clear()
    proxy.upstream.add_rule(quota=1)
    results, summary = client.chat_completions_batch_sync([user(f"q{i}") for i in range(10)], show_progress=False,
                                                          output_file=str(tmp_path / "q.jsonl"), return_summary=True)
    assert "quota" in summary["stopped_reason"] and summary["retries"] == 0
    assert len(proxy.upstream.requests) < 10 and results.count(None) == 10
    client.close()


def test_upstream_connection_drop_becomes_a_retried_500(proxy):
    # issue 11 item 30's non-stream counterpart: behind the proxy a dropped upstream is a 500 we retry (a cut
    # *stream* arrives with the proxy's own finish_reason "stop", usage and [DONE]: not detectable, see README)
    client, sleeps = client_for(proxy, "upstream", retry_times=2)
    assert client.chat_completions_sync(user("[[mock:drop=1;times=1]] hi")) == "echo: hi"
    assert [r.fault for r in proxy.upstream.requests] == ["drop", None] and len(sleeps) == 1
    client.close()
