"""The rate budget (RateLimit): the value, GCRA on a fake clock (starts, tokens, 429s, provider headers),
AIMD, and clients sharing one budget in a process against a real mock server."""
import dataclasses
import pickle
import threading

import pytest

from flexllm._constants import QPS_SAFETY_MARGIN

from flexllm import LLMClient, RateLimit, RateLimitError
from flexllm._limiter import AdaptiveWindow, Limiter, limiter_for
from flexllm._ratelimit_headers import parse_duration, provider_waits
from flexllm._stores import MemoryStore

from .conftest import FakeClock, user


def fake_limiter(**kwargs):
    clock = FakeClock()
    return Limiter(RateLimit(shared="memory", **kwargs), store=MemoryStore(clock), clock=clock), clock


def max_in_window(times, width, weights=None):
    weights = weights or [1] * len(times)
    best = 0
    for i, t in enumerate(times):
        best = max(best, sum(w for u, w in zip(times[i:], weights[i:]) if u < t + width))
    return best


# -- the value --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, param", [
    ({"max_qps": 0}, "max_qps"), ({"max_qps": -1}, "max_qps"), ({"max_rpm": -5}, "max_rpm"),
    ({"max_tpm": 0}, "max_tpm"), ({"max_qps": float("nan")}, "max_qps"), ({"max_tpm": "100"}, "max_tpm"),
    ({"shared": "postgres://db/x"}, "shared"), ({"shared": "sqlite:///proc/no/such/dir/limits.db"}, "shared"),
    ({"shared": "redis://"}, "shared"), ({"on_store_error": "ignore"}, "on_store_error"), ({"name": ""}, "name"),
])
def test_bad_input_is_a_value_error_naming_the_parameter(kwargs, param):
    with pytest.raises(ValueError, match=param):
        RateLimit(**kwargs)


def test_value_is_frozen_picklable_and_hides_redis_password(tmp_path):
    limit = RateLimit(max_qps=20, max_tpm=1000, shared=f"sqlite:///{tmp_path}/l.db", name="k")
    assert pickle.loads(pickle.dumps(limit)) == limit
    with pytest.raises(dataclasses.FrozenInstanceError):
        limit.max_qps = 1
    redis_limit = RateLimit(max_rpm=5, shared="redis://user:hunter2@localhost:6379/0")
    assert "hunter2" not in repr(redis_limit)
    assert pickle.loads(pickle.dumps(redis_limit)) == redis_limit


def test_environment_supplies_the_store(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEXLLM_RATE_LIMIT_STORE", f"sqlite:///{tmp_path}/env.db")
    assert RateLimit(max_qps=1).shared == f"sqlite:///{tmp_path}/env.db"
    assert RateLimit(max_qps=1, shared="memory").is_shared is False
    monkeypatch.setenv("FLEXLLM_RATE_LIMIT_STORE", "ftp://nope")
    with pytest.raises(ValueError, match="FLEXLLM_RATE_LIMIT_STORE"):
        RateLimit(max_qps=1)


# -- GCRA on a fake clock ---------------------------------------------------------------------------

def test_starts_are_spread_evenly_and_rpm_and_qps_both_hold():
    limiter, clock = fake_limiter(max_qps=10, max_rpm=300)
    starts = []
    for _ in range(40):
        limiter.acquire(sleep=clock.sleep)
        starts.append(clock.now)
    assert max_in_window(starts, 1.0) <= 10
    assert max_in_window(starts, 60.0) <= 300
    gaps = {round(b - a, 6) for a, b in zip(starts, starts[1:])}
    assert gaps == {round(60 * (1 + QPS_SAFETY_MARGIN) / 300, 6)}  # the stricter of the two, evenly spaced


def test_tokens_per_minute_are_spread_and_used_when_there_is_work():
    limiter, clock = fake_limiter(max_tpm=6000)
    starts, tokens = [], []
    for i in range(200):
        prompt, completion = 80 + i % 40, 100 + (i * 37) % 120  # varied sizes, settled to the real usage
        need = (prompt, None)
        r = limiter.acquire(need, sleep=clock.sleep)
        starts.append(clock.now)
        tokens.append(prompt + completion)
        limiter.settle(r, usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion})
    biggest = max(tokens)
    assert max_in_window(starts, 60.0, tokens) <= 6000 + biggest  # within the limit plus one request
    assert max_in_window(starts, 1.0, tokens) < 6000 / 10  # never a whole minute's budget at once
    elapsed = starts[-1] - starts[0]
    assert sum(tokens[:-1]) / elapsed * 60 >= 0.85 * 6000


