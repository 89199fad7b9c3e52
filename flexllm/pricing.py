"""Model prices and cost estimates.

Prices are USD per token (written as dollars per million / 1e6), standard tier, short context, as
published by each provider and taken on 2025-11-20. They are list prices and they change: pass your
own numbers by editing `MODEL_PRICING` (a plain dict) if yours differ.
"""
from __future__ import annotations

import re

import threading
from typing import Any, Dict, Iterable, List, Optional

from ._logging import get_logger

__all__ = ["BATCH_DISCOUNT", "CACHED_INPUT_PRICING", "MODEL_PRICING", "PRICES_TAKEN_ON", "estimate_batch_cost",
           "estimate_cost", "get_cached_input_price", "get_model_pricing", "usage_cost"]

logger = get_logger(__name__)

PRICES_TAKEN_ON = "2025-11-20"

#: provider batch APIs (OpenAI Batch, Anthropic Message Batches, Gemini batch mode) bill this fraction of
#: the live price for input and output tokens alike (50% at all three on PRICES_TAKEN_ON)
BATCH_DISCOUNT = 0.5


def _p(inp: float, out: float) -> Dict[str, float]:
    return {"input": inp / 1e6, "output": out / 1e6}


class _PriceTable(dict):
    """MODEL_PRICING: a plain dict to its users, which counts changes to its names, so the name a model is
    priced as (a scan of every name, once per request) can be remembered until the table changes."""

    version = 0

    def _changed(self) -> None:
        self.version += 1
        _KEY_MEMO.clear()

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self:
            self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._changed()

    def __ior__(self, other: Any) -> "_PriceTable":
        self.update(other)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(*args, **kwargs)
        self._changed()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self._changed()
        return super().setdefault(key, default)

    def pop(self, *args: Any) -> Any:  # type: ignore[override]
        value = super().pop(*args)
        self._changed()
        return value

    def popitem(self) -> Any:
        item = super().popitem()
        self._changed()
        return item

    def clear(self) -> None:
        super().clear()
        self._changed()

    def __reduce__(self) -> Any:  # a copy or pickle is a plain dict
        return dict, (dict(self),)


_KEY_MEMO: Dict[str, Optional[str]] = {}  # model name as given -> its MODEL_PRICING name (None: unknown)

MODEL_PRICING: Dict[str, Dict[str, float]] = _PriceTable({
    # OpenAI
    "gpt-4o": _p(2.5, 10), "gpt-4o-mini": _p(0.15, 0.60), "chatgpt-4o-latest": _p(5, 15),
    "gpt-4": _p(30, 60), "gpt-4-32k": _p(60, 120), "gpt-4-turbo": _p(10, 30),
    "gpt-3.5-turbo": _p(0.5, 1.5),
    "gpt-4.1": _p(2, 8), "gpt-4.1-mini": _p(0.4, 1.6), "gpt-4.1-nano": _p(0.1, 0.4),
    "gpt-5": _p(1.25, 10), "gpt-5-mini": _p(0.25, 2), "gpt-5-nano": _p(0.05, 0.4), "gpt-5.1": _p(1.25, 10),
    "o1": _p(15, 60), "o1-mini": _p(1.1, 4.4), "o1-pro": _p(150, 600),
    "o3": _p(2, 8), "o3-mini": _p(1.1, 4.4), "o3-pro": _p(20, 80), "o4-mini": _p(1.1, 4.4),
    # Anthropic
    "claude-3-5-sonnet": _p(3, 15), "claude-3-5-haiku": _p(0.8, 4), "claude-3-7-sonnet": _p(3, 15),
    "claude-3-opus": _p(15, 75), "claude-3-haiku": _p(0.25, 1.25),
    "claude-sonnet-4": _p(3, 15), "claude-sonnet-4-5": _p(3, 15), "claude-opus-4": _p(15, 75),
    "claude-opus-4-1": _p(15, 75), "claude-opus-4-5": _p(5, 25), "claude-haiku-4-5": _p(1, 5),
    "claude-opus-4-6": _p(5, 25), "claude-opus-4-7": _p(5, 25), "claude-sonnet-4-6": _p(3, 15),
    # Google Gemini
    "gemini-2.5-pro": _p(1.25, 10), "gemini-2.5-flash": _p(0.30, 2.50), "gemini-2.5-flash-lite": _p(0.10, 0.40),
    "gemini-2.0-flash": _p(0.10, 0.40), "gemini-2.0-flash-lite": _p(0.075, 0.30),
    "gemini-1.5-pro": _p(1.25, 5), "gemini-1.5-flash": _p(0.075, 0.30), "gemini-3-pro-preview": _p(2, 12),
    # DeepSeek
    "deepseek-chat": _p(0.14, 0.28), "deepseek-reasoner": _p(0.55, 2.19),
    # Qwen (DashScope international)
    "qwen-max": _p(2, 6), "qwen-plus": _p(0.4, 1.2), "qwen-turbo": _p(0.05, 0.2), "qwen-flash": _p(0.05, 0.4),
    "qwen3-max": _p(1.2, 6),
})

