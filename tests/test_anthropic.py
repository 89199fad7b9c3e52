"""Anthropic Claude: the Messages API mapping, seen by a real HTTP server (flexllm.mock's Anthropic dialect)."""
import asyncio
import hashlib
import json
import logging

import pytest

from flexllm import (
    AuthenticationError,
    BadRequestError,
    ClaudeClient,
    ContentBlockedError,
    GeminiClient,
    LLMClient,
    OpenAIClient,
    QuotaExceededError,
    RateLimitError,
    ResponseCacheConfig,
    ServerError,
    StreamTruncatedError,
    estimate_cost,
)

from .conftest import user

KEY = "sk-ant-api03-SECRET-test-key-0001"
PNG = "data:image/png;base64,iVBORw0KGgo="
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("FLEXLLM_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def claude(server, **kw):
    kw.setdefault("api_key", KEY)
    kw.setdefault("retry_delay", 0.01)
    return ClaudeClient(base_url=server.root_url, **kw)


def hashed(key):
    return "<redacted sha256:%s>" % hashlib.sha256(key.encode()).hexdigest()[:8]


def sent(server):
    return server.requests[-1].body


# -- construction, detection, keys ---------------------------------------------------------------------

def test_defaults_headers_and_path(server):
    c = claude(server)
    assert c.model == "claude-sonnet-4-5" and c.provider == "anthropic"
    assert ClaudeClient(api_key=KEY).adapter.base_url == "https://api.anthropic.com"
    assert c.chat_completions_sync(user("hi")) == "echo: hi"
    rec = server.requests[-1]
    assert rec.path == "/v1/messages" and rec.status == 200
    assert rec.headers["x-api-key"] == hashed(KEY) and rec.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in rec.headers
    assert rec.body["model"] == "claude-sonnet-4-5" and rec.body["max_tokens"] == 4096  # the documented default


@pytest.mark.parametrize("kw, expected", [
    ({"model": "claude-opus-4-5"}, "anthropic"),
    ({"model": "anthropic/claude-haiku-4-5"}, "anthropic"),
    ({"model": "x", "base_url": "https://api.anthropic.com/v1"}, "anthropic"),
    ({"model": "x", "api_key": "sk-ant-api03-abc"}, "anthropic"),
    ({"model": "claude-sonnet-4-5", "base_url": "http://litellm:4000/v1"}, "openai"),  # a proxy speaking OpenAI
    ({"model": "gpt-4o", "base_url": "https://api.openai.com/v1"}, "openai"),
])
def test_llmclient_detects_anthropic(kw, expected):
    assert LLMClient(**kw).provider == expected


def test_llmclient_provider_anthropic_over_http(server):
    c = LLMClient(model="claude-haiku-4-5", base_url=server.root_url, api_key=KEY, provider="anthropic")
    assert c.provider == "anthropic" and c.chat_completions_sync(user("p")) == "echo: p"
    assert server.requests[-1].path == "/v1/messages"


def test_key_from_environment_and_never_to_another_provider(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY + "\n")  # a stray newline from a secrets file
    ClaudeClient(base_url=server.root_url).chat_completions_sync(user("a"))
    assert server.requests[-1].headers["x-api-key"] == hashed(KEY)
    OpenAIClient(base_url=server.url, model="m").chat_completions_sync(user("b"))
    assert "authorization" not in server.requests[-1].headers and "x-api-key" not in server.requests[-1].headers
    with pytest.raises(ValueError, match="api_key"):
        GeminiClient(base_url=server.root_url)  # Gemini does not take Anthropic's key either


def test_missing_key_is_the_servers_401_with_its_message(server):
    server.require_key = KEY
    try:
        with pytest.raises(AuthenticationError, match="invalid API key") as info:
            ClaudeClient(base_url=server.root_url, retry_times=0).chat_completions_sync(user("k"))
        assert info.value.status_code == 401
        with pytest.raises(AuthenticationError) as info:
            claude(server, api_key="sk-ant-wrong-key-123").chat_completions_sync(user("k"))
        assert "sk-ant-wrong-key-123" not in str(info.value) + repr(info.value.body)
    finally:
        server.require_key = None


# -- messages and content ------------------------------------------------------------------------------

def test_system_images_documents_map_to_blocks(server):
    pdf = "data:application/pdf;base64,JVBERi0xLjQK"
    txt = "data:text/plain;base64," + "aGVsbG8gd29ybGQ="
    claude(server).chat_completions_sync([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                                     {"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}},
                                     {"type": "image_url", "image_url": {"url": txt}}]}])
    body = sent(server)
    assert body["system"] == "be brief"
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello world"}}]}]


