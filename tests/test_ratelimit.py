"""The token bucket on a fake clock: spacing, bursts, thread safety."""
import threading

import pytest

from flexllm._constants import QPS_SAFETY_MARGIN

from flexllm.ratelimit import TokenBucket

from .conftest import FakeClock


def starts(bucket, clock, n):
    out = []
    for _ in range(n):
        bucket.acquire()
        out.append(clock.now)
    return out


def test_starts_are_evenly_spaced_and_never_exceed_rate_per_second():
    clock = FakeClock()
    bucket = TokenBucket(20, clock=clock, sleep=clock.sleep)  # default safety margin
    times = starts(bucket, clock, 100)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g == pytest.approx((1 + QPS_SAFETY_MARGIN) / 20) for g in gaps)
    for i, t in enumerate(times):
        in_window = [u for u in times[i:] if u < t + 1.0]
        assert len(in_window) <= 20


def test_margin_widens_spacing():
    clock = FakeClock()
    bucket = TokenBucket(10, margin=0.02, clock=clock, sleep=clock.sleep)
    times = starts(bucket, clock, 3)
    assert times[2] - times[1] == pytest.approx(0.102)


def test_idle_time_does_not_accumulate_credit_with_burst_one():
    clock = FakeClock()
    bucket = TokenBucket(5, margin=0.0, clock=clock, sleep=clock.sleep)
    bucket.acquire()
    clock.now += 10.0  # idle
    times = starts(bucket, clock, 3)
    assert times[1] - times[0] == pytest.approx(0.2)


def test_burst_allows_that_many_immediate_starts():
    clock = FakeClock()
    bucket = TokenBucket(10, burst=3, margin=0.0, clock=clock, sleep=clock.sleep)
    waits = [bucket.reserve() for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(0.1)


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_invalid_rate(rate):
    with pytest.raises(ValueError):
        TokenBucket(rate)


def test_reservations_from_many_threads_are_unique_slots():
    clock = FakeClock()  # clock frozen: reservations alone decide the slots
    bucket = TokenBucket(100, margin=0.0, clock=clock, sleep=lambda s: None)
    waits = []
    lock = threading.Lock()

    def worker():
        for _ in range(100):
            w = bucket.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(round(w, 6) for w in waits) == [round(i * 0.01, 6) for i in range(1600)]


def test_delay_reports_without_reserving():
    clock = FakeClock()
    bucket = TokenBucket(10, margin=0.0, clock=clock, sleep=clock.sleep)
    assert bucket.delay() == 0.0
    bucket.acquire()
    assert bucket.delay() == pytest.approx(0.1)
    assert bucket.delay() == pytest.approx(0.1)  # asking twice reserves nothing
    clock.now += 0.1
    assert bucket.delay() == 0.0


def test_try_acquire_takes_only_a_free_slot():
    clock = FakeClock()
    bucket = TokenBucket(10, margin=0.0, clock=clock, sleep=clock.sleep)
    assert bucket.try_acquire() is True
    assert bucket.try_acquire() is False  # the next slot is 0.1 s away: not taken, nothing reserved
    assert bucket.delay() == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.try_acquire() is True
