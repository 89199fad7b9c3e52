"""Prompt-cache tokens are priced as providers bill them: OpenAI's `prompt_tokens_details.cached_tokens` and
DeepSeek's `prompt_cache_hit_tokens` at the model's cached-input price (full input price when none is known),
Claude's 1-hour cache writes at 2x the input price (5-minute writes 1.25x, reads 0.1x). Checked through the
batch summary (and the --max-cost settle path), with replies from the mock server."""
import json

import pytest

from flexllm import ClaudeClient, LLMClient

from .conftest import user

M = 1e6


def run(client, text, tmp_path, **kw):
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}.jsonl"  # a fresh file each run: nothing resumed
    _, summary = client.chat_completions_batch_sync([user(text)], output_file=str(out), show_progress=False,
                                                    return_summary=True, **kw)
    return json.loads(out.read_text())["usage"], summary


@pytest.mark.parametrize("model, directive, field, inp, cached, outp", [
    ("gpt-4o-mini", "cache_read", "prompt_tokens_details", 0.15, 0.075, 0.60),  # OpenAI: half price
    ("gpt-4.1-2025-04-14", "cache_read", "prompt_tokens_details", 2.0, 0.50, 8.0),  # a snapshot of a known model
    ("deepseek-chat", "cache_hit", "prompt_cache_hit_tokens", 0.14, 0.028, 0.28),  # DeepSeek's own field
    ("gpt-4", "cache_read", "prompt_tokens_details", 30.0, 30.0, 60.0),  # no cached price known: full price
    ("gemini-2.5-flash", "cache_read", "cached_tokens", 0.30, 0.03, 2.50),  # Gemini's cachedContentTokenCount
])
def test_cached_prompt_tokens_are_priced_at_the_cached_input_price(server, tmp_path, model, directive, field, inp,
                                                                     cached, outp):
    gemini = model.startswith("gemini")
    client = LLMClient(base_url=server.root_url if gemini else server.url, api_key="k", model=model,
                       provider="gemini" if gemini else "auto", retry_delay=0.01)
    for cap in (None, 1000.0):  # the plain summary and the --max-cost settle path agree
        usage, summary = run(client, f"[[mock:{directive}=100000]] hi", tmp_path, max_cost_usd=cap)
        assert field in usage  # the provider's own shape reached the record
        hit = usage[field]["cached_tokens"] if field == "prompt_tokens_details" else usage[field]
        assert hit == 100000 and usage["prompt_tokens"] > hit
        expected = ((usage["prompt_tokens"] - hit) * inp + hit * cached + usage["completion_tokens"] * outp) / M
        assert summary["estimated_cost_usd"] == pytest.approx(expected, rel=1e-6), (model, cap)


def test_cached_tokens_larger_than_the_prompt_are_not_a_negative_price(server, tmp_path):
    """A proxy reporting more cached tokens than prompt tokens: the prompt is priced as all cached, never less."""
    client = LLMClient(base_url=server.url, api_key="k", model="gpt-4o-mini", retry_delay=0.01)
    from flexllm.pricing import usage_cost
    cost = usage_cost("gpt-4o-mini", {"prompt_tokens": 10, "completion_tokens": 0,
                                      "prompt_tokens_details": {"cached_tokens": 10 ** 6}})
    assert cost == pytest.approx(10 * 0.075 / M)
    assert usage_cost("gpt-4o-mini", {"prompt_tokens": 10, "prompt_tokens_details": "junk"}) == \
        pytest.approx(10 * 0.15 / M)
    assert client.chat_completions_sync(user("hi"))  # the client itself is unaffected


def test_claude_one_hour_cache_writes_cost_twice_the_input_price(server, tmp_path):
    """Anthropic bills a 1-hour cache write at 2x the input price; they were priced as 5-minute writes (1.25x)."""
    client = ClaudeClient(base_url=server.root_url, api_key="k", model="claude-haiku-4-5", retry_delay=0.01)
    inp, outp = 1.0, 5.0  # claude-haiku-4-5, USD per million tokens
    usage, summary = run(client, "[[mock:cache_write=300000;cache_write_1h=200000;cache_read=50000]] hi", tmp_path)
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 100000, "ephemeral_1h_input_tokens": 200000}
    fresh = usage["prompt_tokens"] - 300000 - 50000
    expected = (fresh * inp + 100000 * 1.25 * inp + 200000 * 2 * inp + 50000 * 0.1 * inp
                + usage["completion_tokens"] * outp) / M
    assert summary["estimated_cost_usd"] == pytest.approx(expected, rel=1e-6)
    # streamed: the breakdown arrives in message_start and survives message_delta's totals
    events = list(client.chat_completions_stream_sync(user("[[mock:cache_write=30;cache_write_1h=30]] a"),
                                                      events=True))
    streamed = [e.usage for e in events if e.usage][-1]
    assert streamed["cache_creation"]["ephemeral_1h_input_tokens"] == 30
