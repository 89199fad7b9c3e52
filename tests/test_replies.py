"""What a reply is, whichever way it arrives: streams and non-streams agree, and only answers are cached.

Issue 11 items 27 (tool-call replies are never an empty success), 28 (a stream fills the cache with what
a non-stream call stores), 32 (a blocked Gemini stream raises like the non-stream call) and 33 (an OpenAI
refusal is a typed error, never an empty success, never cached).
"""
import json

import pytest

from flexllm import ContentBlockedError, GeminiClient, OpenAIClient, ResponseCacheConfig, StreamTruncatedError
from flexllm.errors import RefusalError

from .conftest import read_records, user

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = '[[mock:tool=get_weather;tool_args={"city": "Paris"}]]'


def _cache(tmp_path):
    return ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path / "cache"), ttl=0)


def _openai(server, tmp_path=None, **kw):
    kw.setdefault("retry_delay", 0.01)
    return OpenAIClient(base_url=server.url, model="m", cache=_cache(tmp_path) if tmp_path else None, **kw)


def _gemini(server, tmp_path=None, **kw):
    kw.setdefault("retry_delay", 0.01)
    return GeminiClient(api_key="test-key-123", base_url=server.root_url, model="gemini-2.5-flash",
                        cache=_cache(tmp_path) if tmp_path else None, **kw)


def _calls(result):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in result.tool_calls or ()]


def _same(a, b):
    assert a.content == b.content
    assert a.reasoning_content == b.reasoning_content
    assert a.finish_reason == b.finish_reason
    assert a.usage == b.usage
    assert _calls(a) == _calls(b)


# -- item 28: a stream stores what a non-stream call would --------------------------------------------

@pytest.mark.parametrize("make, prompt, kwargs", [
    (_openai, "[[mock:think=tags]] why", {}),
    (_openai, "[[mock:think=closing]] why", {}),
    (_openai, "[[mock:think=1]] why", {}),
    (_openai, "plain", {}),
    (_openai, CALL + " weather?", {"tools": TOOLS}),
    (_gemini, "[[mock:think=1]] why", {}),
    (_gemini, CALL + " weather?", {"tools": TOOLS}),
], ids=["openai-tags", "openai-closing", "openai-reasoning", "openai-plain", "openai-tools", "gemini-thoughts",
        "gemini-tools"])
def test_stream_fills_the_cache_with_what_a_live_call_returns(server, tmp_path, make, prompt, kwargs):
    live = make(server).chat_completions_sync(user(prompt), return_usage=True, **kwargs)
    c = make(server, tmp_path)
    pieces = list(c.chat_completions_stream_sync(user(prompt), **kwargs))
    assert pieces
    before = len(server.requests)
    cached = c.chat_completions_sync(user(prompt), return_usage=True, **kwargs)
    assert len(server.requests) == before  # answered from the cache
    _same(cached, live)
    assert cached.usage is not None
    c.close()


def test_openai_stream_asks_for_usage_and_the_callers_stream_options_win(server):
    c = _openai(server)
    list(c.chat_completions_stream_sync(user("x")))
    assert server.requests[-1].body["stream_options"] == {"include_usage": True}
    list(c.chat_completions_stream_sync(user("x"), stream_options={"include_usage": False}))
    assert server.requests[-1].body["stream_options"] == {"include_usage": False}


def test_stream_options_and_stream_are_not_part_of_the_cache_key(server, tmp_path):
    c = _openai(server, tmp_path)
    list(c.chat_completions_stream_sync(user("k"), stream_options={"include_usage": True}))
    before = len(server.requests)
    assert c.chat_completions_sync(user("k")) == "echo: k"
    assert len(server.requests) == before


# -- item 32: blocked streams raise; nothing that is not an answer is cached --------------------------

@pytest.mark.parametrize("finish", ["SAFETY", "PROHIBITED_CONTENT", "RECITATION"])
def test_blocked_gemini_stream_raises_like_the_non_stream_call(server, tmp_path, finish):
    prompt = f"[[mock:finish={finish}]] bad"
    c = _gemini(server, tmp_path)
    with pytest.raises(ContentBlockedError) as non_stream:
        c.chat_completions_sync(user(prompt))
    with pytest.raises(ContentBlockedError) as streamed:
        list(c.chat_completions_stream_sync(user(prompt)))
    assert non_stream.value.reason == streamed.value.reason == finish
    before = len(server.requests)
    with pytest.raises(ContentBlockedError):
        c.chat_completions_sync(user(prompt))  # nothing was cached: asked again
    assert len(server.requests) == before + 1
    results = c.chat_completions_batch_sync([user(prompt)], show_progress=False)
    assert results == [None]