#: Anthropic's prompt-cache prices, as multiples of the input price: 5-minute cache writes, 1-hour cache
#: writes (`usage.cache_creation.ephemeral_1h_input_tokens`), reads
CACHE_WRITE_FACTOR = 1.25
CACHE_WRITE_1H_FACTOR = 2.0
CACHE_READ_FACTOR = 0.1


#: USD per prompt token served from the provider's prompt cache (OpenAI `prompt_tokens_details.cached_tokens`,
#: DeepSeek `prompt_cache_hit_tokens`, Gemini `cachedContentTokenCount`), where the provider publishes one.
#: A model missing here has its cached tokens priced at its full input price: never under-counted. Claude's
#: cache prices are multiples of its input price (reads 0.1x, listed here; writes: see usage_cost).
CACHED_INPUT_PRICING: Dict[str, float] = {k: v / 1e6 for k, v in {
    "gpt-4o": 1.25, "gpt-4o-mini": 0.075, "gpt-4.1": 0.5, "gpt-4.1-mini": 0.1, "gpt-4.1-nano": 0.025,
    "gpt-5": 0.125, "gpt-5-mini": 0.025, "gpt-5-nano": 0.005, "gpt-5.1": 0.125,
    "o1": 7.5, "o1-mini": 0.55, "o3": 0.5, "o3-mini": 0.55, "o4-mini": 0.275,
    "gemini-2.5-pro": 0.125, "gemini-2.5-flash": 0.03, "gemini-2.5-flash-lite": 0.01, "gemini-2.0-flash": 0.025,
    "gemini-3-pro-preview": 0.2,
    "deepseek-chat": 0.028, "deepseek-reasoner": 0.028,
}.items()}
CACHED_INPUT_PRICING.update({k: v["input"] * CACHE_READ_FACTOR for k, v in MODEL_PRICING.items()
                             if k.startswith("claude")})

_PREFIXES = ("openai/", "anthropic/", "google/", "models/", "deepseek/", "qwen/", "dashscope/")
_warned: set = set()
_warn_lock = threading.Lock()


#: what may follow a known name for the same model: a dated / numbered snapshot (`-2024-08-06`, `-0613`,
#: `-001`, `@20250929`), a tag (`:latest`), `-latest` / `-preview` / `-exp`, or a reasoning-effort suffix
#: (`o3-mini-high`). Anything else is another model
#: (`gpt-5-pro` is not `gpt-5`, `gpt-4.5` is not `gpt-4`, `claude-opus-4-8` is not `claude-opus-4`).
_SNAPSHOT = re.compile(r"[-@]\d{3}|[@:]|-(?:latest|preview|exp|minimal|low|medium|high)\b")


def _normalise(model: str) -> str:
    name = (model or "").strip().lower()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _price_key(model: str) -> Optional[str]:
    """The MODEL_PRICING key `model` is priced as: exact name, else the longest known name followed by a
    snapshot suffix; None when unknown. Remembered per name (every request is priced) until the table's
    names change; a table rebound to a plain dict is never remembered."""
    memo = _KEY_MEMO
    if isinstance(model, str) and model in memo and type(MODEL_PRICING) is _PriceTable:
        return memo[model]
    found = _find_key(model)
    if isinstance(model, str) and type(MODEL_PRICING) is _PriceTable:
        if len(memo) >= 4096:  # many distinct names (per-line models): bounded, never grows with the input
            memo.clear()
        memo[model] = found
    return found


def _find_key(model: str) -> Optional[str]:
    name = _normalise(model)
    table = MODEL_PRICING
    if name in table:
        return name
    best = None
    for key in table:
        if name.startswith(key) and _SNAPSHOT.match(name, len(key)) and (best is None or len(key) > len(best)):
            best = key
    return best


