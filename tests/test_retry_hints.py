"""Retry hints relayed by proxies and rate-limit reset headers (issue 11 item 23), quota text (item 24)."""
import pytest

from flexllm.errors import APIStatusError, QuotaExceededError, RateLimitError, ServerError
from flexllm.providers.openai import OpenAIAdapter
from flexllm.retry import is_retryable, parse_retry_after, ratelimit_reset, retry_wait


def test_relayed_retry_after_forms():
    assert parse_retry_after({"llm_provider-retry-after": "3"}) == 3.0
    assert parse_retry_after({"llm_provider-retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "2", "llm_provider-retry-after": "9"}) == 2.0  # our own wins
    assert parse_retry_after({"retry-after": "0", "llm_provider-retry-after": "4"}) == 4.0  # 0 is no hint
    assert parse_retry_after({"llm_provider-retry-after": "soon"}) is None


@pytest.mark.parametrize("value, seconds", [("1s", 1.0), ("250ms", 0.25), ("1m30s", 90.0), ("6m0s", 360.0),
                                            ("2.5s", 2.5), ("17", 17.0), ("1h", 3600.0)])
def test_reset_durations(value, seconds):
    assert ratelimit_reset({"x-ratelimit-reset-requests": value}) == pytest.approx(seconds)


def test_reset_prefers_the_exhausted_limit_and_ignores_garbage():
    headers = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "40s",
               "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "3s"}
    assert ratelimit_reset(headers) == 3.0
    assert ratelimit_reset({"llm_provider-x-ratelimit-reset-tokens": "2s"}) == 2.0
    assert ratelimit_reset({"x-ratelimit-reset-requests": "1s2x"}) is None
    assert ratelimit_reset({"x-ratelimit-reset-requests": "0s"}) is None
    assert ratelimit_reset({}) is None


def test_reset_headers_count_for_429_only():
    headers = {"x-ratelimit-reset-requests": "7s"}
    rate = RateLimitError("slow down", status_code=429, headers=headers)
    assert retry_wait(rate, 0, 1.0, rng=lambda: 1.0) == 7.0
    server = ServerError("boom", status_code=503, headers=headers)  # sent on every reply: not a hint here
    assert retry_wait(server, 0, 1.0, rng=lambda: 1.0) == 1.0
    assert retry_wait(RateLimitError("x", status_code=429, headers={"x-ratelimit-reset-requests": "9m"}),
                      0, 1.0) == 120.0  # capped


@pytest.mark.parametrize("body, quota", [
    ({"error": {"message": "litellm.RateLimitError: OpenAIException - You exceeded your current quota, please "
                           "check your plan and billing details.", "type": "throttling_error", "code": "429"}}, True),
    ({"error": {"message": "RateLimitError: {'error': {'code': 'insufficient_quota'}}", "type": "throttling_error",
                "code": "429"}}, True),
    ({"error": {"message": "Rate limit reached for gpt-4o on requests per min (RPM)", "type": "requests",
                "code": "rate_limit_exceeded"}}, False),
    ({"error": {"message": "Quota exceeded for metric generate_content_requests per minute"}}, False),
])
def test_quota_is_recognised_from_the_message(body, quota):
    exc = OpenAIAdapter(base_url="http://127.0.0.1:1/v1").map_error(429, body, {}, model="m")
    assert isinstance(exc, QuotaExceededError) is quota and isinstance(exc, APIStatusError)
    assert is_retryable(exc) is not quota
