"""Price lookups by model name: exact, provider-prefixed, dated snapshots — never a different model's price."""
import pytest

from flexllm.pricing import MODEL_PRICING, get_model_pricing


@pytest.mark.parametrize("name, key", [
    ("gpt-4o", "gpt-4o"), ("GPT-4o", "gpt-4o"), (" gpt-4o ", "gpt-4o"),
    ("openai/gpt-4o-mini", "gpt-4o-mini"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4o-2024-08-06", "gpt-4o"), ("gpt-4-0613", "gpt-4"), ("o1-2024-12-17", "o1"),
    ("models/gemini-2.5-flash", "gemini-2.5-flash"), ("google/gemini-2.5-pro", "gemini-2.5-pro"),
    ("gemini-2.5-flash-001", "gemini-2.5-flash"), ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"), ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("anthropic/claude-3-5-haiku-latest", "claude-3-5-haiku"), ("gpt-4o:latest", "gpt-4o"),
    ("gemini-2.5-flash-preview", "gemini-2.5-flash"),
])
def test_known_names_and_snapshots(name, key):
    assert get_model_pricing(name) == MODEL_PRICING[key]


@pytest.mark.parametrize("name", [
    "gpt-40", "gpt-4.5-preview", "gpt-5-pro", "o3-deep-research", "claude-opus-4-8", "gpt-4o-transcribe-x",
    "gpt-4ox", "", None, "qwen-plus-x",
])
def test_other_models_are_unknown_not_mispriced(name):
    assert get_model_pricing(name) is None


def test_names_added_or_removed_are_seen_at_once_despite_the_remembered_lookups():
    # the name a model is priced as is remembered per name (every request is priced); every way of
    # changing MODEL_PRICING's names must be seen by the next lookup
    name, table = "acme-7b-2025-01-01", MODEL_PRICING
    assert get_model_pricing(name) is None and get_model_pricing(name) is None  # remembered as unknown
    try:
        table["acme-7b"] = {"input": 1e-6, "output": 2e-6}
        assert get_model_pricing(name) == {"input": 1e-6, "output": 2e-6}
        table.update({"acme-7b-2025": {"input": 3e-6, "output": 4e-6}})  # a longer, closer name
        assert get_model_pricing("acme-7b-2025-01-01") == {"input": 1e-6, "output": 2e-6}  # "-01" is no snapshot of it
        table |= {"acme-7b-2025-01-01": {"input": 5e-6, "output": 6e-6}}
        assert get_model_pricing(name)["input"] == 5e-6
        table.pop("acme-7b-2025-01-01")
        assert get_model_pricing(name)["input"] == 1e-6
        del table["acme-7b"]
        assert get_model_pricing(name) is None
        table.setdefault("acme-7b", {"input": 7e-6, "output": 8e-6})
        assert get_model_pricing(name)["input"] == 7e-6
    finally:
        for key in ("acme-7b", "acme-7b-2025", "acme-7b-2025-01-01"):
            table.pop(key, None)
    assert get_model_pricing(name) is None


def test_remembered_lookups_stay_bounded_with_many_distinct_names():
    from flexllm import pricing

    for i in range(10_000):
        get_model_pricing(f"per-line-model-{i}")
    assert len(pricing._KEY_MEMO) <= 4096
