"""`thinking_style=` names the thinking dialect of an OpenAI-compatible server (issue 11 item 26).

A proxy (LiteLLM, a gateway) in front of an OpenAI reasoning model is an "unknown URL": without a style the
default detection sends vLLM's `chat_template_kwargs`, which such a proxy forwards uselessly.
"""
import pytest

from flexllm import LLMClient, OpenAIClient, ResponseCacheConfig

from .conftest import user


@pytest.mark.parametrize("style, thinking, expected", [
    ("openai", True, {"reasoning_effort": "medium"}),
    ("openai", False, {"reasoning_effort": "minimal"}),
    ("vllm", True, {"chat_template_kwargs": {"enable_thinking": True}}),
    ("sglang", False, {"chat_template_kwargs": {"enable_thinking": False}}),
    ("dashscope", True, {"enable_thinking": True}),
    ("ollama", False, {"think": False}),
    (None, True, {"chat_template_kwargs": {"enable_thinking": True}}),  # default for an unknown URL
])
def test_client_style_decides_the_fields(server, style, thinking, expected):
    c = OpenAIClient(base_url=server.url, model="m", thinking=thinking, thinking_style=style)
    c.chat_completions_sync(user("x"))
    body = server.requests[-1].body
    for key in ("reasoning_effort", "chat_template_kwargs", "enable_thinking", "think", "thinking_style"):
        assert body.get(key) == expected.get(key), key


def test_per_call_style_wins_and_never_reaches_the_body(server):
    c = LLMClient(model="m", base_url=server.url, thinking_style="vllm")
    c.chat_completions_sync(user("x"), thinking=True, thinking_style="openai")
    body = server.requests[-1].body
    assert body["reasoning_effort"] == "medium" and "chat_template_kwargs" not in body
    assert "thinking_style" not in body and "thinking" not in body
    c.chat_completions_sync(user("x"), thinking=True)
    assert server.requests[-1].body["chat_template_kwargs"] == {"enable_thinking": True}


def test_style_is_part_of_the_cache_key_only_when_thinking_is_set(server, tmp_path):
    c = OpenAIClient(base_url=server.url, model="m", cache=ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path)))
    c.chat_completions_sync(user("k"), thinking=True, thinking_style="openai")
    c.chat_completions_sync(user("k"), thinking=True, thinking_style="vllm")
    assert len(server.requests) == 2
    c.chat_completions_sync(user("plain"))
    c.chat_completions_sync(user("plain"), thinking_style="openai")
    assert len(server.requests) == 3


@pytest.mark.parametrize("bad", ["gpt", "OpenAI ", 3])
def test_unknown_style_is_a_clear_error(server, bad):
    with pytest.raises(ValueError, match="thinking_style"):
        OpenAIClient(base_url=server.url, model="m", thinking_style=bad)
    c = OpenAIClient(base_url=server.url, model="m")
    with pytest.raises(ValueError, match="thinking_style"):
        c.chat_completions_sync(user("x"), thinking=True, thinking_style=bad)
    assert server.requests == []
