"""LLMClientPool over three real mock servers: failover, health, shared batch queue, streaming."""
import socket

import pytest

from flexllm import APIConnectionError, BadRequestError, LLMClientPool, StreamTruncatedError
from flexllm.mock import MockServer

from .conftest import user


def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def trio():
    with MockServer() as slow, MockServer() as flaky, MockServer() as healthy:
        yield slow, flaky, healthy


@pytest.fixture
def servers(trio):
    for s in trio:
        s.clear()
        s.configure(latency=0.0, jitter=0.0, error_rate=0.0)
    return trio


def test_batch_succeeds_across_dead_slow_and_flaky_endpoints(servers, tmp_path):
    slow, flaky, _ = servers
    slow.configure(latency=0.05)
    flaky.configure(error_rate=0.5)
    dead = closed_port_url()
    pool = LLMClientPool(endpoints=[{"base_url": dead, "model": "m", "concurrency_limit": 4},
                                    {"base_url": slow.url, "model": "m", "concurrency_limit": 4},
                                    {"base_url": flaky.url, "model": "m", "concurrency_limit": 4}],
                         failure_threshold=3, recovery_time=30.0, retry_delay=0.01, retry_times=5)
    prompts = [user(f"i{i}") for i in range(1000)]
    results, summary = pool.chat_completions_batch_sync(prompts, output_file=str(tmp_path / "o.jsonl"),
                                                        show_progress=False, return_summary=True)
    assert results == [f"echo: i{i}" for i in range(1000)]
    assert summary["failed"] == 0
    ok_slow = sum(1 for r in slow.requests if r.status == 200)
    ok_flaky = sum(1 for r in flaky.requests if r.status == 200)
    assert ok_slow + ok_flaky == 1000
    assert ok_flaky > ok_slow  # the faster endpoint takes more of the shared queue
    health = {h["base_url"]: h for h in pool.router.stats()}
    assert health[dead]["healthy"] is False  # resting for recovery_time: it got no traffic after that


def test_dead_endpoint_gets_no_traffic_while_resting(servers):
    _, _, healthy = servers
    blackhole = MockServer()
    with blackhole:
        blackhole.add_rule(drop=1)  # accepts and drops every request: "dead", but it records arrivals
        pool = LLMClientPool(endpoints=[{"base_url": blackhole.url, "model": "m", "concurrency_limit": 1},
                                        {"base_url": healthy.url, "model": "m", "concurrency_limit": 1}],
                             failure_threshold=2, recovery_time=60.0, retry_delay=0.01)
        for i in range(40):
            assert pool.chat_completions_sync(user(f"s{i}")) == f"echo: s{i}"
        assert len(blackhole.requests) == 2  # exactly failure_threshold tries, then it rests
        assert len(healthy.requests) == 40


def test_single_call_fails_over_from_dead_endpoint(servers):
    _, _, healthy = servers
    pool = LLMClientPool(endpoints=[{"base_url": closed_port_url(), "model": "m"},
                                    {"base_url": healthy.url, "model": "m"}], retry_delay=0.01)
    assert pool.chat_completions_sync(user("hello")) == "echo: hello"


def test_bad_request_is_not_failed_over(servers):
    slow, _, healthy = servers
    pool = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m"}, {"base_url": healthy.url, "model": "m"}])
    with pytest.raises(BadRequestError):
        pool.chat_completions_sync(user("[[mock:status=400]] bad"))
    assert len(slow.requests) + len(healthy.requests) == 1


def test_all_dead_raises_after_retries(servers):
    pool = LLMClientPool(endpoints=[{"base_url": closed_port_url(), "model": "m"},
                                    {"base_url": closed_port_url(), "model": "m"}],
                         retry_times=1, retry_delay=0.01, failure_threshold=100)
    with pytest.raises(APIConnectionError):
        pool.chat_completions_sync(user("x"))


def test_stream_fails_over_before_first_chunk_only(servers):
    slow, _, healthy = servers
    pool = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m"}, {"base_url": healthy.url, "model": "m"}],
                         retry_delay=0.01, retry_times=1, load_balance="fallback")
    slow.add_rule(status=503)
    assert "".join(pool.chat_completions_stream_sync(user("a b c"))) == "echo: a b c"
    assert [r.status for r in slow.requests] == [503, 503]  # its own retry, then the other endpoint
    slow.clear()
    healthy.clear()
    slow.add_rule(truncate=1)  # chunks arrive, then the stream breaks: no silent switch mid-answer
    pieces = []
    with pytest.raises(StreamTruncatedError):
        for p in pool.chat_completions_stream_sync(user("d e f g h i")):
            pieces.append(p)
    assert pieces and not any(r.body and r.body.get("stream") for r in healthy.requests)


def test_all_unhealthy_waits_for_recovery_then_succeeds(servers):
    _, _, healthy = servers
    pool = LLMClientPool(endpoints=[{"base_url": healthy.url, "model": "m"}], failure_threshold=1,
                         recovery_time=0.3, retry_delay=0.01)
    healthy.add_rule(contains="first", drop=1, times=1)
    assert pool.chat_completions_sync(user("first")) == "echo: first"  # waits out the rest, probes, succeeds


def test_clients_form_and_same_methods(servers):
    from flexllm import OpenAIClient

    slow, _, healthy = servers
    pool = LLMClientPool(clients=[OpenAIClient(base_url=slow.url, model="m"),
                                  OpenAIClient(base_url=healthy.url, model="m")])
    assert pool.chat_completions_sync(user("a")) == "echo: a"
    assert pool.chat_completions_sync(user("b")) == "echo: b"
    assert len(slow.requests) == 1 and len(healthy.requests) == 1  # round robin, first pick = first


def test_invalid_configuration():
    with pytest.raises(ValueError):
        LLMClientPool()
    with pytest.raises(ValueError, match="unknown keys"):
        LLMClientPool(endpoints=[{"base_url": "http://x/v1", "model": "m", "bogus": 1}])


def test_qps_capped_endpoint_counts_as_busy(servers):
    slow, _, healthy = servers
    pool = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m", "max_qps": 2},
                                    {"base_url": healthy.url, "model": "m", "concurrency_limit": 4}])
    results = pool.chat_completions_batch_sync([user(f"q{i}") for i in range(200)], show_progress=False)
    assert results == [f"echo: q{i}" for i in range(200)]
    assert len(slow.requests) <= 3  # it is not handed work it would have to sleep on


def test_endpoint_weights_reach_the_router(servers):
    slow, _, healthy = servers
    pool = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m", "weight": 3},
                                    {"base_url": healthy.url, "model": "m", "weight": 1}], load_balance="weighted")
    assert [p.weight for p in pool.router.providers] == [3.0, 1.0]
