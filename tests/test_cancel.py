"""Hangs and cancellation: async iterators that cannot start, cancelled awaits, interruptible sleeps.

Every test counts events on the server (arrivals, in-flight peaks) and waits on conditions with a bound.
"""
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from flexllm import OpenAIClient, OutputFileLockedError
from flexllm.mock import MockServer

from .conftest import read_records, user, wait_for

BOUND = 60.0  # generous: a hang fails the test instead of blocking the suite


async def until(predicate):
    """Poll `predicate` from the event loop, bounded by BOUND (never a bare sleep)."""
    for _ in range(int(BOUND * 100)):
        if predicate():
            return
        await asyncio.sleep(0.01)


def assert_pool_drains(client, why):
    """The client's async thread pool shuts down within BOUND: no worker is left sleeping or reading."""
    pool = client._pool()
    done = threading.Event()
    threading.Thread(target=lambda: (pool.shutdown(wait=True), done.set()), daemon=True).start()
    assert done.wait(BOUND), why


@pytest.fixture
def own_server():
    """A server of the test's own, for in-flight peaks: requests that earlier tests abandoned on the module's
    server (held there up to 100 s) would count in them."""
    with MockServer() as s:
        yield s


def collect(client, messages_list, **kwargs):
    async def consume():
        return [item async for item in client.aiter_chat_completions_batch(messages_list, **kwargs)]

    async def main():
        return await asyncio.wait_for(consume(), BOUND)

    return asyncio.run(main())


# -- issue 11 item 13: an async batch iterator that cannot start raises, never hangs ----------------------

def test_aiter_batch_raises_when_it_cannot_start(server, tmp_path):
    client = OpenAIClient(base_url=server.url, model="m", retry_times=0)
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(ValueError, match="metadata_list"):
        collect(client, [user("a"), user("b")], metadata_list=[{"id": 1}])
    with pytest.raises(ValueError, match="model"):
        collect(OpenAIClient(base_url=server.url, retry_times=0), [user("a")])
    with pytest.raises(OSError):
        collect(client, [user("a")], output_file=str(tmp_path))  # a directory
    client.chat_completions_batch_sync([user("a"), user("b")], output_file=out, show_progress=False)
    with pytest.raises(ValueError, match="index"):
        collect(client, [user("other"), user("b")], output_file=out)  # resume mismatch
    holder = client.iter_chat_completions_batch([user("a"), user("b"), user("c")], output_file=out)
    next(holder)  # the first run holds the output file's lock while it is suspended here
    try:
        with pytest.raises(OutputFileLockedError):
            collect(client, [user("a"), user("b"), user("c")], output_file=out)
    finally:
        holder.close()
    assert [r.index for r in collect(client, [user("a"), user("b"), user("c")], output_file=out)] == [0, 1, 2]
    client.close()


# -- item 14: a cancelled await stops the work, keeps answers in flight, releases lock and slots ----------

def test_cancelled_batch_await_stops_keeps_in_flight_and_unlocks(server, tmp_path):
    out = str(tmp_path / "out.jsonl")
    client = OpenAIClient(base_url=server.url, model="m", concurrency_limit=2, retry_times=0)
    # two slow items occupy both workers; the rest would be fast if they ever started
    messages = [user("[[mock:latency=6]] slow0"), user("[[mock:latency=6]] slow1")] + \
        [user(f"fast{i}") for i in range(2, 20)]

    async def main():
        task = asyncio.create_task(client.chat_completions_batch(messages, output_file=out, show_progress=False))
        await until(lambda: len(server.requests) >= 2 or task.done())
        assert len(server.requests) == 2 and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert len(server.requests) == 2  # nothing started after the cancel
    records = read_records(out)
    assert sorted((r["index"], r["status"]) for r in records) == [(0, "success"), (1, "success")]  # kept
    # the lock is free at once and the rerun resumes: only the 18 unfinished items are requested
    results = client.chat_completions_batch_sync(messages, output_file=out, show_progress=False)
    assert results[2:] == [f"echo: fast{i}" for i in range(2, 20)] and None not in results
    assert len(server.requests) == 20
    client.close()


def test_timed_out_await_gives_back_its_concurrency_slot(own_server):
    server = own_server
    client = OpenAIClient(base_url=server.url, model="m", concurrency_limit=1, retry_times=0)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.chat_completions(user("[[mock:latency=20]] slow")), 0.5)
        # the only slot belonged to the abandoned call: a later call must not wait for that request
        return await asyncio.wait_for(client.chat_completions(user("next")), BOUND)

    assert asyncio.run(main()) == "echo: next"
    # the answer came while the abandoned request was still on the server (counted, not timed)
    assert server.max_in_flight == 2
    assert [r.body["messages"][0]["content"] for r in server.requests][-1] == "next"
    client.close()


def test_many_timed_out_awaits_do_not_exhaust_the_thread_pool(own_server):
    """Each abandoned request's socket is shut down, so its thread ends at once: after 12 timed-out calls
    (more than the async thread pool's 2·concurrency_limit+4 threads) a new call still runs at once."""
    server = own_server
    client = OpenAIClient(base_url=server.url, model="m", concurrency_limit=1, retry_times=2)

    async def main():
        for i in range(12):
            task = asyncio.create_task(client.chat_completions(user(f"[[mock:latency=30]] slow {i}")))
            await until(lambda i=i, task=task: len(server.requests) > i or task.done())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return await asyncio.wait_for(client.chat_completions(user("next")), BOUND)

    assert asyncio.run(main()) == "echo: next"
    # all 12 slow requests reached the server (none retried), and the fast one was answered while the
    # server was still holding every one of them (counted on the server, not timed)
    assert len(server.requests) == 13 and server.max_in_flight == 13
    client.close()


