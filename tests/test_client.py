"""Single requests over real HTTP against flexllm.mock: every method, sync and async, and every failure."""
import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from flexllm import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ChatCompletionResult,
    LLMClient,
    OpenAIClient,
    QuotaExceededError,
    ResponseParseError,
    ServerError,
    StreamTruncatedError,
)
from flexllm.mock import MockServer

from .conftest import user, wait_for


def client_for(server, **kw):
    kw.setdefault("retry_delay", 0.01)
    return OpenAIClient(base_url=server.url, model="mock-model", **kw)


def test_sync_call_returns_text(server):
    with client_for(server) as c:
        assert c.chat_completions_sync(user("hello")) == "echo: hello"
    [req] = server.requests
    assert req.path == "/v1/chat/completions"
    assert req.body["model"] == "mock-model"
    assert req.body["messages"] == user("hello")


def test_llmclient_seed_signature_and_model_override(server):
    c = LLMClient(model="a", base_url=server.url)
    assert c.provider == "openai"
    assert c.chat_completions_sync(user("x"), model="b") == "echo: x"
    assert server.requests[-1].body["model"] == "b"


def test_return_usage_and_raw(server):
    c = client_for(server)
    r = c.chat_completions_sync(user("two words"), return_usage=True)
    assert isinstance(r, ChatCompletionResult)
    assert r.content == "echo: two words"
    assert r.usage["total_tokens"] == r.usage["prompt_tokens"] + r.usage["completion_tokens"]
    raw = c.chat_completions_sync(user("raw"), return_raw=True)
    assert raw["choices"][0]["message"]["content"] == "echo: raw"


def test_kwargs_reach_the_body_and_library_words_do_not(server):
    c = client_for(server)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    c.chat_completions_sync(user("k"), temperature=0.3, max_tokens=7, tools=tools,
                            response_format={"type": "json_object"}, skip_cache=True, timeout=30)
    body = server.requests[-1].body
    assert body["temperature"] == 0.3 and body["max_tokens"] == 7 and body["tools"] == tools
    assert body["response_format"] == {"type": "json_object"}
    assert "skip_cache" not in body and "timeout" not in body


def test_async_methods(server):
    c = client_for(server)

    async def main():
        text = await c.chat_completions(user("async"))
        pieces = [p async for p in c.chat_completions_stream(user("a b c"))]
        results = await asyncio.gather(*(c.chat_completions(user(f"n{i}")) for i in range(10)))
        return text, pieces, results

    text, pieces, results = asyncio.run(main())
    assert text == "echo: async"
    assert "".join(pieces) == "echo: a b c" and len(pieces) > 1
    assert results == [f"echo: n{i}" for i in range(10)]


def test_stream_sync(server):
    pieces = list(client_for(server).chat_completions_stream_sync(user("one two three")))
    assert "".join(pieces) == "echo: one two three"
    assert server.requests[-1].body["stream"] is True


def test_sync_call_inside_running_event_loop(server):
    c = client_for(server)

    async def inside():
        return c.chat_completions_sync(user("loop")), list(c.chat_completions_stream_sync(user("s")))

    text, pieces = asyncio.run(inside())
    assert text == "echo: loop" and "".join(pieces) == "echo: s"


def test_429_waits_at_least_retry_after(server):
    c = client_for(server)
    assert c.chat_completions_sync(user("[[mock:status=429;retry_after=1;times=1]] rl")) == "echo: rl"
    first, second = server.requests
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0


def test_retry_after_ms_header(server):
    c = client_for(server)
    assert c.chat_completions_sync(user("[[mock:status=429;retry_after_ms=300;times=2]] ms")) == "echo: ms"
    times = [r.time for r in server.requests]
    assert len(times) == 3 and times[2] - times[1] >= 0.3


def test_5xx_twice_then_success(server):
    c = client_for(server)
    assert c.chat_completions_sync(user("[[mock:status=503;times=2]] up")) == "echo: up"
    assert [r.status for r in server.requests] == [503, 503, 200]


def test_5xx_exhausts_retries(server):
    c = client_for(server, retry_times=2)
    with pytest.raises(ServerError) as info:
        c.chat_completions_sync(user("[[mock:status=500]] down"))
    assert info.value.status_code == 500
    assert len(server.requests) == 3


