"""Every adapter, fed random JSON shaped like its replies: only flexllm errors ever escape (issue 11 item 21).

A 2xx reply whose message, choice, delta, candidate or usage has the wrong type must be a
`ResponseParseError` (an `LLMError`, so `except LLMError` catches it), never AttributeError/TypeError/KeyError,
and whatever parses must have the promised types (the batch engine and the cache rely on them).
"""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexllm import LLMError, ResponseParseError
from flexllm.errors import APIStatusError
from flexllm.providers import make_adapter, names
from flexllm.types import ChatCompletionResult, StreamEvent

FIELDS = ["choices", "message", "delta", "content", "reasoning_content", "reasoning", "tool_calls", "finish_reason",
          "usage", "candidates", "parts", "text", "thought", "functionCall", "name", "args", "finishReason",
          "usageMetadata", "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount",
          "cachedContentTokenCount", "promptFeedback", "blockReason", "error", "refusal", "function", "arguments",
          "type", "id", "index", "prompt_tokens", "completion_tokens", "total_tokens", "role", "status", "message",
          "details", "@type", "retryDelay", "code", "detail", "stop_reason", "input", "tool_use", "thinking",
          "input_tokens", "output_tokens", "content_block", "delta", "partial_json"]

scalars = st.none() | st.booleans() | st.integers(-5, 10**12) | st.floats(allow_nan=True) | \
    st.text(max_size=12) | st.sampled_from(["stop", "SAFETY", "STOP", "tool_calls", "length", "[DONE]", ""])
keys = st.sampled_from(FIELDS) | st.text(max_size=6)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(keys, inner, max_size=5), max_leaves=25)
objects = st.dictionaries(keys, json_values, max_size=6)
# near-valid replies: the right skeleton with random leaves, so the fuzz reaches the deep fields
inner = st.one_of(json_values, objects)
openai_like = st.fixed_dictionaries({"choices": st.lists(st.fixed_dictionaries(
    {"message": st.one_of(inner, st.fixed_dictionaries({"content": inner}, optional={"tool_calls": inner,
                                                                                       "refusal": inner}))},
    optional={"delta": st.one_of(inner, st.fixed_dictionaries({"content": inner}, optional={"tool_calls": inner})),
              "finish_reason": inner}), max_size=2)}, optional={"usage": inner})
gemini_like = st.fixed_dictionaries({"candidates": st.lists(st.fixed_dictionaries(
    {"content": st.one_of(inner, st.fixed_dictionaries({"parts": st.one_of(inner, st.lists(st.one_of(
        objects, st.fixed_dictionaries({"text": inner}, optional={"thought": inner}),
        st.fixed_dictionaries({"functionCall": st.one_of(inner, st.fixed_dictionaries(
            {"name": inner}, optional={"args": inner}))})), max_size=3))}))},
    optional={"finishReason": inner}), max_size=2)}, optional={"usageMetadata": inner, "promptFeedback": inner})
anthropic_like = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["content_block_delta", "content_block_start", "message_start",
                                                    "message_delta", "message_stop", "error", "ping"])},
                          optional={"index": inner, "delta": st.one_of(inner, st.fixed_dictionaries(
                              {"type": st.sampled_from(["text_delta", "thinking_delta", "input_json_delta"])},
                              optional={"text": inner, "thinking": inner, "partial_json": inner,
                                        "stop_reason": inner})),
                                    "content_block": st.one_of(inner, st.fixed_dictionaries(
                                        {"type": st.sampled_from(["text", "thinking", "tool_use"])},
                                        optional={"text": inner, "thinking": inner, "id": inner, "name": inner})),
                                    "message": st.one_of(inner, st.fixed_dictionaries({}, optional={"usage": inner})),
                                    "usage": inner, "error": inner}),
    st.fixed_dictionaries({"content": st.one_of(inner, st.lists(st.one_of(objects, st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "thinking", "tool_use", "redacted_thinking"])},
        optional={"text": inner, "thinking": inner, "id": inner, "name": inner, "input": inner})), max_size=3))},
        optional={"stop_reason": inner, "usage": inner}))
replies = st.one_of(objects, openai_like, gemini_like, anthropic_like)
errors = st.one_of(json_values, st.fixed_dictionaries({"error": st.one_of(inner, st.fixed_dictionaries(
    {"message": inner}, optional={"details": st.one_of(inner, st.lists(inner, max_size=3)), "status": inner,
                                  "code": inner, "type": inner}))}))


def _adapters():
    out = []
    for name in names():
        for base_url in (None, "http://127.0.0.1:1/v1"):
            try:
                out.append(make_adapter(name, base_url=base_url, api_key="k" * 16, model="m"))
                break
            except ValueError:
                continue
    assert {a.name for a in out} >= {"openai", "gemini"}
    return out


