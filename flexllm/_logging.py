"""Loggers for flexllm modules, each with a filter that scrubs anything shaped like a secret.

flexllm never logs headers or keys on purpose; this is the second line of defence for text that comes
from elsewhere (a server echoing a key in an error message, an exception from a third-party library).
"""
from __future__ import annotations

import logging
import re

__all__ = ["RedactSecrets", "get_logger", "redact_secrets"]

_SECRET = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"          # Authorization: Bearer <token>
    r"|(x-goog-api-key|api[-_]?key)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",;&]{8,}"  # key: value / key=value
    r"|\b(sk-[A-Za-z0-9_-]{8,}|AIza[0-9A-Za-z_-]{20,})"  # OpenAI-style and Google API keys
)


def _scrub(match: "re.Match[str]") -> str:
    if match.group(1):
        return match.group(1) + "***"
    if match.group(2):
        return match.group(2) + match.group(3) + "***"
    return "***"


def redact_secrets(text: str) -> str:
    """`text` with bearer tokens, `api-key=`/`x-goog-api-key:` values and sk-/AIza keys replaced by ***."""
    return _SECRET.sub(_scrub, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with secrets scrubbed (formats it once; the record keeps no args)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_secrets(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = RedactSecrets()


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` with the secret filter attached (once)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
