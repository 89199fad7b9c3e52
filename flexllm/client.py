"""The clients: LLMClient (picks the provider), OpenAIClient, GeminiClient and ClaudeClient.

Each is a thin shell: it builds a provider adapter and a shared Pipeline; every public method comes
from `ClientAPI`. One client may be shared by all threads of a web server.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from . import _cancel
from ._api import ClientAPI
from ._constants import DEFAULT_CONCURRENCY, DEFAULT_RETRY_DELAY, DEFAULT_RETRY_TIMES, DEFAULT_TIMEOUT
from ._netconfig import TransportOptions
from ._pipeline import Outcome, Pipeline
from .config import ResponseCacheConfig
from .providers import registry
from .providers.base import ProviderAdapter
from .providers.anthropic import split_claude_thoughts
from .providers.openai import split_thoughts
from .providers.registry import make_adapter
from .ratelimit import RateLimit
from .types import StreamEvent

__all__ = ["ClaudeClient", "GeminiClient", "LLMClient", "OpenAIClient"]

class _BaseClient(ClientAPI):
    """A client over one provider adapter; see `LLMClient` for the parameters.

    Every client also takes the transport options `proxy=` ("http://proxy:3128", "https://…",
    "socks5://user:pass@host:1080" with the `socks` extra; the password never appears in a repr, log
    line or error), `verify=` (True, False, a CA bundle path or an `ssl.SSLContext`) and `http2=False`
    (True needs the `http2` extra). Without proxy=, the HTTP(S)_PROXY environment variables apply.
    """

    def __init__(self, adapter: ProviderAdapter, *, model: Optional[str], cache: Optional[ResponseCacheConfig],
                 concurrency_limit: int, max_qps: Optional[float], retry_times: int, retry_delay: float,
                 timeout: float, sleep: Callable[[float], None] = _cancel.sleep,
                 retryable: Optional[Callable[[BaseException], bool]] = None,
                 rate_limit: Optional[RateLimit] = None, proxy: Optional[str] = None, verify: Any = True,
                 http2: bool = False) -> None:
        if cache is not None and not isinstance(cache, ResponseCacheConfig):
            raise TypeError("cache must be a ResponseCacheConfig, e.g. ResponseCacheConfig.with_ttl(3600)")
        self.model = model
        self.concurrency_limit = int(concurrency_limit)
        self.max_qps = max_qps
        #: the shared rate budget given as rate_limit= (max_qps= is a private one), or None
        self.rate_limit = rate_limit
        self.adapter = adapter
        self._pipeline = Pipeline(adapter, timeout=timeout, concurrency_limit=concurrency_limit, max_qps=max_qps,
                                  retry_times=retry_times, retry_delay=retry_delay, cache=cache, sleep=sleep,
                                  rate_limit=rate_limit, options=TransportOptions(proxy, verify, http2),
                                  **({"retryable": retryable} if retryable else {}))

    @property
    def provider(self) -> str:
        """The provider adapter's registered name ("openai", "gemini", "anthropic", …)."""
        return self.adapter.name

    def _complete(self, messages: List[dict], model: str, params: Dict[str, Any], *, skip_cache: bool,
                  read_cache: bool) -> Outcome:
        return self._pipeline.complete(messages, model, params, skip_cache=skip_cache, read_cache=read_cache)

    def _stream(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                skip_cache: bool) -> Iterator[StreamEvent]:
        return self._pipeline.stream(messages, model, params, skip_cache=skip_cache)

    def _batch_runner(self) -> Pipeline:
        return self._pipeline

    def close(self) -> None:
        """Close pooled connections, the cache and the async thread pool. The client can still be used."""
        super().close()
        self._pipeline.close()

    def __repr__(self) -> str:  # never a key; safe on a half-built object (traceback locals of __init__)
        adapter = getattr(self, "adapter", None)
        return f"{type(self).__name__}(provider={getattr(adapter, 'name', None)!r}, model={getattr(self, 'model', None)!r})"