def test_cancelled_await_never_starts_a_retry(server):
    client = OpenAIClient(base_url=server.url, model="m", retry_times=3)

    async def main():
        task = asyncio.create_task(client.chat_completions(user("[[mock:status=429;retry_after=100]] x")))
        await until(lambda: server.requests)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert_pool_drains(client, "the cancelled call kept sleeping out its Retry-After")
    assert len(server.requests) == 1
    client.close()


def test_abandoned_async_stream_never_starts_a_retry(server):
    client = OpenAIClient(base_url=server.url, model="m", retry_times=3)

    async def main():
        stream = client.chat_completions_stream(user("[[mock:status=429;retry_after=100]] x"))
        task = asyncio.create_task(stream.__anext__())
        await until(lambda: server.requests)
        task.cancel()  # the consumer leaves while the producer sleeps out the Retry-After
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()

    asyncio.run(main())
    assert_pool_drains(client, "the abandoned stream kept sleeping out its Retry-After")
    assert len(server.requests) == 1
    client.close()


def test_abandoned_async_stream_on_a_stalled_server_frees_thread_and_slot(server):
    client = OpenAIClient(base_url=server.url, model="m", concurrency_limit=1, retry_times=3)

    async def main():
        stream = client.chat_completions_stream(user("[[mock:trickle=5]] stalled"))  # 1 byte per 5 s
        task = asyncio.create_task(stream.__anext__())
        await until(lambda: server.requests)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()

    asyncio.run(main())
    assert_pool_drains(client, "the abandoned stream kept reading a stalled server")
    assert client.chat_completions_sync(user("next")) == "echo: next"  # its only slot is free again
    assert len(server.requests) == 2  # and the cut stream was not retried
    client.close()


def test_cancelled_pool_batch_wakes_sleeping_retries(server, tmp_path):
    from flexllm import LLMClientPool

    pool = LLMClientPool(endpoints=[{"base_url": server.url, "api_key": "k", "model": "m"}], retry_times=3)
    messages = [user(f"[[mock:status=429;retry_after=100]] {i}") for i in range(2)]

    async def main():
        task = asyncio.create_task(pool.chat_completions_batch(messages, output_file=str(tmp_path / "o.jsonl"),
                                                               show_progress=False))
        await until(lambda: len(server.requests) >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, BOUND)

    asyncio.run(main())
    assert len(server.requests) == 2
    pool.close()


# -- item 15: a second Ctrl-C / SIGTERM ends a batch whose workers sleep out a Retry-After ----------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_exits_while_workers_sleep_out_retry_after(server, tmp_path, sig):
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    rows = [{"prompt": "[[mock:latency=100]] on the wire"}, {"prompt": "[[mock:status=429;retry_after=100]] a"}]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "flexllm", "batch", str(inp), "-o", str(out), "--base-url",
                             server.url, "--model", "m", "--concurrency", "2", "--no-progress"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    # first signal: stop, wait for the request on the wire (the sleeper wakes and ends); second: abandon it
    rc, lines = signal_twice(proc, server, sig, handled="in flight")
    assert rc == 130, "".join(lines)
    assert len(server.requests) == 2, "a new attempt was sent after the signal"


def signal_twice(proc, server, sig, handled):
    """Once both requests arrived and the 429 is being slept out: `sig`, wait for the log line `handled`,
    `sig` again. Returns (exit code, stderr lines); the process is killed if it outlives the bound."""
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(server.requests) == 2, BOUND, "both requests to arrive")
        wait_for(lambda: any("retrying in" in ln for ln in lines) or proc.poll() is not None, BOUND,
                 "the 429 to be answered with a retry sleep")
        proc.send_signal(sig)
        wait_for(lambda: any(handled in ln for ln in lines) or proc.poll() is not None, BOUND,
                 "the first signal to be handled")
        proc.send_signal(sig)
        rc = proc.wait(BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(BOUND)
    return rc, lines


ASYNC_BATCH = """
import asyncio, sys
from flexllm import LLMClient
client = LLMClient(model="m", base_url=sys.argv[1], concurrency_limit=2)
msgs = [[{"role": "user", "content": "[[mock:latency=100]] on the wire"}],
        [{"role": "user", "content": "[[mock:status=429;retry_after=100]] sleeper"}]]
asyncio.run(client.chat_completions_batch(msgs, output_file=sys.argv[2], show_progress=False))
"""


def test_second_ctrl_c_under_asyncio_run_exits(server, tmp_path):
    """asyncio.run cancels the awaiting batch on the first Ctrl-C (it drains) and stops the loop on the second:
    the batch then abandons its request on the wire, so the interpreter's exit does not wait for it."""
    proc = subprocess.Popen([sys.executable, "-c", ASYNC_BATCH, server.url, str(tmp_path / "out.jsonl")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    rc, lines = signal_twice(proc, server, signal.SIGINT, handled="cancel again")
    assert rc != 0 and len(server.requests) == 2, "".join(lines)
    assert not any("attempt 3" in ln for ln in lines)
