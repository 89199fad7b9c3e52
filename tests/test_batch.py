"""The batch engine over real HTTP: order, checkpoint format, resume, validation, locks, QPS, crashes."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from flexllm import BatchResultItem, OpenAIClient, OutputFileLockedError

from .conftest import count_lines, read_records, user, wait_for

SUMMARY_KEYS = {"total", "success", "cached", "resumed", "failed", "elapsed_s", "requests_per_s", "prompt_tokens",
                "completion_tokens", "total_tokens", "estimated_cost_usd", "retries", "errors"}


def make_client(server, **kw):
    kw.setdefault("retry_delay", 0.01)
    kw.setdefault("concurrency_limit", 8)
    return OpenAIClient(base_url=server.url, model="mock-model", **kw)








def test_results_in_input_order_with_file_and_summary(server, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = [user(f"p{i}") for i in range(30)]
    meta = [{"id": i} for i in range(30)]
    results, summary = make_client(server).chat_completions_batch_sync(
        prompts, output_file=str(out), metadata_list=meta, return_summary=True, show_progress=False)
    assert results == [f"echo: p{i}" for i in range(30)]
    assert SUMMARY_KEYS <= set(summary)
    assert (summary["total"], summary["success"], summary["failed"], summary["resumed"]) == (30, 30, 0, 0)
    assert summary["total_tokens"] > 0
    records = read_records(out)
    assert sorted(r["index"] for r in records) == list(range(30))
    for r in records:
        assert list(r)[:6] == ["index", "status", "output", "input", "metadata", "usage"]
        assert r["output"] == f"echo: p{r['index']}"
        assert r["input"] == prompts[r["index"]]
        assert r["metadata"] == {"id": r["index"]}
        assert r["status"] == "success"


def test_failed_items_recorded_and_retried_on_next_run(server, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = [user(f"q{i}") for i in range(20)]
    server.add_rule(contains="q3", status=500)
    server.add_rule(contains="q7", status=400)
    client = make_client(server, retry_times=0)
    results, summary = client.chat_completions_batch_sync(prompts, output_file=str(out), return_summary=True,
                                                          show_progress=False)
    assert results[3] is None and results[7] is None and results[0] == "echo: q0"
    assert summary["failed"] == 2 and summary["errors"] == {"ServerError": 1, "BadRequestError": 1}
    failed = {r["index"]: r for r in read_records(out) if r["status"] == "error"}
    assert set(failed) == {3, 7} and "HTTP 500" in failed[3]["error"]
    server.clear()  # the faults are gone
    results, summary = client.chat_completions_batch_sync(prompts, output_file=str(out), return_summary=True,
                                                          show_progress=False)
    assert results == [f"echo: q{i}" for i in range(20)]
    assert (summary["resumed"], summary["success"]) == (18, 2)
    assert len(server.requests) == 2
    records = read_records(out)  # compacted: one record per index, sorted
    assert [r["index"] for r in records] == list(range(20))
    assert all(r["status"] == "success" for r in records)


def test_file_for_other_inputs_is_refused_untouched(server, tmp_path):
    out = tmp_path / "out.jsonl"
    client = make_client(server)
    client.chat_completions_batch_sync([user(f"a{i}") for i in range(5)], output_file=str(out), show_progress=False)
    before = out.read_bytes()
    server.clear()
    other = [user(f"a{i}") for i in range(3)] + [user("changed"), user("a4")]
    with pytest.raises(ValueError, match="index 3"):
        client.chat_completions_batch_sync(other, output_file=str(out), show_progress=False)
    assert out.read_bytes() == before
    assert server.requests == []


def test_torn_last_line_is_dropped_and_overwritten_cleanly(server, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = [user(f"t{i}") for i in range(6)]
    client = make_client(server)
    client.chat_completions_batch_sync(prompts, output_file=str(out), show_progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    kept = [ln for ln in lines if json.loads(ln)["index"] != 5]
    out.write_bytes(b"".join(kept) + b'{"index": 5, "status": "succ')  # a crash mid-write
    server.clear()
    results = client.chat_completions_batch_sync(prompts, output_file=str(out), show_progress=False)
    assert results == [f"echo: t{i}" for i in range(6)]
    assert len(server.requests) == 1
    records = read_records(out)  # every line parses
    assert sorted(r["index"] for r in records) == list(range(6))


def test_metadata_length_mismatch_fails_before_any_request(server, tmp_path):
    with pytest.raises(ValueError, match="metadata_list"):
        make_client(server).chat_completions_batch_sync([user("a"), user("b")], metadata_list=[{}],
                                                        output_file=str(tmp_path / "o.jsonl"))
    assert server.requests == []
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_bytes() == b""


def test_invalid_item_fails_alone_naming_its_index(server):
    items = [user("ok0"), "not messages", [{"no_role": 1}], user("ok3")]
    got = list(make_client(server).iter_chat_completions_batch(items))
    by_index = {i.index: i for i in got}
    assert by_index[0].content == "echo: ok0" and by_index[3].content == "echo: ok3"
    assert by_index[1].status == "error" and "item 1: messages must be a non-empty list" in by_index[1].error
    assert by_index[2].status == "error"
    assert len(server.requests) == 2


def test_iterator_api_accepts_a_generator_and_yields_items(server):
    def gen():
        for i in range(25):
            yield user(f"g{i}")

    items = list(make_client(server, concurrency_limit=3).iter_chat_completions_batch(gen()))
    assert all(isinstance(i, BatchResultItem) for i in items)
    assert sorted(i.index for i in items) == list(range(25))
    assert all(i.content == f"echo: g{i.index}" and i.status == "success" for i in items)


def test_async_batch_facade(server, tmp_path):
    client = make_client(server)

    async def main():
        res = await client.chat_completions_batch([user(f"x{i}") for i in range(12)], show_progress=False)
        items = [i async for i in client.aiter_chat_completions_batch([user("y0"), user("y1")])]
        return res, items

    res, items = asyncio.run(main())
    assert res == [f"echo: x{i}" for i in range(12)]
    assert sorted(i.content for i in items) == ["echo: y0", "echo: y1"]


def test_quota_exhausted_stops_batch_early_keeping_results(server, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = [user(f"z{i}") for i in range(200)]
    server.add_rule(contains="z5", quota=1)
    results, summary = make_client(server, concurrency_limit=2).chat_completions_batch_sync(
        prompts, output_file=str(out), return_summary=True, show_progress=False)
    assert "quota" in summary["stopped_reason"]
    assert results[0] == "echo: z0"
    assert len(server.requests) < 200  # stopped early
    done = [r for r in read_records(out) if r["status"] == "success"]
    assert all(r["output"] == f"echo: z{r['index']}" for r in done) and done


def test_second_concurrent_run_on_same_file_fails_fast(server, tmp_path):
    out = tmp_path / "out.jsonl"
    server.configure(latency=0.05)
    prompts = [user(f"l{i}") for i in range(60)]
    client = make_client(server, concurrency_limit=2)
    errors = []

    def first():
        try:
            client.chat_completions_batch_sync(prompts, output_file=str(out), show_progress=False)
        except Exception as exc:  # pragma: no cover - surfaced by the assertion below
            errors.append(exc)

    t = threading.Thread(target=first)
    t.start()
    wait_for(lambda: count_lines(out) >= 1, what="first run to write")
    with pytest.raises(OutputFileLockedError, match="another running batch"):
        make_client(server).chat_completions_batch_sync(prompts, output_file=str(out), show_progress=False)
    t.join(30)
    assert not errors
    assert sorted(r["index"] for r in read_records(out)) == list(range(60))


def test_max_qps_never_exceeded_in_any_one_second_window(server):
    prompts = [user(f"r{i}") for i in range(25)]
    make_client(server, max_qps=10, concurrency_limit=10).chat_completions_batch_sync(prompts, show_progress=False)
    times = sorted(r.time for r in server.requests)
    assert len(times) == 25
    most = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    assert most <= 11, f"{most} starts in one second at max_qps=10 (+1 allowed for arrival jitter)"


CHILD = textwrap.dedent("""
    import sys
    from flexllm import OpenAIClient
    url, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=4)
    prompts = ([{"role": "user", "content": f"k{i}"}] for i in range(n))  # streamed, with streamed metadata
    client.chat_completions_batch_sync(prompts, output_file=out, show_progress=False,
                                       metadata_list=({"row": i} for i in range(n)))
