"""What a reply's headers say about the provider's own rate limits: OpenAI's `x-ratelimit-*` and Anthropic's
`anthropic-ratelimit-*` (remaining, limit, reset). Pure functions of the headers, so the limiter (how long
the whole budget waits) and the retry policy (how long one retry waits) read them the same way.
"""
from __future__ import annotations

import email.utils
import re
import time
from typing import Dict, Mapping, Optional

from ._constants import MAX_RETRY_AFTER

__all__ = ["parse_duration", "provider_waits"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str) -> Optional[float]:
    """Seconds in an OpenAI reset value ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5")."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    total, end = 0.0, 0
    for m in _DURATION.finditer(value):
        if m.start() != end:
            return None
        total += float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
        end = m.end()
    return total if end == len(value) and end else None


def _reset_seconds(value: Optional[str]) -> Optional[float]:
    """A reset given as a duration (OpenAI) or an RFC 3339 / HTTP date (Anthropic), in seconds from now."""
    if not value:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        from datetime import datetime

        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        when = email.utils.mktime_tz(parsed)
    return max(0.0, when - time.time())


def _number(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


#: (remaining, limit, reset) header names per dimension kind, OpenAI then Anthropic
_HEADERS = {
    "requests": (("x-ratelimit-remaining-requests", "x-ratelimit-limit-requests", "x-ratelimit-reset-requests"),
                 ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-limit",
                  "anthropic-ratelimit-requests-reset")),
    "tokens": (("x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens"),
               ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-reset"),
               ("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-limit",
                "anthropic-ratelimit-input-tokens-reset")),
}


def provider_waits(headers: Mapping[str, str], need: Mapping[str, float]) -> Dict[str, float]:
    """Seconds until the provider's own limits allow the next request, per kind ("requests", "tokens").

    From `x-ratelimit-*` (OpenAI) or `anthropic-ratelimit-*`: with `remaining` below what one more
    request needs (`need[kind]`), the wait is the time the provider takes to refill the difference
    (`(limit - remaining) / reset` per second), or the whole reset when the limit is not given.
    """
    waits: Dict[str, float] = {}
    for kind, names in _HEADERS.items():
        for remaining_h, limit_h, reset_h in names:
            remaining = _number(headers.get(remaining_h))
            if remaining is None:
                continue
            want = need.get(kind, 1.0)
            if remaining >= want:
                break
            reset = _reset_seconds(headers.get(reset_h))
            if not reset:
                break
            limit = _number(headers.get(limit_h))
            refill = (limit - remaining) / reset if limit and limit > remaining else 0.0
            wait = (want - remaining) / refill if refill > 0 else reset
            waits[kind] = min(wait, reset, MAX_RETRY_AFTER)
            break
    return waits
