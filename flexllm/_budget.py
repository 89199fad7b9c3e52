"""A batch's spending cap: each request reserves its estimated cost before it starts and settles after.

No request starts when what was spent, plus the estimates of the requests in flight, plus its own
estimate would pass the cap. The estimate is the prompt's tokens (tiktoken's count, scaled by how the
provider's counts compared so far) at the input price plus, at the output price, the longest reply seen
so far in this run (capped by `max_tokens`). Until the first reply has come back nobody knows how long
replies are, so requests start one at a time. The run therefore ends within about one request's cost
of the cap, on either side.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, NamedTuple, Optional

from .pricing import get_model_pricing, usage_cost

__all__ = ["CostBudget", "Hold", "request_cost"]

_MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "maxOutputTokens")


def request_cost(usage: Optional[dict], model: str) -> float:
    """USD of one reply's usage at `model`'s list price (0.0 for an unknown model or no usage)."""
    return usage_cost(model, usage)


class Hold(NamedTuple):
    """One request's reservation: its estimated USD and the prompt tokens we counted for it."""

    usd: float
    counted: int


class CostBudget:
    """A USD cap shared by every worker of one batch. Thread-safe (one condition over a few numbers)."""

    def __init__(self, cap: Any, models: Iterable[str]) -> None:
        if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0:
            raise ValueError(f"max_cost_usd must be a number > 0, got {cap!r}")
        for model in models:
            if get_model_pricing(model or "") is None:
                raise ValueError(f"max_cost_usd is set but no price is known for model {model!r}, so the cap "
                                 "could not be kept; add it to flexllm.MODEL_PRICING")
        self.cap = float(cap)
        self.spent = 0.0
        self.in_flight = 0.0
        self._running = 0
        self._longest_reply: Optional[int] = None  # completion tokens; None until a reply came back
        self._counted = self._billed = 0  # prompt tokens: our count vs the provider's, of settled requests
        self._cond = threading.Condition()

    def reserve(self, messages: Any, model: str, params: Dict[str, Any]) -> Optional[Hold]:
        """Hold the estimate of a request about to start and return it; None (nothing held) when it would
        pass the cap. Before the first reply has been seen, waits until no other request is in flight."""
        from .tokens import count_messages_tokens

        price = get_model_pricing(model or "")
        if price is None:
            raise ValueError(f"max_cost_usd is set but no price is known for model {model!r}")
        counted = count_messages_tokens(messages, model)
        limit = next((params[k] for k in _MAX_TOKEN_KEYS if isinstance(params.get(k), int)), None)
        with self._cond:
            while self._longest_reply is None and self._running:
                self._cond.wait()
            output = self._longest_reply or 0
            prompt = counted * (self._billed / self._counted if self._counted and self._billed else 1.0)
            estimate = prompt * price["input"] + (output if limit is None else min(output, limit)) * price["output"]
            if self.spent + self.in_flight + estimate > self.cap:
                return None
            self.in_flight += estimate
            self._running += 1
            return Hold(estimate, counted)

    def settle(self, hold: Hold, cost: float, usage: Optional[dict] = None) -> None:
        """Release a reservation and count what the request really cost."""
        completion = (usage or {}).get("completion_tokens")
        billed = (usage or {}).get("prompt_tokens")
        with self._cond:
            if isinstance(billed, int) and billed > 0:
                self._counted += hold.counted
                self._billed += billed
            self.in_flight = max(0.0, self.in_flight - hold.usd)
            self._running -= 1
            self.spent += cost
            if isinstance(completion, int) and completion > (self._longest_reply or -1):
                self._longest_reply = completion
            self._cond.notify_all()
