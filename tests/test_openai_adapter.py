"""The OpenAI-compatible adapter: request building, thinking dialects, reply and stream parsing."""
import pytest

from flexllm import OpenAIClient
from flexllm.errors import BadRequestError, QuotaExceededError, RateLimitError, ResponseParseError, ServerError
from flexllm.providers.openai import OpenAIAdapter, endpoint_kind, split_thoughts, thinking_params

MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("url, kind", [
    ("https://api.openai.com/v1", "openai"),
    ("https://dashscope.aliyuncs.com/compatible-mode/v1", "dashscope"),
    ("http://localhost:11434/v1", "ollama"),
    ("http://gpu1:8000/v1", "generic"),
])
def test_endpoint_kind(url, kind):
    assert endpoint_kind(url) == kind


@pytest.mark.parametrize("kind, thinking, expected", [
    ("openai", True, {"reasoning_effort": "medium"}),
    ("openai", False, {"reasoning_effort": "minimal"}),
    ("dashscope", True, {"enable_thinking": True}),
    ("dashscope", False, {"enable_thinking": False}),
    ("ollama", False, {"think": False}),
    ("generic", True, {"chat_template_kwargs": {"enable_thinking": True}}),
    ("generic", "low", {"reasoning_effort": "low"}),
    ("dashscope", "high", {"reasoning_effort": "high"}),
    ("generic", None, {}),
])
def test_thinking_params(kind, thinking, expected):
    assert thinking_params(kind, thinking) == expected


def test_invalid_thinking_rejected():
    with pytest.raises(ValueError):
        thinking_params("generic", "extreme")


def test_build_request_body_and_library_words_never_reach_it():
    adapter = OpenAIAdapter(base_url="http://h:1/v1/", api_key="sk-secret")
    spec = adapter.build_request(MSG, "m", {"temperature": 0.2, "skip_cache": True, "metadata": {"a": 1},
                                            "timeout": 5, "thinking": None, "max_tokens": 9})
    assert spec.url == "http://h:1/v1/chat/completions"
    assert spec.json == {"model": "m", "messages": MSG, "temperature": 0.2, "max_tokens": 9}
    assert spec.headers["Authorization"] == "Bearer sk-secret"
    assert spec.timeout == 5


def test_per_call_thinking_overrides_default_and_merges_template_kwargs():
    adapter = OpenAIAdapter(base_url="http://h:1/v1", thinking=True)
    body = adapter.build_request(MSG, "m", {"thinking": False,
                                            "chat_template_kwargs": {"x": 1}}).json
    assert body["chat_template_kwargs"] == {"enable_thinking": False, "x": 1}
    assert adapter.build_request(MSG, "m", {}).json["chat_template_kwargs"] == {"enable_thinking": True}


def test_stream_flag():
    adapter = OpenAIAdapter(base_url="http://h:1/v1")
    spec = adapter.build_request(MSG, "m", {"stream": False}, stream=True)
    assert spec.json["stream"] is True
    assert "stream" not in adapter.build_request(MSG, "m", {"stream": True}).json


@pytest.mark.parametrize("message, thought, answer", [
    ({"content": "A", "reasoning_content": "R"}, "R", "A"),
    ({"content": "A", "reasoning": "R"}, "R", "A"),
    ({"content": "<think>R</think>A"}, "R", "A"),
    ({"content": "<think>\nR\n</think>\n\nA"}, "R", "A"),
    ({"content": "R</think>A"}, "R", "A"),
    ({"content": "plain"}, "", "plain"),
    ({"content": None}, "", ""),
])
def test_parse_thoughts_forms(message, thought, answer):
    data = {"choices": [{"message": dict(message, role="assistant")}]}
    assert OpenAIClient.parse_thoughts(data) == {"thought": thought, "answer": answer}
    assert split_thoughts(message) == {"thought": thought, "answer": answer}


def test_parse_response_fills_result():
    adapter = OpenAIAdapter(base_url="http://h/v1")
    r = adapter.parse_response({"choices": [{"message": {"content": "<think>R</think>A"}, "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": 1}}, model="m")
    assert (r.content, r.reasoning_content, r.usage, r.finish_reason) == ("A", "R", {"prompt_tokens": 1}, "stop")


def test_parse_response_without_choices_is_parse_error():
    with pytest.raises(ResponseParseError, match="choices"):
        OpenAIAdapter(base_url="http://h/v1").parse_response({"error": "boom"}, model="m")


def test_stream_lines():
    a = OpenAIAdapter(base_url="http://h/v1")
    assert a.parse_stream_line("", model="m") is None
    assert a.parse_stream_line(": keep-alive", model="m") is None
    assert a.parse_stream_line("data: [DONE]", model="m").done
    e = a.parse_stream_line('data: {"choices":[{"delta":{"content":"x","reasoning_content":"r"}}]}', model="m")
    assert (e.content, e.reasoning) == ("x", "r")
    with pytest.raises(ResponseParseError):
        a.parse_stream_line("data: {nope", model="m")


@pytest.mark.parametrize("status, body, cls", [
    (400, {"error": {"message": "bad field", "type": "invalid_request_error"}}, BadRequestError),
    (429, {"error": {"message": "slow down", "type": "requests"}}, RateLimitError),
    (429, {"error": {"message": "no money", "type": "insufficient_quota", "code": "insufficient_quota"}},
     QuotaExceededError),
    (503, "upstream down", ServerError),
    (400, {"detail": "fastapi style"}, BadRequestError),
])
def test_map_error(status, body, cls):
    err = OpenAIAdapter(base_url="http://h/v1").map_error(status, body, {}, model="m")
    assert type(err) is cls
    assert err.status_code == status


def test_error_message_never_holds_the_key():
    adapter = OpenAIAdapter(base_url="http://h/v1", api_key="sk-live-123456")
    err = adapter.map_error(401, {"error": {"message": "Incorrect API key provided: sk-live-123456"}}, {}, model="m")
    assert "sk-live-123456" not in str(err)


def test_parse_thoughts_on_instances_and_llmclient():
    from flexllm import LLMClient

    data = {"choices": [{"message": {"content": "<think>R</think>A"}}]}
    assert LLMClient(model="m", base_url="http://h/v1").parse_thoughts(data) == {"thought": "R", "answer": "A"}
    assert LLMClient.parse_thoughts(data) == OpenAIClient(base_url="http://h/v1").parse_thoughts(data)


def test_base_url_without_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="http://"):
        OpenAIClient(base_url="localhost:8000/v1", model="m")