@pytest.mark.parametrize("url, match", [
    ("gs://bucket/cat.png", "cannot fetch gs://"),
    ("file:///etc/passwd", "cannot fetch file://"),
    ("data:image/bmp;base64,Qk0=", "image/bmp"),
    ("data:image/png,rawbytes", "base64"),
])
def test_media_claude_cannot_read_fails_before_sending(server, url, match):
    with pytest.raises(ValueError, match=match):
        claude(server).chat_completions_sync([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}]}])
    assert server.requests == []


def test_tools_round_trip(server):
    c = claude(server)
    q = '[[mock:tool=get_weather;tool_args={"city": "Paris"}]] weather?'
    r = c.chat_completions_sync(user(q), tools=TOOLS, tool_choice={"type": "function",
                                                                  "function": {"name": "get_weather"}},
                                parallel_tool_calls=False, return_usage=True)
    body = sent(server)
    assert body["tools"] == [{"name": "get_weather", "description": "weather in a city",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert r.finish_reason == "tool_calls"
    call = r.tool_calls[0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    # the OpenAI-shaped history goes back as tool_use / tool_result blocks
    other = {"id": "other", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    c.chat_completions_sync(user(q) + [
        {"role": "assistant", "content": None, "tool_calls": r.tool_calls + [other]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C"},
        {"role": "tool", "tool_call_id": "other", "content": "n/a"},
        {"role": "user", "content": "thanks"}], tools=TOOLS, tool_choice="required")
    body = sent(server)
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": call["id"], "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "other", "name": "get_weather", "input": {}}]}
    assert body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "18C"},
        {"type": "tool_result", "tool_use_id": "other", "content": "n/a"},
        {"type": "text", "text": "thanks"}]}


@pytest.mark.parametrize("thinking, budget", [(True, 8192), ("low", 2048), ("medium", 8192), ("high", 24576),
                                              (3000, 3000)])
def test_thinking_budget_and_reasoning_content(server, thinking, budget):
    r = claude(server).chat_completions_sync(user("why"), thinking=thinking, return_usage=True)
    body = sent(server)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] == budget + 4096
    assert r.content == "echo: why" and r.reasoning_content == "thinking about: why"


def test_adaptive_thinking(server):
    r = claude(server).chat_completions_sync(user("why"), thinking="adaptive", return_usage=True)
    assert sent(server)["thinking"] == {"type": "adaptive"} and sent(server)["max_tokens"] == 8192 + 4096
    assert r.reasoning_content == "thinking about: why"


def test_thinking_bad_values_and_budget_over_max_tokens(server):
    for bad in ("extreme", 10, 1.5):
        with pytest.raises(ValueError, match="thinking"):
            claude(server).chat_completions_sync(user("x"), thinking=bad)
    with pytest.raises(ValueError, match="max_tokens"):
        claude(server).chat_completions_sync(user("x"), thinking="low", max_tokens=1000)
    claude(server, thinking=False).chat_completions_sync(user("x"))
    assert "thinking" not in sent(server)
    assert server.requests[-1].status == 200 and len(server.requests) == 1


