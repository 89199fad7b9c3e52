"""ProviderRouter: strategies, health, probes, blocking, identity, threads."""
import random
import threading
from collections import Counter

import pytest

from flexllm import ProviderConfig, ProviderRouter, create_router_from_urls


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def providers(n, **kw):
    return [ProviderConfig(base_url=f"http://h{i}/v1", **kw) for i in range(n)]


def test_round_robin_starts_with_first_and_cycles():
    ps = providers(3)
    r = ProviderRouter(ps)
    assert [r.get_next() for _ in range(6)] == ps + ps


def test_fallback_always_first_healthy():
    ps = providers(3)
    clock = Clock()
    r = ProviderRouter(ps, strategy="fallback", failure_threshold=1, recovery_time=10, clock=clock)
    assert {id(r.get_next()) for _ in range(5)} == {id(ps[0])}
    r.mark_failed(ps[0])
    assert r.get_next() is ps[1]


def test_weighted_proportions_with_seeded_rng():
    a, b = ProviderConfig("http://a", weight=3), ProviderConfig("http://b", weight=1)
    r = ProviderRouter([a, b], strategy="weighted", rng=random.Random(42))
    counts = Counter(r.get_next().base_url for _ in range(4000))
    assert 2850 < counts["http://a"] < 3150


def test_random_is_roughly_uniform():
    ps = providers(4)
    r = ProviderRouter(ps, strategy="random", rng=random.Random(1))
    counts = Counter(id(r.get_next()) for _ in range(4000))
    assert all(850 < counts[id(p)] < 1150 for p in ps)


def test_unknown_strategy_and_empty():
    with pytest.raises(ValueError, match="round_robin"):
        ProviderRouter(providers(1), strategy="best")
    with pytest.raises(ValueError):
        ProviderRouter([])


def test_threshold_counts_consecutive_failures_only():
    ps = providers(2)
    r = ProviderRouter(ps, failure_threshold=3, clock=Clock())
    r.mark_failed(ps[0])
    r.mark_failed(ps[0])
    r.mark_success(ps[0])
    r.mark_failed(ps[0])
    r.mark_failed(ps[0])
    assert r.is_healthy(ps[0])
    r.mark_failed(ps[0])
    assert not r.is_healthy(ps[0])
    assert all(r.get_next() is ps[1] for _ in range(5))


def test_recovery_single_probe_then_heal_or_rest_again():
    ps = providers(2)
    clock = Clock()
    r = ProviderRouter(ps, failure_threshold=1, recovery_time=10, clock=clock)
    r.mark_failed(ps[0])
    r.mark_failed(ps[1])
    assert r.get_next(block=False) is None
    clock.now = 10.0
    probe = r.get_next(block=False)
    assert probe is ps[0]
    assert r.get_next(block=False) is ps[1]  # ps[1] is due too: its own single probe
    assert r.get_next(block=False) is None  # both probes are out
    r.mark_failed(ps[0])  # the probe failed: rests again
    r.mark_success(ps[1])  # healed at once
    assert [r.get_next(block=False) for _ in range(3)] == [ps[1]] * 3
    clock.now = 25.0
    assert r.get_next(block=False) is ps[0]


def test_unreported_probe_is_offered_again_after_another_rest():
    p = providers(1)
    clock = Clock()
    r = ProviderRouter(p, failure_threshold=1, recovery_time=5, clock=clock)
    r.mark_failed(p[0])
    clock.now = 5
    assert r.get_next(block=False) is p[0]
    assert r.get_next(block=False) is None
    clock.now = 10
    assert r.get_next(block=False) is p[0]


def test_all_unhealthy_blocks_until_recovery():
    p = providers(1)
    r = ProviderRouter(p, failure_threshold=1, recovery_time=0.2)
    r.mark_failed(p[0])
    assert r.get_next(block=False) is None
    assert r.get_next(timeout=10) is p[0]  # waited, then handed out as the probe


def test_exclude_and_accept():
    ps = providers(3)
    r = ProviderRouter(ps, strategy="fallback")
    assert r.get_next(exclude=[ps[0]]) is ps[1]
    assert r.get_next(exclude=ps) is ps[0]  # only excluded ones left: use them rather than fail
    assert r.get_next(block=False, accept=lambda p: p is ps[2]) is ps[2]
    assert r.get_next(block=False, accept=lambda p: False) is None


def test_same_url_different_keys_are_distinct():
    a = ProviderConfig("http://same/v1", api_key="k1")
    b = ProviderConfig("http://same/v1", api_key="k2")
    r = ProviderRouter([a, b], failure_threshold=1, clock=Clock())
    r.mark_failed(a)
    assert r.get_next() is b and r.get_next() is b
    with pytest.raises(ValueError):
        r.mark_success(ProviderConfig("http://same/v1", api_key="k1"))


def test_create_router_from_urls():
    r = create_router_from_urls(["http://a/v1", "http://b/v1"], api_key="sk-x", strategy="round_robin")
    first = r.get_next()
    assert first.base_url == "http://a/v1" and first.api_key == "sk-x"
    r.mark_success(first)
    r.mark_failed(first)


def test_key_not_in_repr_or_stats():
    r = create_router_from_urls(["http://a/v1"], api_key="sk-very-SECRET")
    assert "sk-very-SECRET" not in repr(r.providers[0]) + str(r.stats())


def test_sixteen_threads():
    ps = providers(4)
    r = ProviderRouter(ps, failure_threshold=1000)
    errors = []

    def work():
        try:
            for i in range(1000):
                p = r.get_next()
                (r.mark_success if i % 3 else r.mark_failed)(p)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = r.stats()
    assert sum(s["successes"] + s["failures"] for s in stats) == 16000
    assert all(3900 <= s["successes"] + s["failures"] <= 4100 for s in stats)
