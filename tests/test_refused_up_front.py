"""Arguments flexllm cannot honour are refused before any request (or never reach the wire), not per item.

Each test talks to the real mock server over HTTP and checks what it received.
"""
import pytest

from flexllm import ClaudeClient, LLMClient, LLMClientPool

from .conftest import user
from .test_cli import run, write_input


def claude(server, **kw):
    return ClaudeClient(api_key="sk-ant-test", base_url=server.root_url, model="claude-haiku-4-5",
                        retry_delay=0.01, **kw)


def test_a_thinking_level_claude_cannot_honour_fails_the_batch_before_any_request(server, tmp_path):
    for client in (claude(server),
                   LLMClientPool(endpoints=[{"base_url": server.root_url, "model": "claude-haiku-4-5",
                                             "provider": "anthropic", "api_key": "sk-ant-test"}])):
        with pytest.raises(ValueError, match="thinking"):
            client.chat_completions_batch_sync([user("a"), user("b")], thinking="minimal", show_progress=False,
                                               output_file=str(tmp_path / "out.jsonl"))
        with pytest.raises(ValueError, match="thinking"):
            list(client.iter_chat_completions_batch([user("a")], thinking="minimal", show_progress=False))
    assert len(server.requests) == 0
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").read_bytes() == b""


def test_cli_batch_with_a_thinking_level_claude_cannot_honour_is_a_usage_error(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 3)
    for extra in ((), ("--provider-batch",)):
        res = run("batch", str(inp), "-o", str(out), "--model", "claude-haiku-4-5", "--provider", "anthropic",
                  "--base-url", server.root_url, "--thinking", "minimal", *extra,
                  env={"ANTHROPIC_API_KEY": "sk-ant-test"})
        assert res.returncode == 2, res.stderr
        assert "--thinking" in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
    assert len(server.requests) == 0


def test_events_never_reaches_the_request_body(server):
    """`events=` is a stream option (a library word): a non-stream call or batch refuses it before any
    request; a per-item params entry holding it fails that item without sending it."""
    client = LLMClient(model="m", base_url=server.url, retry_delay=0.01)
    pool = LLMClientPool(endpoints=[{"base_url": server.url, "model": "m"}], retry_delay=0.01)
    for c in (client, pool):
        with pytest.raises(ValueError, match="events"):
            c.chat_completions_sync(user("a"), events=True)
        with pytest.raises(ValueError, match="events"):
            c.chat_completions_batch_sync([user("a")], events=True, show_progress=False)
    assert len(server.requests) == 0
    results = client.chat_completions_batch_sync([user("a"), user("b")], params_list=[{"events": True}, None],
                                                 show_progress=False)
    assert results[1] == "echo: b"
    assert all("events" not in r.body for r in server.requests), [r.body for r in server.requests]
    events = list(client.chat_completions_stream_sync(user("s"), events=True))
    assert events[-1].done and events[-1].result.content == "echo: s"
    assert all("events" not in r.body for r in server.requests)


@pytest.mark.parametrize("kwargs, name", [
    ({"max_qps": 0}, "max_qps"),  # None is "no limit" (API reference); 0 is refused like RateLimit(max_qps=0)
    ({"max_qps": -1}, "max_qps"),
    ({"timeout": 0}, "timeout"), ({"timeout": -5}, "timeout"),
    ({"retry_delay": -1}, "retry_delay"), ({"retry_delay": float("nan")}, "retry_delay"),
    ({"retry_delay": float("inf")}, "retry_delay"),
    ({"retry_times": -1}, "retry_times"), ({"retry_times": 1.5}, "retry_times"),
    ({"concurrency_limit": 0}, "concurrency_limit"), ({"concurrency_limit": 2.5}, "concurrency_limit"),
])
def test_nonsense_client_settings_are_refused_at_construction(server, kwargs, name):
    with pytest.raises(ValueError, match=name):
        LLMClient(model="m", base_url=server.url, **kwargs)
    with pytest.raises(ValueError, match=name):
        LLMClientPool(endpoints=[{"base_url": server.url, "model": "m"}], **kwargs)


