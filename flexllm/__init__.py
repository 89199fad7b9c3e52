"""flexllm: reliable LLM requests — single, streamed, or hundreds of thousands in a resumable batch.

Synchronous core (httpx in threads), async facade, SQLite response cache, token-bucket QPS limit,
retries with server hints, failover pools, token/cost estimates and reply parsers.
"""
from ._checkpoint import OutputFileLockedError
from ._hashing import messages_hash
from .client import ClaudeClient, GeminiClient, LLMClient, OpenAIClient
from .config import ResponseCacheConfig
from .errors import (
                     APIConnectionError,
                     APIStatusError,
                     APITimeoutError,
                     AuthenticationError,
                     BadRequestError,
                     ContentBlockedError,
                     LLMError,
                     NotFoundError,
                     QuotaExceededError,
                     RateLimitError,
                     RefusalError,
                     ResponseParseError,
                     ResponseValidationError,
                     ServerError,
                     StreamTruncatedError,
)
from .parsing import extract_code_snippets, parse_to_code, parse_to_obj
from .pool import LLMClientPool
from .pricing import BATCH_DISCOUNT, MODEL_PRICING, estimate_batch_cost, estimate_cost, get_model_pricing
from .ratelimit import RateLimit, RateLimitStoreError
from .router import ProviderConfig, ProviderRouter, create_router_from_urls
from .tokens import count_messages_tokens, count_tokens
from .types import BatchResultItem, ChatCompletionResult, StreamEvent

__version__ = "0.3.0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BATCH_DISCOUNT",
    "BadRequestError",
    "BatchResultItem",
    "ChatCompletionResult",
    "ClaudeClient",
    "ContentBlockedError",
    "GeminiClient",
    "LLMClient",
    "LLMClientPool",
    "LLMError",
    "MODEL_PRICING",
    "NotFoundError",
    "OpenAIClient",
    "OutputFileLockedError",
    "ProviderConfig",
    "ProviderRouter",
    "QuotaExceededError",
    "RateLimit",
    "RateLimitError",
    "RateLimitStoreError",
    "RefusalError",
    "ResponseCacheConfig",
    "ResponseParseError",
    "ResponseValidationError",
    "ServerError",
    "StreamEvent",
    "StreamTruncatedError",
    "count_messages_tokens",
    "count_tokens",
    "create_router_from_urls",
    "estimate_batch_cost",
    "estimate_cost",
    "extract_code_snippets",
    "get_model_pricing",
    "messages_hash",
    "parse_to_code",
    "parse_to_obj",
]