def test_response_format_uses_structured_output(server):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    claude(server).chat_completions_sync(user("j"), response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert sent(server)["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    with pytest.raises(ValueError, match="json_schema"):
        claude(server).chat_completions_sync(user("j"), response_format={"type": "json_object"})


def test_parameters_map_and_foreign_ones_are_named(server):
    claude(server).chat_completions_sync(user("p"), temperature=0.3, top_p=0.9, top_k=5, stop=["END"], max_tokens=99,
                                         user="u-1", extra_body={"service_tier": "auto"})
    body = sent(server)
    assert (body["temperature"], body["top_p"], body["top_k"], body["stop_sequences"], body["max_tokens"]) == \
        (0.3, 0.9, 5, ["END"], 99)
    assert body["metadata"] == {"user_id": "u-1"} and body["service_tier"] == "auto"
    n = len(server.requests)
    with pytest.raises(ValueError, match="logit_bias"):
        claude(server).chat_completions_sync(user("p"), logit_bias={"1": 2})
    with pytest.raises(ValueError, match="safety_settings"):
        claude(server).chat_completions_sync(user("p"), safety_settings=[])
    with pytest.raises(ValueError, match="stop_sequences"):  # and Claude's own words elsewhere
        OpenAIClient(base_url=server.url, model="m").chat_completions_sync(user("p"), stop_sequences=["x"])
    with pytest.raises(ValueError, match="stop_sequences"):
        GeminiClient(api_key="AIza-k", base_url=server.root_url).chat_completions_sync(user("p"), stop_sequences=["x"])
    assert len(server.requests) == n


# -- replies -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stop, finish", [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                          ("tool_use", "tool_calls"), ("pause_turn", "pause_turn")])
def test_stop_reasons_map_to_openai_finish_reasons(server, stop, finish):
    r = claude(server).chat_completions_sync(user(f"[[mock:finish={stop}]] s"), return_usage=True)
    assert r.finish_reason == finish
    events = list(claude(server).chat_completions_stream_sync(user(f"[[mock:finish={stop}]] s"), events=True))
    assert [e.finish_reason for e in events if e.finish_reason] == [finish]


def test_refusal_is_content_blocked(server):
    with pytest.raises(ContentBlockedError, match="refus"):
        claude(server).chat_completions_sync(user("[[mock:block=1]] no"))
    with pytest.raises(ContentBlockedError, match="refus"):
        list(claude(server).chat_completions_stream_sync(user("[[mock:block=1]] no")))
    assert len(server.requests) == 2


def test_streamed_usage_counts_input_and_cache_tokens(server):
    events = list(claude(server).chat_completions_stream_sync(user("[[mock:cache_read=50]] a b"), events=True))
    usage = [e.usage for e in events if e.usage][-1]
    assert usage["cache_read_input_tokens"] == 50 and usage["prompt_tokens"] > 50
    assert usage["completion_tokens"] == 3 and usage["total_tokens"] == usage["prompt_tokens"] + 3


def test_usage_counts_cache_reads_and_writes(server):
    r = claude(server).chat_completions_sync(user("[[mock:cache_read=100;cache_write=20]] u"), return_usage=True)
    raw = claude(server).chat_completions_sync(user("[[mock:cache_read=100;cache_write=20]] u"), return_raw=True)
    fresh = raw["usage"]["input_tokens"]
    assert r.usage["prompt_tokens"] == fresh + 120
    assert r.usage["cache_read_input_tokens"] == 100 and r.usage["cache_creation_input_tokens"] == 20
    assert r.usage["prompt_tokens_details"] == {"cached_tokens": 100}
    assert r.usage["total_tokens"] == r.usage["prompt_tokens"] + r.usage["completion_tokens"]


# -- errors ------------------------------------------------------------------------------------------------

def test_overloaded_529_is_retried(server):
    assert claude(server).chat_completions_sync(user("[[mock:status=529;times=1]] o")) == "echo: o"
    assert [r.status for r in server.requests] == [529, 200]
    assert server.requests[0].body == server.requests[1].body
    with pytest.raises(ServerError) as info:
        claude(server, retry_times=1).chat_completions_sync(user("[[mock:status=529]] o2"))
    assert info.value.status_code == 529 and info.value.code == "overloaded_error"


def test_rate_limit_error_honours_retry_after(server):
    waits = []
    c = claude(server, sleep=waits.append)
    assert c.chat_completions_sync(user("[[mock:status=429;retry_after=7;times=1]] r")) == "echo: r"
    assert waits == [7.0] and [r.status for r in server.requests] == [429, 200]
    with pytest.raises(RateLimitError) as info:
        claude(server, retry_times=0).chat_completions_sync(user("[[mock:status=429]] r2"))
    assert info.value.code == "rate_limit_error"


def test_invalid_request_and_credit_errors(server):
    with pytest.raises(BadRequestError, match="prompt is too long") as info:
        claude(server).chat_completions_sync(user("[[mock:status=400;message=prompt is too long]] b"))
    assert info.value.code == "invalid_request_error" and len(server.requests) == 1
    with pytest.raises(QuotaExceededError, match="credit balance"):
        claude(server).chat_completions_sync(user("[[mock:quota=1]] q"))
    assert len(server.requests) == 2


def test_key_never_in_errors_logs_or_repr(server, caplog):
    caplog.set_level(logging.DEBUG)
    c = claude(server, retry_times=1)
    with pytest.raises(BadRequestError) as info:
        c.chat_completions_sync(user(f"[[mock:status=400;message=bad key {KEY}]] k"))
    assert KEY not in str(info.value)
    with pytest.raises(ServerError):
        c.chat_completions_sync(user("[[mock:status=503]] k"))
    assert KEY not in caplog.text and KEY not in repr(c)


# -- streaming ---------------------------------------------------------------------------------------------

def test_stream_text_and_thinking(server):
    c = claude(server)
    assert "".join(c.chat_completions_stream_sync(user("one two three"))) == "echo: one two three"
    assert "".join(c.chat_completions_stream_sync(user("t u"), thinking=True)) == "echo: t u"
    body = sent(server)
    assert body["stream"] is True and body["thinking"]["type"] == "enabled"
    assert server.requests[-1].headers["accept"] == "text/event-stream"


def test_stream_error_event_is_typed(server):
    c = claude(server, retry_times=0)
    with pytest.raises(ServerError) as info:
        list(c.chat_completions_stream_sync(user("[[mock:stream_error=overloaded_error]] a b c d e f g h")))
    assert info.value.status_code == 529 and info.value.code == "overloaded_error"
    with pytest.raises(RateLimitError):
        list(c.chat_completions_stream_sync(user("[[mock:stream_error=rate_limit_error]] a b c d e f g h")))
    with pytest.raises(BadRequestError):
        list(c.chat_completions_stream_sync(user("[[mock:stream_error=invalid_request_error;at=2]] x")))


def test_stream_error_before_any_content_is_retried(server):
    pieces = list(claude(server).chat_completions_stream_sync(
        user("[[mock:stream_error=overloaded_error;at=2;times=1]] again")))
    assert "".join(pieces) == "echo: again" and len(server.requests) == 2


def test_stream_cut_before_message_stop_is_truncated(server):
    with pytest.raises(StreamTruncatedError):
        list(claude(server, retry_times=0).chat_completions_stream_sync(user("[[mock:truncate=1]] a b c d e f")))


# -- every client method, cache, pricing ------------------------------------------------------------------

def test_every_method_works(server, tmp_path):
    c = claude(server)

    async def main():
        text = await c.chat_completions(user("as"))
        pieces = [p async for p in c.chat_completions_stream(user("x y"))]
        results = await c.chat_completions_batch([user("b1"), user("b2")], show_progress=False)
        items = [i async for i in c.aiter_chat_completions_batch([user("i1")], show_progress=False)]
        return text, pieces, results, items

    text, pieces, results, items = asyncio.run(main())
    assert text == "echo: as" and "".join(pieces) == "echo: x y" and results == ["echo: b1", "echo: b2"]
    assert items[0].content == "echo: i1"
    out = tmp_path / "out.jsonl"
    assert c.chat_completions_batch_sync([user("f1"), user("f2")], output_file=str(out), show_progress=False) == \
        ["echo: f1", "echo: f2"]
    assert [i.content for i in c.iter_chat_completions_batch([user("g")])] == ["echo: g"]
    with c:
        pass


def test_cache_works_for_claude(server, tmp_path):
    c = claude(server, cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    assert c.chat_completions_sync(user("c")) == c.chat_completions_sync(user("c")) == "echo: c"
    assert len(server.requests) == 1


def test_parse_thoughts_reads_claude_replies(server):
    raw = claude(server).chat_completions_sync(user("p"), thinking=True, return_raw=True)
    assert ClaudeClient.parse_thoughts(raw) == {"thought": "thinking about: p", "answer": "echo: p"}
    assert LLMClient.parse_thoughts(raw) == ClaudeClient.parse_thoughts(raw)


def test_current_claude_models_are_priced():
    for model in ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-opus-4-5", "claude-haiku-4-5",
                  "claude-opus-4-6", "claude-sonnet-4-6", "anthropic/claude-opus-4-1"):
        assert estimate_cost(1_000_000, model) > 0, model
    assert estimate_cost(1_000_000, "claude-haiku-4-5") == pytest.approx(1.0)
    assert estimate_cost(1_000_000, "claude-opus-4-6", is_input=False) == pytest.approx(25.0)


def test_pydantic_response_format_is_validated_over_claude(server):
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    r = claude(server).chat_completions_sync(user("Paris"), response_format=City)
    assert isinstance(r, City) and r.population >= 1
    assert sent(server)["output_config"]["format"]["type"] == "json_schema"


def test_a_reply_cut_at_max_tokens_is_length(server):
    r = claude(server).chat_completions_sync(user("one two three four five six"), max_tokens=3, return_usage=True)
    assert r.content == "echo: one two" and r.finish_reason == "length"
    events = list(claude(server).chat_completions_stream_sync(user("one two three four"), max_tokens=2, events=True))
    assert "".join(e.content for e in events) == "echo: one" and events[-1].result.finish_reason == "length"


def test_cli_asks_claude_with_the_anthropic_key(server):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.run([sys.executable, "-m", "flexllm", "ask", "--provider", "anthropic", "--model",
                           "claude-haiku-4-5", "--base-url", server.root_url, "hello cli"], capture_output=True,
                          text=True, timeout=60, env=dict(env, ANTHROPIC_API_KEY=KEY, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 0, proc.stderr
    assert "echo: hello cli" in proc.stdout and KEY not in proc.stdout + proc.stderr
    assert server.requests[-1].path == "/v1/messages" and server.requests[-1].headers["x-api-key"] == hashed(KEY)


@pytest.mark.parametrize("data", [
    {"content": "x"}, {"content": [None, 5, "t"]}, {"content": [{"type": "text", "text": 5}]},
    {"content": [{"type": "tool_use", "name": ["x"], "input": "nope"}], "stop_reason": ["tool_use"]},
    {"content": [{"type": "text", "text": "a"}], "usage": "lots"},
    {"content": [{"type": "text", "text": "a"}], "usage": {"input_tokens": "many", "output_tokens": float("nan")}},
    {"type": "error", "error": {"type": ["x"], "message": 3}},
])
def test_replies_of_the_wrong_type_are_parse_errors_or_clean(data):
    from flexllm import LLMError

    adapter = ClaudeClient(api_key="k").adapter
    try:
        r = adapter.parse_response(data, model="m")
    except LLMError:
        return
    assert isinstance(r.content, str) and (r.usage is None or all(
        isinstance(v, (int, dict)) for v in r.usage.values()))
    assert all(isinstance(c["function"]["arguments"], str) for c in r.tool_calls or ())


@pytest.mark.parametrize("line", [
    'data: {"type": "content_block_delta", "index": [1], "delta": {"type": "input_json_delta"}}',
    'data: {"type": "content_block_delta", "index": 0, "delta": "x"}',
    'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 7}}',
    'data: {"type": "content_block_start", "index": {}, "content_block": {"type": "tool_use"}}',
    'data: {"type": "message_start", "message": {"usage": [1]}}',
    'data: {"type": "message_delta", "delta": {"stop_reason": ["x"]}, "usage": "u"}',
    'data: {"type": "error", "error": {"type": {"a": 1}}}',
    'data: [1, 2]', 'data: not json',
])
def test_stream_lines_of_the_wrong_type(line):
    from flexllm import LLMError

    parse = ClaudeClient(api_key="k").adapter.stream_parser("m")
    try:
        event = parse(line)
    except LLMError:
        return
    assert event is None or (isinstance(event.content, str) and isinstance(event.reasoning, str))


def test_native_blocks_of_a_raw_reply_go_back_unchanged(server):
    """A thinking + tool-use loop: the signed thinking block must reach Claude again as it came."""
    c = claude(server)
    raw = c.chat_completions_sync(user('[[mock:tool=get_weather;tool_args={"city": "Rome"}]] w'), tools=TOOLS,
                                  thinking="low", return_raw=True)
    assert [b["type"] for b in raw["content"]] == ["thinking", "tool_use"]
    tool_id = raw["content"][1]["id"]
    c.chat_completions_sync(user("w") + [{"role": "assistant", "content": raw["content"]},
                                         {"role": "tool", "tool_call_id": tool_id, "content": "20C"}],
                            tools=TOOLS, thinking="low")
    assert sent(server)["messages"][1] == {"role": "assistant", "content": raw["content"]}
    assert sent(server)["messages"][2]["content"][0]["tool_use_id"] == tool_id


def test_cache_writes_and_reads_are_priced_as_anthropic_bills_them(server, tmp_path):
    """Claude bills a prompt-cache write at 1.25x and a read at 0.1x the input price. Both were priced as plain
    input: a batch writing a big cache under-counted its cost (max_cost_usd could be passed by a quarter of
    the writes); one reading it over-counted tenfold."""
    from flexllm import get_model_pricing

    price = get_model_pricing("claude-haiku-4-5")
    client = claude(server, model="claude-haiku-4-5")
    for directive, factor in (("cache_write=200000", 1.25), ("cache_read=200000", 0.1)):
        out = tmp_path / f"{directive}.jsonl"
        _, summary = client.chat_completions_batch_sync([user(f"[[mock:{directive}]] hi")], output_file=str(out),
                                                        show_progress=False, return_summary=True)
        usage = json.loads(out.read_text())["usage"]
        cached = usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
        assert cached == 200000
        expected = ((usage["prompt_tokens"] - cached) * price["input"] + cached * factor * price["input"]
                    + usage["completion_tokens"] * price["output"])
        assert summary["estimated_cost_usd"] == pytest.approx(expected, rel=1e-6), directive
