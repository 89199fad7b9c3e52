"""The retry policy's pure decisions, table-driven, and the loop with an injected sleep."""
import email.utils

import pytest

from flexllm.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ContentBlockedError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    ResponseParseError,
    ServerError,
    StreamTruncatedError,
    status_error_class,
)
from flexllm.retry import RetryPolicy, backoff_delay, is_retryable, parse_retry_after, retry_wait


def status(code, headers=None, retry_after=None):
    return status_error_class(code)("m", status_code=code, headers=headers or {}, retry_after=retry_after)


@pytest.mark.parametrize("exc, expected", [
    (APIConnectionError("x"), True),
    (APITimeoutError("x"), True),
    (ResponseParseError("x"), True),
    (StreamTruncatedError("x"), True),
    (status(408), True),
    (status(409), True),
    (status(429), True),
    (status(500), True),
    (status(503), True),
    (status(400), False),
    (status(401), False),
    (status(403), False),
    (status(404), False),
    (status(422), False),
    (QuotaExceededError("q", status_code=429), False),
    (status(400, {"x-should-retry": "true"}), True),
    (status(503, {"x-should-retry": "false"}), False),
    (ContentBlockedError("x"), False),
    (ValueError("x"), False),
])
def test_is_retryable(exc, expected):
    assert is_retryable(exc) is expected


@pytest.mark.parametrize("code, cls", [(400, BadRequestError), (401, AuthenticationError),
                                       (403, AuthenticationError), (404, NotFoundError), (429, RateLimitError),
                                       (500, ServerError), (502, ServerError), (418, BadRequestError)])
def test_status_classes(code, cls):
    assert status_error_class(code) is cls


@pytest.mark.parametrize("headers, expected", [
    ({}, None),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ({"retry-after": "garbage"}, None),
    ({"retry-after": "-4"}, None),
    ({"retry-after": "0"}, None),           # "retry now" would hammer the server: our backoff instead
    ({"retry-after": "0.0"}, None),
    ({"retry-after-ms": "0"}, None),
    ({"retry-after-ms": "0", "retry-after": "2"}, 2.0),
    ({"retry-after-ms": "-10"}, None),
    ({"retry-after": "nan"}, None),
    ({"retry-after": "inf"}, None),
    ({"retry-after": ""}, None),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # a date in the past
])
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers) == expected


@pytest.mark.parametrize("exc", [status(429, {"retry-after": "0"}), status(503, {"retry-after": "-1"}),
                                 status(429, retry_after=0.0), status(429, {"retry-after": "junk"}, retry_after=-3)])
def test_zero_or_garbage_hint_falls_back_to_backoff(exc):
    assert retry_wait(exc, 2, 0.5, lambda: 1.0) == pytest.approx(2.0)


def test_retry_after_zero_over_http_uses_backoff(server):
    from flexllm import OpenAIClient

    sleeps = []
    server.add_rule(contains="busy", status=429, retry_after="0", times=2)
    c = OpenAIClient(base_url=server.url, model="m", retry_times=3, retry_delay=0.5, sleep=sleeps.append)
    assert c.chat_completions_sync([{"role": "user", "content": "busy"}]) == "echo: busy"
    assert len(sleeps) == 2 and all(s >= 0.375 for s in sleeps), sleeps


def test_parse_retry_after_http_date():
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1_000_000) == pytest.approx(10.0)


@pytest.mark.parametrize("k, rng, expected", [
    (0, 1.0, 1.0), (1, 1.0, 2.0), (2, 1.0, 4.0), (3, 1.0, 8.0), (4, 1.0, 8.0), (10, 1.0, 8.0),
    (0, 0.0, 0.75), (3, 0.0, 6.0),
])
def test_backoff_delay(k, rng, expected):
    assert backoff_delay(k, 1.0, lambda: rng) == pytest.approx(expected)


def test_retry_wait_prefers_server_hint_and_caps_it():
    assert retry_wait(status(429, {"retry-after": "7"}), 0, 1.0) == 7.0
    assert retry_wait(status(429, {"retry-after": "500"}), 0, 1.0) == 120.0
    assert retry_wait(status(429, retry_after=2.5), 0, 1.0) == 2.5  # Gemini RetryInfo in the body
    assert retry_wait(status(503), 2, 0.5, lambda: 1.0) == pytest.approx(2.0)


def test_policy_retries_then_succeeds_with_injected_sleep():
    sleeps = []
    calls = []
    policy = RetryPolicy(3, 1.0, sleep=sleeps.append, rng=lambda: 1.0)

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise status(503)
        return "ok"

    assert policy.call(flaky) == "ok"
    assert len(calls) == 3
    assert sleeps == [1.0, 2.0]


def test_policy_gives_up_after_retry_times_plus_one_attempts():
    calls = []
    policy = RetryPolicy(2, 0.1, sleep=lambda s: None)

    def always():
        calls.append(1)
        raise status(500)

    with pytest.raises(ServerError):
        policy.call(always)
    assert len(calls) == 3


def test_policy_does_not_retry_bad_request():
    calls = []
    policy = RetryPolicy(5, 0.1, sleep=lambda s: None)

    def bad():
        calls.append(1)
        raise status(400)

    with pytest.raises(BadRequestError):
        policy.call(bad)
    assert len(calls) == 1
