"""LLMClientPool over three real mock servers: failover, health, shared batch queue, streaming."""

import pytest

from flexllm import APIConnectionError, BadRequestError, LLMClientPool, StreamTruncatedError
from flexllm.mock import MockServer

from .conftest import closed_port, user


def closed_port_url():
    return f"http://127.0.0.1:{closed_port()}/v1"  # nothing listens there


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


# -- issue 11 items 18, 19, 25, 29, 34 --------------------------------------------------------------

def max_in_one_second(times):
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))


def test_every_endpoint_refusing_the_key_or_quota_fails_at_once(servers):
    """Item 18: 401 / exhausted quota everywhere is not retried and never waits for a recovery (a
    recovery_time of an hour would time the test out)."""
    from flexllm import AuthenticationError, QuotaExceededError

    slow, flaky, _ = servers
    locked = [MockServer(require_key="right"), MockServer(require_key="right")]
    with locked[0], locked[1]:
        pool = LLMClientPool(endpoints=[{"base_url": s.url, "model": "m", "api_key": "wrong"} for s in locked],
                             failure_threshold=1, recovery_time=3600, retry_delay=0.01)
        for i in range(8):
            with pytest.raises(AuthenticationError):
                pool.chat_completions_sync(user(f"k{i}"))
        assert [len(s.requests) for s in locked] == [1, 1]  # each endpoint once; later calls fail at once
    quota = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m"}, {"base_url": flaky.url, "model": "m"}],
                          failure_threshold=1, recovery_time=3600, retry_delay=0.01)
    for i in range(4):
        with pytest.raises(QuotaExceededError):
            quota.chat_completions_sync(user(f"[[mock:quota=1]] q{i}"))
    assert len(slow.requests) + len(flaky.requests) == 2
    slow.clear()
    flaky.clear()
    quota = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m"}, {"base_url": flaky.url, "model": "m"}],
                          retry_delay=0.01)
    _, summary = quota.chat_completions_batch_sync([user(f"[[mock:quota=1]] q{i}") for i in range(8)],
                                                   show_progress=False, return_summary=True)
    assert "quota" in summary["stopped_reason"] and summary["retries"] <= 8


def test_pool_endpoint_max_qps_holds_on_the_server_clock_at_32_threads(servers):
    """Item 19: the start is taken right before the request goes out, so 32 threads never show the
    server more than max_qps starts in any one-second window."""
    from concurrent.futures import ThreadPoolExecutor

    _, _, healthy = servers
    pool = LLMClientPool(endpoints=[{"base_url": healthy.url, "model": "m", "max_qps": 25, "concurrency_limit": 32}])
    with ThreadPoolExecutor(32) as ex:
        list(ex.map(lambda i: pool.chat_completions_sync(user(f"t{i}")), range(100)))
    times = [r.time for r in healthy.requests]
    assert len(times) == 100
    assert max_in_one_second(times) <= 25


def test_endpoint_without_the_model_is_failed_over(servers):
    """Item 25: a proxy answers 400 "Invalid model name" (not 404): another endpoint serves the call."""
    slow, _, healthy = servers
    slow.add_rule(status=400, message="Invalid model name passed in model=m. Call `/v1/models` to view "
                                      "available models for your key.")
    pool = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m"}, {"base_url": healthy.url, "model": "m"}],
                         load_balance="fallback")
    assert pool.chat_completions_sync(user("which model")) == "echo: which model"
    assert [r.status for r in slow.requests] == [400]


def test_all_endpoints_failing_names_each_failure_with_the_most_informative_as_cause(servers):
    """Item 29: one endpoint 429, one dead: the error is the 429 (not the dead socket) and names both."""
    from flexllm import RateLimitError

    slow, _, _ = servers
    slow.add_rule(status=429, retry_after="0")
    dead = closed_port_url()
    pool = LLMClientPool(endpoints=[{"base_url": dead, "model": "m"}, {"base_url": slow.url, "model": "m"}],
                         retry_times=0, load_balance="fallback")
    with pytest.raises(RateLimitError) as info:
        pool.chat_completions_sync(user("x"))
    text = str(info.value)
    assert dead in text and slow.url in text and "APIConnectionError" in text and "429" in text
    assert isinstance(info.value.__cause__, RateLimitError)
    assert set(info.value.endpoint_errors) == {dead, slow.url}


def test_one_call_makes_at_most_retry_times_plus_one_attempts_per_endpoint(servers):
    """Item 34: two endpoints answering 503 with retry_times=3: 4 attempts each (not 32), reported as 8,
    and no waiting out recovery_time (an hour here: waiting would time the test out)."""
    from flexllm import ServerError

    slow, flaky, _ = servers
    slow.add_rule(status=503)
    flaky.add_rule(status=503)
    pool = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m"}, {"base_url": flaky.url, "model": "m"}],
                         retry_times=3, retry_delay=0.01, failure_threshold=1, recovery_time=3600)
    with pytest.raises(ServerError) as info:
        pool.chat_completions_sync(user("x"))
    assert len(slow.requests) == 4 and len(flaky.requests) == 4
    assert info.value.attempts == 8
    slow.clear()
    flaky.clear()
    flaky.add_rule(status=503, times=1)  # one transient answer, then the retry on the same endpoint works
    pool = LLMClientPool(endpoints=[{"base_url": flaky.url, "model": "m"}, {"base_url": slow.url, "model": "m"}],
                         retry_times=3, retry_delay=0.01)
    _, summary = pool.chat_completions_batch_sync([user("once")], show_progress=False, return_summary=True)
    assert summary["success"] == 1 and summary["retries"] == 1 == len(flaky.requests) - 1


def test_each_endpoints_retries_start_their_backoff_afresh(servers):
    """An endpoint tried after another one's retries ran out waits like a first retry (~retry_delay), not
    where the other endpoint's backoff left off (~8·retry_delay). Counted through the sleep seam."""
    from flexllm import ServerError

    slow, flaky, _ = servers
    slow.add_rule(status=503)
    flaky.add_rule(status=503)
    waits = []
    pool = LLMClientPool(endpoints=[{"base_url": slow.url, "model": "m"}, {"base_url": flaky.url, "model": "m"}],
                         retry_times=3, retry_delay=1.0, failure_threshold=10, sleep=waits.append)
    with pytest.raises(ServerError):
        pool.chat_completions_sync(user("x"))
    assert len(slow.requests) == 4 and len(flaky.requests) == 4
    # jittered backoff U(0.75, 1)·min(2^k, 8): per endpoint 0.75–1, 1.5–2, 3–4, then the next endpoint anew
    bounds = [(0.75, 1.0), (1.5, 2.0), (3.0, 4.0)] * 2
    assert len(waits) == 6, waits
    assert all(lo <= w <= hi for w, (lo, hi) in zip(waits, bounds)), waits
