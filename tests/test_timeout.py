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


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), True])
def test_timeout_must_be_positive_and_finite(server, bad):
    with pytest.raises(ValueError, match="timeout"):
        OpenAIClient(base_url=server.url, model="m", timeout=bad)
    c = OpenAIClient(base_url=server.url, model="m", retry_times=3)
    with pytest.raises(ValueError, match="timeout"):
        c.chat_completions_sync(user("x"), timeout=bad)
    assert server.requests == []  # never sent, never retried


def test_negative_cache_ttl_is_refused():
    from flexllm import ResponseCacheConfig

    with pytest.raises(ValueError, match="ttl"):
        ResponseCacheConfig(enabled=True, ttl=-5)


@pytest.mark.parametrize("flags", [["--timeout", "0"], ["--timeout", "-5"], ["--limit", "-1"], ["--cache-ttl", "-5"]])
def test_cli_refuses_nonsense_numbers_with_exit_2(server, tmp_path, flags):
    from .test_cli import run

    inp = tmp_path / "in.jsonl"
    inp.write_text('{"prompt": "hi"}\n')
    r = run("batch", str(inp), "-o", str(tmp_path / "out.jsonl"), "--model", "m", "--base-url", server.url,
            "--no-progress", *flags)
    assert r.returncode == 2, r.stderr
    assert flags[0].lstrip("-").split("-")[-1] in r.stderr or flags[0] in r.stderr
    assert server.requests == [] and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("kwargs", [{"stop": {"a", "b"}}, {"temperature": float("nan")},
                                    {"extra_body": {"when": object()}}])
def test_a_body_that_is_not_json_is_a_clear_error_never_sent(server, tmp_path, kwargs, cached):
    from flexllm import ResponseCacheConfig

    cache = ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path)) if cached else None
    c = OpenAIClient(base_url=server.url, model="m", retry_times=3, cache=cache)
    with pytest.raises(ValueError, match="JSON"):
        c.chat_completions_sync(user("x"), **kwargs)
    assert server.requests == []