COST = 0.1 * (1 + QPS_SAFETY_MARGIN)  # seconds of budget per token at max_tpm=600


def test_settling_refunds_an_overestimate_and_charges_an_underestimate():
    limiter, clock = fake_limiter(max_tpm=600)  # 10 tokens/s
    r = limiter.acquire((50, 200), sleep=clock.sleep)  # reserves 250 tokens = 25 s of budget (+ margin)
    assert r.tokens == 250
    assert limiter.delay() == pytest.approx(250 * COST)
    limiter.settle(r, usage={"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60})
    assert limiter.delay() == pytest.approx(60 * COST)  # 60 tokens' worth
    r = limiter.acquire((10, None), sleep=clock.sleep)
    start = clock.now
    limiter.settle(r, usage={"total_tokens": r.tokens + 100})
    assert limiter.delay() == pytest.approx((r.tokens + 100) * COST - (clock.now - start))


def test_failed_request_gives_its_tokens_back():
    limiter, clock = fake_limiter(max_tpm=600)
    r = limiter.acquire((100, 100), sleep=clock.sleep)
    limiter.settle(r, error=RuntimeError("connection reset"))
    assert limiter.delay() == 0.0


def test_a_request_larger_than_the_whole_minute_is_refused_before_sending():
    limiter, _ = fake_limiter(max_tpm=1000)
    with pytest.raises(ValueError, match="max_tpm"):
        limiter.check((900, 200))
    limiter.check((900, None))


def test_429_with_retry_after_pauses_the_budget_and_headers_correct_it():
    limiter, clock = fake_limiter(max_rpm=600)
    r = limiter.acquire(sleep=clock.sleep)
    limiter.settle(r, error=RateLimitError("slow down", status_code=429, headers={"retry-after": "2"}))
    assert limiter.delay() == pytest.approx(2.0)
    clock.now += 2.0
    r = limiter.acquire(sleep=clock.sleep)
    # OpenAI says: no requests left, the window resets in 3 s
    limiter.settle(r, headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"})
    assert limiter.delay() == pytest.approx(3.0)


def test_provider_header_parsing():
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("soon") is None
    assert provider_waits({"x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "1s"},
                          {"tokens": 100}) == {}
    waits = provider_waits({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-limit-tokens": "60000",
                            "x-ratelimit-reset-tokens": "60s"}, {"tokens": 1000})
    assert waits["tokens"] == pytest.approx(1.0)  # 1000 tokens at 1000/s
    waits = provider_waits({"anthropic-ratelimit-requests-remaining": "0",
                            "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z"}, {})
    assert waits["requests"] == 120.0  # capped like any retry hint


def test_adaptive_window_halves_on_429_and_grows_back_never_above_the_limit():
    window = AdaptiveWindow(8)
    tickets = [window.enter() for _ in range(8)]
    window.leave(tickets[0], rate_limited=True)
    assert window.window == 4
    window.leave(tickets[1], rate_limited=True)  # sent before the cut: no second halving
    assert window.window == 4
    for t in tickets[2:]:
        window.leave(t)
    for _ in range(200):
        window.leave(window.enter())
    assert window.window == 8


# -- clients ----------------------------------------------------------------------------------------

def test_clients_given_one_rate_limit_share_one_budget(server):
    limit = RateLimit(max_qps=8, name="shared-by-two-clients")
    a = LLMClient(model="m", base_url=server.url, rate_limit=limit)
    b = LLMClient(model="m", base_url=server.url, rate_limit=RateLimit(max_qps=8, name="shared-by-two-clients"))
    assert a._pipeline.limiters[0] is b._pipeline.limiters[0]

    def run(client, tag):
        for i in range(8):
            client.chat_completions_sync(user(f"{tag}{i}"))

    threads = [threading.Thread(target=run, args=(c, t)) for c, t in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = sorted(r.time for r in server.requests)
    assert len(starts) == 16
    assert max_in_window(starts, 1.0) <= 9  # 8/s for both clients together (+1 for arrival jitter)


def test_client_max_tpm_refuses_an_oversized_request_before_sending(server):
    client = LLMClient(model="m", base_url=server.url, rate_limit=RateLimit(max_tpm=50, name="tiny"))
    with pytest.raises(ValueError, match="max_tpm"):
        client.chat_completions_sync(user("word " * 100))
    assert server.requests == []


def test_batch_summary_reports_the_budget(server):
    client = LLMClient(model="m", base_url=server.url,
                       rate_limit=RateLimit(max_tpm=600_000, name="summary", expected_completion_tokens=50))
    _, summary = client.chat_completions_batch_sync([user(f"q{i}") for i in range(5)], show_progress=False,
                                                    return_summary=True)
    assert summary["tokens_reserved"] > 0 and summary["tokens_used"] == summary["total_tokens"]
    assert summary["rate_limited_429"] == 0 and summary["budget_wait_s"] >= 0


def test_limiter_for_is_one_per_value():
    a = limiter_for(RateLimit(max_qps=3, name="x"))
    assert limiter_for(RateLimit(max_qps=3, name="x")) is a
    assert limiter_for(RateLimit(max_qps=3, name="y")) is not a


def test_pool_rate_limit_is_one_budget_across_endpoints(server):
    from flexllm import LLMClientPool
    from flexllm.mock import MockServer

    with MockServer() as other:
        pool = LLMClientPool(endpoints=[{"base_url": server.url, "model": "m"}, {"base_url": other.url, "model": "m"}],
                             rate_limit=RateLimit(max_qps=10, name="pool-wide"))
        assert pool.chat_completions_batch_sync([user(f"p{i}") for i in range(25)], show_progress=False) == \
            [f"echo: p{i}" for i in range(25)]
        starts = [r.time for r in server.requests] + [r.time for r in other.requests]
        assert server.requests and other.requests and len(starts) == 25
        assert max_in_window(sorted(starts), 1.0) <= 11  # 10/s over both endpoints together


def test_adaptive_concurrency_halves_the_window_on_429_and_shows_it(server, caplog_flexllm):
    client = LLMClient(model="m", base_url=server.url, concurrency_limit=8, retry_delay=0.01,
                       rate_limit=RateLimit(adaptive=True, name="aimd"))
    server.add_rule(status=429, retry_after_ms="10", times=1)  # every item's first attempt is told to slow down
    _, summary = client.chat_completions_batch_sync([user(f"w{i}") for i in range(16)], show_progress=False,
                                                    return_summary=True)
    assert summary["success"] == 16 and summary["rate_limited_429"] == 16
    assert any("window now 4" in r.getMessage() for r in caplog_flexllm.records)
    assert 1 <= client._pipeline.window.window <= 8
    assert client._pipeline.budget_status().startswith("window ")


def test_gemini_retry_info_in_the_body_pauses_the_budget_too():
    limiter, clock = fake_limiter(max_qps=5)
    r = limiter.acquire(sleep=clock.sleep)
    limiter.settle(r, error=RateLimitError("RESOURCE_EXHAUSTED", status_code=429, retry_after=7.0))
    assert limiter.delay() == pytest.approx(7.0)


def test_a_forked_child_can_use_a_limiter_whose_lock_the_parent_held():
    import os

    limiter, clock = fake_limiter(max_qps=100)
    limiter._turn_lock.acquire()  # a parent's thread is inside its turn at fork time
    pid = os.fork()
    if pid == 0:  # the child: must not deadlock on the inherited lock (a hang times the test out)
        code = 1
        try:
            limiter.acquire(sleep=clock.sleep)
            code = 0
        finally:
            os._exit(code)
    limiter._turn_lock.release()
    assert os.waitpid(pid, 0)[1] == 0


def test_pool_adaptive_window_halves_on_429(server, caplog_flexllm):
    from flexllm import LLMClientPool

    pool = LLMClientPool(endpoints=[{"base_url": server.url, "model": "m", "concurrency_limit": 8}], retry_delay=0.01,
                         rate_limit=RateLimit(adaptive=True, name="pool-aimd"))
    server.add_rule(status=429, retry_after_ms="10", times=1)
    _, summary = pool.chat_completions_batch_sync([user(f"v{i}") for i in range(16)], show_progress=False,
                                                  return_summary=True)
    assert summary["success"] == 16
    assert any("window now 4" in r.getMessage() for r in caplog_flexllm.records)
    assert pool.budget_status().startswith("window ")