def test_a_pool_of_given_clients_checks_its_own_retry_settings(server):
    clients = [LLMClient(model="m", base_url=server.url)]
    for kwargs in ({"retry_delay": -1}, {"retry_times": -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            LLMClientPool(clients=clients, **kwargs)
    assert LLMClient(model="m", base_url=server.url, retry_delay=0, max_qps=None).chat_completions_sync(user("z")) \
        == "echo: z"  # 0 s between retries and no rate limit stay valid


def test_interval_settings_that_would_spin_or_never_fsync_are_refused(server, tmp_path):
    """poll_interval <= 0 with wait=True polled the provider in a hot loop; flush_interval NaN never
    fsynced the output file until the end. Both: ValueError naming them, before any request."""
    client = LLMClient(model="m", base_url=server.url, retry_delay=0.01)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="poll_interval"):
            client.submit_batch([user("a")], output_file=str(tmp_path / "p.jsonl"), wait=True, poll_interval=bad)
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="flush_interval"):
            client.chat_completions_batch_sync([user("a")], output_file=str(tmp_path / "f.jsonl"),
                                               flush_interval=bad, show_progress=False)
    assert len(server.requests) == 0
    inp = tmp_path / "in.jsonl"
    write_input(inp, 2)
    for flag, value in (("--poll-interval", "0"), ("--poll-interval", "-1"), ("--max-cost", "-1"),
                        ("--fallback-online-after", "-1"), ("--timeout", "0"), ("--timeout", "-3"),
                        ("--retries", "-1"), ("--concurrency", "0"), ("--temperature", "nan")):
        extra = ("--provider-batch", "--wait") if flag in ("--poll-interval", "--fallback-online-after") else ()
        res = run("batch", str(inp), "-o", str(tmp_path / "o.jsonl"), "--model", "m", "--base-url", server.url,
                  *extra, flag, value)
        assert res.returncode == 2 and flag in res.stderr and "Traceback" not in res.stderr, (flag, res.stderr)
    assert len(server.requests) == 0


def test_a_batch_whose_parameters_cannot_be_encoded_fails_before_any_request(server):
    client = LLMClient(model="m", base_url=server.url, retry_delay=0.01)
    with pytest.raises(ValueError, match="JSON"):
        client.chat_completions_batch_sync([user("a"), user("b")], temperature=float("nan"), show_progress=False)
    with pytest.raises(ValueError, match="timeout"):
        client.chat_completions_batch_sync([user("a"), user("b")], timeout=0, show_progress=False)
    assert len(server.requests) == 0


def test_endpoint_settings_given_with_clients_are_refused_not_ignored(server):
    """With clients=[...] each client keeps its own transport, limits and cache: a pool-level max_qps=,
    timeout=, concurrency_limit=, cache=, proxy= used to be dropped without a word."""
    from flexllm import ResponseCacheConfig

    clients = [LLMClient(model="m", base_url=server.url)]
    for kwargs in ({"max_qps": 5}, {"timeout": 5}, {"concurrency_limit": 2}, {"proxy": "http://127.0.0.1:9"},
                   {"cache": ResponseCacheConfig(enabled=True)}, {"http2": True}, {"verify": False}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            LLMClientPool(clients=clients, **kwargs)
    pool = LLMClientPool(clients=clients, retry_times=1, retry_delay=0.01, model="m")  # the pool's own loop uses these
    assert pool.chat_completions_sync(user("ok")) == "echo: ok"


BATCH_OPTIONS = {"max_cost_usd": 1.0, "output_file": "/tmp/flexllm-never.jsonl", "redo": "length",
                 "params_list": [{}], "metadata_list": [{}], "show_progress": False, "return_summary": True,
                 "flush_interval": 1.0}


@pytest.mark.parametrize("name", sorted(BATCH_OPTIONS))
def test_a_batch_option_given_to_a_single_call_is_refused_not_sent_or_ignored(server, name):
    """`max_cost_usd=` on a single call was sent in the JSON body (a real server 400s; one that ignores unknown
    fields ran uncapped), `output_file=` sent the local path to the server: all refused before any request."""
    kw = {name: BATCH_OPTIONS[name]}
    client = LLMClient(model="gpt-4o-mini", base_url=server.url, retry_delay=0.01)
    with pytest.raises(ValueError, match=name):
        client.chat_completions_sync(user("a"), **kw)
    with pytest.raises(ValueError, match=name):
        list(client.chat_completions_stream_sync(user("a"), **kw))
    if name not in ("params_list", "metadata_list"):  # per-item entries: options of the whole batch
        with pytest.raises(ValueError, match=name):
            client.chat_completions_batch_sync([user("a"), user("b")], params_list=[None, kw], show_progress=False)
    assert server.requests == []


@pytest.mark.parametrize("threshold", [0, 1.5, -1, True])
def test_a_pool_failure_threshold_is_a_whole_number_of_failures(server, threshold):
    with pytest.raises(ValueError, match="failure_threshold"):
        LLMClientPool(endpoints=[{"base_url": server.url, "model": "m"}], failure_threshold=threshold)
