"""A reply-length limit that cannot work (0, negative, a bool, a float, a string) is refused before anything is
sent, with a ValueError naming the parameter — on every provider, for single calls, streams and batches.
Before, `max_tokens=0` went to the server (the real APIs answer 400; some proxies answer an empty reply)."""
import pytest

from flexllm import ClaudeClient, LLMClient

from .conftest import user


def clients(server):
    return [LLMClient(model="gpt-4o-mini", base_url=server.url, api_key="k", retry_delay=0.01),
            ClaudeClient(base_url=server.root_url, api_key="k", retry_delay=0.01),
            LLMClient(model="gemini-2.5-flash", base_url=server.root_url, api_key="k", provider="gemini",
                      retry_delay=0.01)]


@pytest.mark.parametrize("name", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("bad", [0, -5, True, 2.5, "100"])
def test_unusable_reply_limits_are_refused_before_sending(server, tmp_path, name, bad):
    for client in clients(server):
        with pytest.raises(ValueError, match=name):
            client.chat_completions_sync(user("hi"), **{name: bad})
        with pytest.raises(ValueError, match=name):
            list(client.chat_completions_stream_sync(user("hi"), **{name: bad}))
        with pytest.raises(ValueError, match=name):
            client.chat_completions_batch_sync([user("a"), user("b")], output_file=str(tmp_path / "o.jsonl"),
                                               show_progress=False, **{name: bad})
        assert not (tmp_path / "o.jsonl").exists() or not (tmp_path / "o.jsonl").read_text().strip()
    assert server.requests == [], "a refused limit reached the server"


def test_geminis_own_limit_name_is_checked_too(server):
    gemini = clients(server)[2]
    with pytest.raises(ValueError, match="maxOutputTokens"):
        gemini.chat_completions_sync(user("hi"), maxOutputTokens=0)
    assert server.requests == []
    assert gemini.chat_completions_sync(user("hi"), maxOutputTokens=5)
    assert server.requests[0].body["generationConfig"]["maxOutputTokens"] == 5


def test_good_reply_limits_still_go_out(server):
    for client in clients(server):
        assert client.chat_completions_sync(user("hi"), max_tokens=7)
    assert len(server.requests) == 3
    client = LLMClient(model="gpt-4o-mini", base_url=server.url, api_key="k")
    client.chat_completions_sync(user("hi"), max_tokens=None)  # "not set", as the OpenAI SDK sends it
    assert server.requests[-1].body.get("max_tokens") is None


def test_a_bad_limit_in_params_list_is_that_items_error(server, tmp_path):
    """A per-item limit is checked per item: that item fails with the reason, the others are answered."""
    client = LLMClient(model="gpt-4o-mini", base_url=server.url, api_key="k", retry_delay=0.01)
    results = client.chat_completions_batch_sync([user("a"), user("b")], output_file=str(tmp_path / "o.jsonl"),
                                                 show_progress=False, return_usage=True,
                                                 params_list=[{"max_tokens": 0}, {"max_tokens": 5}])
    assert results[1] is not None and results[1].content
    assert len(server.requests) == 1 and server.requests[0].body["max_tokens"] == 5
    import json
    records = {r["index"]: r for r in map(json.loads, (tmp_path / "o.jsonl").read_text().splitlines())}
    assert records[0]["status"] == "error" and "max_tokens" in records[0]["error"]


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.mark.parametrize("make", ["claude", "gemini"])
def test_a_tool_result_for_no_earlier_tool_call_is_refused_before_sending(server, make):
    """Claude answered such a conversation with a 400 after the request went out (and after retries in a pool);
    Gemini's adapter already refused it. Both now say which id matched nothing, before sending."""
    client = clients(server)[1 if make == "claude" else 2]
    ask = user("weather?") + [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}]
    with pytest.raises(ValueError, match="'call_9'.*matches no earlier assistant tool call"):
        client.chat_completions_sync(ask + [{"role": "tool", "tool_call_id": "call_9", "content": "20C"}])
    with pytest.raises(ValueError, match="'call_1'.*matches no earlier assistant tool call"):  # the call comes later
        client.chat_completions_sync(user("w") + [{"role": "tool", "tool_call_id": "call_1", "content": "20C"}]
                                     + ask[1:])
    assert server.requests == []
    client.chat_completions_sync(ask + [{"role": "tool", "tool_call_id": "call_1", "content": "20C"}])
    assert len(server.requests) == 1
