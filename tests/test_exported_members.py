"""The public namespace: one sorted __all__, every name importable, every public module declares __all__."""
import importlib
import pkgutil

import flexllm


def test_all_is_sorted_and_importable():
    assert flexllm.__all__ == sorted(flexllm.__all__)
    for name in flexllm.__all__:
        assert getattr(flexllm, name) is not None, name


def test_reference_names_exist():
    for name in ("LLMClient", "OpenAIClient", "GeminiClient", "LLMClientPool", "ChatCompletionResult",
                 "BatchResultItem", "ResponseCacheConfig", "count_tokens", "count_messages_tokens", "estimate_cost",
                 "estimate_batch_cost", "messages_hash", "MODEL_PRICING", "extract_code_snippets", "parse_to_obj",
                 "parse_to_code", "ProviderRouter", "ProviderConfig", "create_router_from_urls"):
        assert name in flexllm.__all__, name


def test_public_modules_declare_all():
    for info in pkgutil.walk_packages(flexllm.__path__, "flexllm."):
        if info.name.rsplit(".", 1)[-1].startswith("_") or info.name.endswith(("__main__", "demo")):
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), info.name