class OpenAIClient(_BaseClient):
    """Client for any OpenAI-compatible server (OpenAI, DeepSeek, Qwen, vLLM, SGLang, Ollama, …).

    >>> client = OpenAIClient(base_url="http://localhost:8000/v1", model="qwen2.5-7b")
    >>> client.chat_completions_sync([{"role": "user", "content": "hi"}])

    `thinking` (None/True/False/"low"…) is the default for every call; a call's `thinking=` wins.
    `thinking_style` ("openai", "vllm", "sglang", "dashscope", "ollama") names how this server turns
    thinking on; None detects it from the URL (see the README); a call's `thinking_style=` wins.
    """

    def __init__(self, base_url: str, api_key: str = "EMPTY", model: Optional[str] = None, *,
                 thinking: Any = None, cache: Optional[ResponseCacheConfig] = None,
                 concurrency_limit: int = DEFAULT_CONCURRENCY, max_qps: Optional[float] = None,
                 retry_times: int = DEFAULT_RETRY_TIMES, retry_delay: float = DEFAULT_RETRY_DELAY,
                 timeout: float = DEFAULT_TIMEOUT, default_headers: Optional[Mapping[str, str]] = None,
                 thinking_style: Optional[str] = None, **options: Any) -> None:
        adapter = make_adapter("openai", base_url=base_url, api_key=api_key, model=model, thinking=thinking,
                               default_headers=default_headers, thinking_style=thinking_style)
        super().__init__(adapter, model=model, cache=cache,
                         concurrency_limit=concurrency_limit, max_qps=max_qps, retry_times=retry_times,
                         retry_delay=retry_delay, timeout=timeout, **options)

    @staticmethod
    def parse_thoughts(response_data: dict) -> dict:
        """`{"thought", "answer"}` from a raw reply (reasoning_content, reasoning, or `<think>` tags)."""
        try:
            message = response_data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            message = response_data if isinstance(response_data, dict) else {}
        return split_thoughts(message)


class GeminiClient(_BaseClient):
    """Client for Google Gemini: the Developer API (api_key) or Vertex AI (project_id, use_vertex_ai=True).

    >>> GeminiClient(api_key="...", model="gemini-2.5-flash")
    >>> GeminiClient(project_id="my-proj", location="us-central1", use_vertex_ai=True)

    The key travels in the `x-goog-api-key` header, never in the URL. `thinking` takes False, True or
    "minimal" / "low" / "medium" / "high".
    """

    def __init__(self, api_key: Optional[str] = None, model: str = "gemini-2.5-flash", *,
                 project_id: Optional[str] = None, location: str = "us-central1", use_vertex_ai: bool = False,
                 access_token: Optional[str] = None, credentials: Any = None, base_url: Optional[str] = None,
                 thinking: Any = None, cache: Optional[ResponseCacheConfig] = None,
                 concurrency_limit: int = DEFAULT_CONCURRENCY, max_qps: Optional[float] = None,
                 retry_times: int = DEFAULT_RETRY_TIMES, retry_delay: float = DEFAULT_RETRY_DELAY,
                 timeout: float = DEFAULT_TIMEOUT, **options: Any) -> None:
        adapter = make_adapter("gemini", api_key=api_key, base_url=base_url, model=model, thinking=thinking,
                               project_id=project_id, location=location, use_vertex_ai=use_vertex_ai,
                               access_token=access_token, credentials=credentials)
        super().__init__(adapter, model=model, cache=cache, concurrency_limit=concurrency_limit, max_qps=max_qps,
                         retry_times=retry_times, retry_delay=retry_delay, timeout=timeout, **options)


