"""Provider adapters: pure functions from (messages, params) to HTTP requests and back, and their registry.

Adding a provider: write `flexllm/providers/<name>.py` with a `ProviderAdapter` subclass (pure:
`build_request`, `parse_response`, `parse_stream_line`, `stream_complete`, `map_error`, `cache_params`;
`stream_parser` when a stream's lines need state, `stream_result` when a finished stream can still be a
refusal) and, at its end, `register(Provider(name, factory, hosts=..., model_prefixes=...,
key_prefixes=..., env_keys=..., exclusive_params=...))`; every public module of this package is imported
here, so `LLMClient(provider=name)`, auto-detection, the CLI's `--provider` choices and the pool pick it
up. Then add its mock dialect as `flexllm/mock/_<name>.py` (the mock server looks a dialect module up by
the provider's name), its prices in `pricing.py`, and tests that talk HTTP to the mock — nothing else.
"""
import importlib
import pkgutil

from .base import ProviderAdapter, RequestSpec
from .registry import Provider, detect, get, make_adapter, names, register, resolve_key

__all__ = ["Provider", "ProviderAdapter", "RequestSpec", "detect", "get", "make_adapter", "names", "register",
           "resolve_key"]

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_") and _module not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module}")