""")


def run_child(server, out, n):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen([sys.executable, "-c", CHILD, server.url, str(out), str(n)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def check_complete(out, n):
    assert [p.name for p in out.parent.iterdir() if ".tmp-" in p.name] == []
    records = read_records(out)
    assert sorted(r["index"] for r in records) == list(range(n))  # every index exactly once
    for r in records:
        assert r["output"] == f"echo: k{r['index']}"
        assert r["input"] == [{"role": "user", "content": f"k{r['index']}"}]
        assert r["metadata"] == {"row": r["index"]}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_batch_resumes_without_loss_or_double_pay(server, tmp_path, sig):
    out = tmp_path / "out.jsonl"
    n = 120
    server.configure(latency=0.03)
    child = run_child(server, out, n)
    wait_for(lambda: count_lines(out) >= 30, what="child to write 30 records")
    child.send_signal(sig)
    child.wait(30)
    if sig != signal.SIGKILL:  # a clean stop: the file ends on a whole record, the log says how to resume
        assert out.read_bytes().endswith(b"\n")
        read_records(out)
        assert b"rerun to resume" in child.stderr.read()
    on_disk = count_lines(out)
    assert 30 <= on_disk < n, f"{on_disk} records on disk after the kill"
    server.configure(latency=0.0)
    child2 = run_child(server, out, n)
    assert child2.wait(60) == 0, child2.stderr.read().decode()
    check_complete(out, n)
    seen = len(server.requests)  # only what was in flight at the kill is asked again
    assert seen <= n + 4, f"server saw {seen} requests for {n} items ({on_disk} on disk at the kill)"


def test_unwritable_output_path_fails_before_any_request(server, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError):
        make_client(server).chat_completions_batch_sync([user("a")], output_file=str(tmp_path / "afile" / "o.jsonl"),
                                                        show_progress=False)
    assert server.requests == []


def test_write_failure_names_the_file_and_keeps_earlier_records(server, tmp_path, monkeypatch):
    import flexllm._checkpoint as cp

    out = tmp_path / "out.jsonl"
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd, data):
        if data.startswith(b'{"index"'):
            calls["n"] += 1
            if calls["n"] > 3:
                raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(cp.os, "write", failing_write)
    with pytest.raises(OSError, match="out.jsonl.*No space left on device.*rerun to resume"):
        make_client(server, concurrency_limit=1).chat_completions_batch_sync(
            [user(f"w{i}") for i in range(10)], output_file=str(out), show_progress=False)
    monkeypatch.undo()
    assert len(read_records(out)) == 3
    results = make_client(server).chat_completions_batch_sync([user(f"w{i}") for i in range(10)],
                                                              output_file=str(out), show_progress=False)
    assert results == [f"echo: w{i}" for i in range(10)]


def test_results_reach_the_file_while_a_slow_input_is_still_being_read(server, tmp_path):
    out = tmp_path / "out.jsonl"
    more = threading.Event()

    def slow_input():
        for i in range(3):
            yield user(f"s{i}")
        more.wait(15)  # e.g. a generator reading a slow source
        yield user("s3")

    runner = threading.Thread(target=lambda: list(make_client(server).iter_chat_completions_batch(
        slow_input(), output_file=str(out))))
    runner.start()
    try:
        wait_for(lambda: count_lines(out) >= 3, timeout=10, what="the first answers on disk")
    finally:
        more.set()
        runner.join(30)
    assert sorted(r["index"] for r in read_records(out)) == [0, 1, 2, 3]


def test_worker_threads_match_the_work_and_are_gone_after_the_batch(server):
    # a 3-item batch on a client allowed 1,000 requests at once starts 3 workers, not 1,000; none outlives it
    seen = set()

    def names():
        return {t.name for t in threading.enumerate() if t.name.startswith("flexllm-batch_")}

    client = make_client(server, concurrency_limit=1000)
    for item in client.iter_chat_completions_batch([user(f"t{i}") for i in range(3)], show_progress=False):
        seen |= names()
        assert item.status == "success"
    assert 1 <= len(seen) <= 3, seen
    wait_for(lambda: not names(), what="the batch's worker threads to exit")
    assert client.chat_completions_batch_sync([user(f"u{i}") for i in range(40)], show_progress=False) == [
        f"echo: u{i}" for i in range(40)]
    wait_for(lambda: not names(), what="the second batch's worker threads to exit")


LEFT_OPEN = textwrap.dedent("""
    import sys
    from flexllm import OpenAIClient
    client = OpenAIClient(base_url=sys.argv[1], model="mock-model", concurrency_limit=4)
    it = client.iter_chat_completions_batch([[{"role": "user", "content": f"k{i}"}] for i in range(120)],
                                            output_file=sys.argv[2], show_progress=False)
    print(next(it).status, flush=True)  # the script ends with the iterator still open (a module global)
