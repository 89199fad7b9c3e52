"""Provider adapters: pure functions from (messages, params) to HTTP requests and back."""
from .base import ProviderAdapter, RequestSpec

__all__ = ["ProviderAdapter", "RequestSpec"]