@pytest.mark.parametrize("stream", [False, True])
def test_empty_reply_is_never_cached(server, tmp_path, stream):
    c = _openai(server, tmp_path)
    prompt = "[[mock:reply=]] say nothing"
    for _ in range(2):
        if stream:
            assert "".join(c.chat_completions_stream_sync(user(prompt))) == ""
        else:
            assert c.chat_completions_sync(user(prompt)) == ""
    assert len(server.requests) == 2


def test_openai_content_filter_with_no_content_is_blocked(server, tmp_path):
    c = _openai(server, tmp_path)
    with pytest.raises(ContentBlockedError) as exc:
        c.chat_completions_sync(user("[[mock:reply=;finish=content_filter]] x"))
    assert exc.value.reason == "content_filter"
    with pytest.raises(ContentBlockedError):
        list(c.chat_completions_stream_sync(user("[[mock:reply=;finish=content_filter]] x")))


# -- item 33: refusals -------------------------------------------------------------------------------

def test_refusal_is_a_typed_error_not_cached_and_recorded_as_failed(server, tmp_path):
    c = _openai(server, tmp_path, retry_times=2)
    prompt = "[[mock:refusal=I'm sorry, I can't help with that.]] please"
    with pytest.raises(RefusalError) as exc:
        c.chat_completions_sync(user(prompt))
    assert isinstance(exc.value, ContentBlockedError)
    assert exc.value.refusal == "I'm sorry, I can't help with that."
    assert exc.value.reason == "refusal"
    assert "I'm sorry" in str(exc.value)
    assert len(server.requests) == 1  # not retried: asking again gets the same refusal
    with pytest.raises(RefusalError) as streamed:
        list(c.chat_completions_stream_sync(user(prompt)))
    assert streamed.value.refusal == exc.value.refusal
    out = tmp_path / "out.jsonl"
    results, summary = c.chat_completions_batch_sync([user(prompt), user("fine")], output_file=str(out),
                                                     show_progress=False, return_summary=True)
    assert results == [None, "echo: fine"]
    assert summary["errors"] == {"RefusalError": 1}
    records = {r["index"]: r for r in read_records(out)}
    assert records[0]["status"] == "error" and "I'm sorry" in records[0]["error"]
    assert len(server.requests) == 4  # never served from the cache


# -- item 27: a tool-call reply is never an empty success ----------------------------------------------

@pytest.mark.parametrize("make", [_openai, _gemini], ids=["openai", "gemini"])
def test_tool_call_reply_through_every_api(server, tmp_path, make):
    c = make(server)
    r = c.chat_completions_sync(user(CALL + " weather?"), tools=TOOLS, return_usage=True)
    assert r.content == "" and r.finish_reason == "tool_calls"
    assert _calls(r) == [("get_weather", {"city": "Paris"})]
    text = c.chat_completions_sync(user(CALL + " weather?"), tools=TOOLS)
    assert [(t["function"]["name"], json.loads(t["function"]["arguments"])) for t in json.loads(text)] == _calls(r)
    streamed = "".join(c.chat_completions_stream_sync(user(CALL + " weather?"), tools=TOOLS))
    assert json.loads(streamed) == json.loads(text) or _calls(r) == [
        (t["function"]["name"], json.loads(t["function"]["arguments"])) for t in json.loads(streamed)]
    out = tmp_path / "out.jsonl"
    results = c.chat_completions_batch_sync([user(CALL + " weather?")], output_file=str(out), show_progress=False,
                                            tools=TOOLS)
    assert results[0] and json.loads(results[0])[0]["function"]["name"] == "get_weather"
    [rec] = read_records(out)
    assert rec["status"] == "success" and rec["output"]
    assert rec["finish_reason"] == "tool_calls" and rec["tool_calls"][0]["function"]["name"] == "get_weather"


# -- streams answered without SSE: a server that ignores stream=true, a proxy's error with status 200 ----

@pytest.mark.parametrize("make", [_openai, _gemini], ids=["openai", "gemini"])
def test_stream_answered_with_plain_json_still_gives_the_reply(server, tmp_path, make):
    c = make(server, tmp_path)
    assert "".join(c.chat_completions_stream_sync(user("[[mock:plain=1]] hello"))) == "echo: hello"
    assert len(server.requests) == 1  # understood at once, not retried as a truncated stream
    before = len(server.requests)
    cached = c.chat_completions_sync(user("[[mock:plain=1]] hello"), return_usage=True)
    assert cached.content == "echo: hello" and len(server.requests) == before


@pytest.mark.parametrize("make", [_openai, _gemini], ids=["openai", "gemini"])
def test_stream_answered_with_an_error_body_and_status_200_raises_its_error(server, make):
    c = make(server, retry_times=0)
    with pytest.raises(Exception) as exc:
        list(c.chat_completions_stream_sync(user("[[mock:status=200;message=upstream exploded]] x")))
    assert "upstream exploded" in str(exc.value)
    assert not isinstance(exc.value, StreamTruncatedError)