""")


def test_a_batch_iterator_left_open_at_exit_does_not_hang_the_interpreter(server, tmp_path):
    out = tmp_path / "out.jsonl"
    server.configure(latency=0.05)
    proc = subprocess.Popen([sys.executable, "-c", LEFT_OPEN, server.url, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the interpreter hung at exit with a batch iterator left open")
    assert proc.returncode == 0 and stdout.strip() == b"success", stderr.decode()[-2000:]
    assert out.read_bytes().endswith(b"\n")
    kept = len(read_records(out))  # whole records only: what finished before the exit
    assert 1 <= kept < 120
    server.configure(latency=0.0)
    assert child_resumes(server, out, 120)


def child_resumes(server, out, n):
    client = make_client(server)
    results = client.chat_completions_batch_sync([user(f"k{i}") for i in range(n)], output_file=str(out),
                                                 show_progress=False)
    assert results == [f"echo: k{i}" for i in range(n)]
    assert sorted(r["index"] for r in read_records(out)) == list(range(n))
    return True


IN_A_THREAD = textwrap.dedent("""
    import sys, threading
    from flexllm import OpenAIClient
    client = OpenAIClient(base_url=sys.argv[1], model="mock-model", concurrency_limit=4)
    started = threading.Event()

    def run():
        done = 0
        for item in client.iter_chat_completions_batch([[{"role": "user", "content": f"k{i}"}] for i in range(40)],
                                                       show_progress=False):
            started.set()
            done += item.status == "success"
        print("done", done, flush=True)

    threading.Thread(target=run).start()
    started.wait(60)  # the main script ends while its (non-daemon) thread is still running the batch
""")


def test_a_batch_running_in_a_live_thread_when_the_main_script_ends_still_completes(server):
    server.configure(latency=0.05)
    proc = subprocess.run([sys.executable, "-c", IN_A_THREAD, server.url], capture_output=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode == 0 and proc.stdout.strip() == b"done 40", proc.stderr.decode()[-2000:]
