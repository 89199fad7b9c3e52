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
