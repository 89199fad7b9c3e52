"""The batch engine's worker pool (flexllm._workers): outcomes are handed to the consumer in groups
(not one wake-up each), and none is lost, duplicated or held back, whatever the jobs do."""
import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexllm import OpenAIClient
from flexllm._workers import Workers

from .conftest import user


def run(jobs, size, window):
    """Submit `jobs` (seconds to work, or an exception to raise) through a window; every outcome taken."""
    def fn(i, how):
        if isinstance(how, Exception):
            raise how
        if how:
            time.sleep(how)  # the work itself (a request's wait), not a wait for a condition
        return i

    pool = Workers(size, fn, name="test-workers")
    got, errors = [], []
    try:
        for i, how in enumerate(jobs):
            while pool.outstanding >= window:
                try:
                    got.append(pool.take())
                except ValueError as exc:
                    errors.append(exc.args[0])
            pool.submit(i, how if not isinstance(how, Exception) else ValueError(i))
        while pool.outstanding:
            try:
                got.append(pool.take())
            except ValueError as exc:
                errors.append(exc.args[0])
    finally:
        pool.close()
    return got, errors


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.sampled_from([0.0005, 0.002]), st.just(ValueError())), max_size=120),
       st.integers(1, 12), st.integers(1, 30))
def test_every_outcome_is_taken_exactly_once(jobs, size, window):
    got, errors = run(jobs, size, window)
    failing = {i for i, how in enumerate(jobs) if isinstance(how, Exception)}
    assert sorted(got) == sorted(set(range(len(jobs))) - failing)
    assert sorted(errors) == sorted(failing)


def test_drain_waits_for_every_job_and_counts_results():
    started = threading.Barrier(5)

    def fn(i):
        if i < 4:
            started.wait(30)  # four jobs are running when drain begins
        return None if i % 2 else i

    pool = Workers(4, fn, name="test-drain")
    for i in range(10):
        pool.submit(i)
    try:
        started.wait(30)
        assert pool.drain() == 5  # results 0, 2, 4, 6, 8 (None is "nothing to keep")
        assert pool.outstanding == 0
    finally:
        pool.close()


def test_a_slow_trickle_is_handed_over_without_waiting_for_a_group():
    # one outcome at a time with nothing else running: the consumer gets each one (bounded linger)
    gate = threading.Semaphore(0)
    pool = Workers(3, lambda i: (gate.acquire(timeout=30), i)[1], name="test-trickle")
    try:
        for i in range(3):
            pool.submit(i)
        for _ in range(3):
            gate.release()
            assert pool.take() in range(3)
        assert pool.outstanding == 0
    finally:
        pool.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
def test_only_the_worker_threads_are_marked_batch_work(server):
    # SCHED_BATCH (no wake-up preemption) is set per worker thread; the host's threads keep their policy
    before = os.sched_getscheduler(0)
    pool = Workers(2, lambda: os.sched_getscheduler(0), name="test-policy")
    try:
        pool.submit()
        assert pool.take() == os.SCHED_BATCH
    finally:
        pool.close()
    c = OpenAIClient(base_url=server.url, model="m", concurrency_limit=4)
    assert c.chat_completions_batch_sync([user(f"q{i}") for i in range(8)], show_progress=False)[0] == "echo: q0"
    assert os.sched_getscheduler(0) == before == os.SCHED_OTHER
    c.close()


AFTER_MAIN = """
import sys, threading, time
from flexllm import OpenAIClient

def job():
    for _ in range(3000):  # until the main thread has returned (bounded: 30 s)
        if not threading.main_thread().is_alive():
            break
        time.sleep(0.01)
    c = OpenAIClient(base_url=sys.argv[1], model="m", concurrency_limit=4)
    out = c.chat_completions_batch_sync([[{"role": "user", "content": f"q{i}"}] for i in range(12)],
                                        show_progress=False, output_file=sys.argv[2])
    print("RESULTS", sum(1 for r in out if r), flush=True)

threading.Thread(target=job).start()  # not a daemon: the interpreter waits for it after main returns
"""


def test_a_batch_started_by_a_thread_after_the_main_thread_returned_completes(server, tmp_path):
    # concurrent.futures refuses new work once the main thread has returned ("cannot schedule new
    # futures after interpreter shutdown"); a batch run by a live non-daemon thread then must still run
    import subprocess
    import sys

    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-c", AFTER_MAIN, server.url, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RESULTS 12" in proc.stdout
    assert len(out.read_text().splitlines()) == 12


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")
def test_a_thread_started_by_a_worker_under_default_policy_does_not_keep_the_batch_policy():
    # a thread inherits its creator's policy: one a worker starts that outlives the batch (the cache's
    # writer, when a worker is first to open the cache) is started under default_policy()
    from flexllm._workers import default_policy

    def start(guarded):
        seen = []
        ready = threading.Event()

        def probe():
            seen.append(os.sched_getscheduler(0))
            ready.set()

        if guarded:
            with default_policy():
                threading.Thread(target=probe).start()
            after = os.sched_getscheduler(0)
        else:
            threading.Thread(target=probe).start()
            after = os.sched_getscheduler(0)
        assert ready.wait(30)
        return seen[0], after

    pool = Workers(1, start, name="test-inherit")
    try:
        pool.submit(False)
        assert pool.take() == (os.SCHED_BATCH, os.SCHED_BATCH)  # the hazard: inherited
        pool.submit(True)
        assert pool.take() == (os.SCHED_OTHER, os.SCHED_BATCH)  # guarded; the worker keeps its own policy
    finally:
        pool.close()