def test_400_not_retried_and_message_kept(server):
    c = client_for(server)
    with pytest.raises(BadRequestError) as info:
        c.chat_completions_sync(user("[[mock:status=400;message=field foo is invalid]] x"))
    assert "field foo is invalid" in str(info.value)
    assert len(server.requests) == 1


def test_quota_exhausted_not_retried(server):
    with pytest.raises(QuotaExceededError):
        client_for(server).chat_completions_sync(user("[[mock:quota=1]] q"))
    assert len(server.requests) == 1


def test_should_retry_header_wins(server):
    with pytest.raises(ServerError):
        client_for(server).chat_completions_sync(user("[[mock:status=503;should_retry=false]] n"))
    assert len(server.requests) == 1


def test_timeout_is_typed(server):
    c = client_for(server, timeout=0.2, retry_times=0)
    with pytest.raises(APITimeoutError):
        c.chat_completions_sync(user("[[mock:latency=2]] slow"))


def test_dropped_connection_retried_then_typed(server):
    c = client_for(server)
    assert c.chat_completions_sync(user("[[mock:drop=1;times=1]] d")) == "echo: d"
    with pytest.raises(APIConnectionError):
        client_for(server, retry_times=1).chat_completions_sync(user("[[mock:drop=1]] dd"))


def test_malformed_json_retried_then_typed(server):
    assert client_for(server).chat_completions_sync(user("[[mock:malformed=1;times=1]] m")) == "echo: m"
    with pytest.raises(ResponseParseError):
        client_for(server, retry_times=1).chat_completions_sync(user("[[mock:malformed=1]] mm"))


def test_truncated_stream_retried_before_first_chunk_then_error_not_hang(server):
    c = client_for(server, retry_times=0)
    with pytest.raises(StreamTruncatedError):
        list(c.chat_completions_stream_sync(user("[[mock:truncate=1]] a b c d e f")))
    c2 = client_for(server, retry_times=2)
    pieces = []
    with pytest.raises(StreamTruncatedError):  # chunks were yielded: no silent retry after that
        for p in c2.chat_completions_stream_sync(user("[[mock:truncate=1]] g h i j k l")):
            pieces.append(p)
    assert pieces


def test_stream_error_status_before_first_chunk_is_retried(server):
    c = client_for(server)
    assert "".join(c.chat_completions_stream_sync(user("[[mock:status=503;times=1]] s t"))) == "echo: s t"


def test_reasoning_content_and_think_tags(server):
    c = client_for(server)
    for mode in ("field", "reasoning", "tags", "closing"):
        r = c.chat_completions_sync(user(f"[[mock:think={mode}]] why"), return_usage=True)
        assert r.content == "echo: why", mode
        assert r.reasoning_content == "thinking about: why", mode


@pytest.mark.parametrize("url, thinking, expected", [
    ("http://127.0.0.1:{port}/v1", True, {"chat_template_kwargs": {"enable_thinking": True}}),
    ("http://127.0.0.1:{port}/v1", "high", {"reasoning_effort": "high"}),
])
def test_thinking_reaches_server(server, url, thinking, expected):
    c = OpenAIClient(base_url=url.format(port=server.port), model="m", thinking=thinking)
    c.chat_completions_sync(user("t"))
    body = server.requests[-1].body
    for k, v in expected.items():
        assert body[k] == v
    c.chat_completions_sync(user("t"), thinking=None)  # per call None → the client default still applies
    c.chat_completions_sync(user("t2"), thinking=False)
    assert server.requests[-1].body.get("chat_template_kwargs", {}).get("enable_thinking", False) is False


def test_one_client_shared_by_16_threads(server):
    c = client_for(server, concurrency_limit=8)
    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(lambda i: c.chat_completions_sync(user(f"t{i}")), range(160)))
    assert out == [f"echo: t{i}" for i in range(160)]


