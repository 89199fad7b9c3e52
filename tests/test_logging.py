"""The secret filter on flexllm's loggers: a key that reaches a log message is scrubbed."""
import logging

import pytest

from flexllm._logging import get_logger, redact_secrets


@pytest.mark.parametrize("text, secret", [
    ("Authorization: Bearer sk-abcdefghijklmnop", "sk-abcdefghijklmnop"),
    ("x-goog-api-key: AIzaSyA1234567890abcdefghij", "AIzaSyA1234567890abcdefghij"),
    ("url?api_key=supersecretvalue123&x=1", "supersecretvalue123"),
    ("server said: invalid key sk-proj-ABCDEFGH12345678", "sk-proj-ABCDEFGH12345678"),
])
def test_redact_secrets(text, secret):
    cleaned = redact_secrets(text)
    assert secret not in cleaned and "***" in cleaned


def test_plain_text_untouched():
    assert redact_secrets("retrying in 1.00s (attempt 2 of 4) after ServerError: HTTP 503") == \
        "retrying in 1.00s (attempt 2 of 4) after ServerError: HTTP 503"


def test_flexllm_loggers_scrub_messages_and_args(caplog):
    caplog.set_level(logging.INFO)
    get_logger("flexllm.retry").warning("upstream said %s", "Bearer sk-live-123456789abc")
    get_logger("flexllm").info("key=%s", "sk-live-123456789abc")
    assert "sk-live-123456789abc" not in caplog.text
    assert caplog.text.count("***") == 2