ADAPTERS = _adapters()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_result(r):
    assert isinstance(r, ChatCompletionResult)
    assert isinstance(r.content, str)
    assert r.reasoning_content is None or isinstance(r.reasoning_content, str)
    assert r.usage is None or isinstance(r.usage, dict)
    assert r.tool_calls is None or (isinstance(r.tool_calls, list) and all(isinstance(c, dict) for c in r.tool_calls))
    assert r.finish_reason is None or isinstance(r.finish_reason, str)


def _check_event(e):
    if e is None:
        return
    assert isinstance(e, StreamEvent)
    assert isinstance(e.content, str) and isinstance(e.reasoning, str)
    assert e.usage is None or isinstance(e.usage, dict)
    assert e.finish_reason is None or isinstance(e.finish_reason, str)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FUZZ
@given(data=replies)
def test_parse_response_raises_only_llm_errors(adapter, data):
    try:
        result = adapter.parse_response(data, model="m")
    except LLMError:
        return
    _check_result(result)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FUZZ
@given(chunk=st.one_of(json_values, replies))
def test_parse_stream_line_raises_only_llm_errors(adapter, chunk):
    try:
        event = adapter.parse_stream_line("data: " + json.dumps(chunk), model="m")
    except LLMError:
        return
    _check_event(event)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@FUZZ
@given(body=errors, status=st.sampled_from([400, 401, 403, 404, 408, 429, 500, 503]))
def test_map_error_always_returns_a_status_error(adapter, body, status):
    err = adapter.map_error(status, body, {"retry-after": "x"}, model="m")
    assert isinstance(err, APIStatusError) and err.status_code == status
    assert isinstance(str(err), str)


# a few named shapes that real proxies produced, as plain regression cases
@pytest.mark.parametrize("data", [
    {"choices": [{"message": "hello"}]},
    {"choices": [{"message": {"content": 5}}]},
    {"choices": [{"message": {"content": ["a", 1]}}]},
    {"choices": [{"message": {"content": "x", "tool_calls": "nope"}}]},
    {"choices": [{"message": {"content": "x"}}], "usage": "lots"},
    {"choices": "x"},
    {"choices": [None]},
    {"choices": [{"message": {"content": "x", "reasoning_content": 3}}]},
])
def test_openai_wrong_types_are_parse_errors(data):
    adapter = next(a for a in ADAPTERS if a.name == "openai")
    try:
        _check_result(adapter.parse_response(data, model="m"))
    except ResponseParseError:
        pass


@pytest.mark.parametrize("line", [
    'data: {"choices": ["x"]}',
    'data: {"choices": [{"delta": "x"}]}',
    'data: {"choices": [{"delta": {"content": 3}}]}',
    'data: {"choices": {"0": 1}}',
    'data: {"usage": 5, "choices": []}',
])
def test_openai_wrong_stream_types_are_parse_errors(line):
    adapter = next(a for a in ADAPTERS if a.name == "openai")
    try:
        _check_event(adapter.parse_stream_line(line, model="m"))
    except ResponseParseError:
        pass


@pytest.mark.parametrize("data", [
    {"candidates": ["x"]},
    {"candidates": [{"content": "x"}]},
    {"candidates": [{"content": {"parts": "x"}}]},
    {"candidates": [{"content": {"parts": [{"text": 5}]}}]},
    {"candidates": [{"content": {"parts": [{"functionCall": "f"}]}}]},
    {"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": 3}]},
    {"candidates": [{"content": {"parts": [{"text": "a"}]}}], "usageMetadata": "x"},
    {"candidates": [{"content": {"parts": [{"text": "a"}]}}], "usageMetadata": {"promptTokenCount": "many"}},
    {"candidates": [], "promptFeedback": "blocked"},
])
def test_gemini_wrong_types_are_parse_errors(data):
    adapter = next(a for a in ADAPTERS if a.name == "gemini")
    try:
        _check_result(adapter.parse_response(data, model="m"))
    except LLMError:
        pass


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@pytest.mark.parametrize("body", [
    {"error": {"message": "x", "details": 5}},
    {"error": {"message": "x", "details": [{"@type": "google.rpc.QuotaFailure", "violations": 5}]}},
    {"error": {"message": "x", "details": [{"@type": "google.rpc.RetryInfo", "retryDelay": {}}]}},
    {"error": {"message": ["a"], "status": 3, "code": {"x": 1}}},
    {"error": 7}, {"error": None}, [1, 2], "plain text", None, {"detail": [{"msg": "bad"}]},
])
def test_map_error_odd_bodies(adapter, body):
    err = adapter.map_error(429, body, {}, model="m")
    assert isinstance(err, APIStatusError) and err.status_code == 429
