"""Small, immutable configuration values."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResponseCacheConfig"]


@dataclass(frozen=True)
class ResponseCacheConfig:
    """Where and how long replies are cached.

    >>> client = LLMClient(model="m", base_url=url, cache=ResponseCacheConfig.with_ttl(3600))

    `ttl=0` never expires. The SQLite file is always safe to share (WAL journal, busy timeout);
    `use_ipc=True` also syncs each commit for other processes, `False` skips that for a single process.
    """

    enabled: bool = False
    ttl: int = 86400
    cache_dir: str = "~/.cache/flexllm/llm_response"
    use_ipc: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, (int, float)) or not 0 <= self.ttl < float("inf"):
            raise ValueError(f"ttl must be a number of seconds >= 0 (0 = never expires), got {self.ttl!r}")

    @classmethod
    def with_ttl(cls, seconds: int, **kwargs) -> "ResponseCacheConfig":
        """An enabled cache whose entries live `seconds` seconds."""
        return cls(enabled=True, ttl=seconds, **kwargs)  # checked by __post_init__; never truncated to 0

    @classmethod
    def persistent(cls, **kwargs) -> "ResponseCacheConfig":
        """An enabled cache whose entries never expire."""
        return cls(enabled=True, ttl=0, **kwargs)