def get_model_pricing(model: str, batch: bool = False) -> Optional[Dict[str, float]]:
    """`{"input", "output"}` USD per token: exact name, else the longest known name followed by a snapshot
    suffix (`_SNAPSHOT`; so
    `gpt-4o-mini-2024-07-18` is priced as gpt-4o-mini, never gpt-4o); None when unknown.
    `batch=True`: the provider-batch price (BATCH_DISCOUNT of the live one)."""
    key = _price_key(model)
    found = MODEL_PRICING[key] if key is not None else None
    if found is not None and batch:
        return {k: v * BATCH_DISCOUNT for k, v in found.items()}
    return found


def get_cached_input_price(model: str, batch: bool = False) -> Optional[float]:
    """USD per prompt token read from the provider's prompt cache: CACHED_INPUT_PRICING's, else the full input
    price (conservative); None for an unknown model."""
    key = _price_key(model)
    if key is None:
        return None
    price = CACHED_INPUT_PRICING.get(key, MODEL_PRICING[key]["input"])
    return price * BATCH_DISCOUNT if batch else price


def estimate_cost(tokens: int, model: str = "gpt-4", is_input: bool = True, batch: bool = False) -> float:
    """USD for `tokens` input (or output) tokens of `model` (at the provider-batch price with batch=True);
    0.0 with one warning for an unknown model."""
    price = get_model_pricing(model, batch)
    if price is None:
        with _warn_lock:
            if model not in _warned:
                _warned.add(model)
                logger.warning("no price known for model %r: its cost is counted as 0.0 "
                               "(add it to flexllm.MODEL_PRICING)", model)
        return 0.0
    return tokens * price["input" if is_input else "output"]


def _tokens(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_cost(model: str, usage: Optional[Dict[str, Any]], batch: bool = False) -> float:
    """USD of one reply's `usage` (prompt + completion tokens); 0.0 for an unknown model (no warning).

    Prompt-cache tokens (counted inside prompt_tokens) are billed as the provider bills them. Claude: writes
    at 1.25x the input price (1-hour writes 2x), reads at 0.1x. OpenAI `prompt_tokens_details.cached_tokens`,
    DeepSeek `prompt_cache_hit_tokens`, Gemini `cached_tokens`: the model's CACHED_INPUT_PRICING price, else
    the full input price (so an unlisted model is never under-counted).
    """
    key = _price_key(model) if usage and isinstance(usage, dict) else None
    if key is None:
        return 0.0
    price = MODEL_PRICING[key]
    inp = price["input"]
    prompt = _tokens(usage, "prompt_tokens")
    written = _tokens(usage, "cache_creation_input_tokens")
    if written or "cache_read_input_tokens" in usage:  # Anthropic's shape
        hour = min(written, _tokens(usage.get("cache_creation"), "ephemeral_1h_input_tokens"))
        read, read_price = _tokens(usage, "cache_read_input_tokens"), inp * CACHE_READ_FACTOR
        fresh = max(0, prompt - written - read)
        input_usd = (fresh + (written - hour) * CACHE_WRITE_FACTOR + hour * CACHE_WRITE_1H_FACTOR) * inp
    else:
        read = (_tokens(usage.get("prompt_tokens_details"), "cached_tokens")
                or _tokens(usage, "prompt_cache_hit_tokens") or _tokens(usage, "cached_tokens"))
        read = min(read, prompt)
        read_price = CACHED_INPUT_PRICING.get(key, inp)
        input_usd = (prompt - read) * inp
    usd = input_usd + read * read_price + _tokens(usage, "completion_tokens") * price["output"]
    return usd * BATCH_DISCOUNT if batch else usd


def estimate_batch_cost(messages_list: Iterable[List[dict]], model: str = "gpt-4",
                        avg_output_tokens: int = 0, batch: bool = False) -> Dict[str, Any]:
    """Tokens and USD of a batch before it runs: every conversation's prompt tokens, plus
    `avg_output_tokens` per item if you expect that many back (`batch=True`: provider-batch price).

    Returns `{"count", "input_tokens", "estimated_output_tokens", "total_tokens", "input_cost",
    "output_cost", "estimated_cost_usd", "model"}` (the keys of flexllm 0.2, plus the split costs).
    """
    from .tokens import count_messages_tokens

    count = 0
    input_tokens = 0
    for messages in messages_list:
        count += 1
        input_tokens += count_messages_tokens(messages, model)
    output_tokens = count * int(avg_output_tokens)
    input_cost = estimate_cost(input_tokens, model, True, batch)
    output_cost = estimate_cost(output_tokens, model, False, batch) if output_tokens else 0.0
    return {"count": count, "input_tokens": input_tokens, "estimated_output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens, "input_cost": round(input_cost, 6),
            "output_cost": round(output_cost, 6), "estimated_cost_usd": round(input_cost + output_cost, 6),
            "model": model}
