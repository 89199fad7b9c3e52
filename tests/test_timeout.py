"""`timeout=` is a deadline for the whole request; a stream's is a deadline per gap between lines
(issue 11 item 17). A server trickling one byte every 0.3 s keeps every socket read short, so a per-read
timeout would never fire: these calls would take minutes without the deadline.

No timing assertions: the proof is that the call fails with APITimeoutError at all (the trickled reply
would otherwise complete successfully), and that the server saw one attempt.
"""
import pytest

from flexllm import APITimeoutError, GeminiClient, OpenAIClient

from .conftest import user


def test_trickling_reply_hits_the_whole_request_deadline(server):
    c = OpenAIClient(base_url=server.url, model="m", retry_times=0, timeout=1.0)
    with pytest.raises(APITimeoutError):
        c.chat_completions_sync(user("[[mock:trickle=0.3]] " + "long " * 40))
    assert len(server.requests) == 1


def test_per_call_timeout_is_a_deadline_too(server):
    c = OpenAIClient(base_url=server.url, model="m", retry_times=0, timeout=600)
    with pytest.raises(APITimeoutError):
        c.chat_completions_sync(user("[[mock:trickle=0.3]] slow"), timeout=1.0)


def test_gemini_trickle_hits_the_deadline(server):
    c = GeminiClient(api_key="test-key-123", base_url=server.root_url, model="gemini-2.5-flash", retry_times=0,
                     timeout=1.0)
    with pytest.raises(APITimeoutError):
        c.chat_completions_sync(user("[[mock:trickle=0.3]] slow"))


def test_stream_whose_lines_trickle_hits_the_gap_deadline(server):
    c = OpenAIClient(base_url=server.url, model="m", retry_times=0, timeout=1.0)
    with pytest.raises(APITimeoutError):
        list(c.chat_completions_stream_sync(user("[[mock:trickle=0.3]] slow")))
