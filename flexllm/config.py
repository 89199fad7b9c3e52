"""Small, immutable configuration values."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResponseCacheConfig"]


@dataclass(frozen=True)
class ResponseCacheConfig:
    """Where and how long replies are cached.

    >>> client = LLMClient(model="m", base_url=url, cache=ResponseCacheConfig.with_ttl(3600))

    `ttl=0` never expires. `use_ipc=True` makes the SQLite file safe to share between processes
    (WAL journal, busy timeout); `False` is for a single process and skips those costs.
    """

    enabled: bool = False
    ttl: int = 86400
    cache_dir: str = "~/.cache/flexllm/llm_response"
    use_ipc: bool = True

    @classmethod
    def with_ttl(cls, seconds: int, **kwargs) -> "ResponseCacheConfig":
        """An enabled cache whose entries live `seconds` seconds."""
        return cls(enabled=True, ttl=int(seconds), **kwargs)

    @classmethod
    def persistent(cls, **kwargs) -> "ResponseCacheConfig":
        """An enabled cache whose entries never expire."""
        return cls(enabled=True, ttl=0, **kwargs)
