"""ProviderRouter: strategies, circuit-breaker health, probes, blocking, identity, threads, secrets."""
import logging
import random
import threading
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexllm.router import STRATEGIES, ProviderConfig, ProviderRouter, create_router_from_urls

BOUND = 10.0  # upper bound on any wait in this file; a correct router returns long before


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def providers(n, **kw):
    return [ProviderConfig(base_url=f"http://h{i}/v1", **kw) for i in range(n)]


def run_in_thread(fn):
    """Start fn in a thread; return (thread, result list)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


# -- strategies ----------------------------------------------------------------------------------------
def test_round_robin_first_pick_is_first_provider_then_in_order():
    ps = providers(3)
    r = ProviderRouter(ps)
    assert [r.get_next() for _ in range(7)] == ps + ps + ps[:1]


def test_round_robin_skips_unhealthy_and_takes_it_back_once_healed():
    ps = providers(3)
    r = ProviderRouter(ps, failure_threshold=1, clock=Clock())
    r.mark_failed(ps[1])
    assert [r.get_next() for _ in range(4)] == [ps[0], ps[2], ps[0], ps[2]]
    r.mark_success(ps[1])
    assert [r.get_next() for _ in range(3)] == [ps[0], ps[1], ps[2]]


def test_fallback_is_first_healthy_in_list_order():
    ps = providers(3)
    r = ProviderRouter(ps, strategy="fallback", failure_threshold=1, clock=Clock())
    assert [r.get_next() for _ in range(3)] == [ps[0]] * 3
    r.mark_failed(ps[0])
    assert [r.get_next() for _ in range(3)] == [ps[1]] * 3
    r.mark_success(ps[0])
    assert r.get_next() is ps[0]


def test_weighted_follows_weights_with_seeded_rng():
    a, b = ProviderConfig("http://a", weight=3), ProviderConfig("http://b", weight=1)
    r = ProviderRouter([a, b], strategy="weighted", rng=random.Random(42))
    counts = Counter(id(r.get_next()) for _ in range(4000))
    assert 2850 < counts[id(a)] < 3150  # expected 3000; sd ~27


def test_weighted_never_picks_zero_weight_while_a_weighted_one_is_ready():
    a, z = ProviderConfig("http://a", weight=1), ProviderConfig("http://z", weight=0)
    r = ProviderRouter([z, a], strategy="weighted", failure_threshold=1, rng=random.Random(0), clock=Clock())
    assert all(r.get_next() is a for _ in range(500))
    r.mark_failed(a)
    assert r.get_next() is z  # only zero weights left: still served rather than none


def test_random_is_uniform_among_healthy_with_seeded_rng():
    ps = providers(4)
    r = ProviderRouter(ps, strategy="random", failure_threshold=1, rng=random.Random(1), clock=Clock())
    counts = Counter(id(r.get_next()) for _ in range(4000))
    assert all(850 < counts[id(p)] < 1150 for p in ps)
    r.mark_failed(ps[2])
    assert ps[2] not in {r.get_next() for _ in range(500)}


def test_seeded_rng_makes_choices_repeatable():
    ps = providers(5)

    def picks(strategy):
        r = ProviderRouter(ps, strategy=strategy, rng=random.Random(7))
        return [ps.index(r.get_next()) for _ in range(20)]

    for strategy in ("random", "weighted"):
        first = picks(strategy)
        assert picks(strategy) == first and len(set(first)) > 1


# -- construction --------------------------------------------------------------------------------------
def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        ProviderRouter(providers(1), strategy="best")
    assert all(s in str(info.value) for s in STRATEGIES)


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"recovery_time": -1},
                                    {"recovery_time": float("nan")}, {"recovery_time": float("inf")}])
def test_bad_health_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ProviderRouter(providers(1), **kwargs)


@pytest.mark.parametrize("weight", [-1, float("nan"), float("inf")])
def test_bad_weight_is_rejected(weight):
    with pytest.raises(ValueError, match="weight"):
        ProviderRouter([ProviderConfig("http://a", weight=weight)], strategy="weighted")


def test_empty_providers_is_an_error():
    with pytest.raises(ValueError):
        ProviderRouter([])
    with pytest.raises(ValueError):
        create_router_from_urls([])


def test_create_router_from_urls_shares_key_and_passes_options():
    r = create_router_from_urls(["http://a/v1", "http://b/v1"], api_key="sk-x", strategy="fallback",
                                failure_threshold=1, clock=Clock())
    assert [p.base_url for p in r.providers] == ["http://a/v1", "http://b/v1"]
    assert {p.api_key for p in r.providers} == {"sk-x"}
    assert r.strategy == "fallback"
    r.mark_failed(r.providers[0])
    assert r.get_next() is r.providers[1]  # failure_threshold=1 reached the router


def test_create_router_from_urls_refuses_a_single_string():
    with pytest.raises(TypeError):
        create_router_from_urls("http://a/v1")


# -- health ----------------------------------------------------------------------------------------------
def test_threshold_counts_consecutive_failures_only():
    ps = providers(2)
    r = ProviderRouter(ps, failure_threshold=3, clock=Clock())
    for _ in range(2):
        r.mark_failed(ps[0])
    r.mark_success(ps[0])  # breaks the run
    r.mark_failed(ps[0])
    r.mark_failed(ps[0])
    assert r.is_healthy(ps[0])
    r.mark_failed(ps[0])
    assert not r.is_healthy(ps[0])
    assert all(r.get_next() is ps[1] for _ in range(5))


def test_unhealthy_provider_recovers_after_recovery_time_on_the_clock():
    ps = providers(2)
    clock = Clock()
    r = ProviderRouter(ps, strategy="fallback", failure_threshold=1, recovery_time=10, clock=clock)
    r.mark_failed(ps[0])
    assert r.stats()[0]["unhealthy_until"] == 10
    clock.now = 9.99
    assert r.get_next() is ps[1] and not r.available(ps[0])
    clock.now = 10
    assert r.available(ps[0]) and r.healthy_count() == 2  # half-open counts as ready
    assert r.get_next() is ps[0]  # the probe


def test_half_open_gives_exactly_one_probe_until_reported():
    ps = providers(2)
    clock = Clock()
    r = ProviderRouter(ps, failure_threshold=1, recovery_time=10, clock=clock)
    r.mark_failed(ps[0])
    clock.now = 10
    picks = [r.get_next() for _ in range(6)]
    assert picks.count(ps[0]) == 1 and picks.count(ps[1]) == 5
    assert not r.available(ps[0]) and r.healthy_count() == 1
    r.mark_success(ps[0])  # the probe succeeded
    assert r.is_healthy(ps[0]) and r.stats()[0]["consecutive_failures"] == 0
    assert [r.get_next() for _ in range(4)].count(ps[0]) == 2


def test_single_probe_among_concurrent_callers():
    p = providers(1)
    clock = Clock()
    r = ProviderRouter(p, failure_threshold=1, recovery_time=10, clock=clock)
    r.mark_failed(p[0])
    clock.now = 10
    barrier = threading.Barrier(8)
    got = []

    def call():
        barrier.wait(BOUND)
        got.append(r.get_next(block=False))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND)
    assert got.count(p[0]) == 1 and got.count(None) == 7


def test_failed_probe_rests_another_recovery_time():
    p = providers(1)
    clock = Clock()
    r = ProviderRouter(p, failure_threshold=3, recovery_time=10, clock=clock)
    for _ in range(3):
        r.mark_failed(p[0])
    clock.now = 12
    assert r.get_next(block=False) is p[0]
    clock.now = 13
    r.mark_failed(p[0])  # one failed probe is enough, no new run of 3 needed
    assert r.stats()[0]["unhealthy_until"] == 23
    clock.now = 22.9
    assert r.get_next(block=False) is None
    clock.now = 23
    assert r.get_next(block=False) is p[0]


def test_unreported_probe_is_offered_again_after_another_recovery_time():
    p = providers(1)
    clock = Clock()
    r = ProviderRouter(p, failure_threshold=1, recovery_time=5, clock=clock)
    r.mark_failed(p[0])
    clock.now = 5
    assert r.get_next(block=False) is p[0]  # probe never reported
    clock.now = 9.9
    assert r.get_next(block=False) is None
    clock.now = 10
    assert r.get_next(block=False) is p[0]


def test_mark_success_heals_at_once_even_while_resting():
    ps = providers(2)
    r = ProviderRouter(ps, strategy="fallback", failure_threshold=1, recovery_time=60, clock=Clock())
    r.mark_failed(ps[0])
    assert r.get_next() is ps[1]
    r.mark_success(ps[0])  # a request sent earlier came back fine
    assert r.is_healthy(ps[0]) and r.get_next() is ps[0]


def test_late_failures_while_resting_are_counted_but_do_not_extend_the_rest():
    p = providers(1)
    clock = Clock()
    r = ProviderRouter(p, failure_threshold=1, recovery_time=10, clock=clock)
    r.mark_failed(p[0])
    clock.now = 5
    r.mark_failed(p[0])
    s = r.stats()[0]
    assert s["unhealthy_until"] == 10 and s["failures"] == 2 and s["consecutive_failures"] == 2


def test_stats_report_every_provider_in_order():
    ps = providers(2)
    r = ProviderRouter(ps, failure_threshold=2, recovery_time=10, clock=Clock(100))
    r.mark_success(ps[0])
    r.mark_failed(ps[1])
    r.mark_failed(ps[1])
    assert r.stats() == [
        {"base_url": "http://h0/v1", "model": None, "healthy": True, "consecutive_failures": 0,
         "successes": 1, "failures": 0, "unhealthy_until": None},
        {"base_url": "http://h1/v1", "model": None, "healthy": False, "consecutive_failures": 2,
         "successes": 0, "failures": 2, "unhealthy_until": 110.0},
    ]


# -- all unhealthy: wait or None -----------------------------------------------------------------------
def test_all_unhealthy_non_blocking_returns_none():
    ps = providers(2)
    r = ProviderRouter(ps, failure_threshold=1, recovery_time=60, clock=Clock())
    for p in ps:
        r.mark_failed(p)
    assert r.get_next(block=False) is None
    assert r.healthy_count() == 0


def test_all_half_open_probes_the_earliest_recovery_first():
    ps = providers(3)
    clock = Clock()
    r = ProviderRouter(ps, failure_threshold=1, recovery_time=10, clock=clock)
    for t, p in ((0, ps[2]), (1, ps[0]), (2, ps[1])):
        clock.now = t
        r.mark_failed(p)
    clock.now = 50  # all three are due
    assert [r.get_next(block=False) for _ in range(4)] == [ps[2], ps[0], ps[1], None]


def test_all_unhealthy_blocks_until_earliest_recovery_real_clock():
    ps = providers(2)
    r = ProviderRouter(ps, failure_threshold=1, recovery_time=0.2)
    r.mark_failed(ps[1])  # ps[1] recovers first
    r.mark_failed(ps[0])
    t, out = run_in_thread(lambda: r.get_next(timeout=BOUND))
    t.join(BOUND)
    assert out == [ps[1]]  # handed out as the probe once its rest was over


def test_blocked_caller_wakes_on_notify_with_fake_clock():
    p = providers(1)
    clock = Clock()
    r = ProviderRouter(p, failure_threshold=1, recovery_time=1000, clock=clock)
    r.mark_failed(p[0])
    t, out = run_in_thread(lambda: r.get_next())
    clock.now = 1000
    r.notify()  # no wall-time wait: the blocked caller re-reads the fake clock now
    t.join(BOUND)
    assert out == [p[0]]


def test_blocked_caller_wakes_when_a_provider_heals():
    p = providers(1)
    r = ProviderRouter(p, failure_threshold=1, recovery_time=1000)
    r.mark_failed(p[0])
    t, out = run_in_thread(lambda: r.get_next())
    r.mark_success(p[0])
    t.join(BOUND)
    assert out == [p[0]]


def test_timeout_returns_none_when_nothing_recovers_in_time():
    p = providers(1)
    r = ProviderRouter(p, failure_threshold=1, recovery_time=1000)
    r.mark_failed(p[0])
    assert r.get_next(timeout=0.01) is None
    assert r.get_next(timeout=0) is None


# -- exclude and accept --------------------------------------------------------------------------------
def test_exclude_skips_providers_but_falls_back_to_them_if_only_they_are_ready():
    ps = providers(3)
    r = ProviderRouter(ps, strategy="fallback", failure_threshold=1, clock=Clock())
    assert r.get_next(exclude=[ps[0]]) is ps[1]
    assert r.get_next(exclude=ps) is ps[0]
    r.mark_failed(ps[1])
    r.mark_failed(ps[2])
    assert r.get_next(exclude=[ps[0]]) is ps[0]  # the only healthy one, excluded: use it, don't fail


def test_exclude_never_brings_back_a_resting_provider():
    ps = providers(2)
    r = ProviderRouter(ps, failure_threshold=1, recovery_time=60, clock=Clock())
    r.mark_failed(ps[0])
    assert all(r.get_next(exclude=[ps[1]]) is ps[1] for _ in range(3))


def test_accept_predicate_skips_providers_this_time():
    ps = providers(3)
    r = ProviderRouter(ps)
    assert r.get_next(block=False, accept=lambda p: p is ps[2]) is ps[2]
    assert r.get_next(block=False, accept=lambda p: False) is None
    assert r.get_next() is ps[0]  # round robin goes on after ps[2]


def test_blocked_caller_with_accept_wakes_on_notify():
    ps = providers(2)
    r = ProviderRouter(ps)
    free = threading.Event()
    t, out = run_in_thread(lambda: r.get_next(accept=lambda p: free.is_set() and p is ps[1], timeout=BOUND))
    free.set()
    r.notify()
    t.join(BOUND)
    assert out == [ps[1]]


# -- identity --------------------------------------------------------------------------------------------
def test_same_url_with_different_keys_are_distinct_providers():
    a = ProviderConfig("http://same/v1", api_key="k1")
    b = ProviderConfig("http://same/v1", api_key="k2")
    r = ProviderRouter([a, b], failure_threshold=1, clock=Clock())
    r.mark_failed(a)
    assert r.get_next() is b and r.get_next() is b
    assert [s["healthy"] for s in r.stats()] == [False, True]


def test_equal_looking_configs_are_two_providers():
    a, b = ProviderConfig("http://same/v1"), ProviderConfig("http://same/v1")
    assert a != b and len({a, b}) == 2
    r = ProviderRouter([a, b])
    assert r.get_next() is a and r.get_next() is b


def test_same_object_twice_is_rejected():
    a = ProviderConfig("http://a/v1")
    with pytest.raises(ValueError, match="same object"):
        ProviderRouter([a, a])


def test_marking_an_unknown_provider_is_an_error():
    r = ProviderRouter([ProviderConfig("http://a/v1", api_key="k1")])
    stranger = ProviderConfig("http://a/v1", api_key="k1")
    for method in (r.mark_success, r.mark_failed, r.available, r.is_healthy):
        with pytest.raises(ValueError):
            method(stranger)


# -- threads ---------------------------------------------------------------------------------------------
def test_sixteen_threads_thousand_calls_keep_counters_consistent():
    ps = providers(4)
    r = ProviderRouter(ps, failure_threshold=1000)
    errors = []
    barrier = threading.Barrier(16)

    def work():
        try:
            barrier.wait(BOUND)
            for i in range(1000):
                p = r.get_next(timeout=BOUND)
                (r.mark_success if i % 3 else r.mark_failed)(p)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND * 3)
    assert not errors
    stats = r.stats()
    assert sum(s["successes"] for s in stats) == 16 * 666 and sum(s["failures"] for s in stats) == 16 * 334
    assert [s["successes"] + s["failures"] for s in stats] == [4000] * 4  # round robin under contention


def test_sixteen_threads_with_failing_provider_and_real_recovery():
    ps = providers(3)
    r = ProviderRouter(ps, failure_threshold=2, recovery_time=0.001)
    errors = []

    def work():
        try:
            for _ in range(1000):
                p = r.get_next(timeout=BOUND)
                (r.mark_failed if p is ps[0] else r.mark_success)(p)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND * 3)
    assert not errors
    stats = r.stats()
    assert sum(s["successes"] + s["failures"] for s in stats) == 16000
    assert stats[0]["successes"] == 0 and stats[1]["failures"] == stats[2]["failures"] == 0


# -- the invariant, over random histories ----------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a loaded box is slow
@given(strategy=st.sampled_from(STRATEGIES), seed=st.integers(0, 2**16),
       ops=st.lists(st.tuples(st.sampled_from(["get", "ok", "fail", "tick"]), st.integers(0, 3)), max_size=80))
def test_never_hands_out_a_resting_provider_or_a_second_probe(strategy, seed, ops):
    clock = Clock()
    ps = providers(4)
    r = ProviderRouter(ps, strategy=strategy, failure_threshold=2, recovery_time=5, clock=clock,
                       rng=random.Random(seed))
    for op, k in ops:
        if op == "tick":
            clock.now += k
        elif op in ("ok", "fail"):
            (r.mark_success if op == "ok" else r.mark_failed)(ps[k])
        else:
            ready = [p for p in ps if r.available(p)]
            healthy = [p for p in ps if r.is_healthy(p)]
            got = r.get_next(block=False)
            assert (got is None) == (not ready)
            if got is not None:
                assert got in ready  # identity-equal: never resting, never a second probe
                if not r.is_healthy(got):
                    assert not r.available(got)  # it is now the single outstanding probe
            assert r.healthy_count() >= len(healthy)


# -- secrets ---------------------------------------------------------------------------------------------
def test_api_key_never_in_repr_str_stats_or_logs(caplog):
    secret = "sk-very-SECRET-value"
    r = create_router_from_urls(["http://a/v1", "http://b/v1"], api_key=secret, failure_threshold=1,
                                recovery_time=0, clock=Clock())
    with caplog.at_level(logging.DEBUG, logger="flexllm"):
        r.mark_failed(r.providers[0])
        r.get_next()
        r.get_next()
        r.mark_success(r.providers[0])
    text = repr(r.providers[0]) + str(r.providers[1]) + str(r.stats()) + repr(r) + caplog.text
    assert "unhealthy" in caplog.text and "http://a/v1" in caplog.text  # the log did say something
    assert secret not in text