class ClaudeClient(_BaseClient):
    """Client for Anthropic Claude (the Messages API).

    >>> client = ClaudeClient(model="claude-sonnet-4-5")          # key from ANTHROPIC_API_KEY
    >>> client.chat_completions_sync([{"role": "user", "content": "hi"}])

    Takes OpenAI-shaped messages, tools and parameters. `max_tokens` defaults to 4096 (the API requires
    one; plus the thinking budget when thinking is on). `thinking` takes True, False, "low" / "medium" /
    "high" or a token budget (>= 1024); thinking blocks come back as `reasoning_content`.
    """

    def __init__(self, api_key: Optional[str] = None, model: str = "claude-sonnet-4-5",
                 base_url: str = "https://api.anthropic.com", *, thinking: Any = None,
                 cache: Optional[ResponseCacheConfig] = None, concurrency_limit: int = DEFAULT_CONCURRENCY,
                 max_qps: Optional[float] = None, retry_times: int = DEFAULT_RETRY_TIMES,
                 retry_delay: float = DEFAULT_RETRY_DELAY, timeout: float = DEFAULT_TIMEOUT,
                 default_headers: Optional[Mapping[str, str]] = None, **options: Any) -> None:
        adapter = make_adapter("anthropic", base_url=base_url, api_key=api_key, model=model, thinking=thinking,
                               default_headers=default_headers)
        super().__init__(adapter, model=model, cache=cache, concurrency_limit=concurrency_limit, max_qps=max_qps,
                         retry_times=retry_times, retry_delay=retry_delay, timeout=timeout, **options)

    @staticmethod
    def parse_thoughts(response_data: dict) -> dict:
        """`{"thought", "answer"}` from a raw Messages API reply (thinking and text blocks), or an OpenAI-shaped one."""
        if isinstance(response_data, dict) and response_data.get("type") == "message" \
                and isinstance(response_data.get("content"), list):
            text, thought, _ = split_claude_thoughts(response_data["content"])
            return {"thought": thought, "answer": text}
        return OpenAIClient.parse_thoughts(response_data)


def detect_provider(base_url: Optional[str], model: Optional[str], use_vertex_ai: bool = False,
                    api_key: Optional[str] = None) -> str:
    """The provider `provider="auto"` picks (the registry's detection rules; "openai" when none matches)."""
    return registry.detect(base_url, model, api_key, {"use_vertex_ai": use_vertex_ai})


class LLMClient(_BaseClient):
    """The unified client: picks the provider from `provider`, the base_url and the model.

    >>> client = LLMClient(model="qwen2.5", base_url="http://localhost:8000/v1", max_qps=20)
    >>> client.chat_completions_sync([{"role": "user", "content": "hi"}])

    `provider="auto"` reads the provider registry: Gemini for generativelanguage / aiplatform URLs,
    `use_vertex_ai=True`, or a `gemini-*` model given no base_url; Anthropic for anthropic.com URLs or a
    `claude-*` model given no base_url; OpenAI-compatible otherwise. Gemini-only options
    (project_id, location, use_vertex_ai, access_token, credentials) and `thinking` are accepted as
    keywords. Every client takes `rate_limit=RateLimit(...)`: a budget of request starts and tokens
    shared by every client given the same RateLimit — in this process, or across processes and hosts
    through a SQLite file or Redis (`max_qps=` stays a private per-client limit).
    """

    def __init__(self, model: str, base_url: Optional[str] = None, api_key: str = "EMPTY", provider: str = "auto",
                 cache: Optional[ResponseCacheConfig] = None, concurrency_limit: int = DEFAULT_CONCURRENCY,
                 max_qps: Optional[float] = None, retry_times: int = DEFAULT_RETRY_TIMES,
                 retry_delay: float = DEFAULT_RETRY_DELAY, timeout: float = DEFAULT_TIMEOUT, *,
                 thinking: Any = None, project_id: Optional[str] = None, location: str = "us-central1",
                 use_vertex_ai: bool = False, access_token: Optional[str] = None, credentials: Any = None,
                 default_headers: Optional[Mapping[str, str]] = None, thinking_style: Optional[str] = None,
                 **options: Any) -> None:
        if provider == "auto":
            provider = detect_provider(base_url, model, use_vertex_ai, api_key)
        elif provider not in registry.names():
            raise ValueError(f"provider must be one of {('auto',) + registry.names()}, got {provider!r}")
        adapter = make_adapter(provider, base_url=base_url, api_key=api_key, model=model, thinking=thinking,
                               default_headers=default_headers, project_id=project_id, location=location,
                               use_vertex_ai=use_vertex_ai, access_token=access_token, credentials=credentials,
                               thinking_style=thinking_style)
        super().__init__(adapter, model=model, cache=cache, concurrency_limit=concurrency_limit, max_qps=max_qps,
                         retry_times=retry_times, retry_delay=retry_delay, timeout=timeout, **options)

    parse_thoughts = staticmethod(ClaudeClient.parse_thoughts)