def test_concurrency_limit_bounds_in_flight():
    with MockServer(latency=0.05) as own:  # its own server: no request of an earlier test still in flight
        c = client_for(own, concurrency_limit=3)
        with ThreadPoolExecutor(12) as pool:
            out = list(pool.map(lambda i: c.chat_completions_sync(user(f"c{i}")), range(24)))
        assert out == [f"echo: c{i}" for i in range(24)]
        assert own.max_in_flight == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_client_created_before_fork_works_in_child(server):
    c = client_for(server)
    assert c.chat_completions_sync(user("parent")) == "echo: parent"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            ok = c.chat_completions_sync(user("child")) == "echo: child"
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)
    assert c.chat_completions_sync(user("parent again")) == "echo: parent again"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_async_calls_work_in_a_child_forked_after_the_parent_awaited(server):
    """gunicorn --preload / celery prefork: a parent that awaited a call has an idle async thread pool; a
    child must not queue its awaits on the parent's threads, which do not exist in it (it hung for ever)."""
    import select
    import signal

    c = client_for(server)
    assert asyncio.run(c.chat_completions(user("parent"))) == "echo: parent"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            async def main():
                one = await c.chat_completions(user("child"))
                pieces = [p async for p in c.chat_completions_stream(user("child stream"))]
                return one == "echo: child" and "".join(pieces) == "echo: child stream"

            ok = asyncio.run(main())
            os.write(w, b"1" if ok else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 60)  # bounded: a hung child must not hang the suite
        answer = os.read(r, 1) if ready else b"hung"
    finally:
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    assert answer == b"1"
    assert asyncio.run(c.chat_completions(user("parent again"))) == "echo: parent again"


def test_pickling_a_client_says_what_to_do_instead(server):
    """ProcessPoolExecutor / multiprocessing / a Ray task closing over a client pickle it: a message saying to
    build one per process, not pickle's "cannot pickle '_queue.SimpleQueue' object" (and never the key)."""
    import pickle

    from flexllm import LLMClientPool

    c = client_for(server, api_key="sk-pickle-SECRET-42")
    c.chat_completions_sync(user("warm"))  # connections, cache and threads exist
    pool = LLMClientPool(endpoints=[{"base_url": server.url, "model": "m"}])
    for obj in (c, c.chat_completions_sync, pool):
        with pytest.raises(TypeError, match="cannot be pickled") as info:
            pickle.dumps(obj)
        assert "LLMMapper" in str(info.value) and "SECRET" not in str(info.value)


def test_api_key_never_in_exception_or_logs(server, caplog):
    caplog.set_level(logging.DEBUG)
    key = "sk-test-SECRET-0123456789"
    c = client_for(server, api_key=key, retry_times=1)
    for directive in ("status=401;message=bad key " + key, "status=503", "drop=1", "malformed=1"):
        with pytest.raises(Exception) as info:
            c.chat_completions_sync(user(f"[[mock:{directive}]] k"))
        assert key not in str(info.value) and key not in repr(info.value.args)
    assert key not in caplog.text
    assert key not in repr(c)
    assert isinstance(info.value, ResponseParseError)
    with pytest.raises(AuthenticationError):
        client_for(server, api_key=key).chat_completions_sync(user("[[mock:status=401]] a"))


def test_missing_base_url_and_model_are_clear_errors():
    with pytest.raises(ValueError, match="base_url"):
        LLMClient(model="m")
    with pytest.raises(ValueError, match="model"):
        OpenAIClient(base_url="http://127.0.0.1:9/v1").chat_completions_sync(user("x"))


def test_connection_refused_is_typed():
    c = OpenAIClient(base_url="http://127.0.0.1:9/v1", model="m", retry_times=1, retry_delay=0.01)
    with pytest.raises(APIConnectionError):
        c.chat_completions_sync(user("x"))


def test_close_then_reuse_and_thread_names(server):
    def ours():
        return {t.name for t in threading.enumerate() if t.name.startswith("flexllm-async")}

    c = client_for(server)
    before = ours()
    assert asyncio.run(c.chat_completions(user("async"))) == "echo: async"
    assert ours() - before, "the async facade runs on the client's own, named threads"
    c.close()
    wait_for(lambda: not (ours() - before), what="close() to end the client's async threads")
    assert c.chat_completions_sync(user("again")) == "echo: again"  # a closed client can still be used
    assert asyncio.run(c.chat_completions(user("async again"))) == "echo: async again"
    c.close()


def test_async_stream_consumer_can_stop_early(server):
    c = client_for(server)

    async def main():
        stream = c.chat_completions_stream(user("one two three four five six seven"))
        first_piece = await stream.__anext__()
        await stream.aclose()  # the consumer stops early
        return first_piece, await c.chat_completions(user("after"))

    first, after = asyncio.run(main())
    assert first == "echo:" and after == "echo: after"
