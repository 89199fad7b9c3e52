"""The batch output file against an adversary: foreign files, full disks, mismatches, stragglers, links."""
import asyncio
import fcntl
import gc
import json
import logging
import os
import stat
import subprocess
import threading

import pytest

from flexllm import OpenAIClient

from .conftest import count_lines, mounted_tmpfs, read_records, user, wait_for


def make_client(server, **kw):
    kw.setdefault("retry_delay", 0.01)
    kw.setdefault("concurrency_limit", 4)
    kw.setdefault("retry_times", 0)
    return OpenAIClient(base_url=server.url, model="mock-model", **kw)


def run_batch(client, prompts, out, **kw):
    kw.setdefault("show_progress", False)
    return client.chat_completions_batch_sync(prompts, output_file=str(out), **kw)


def lock_is_free(out):
    fd = os.open(str(out) + ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path):
    """A real, nearly full file system: a 256 KiB tmpfs (skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with mounted_tmpfs(disk, "size=256k"):
        yield disk


def fill(disk, leave):
    """Fill `disk` until about `leave` bytes are free; return the filler file (delete it to free space)."""
    filler = disk / "filler"
    st = os.statvfs(disk)
    size = max(0, st.f_bavail * st.f_frsize - leave)
    with open(filler, "wb") as f:
        f.write(b"\0" * size)
    return filler


# -- 1. a file that is not ours ---------------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    b'{"prompt": "q0", "row": 0}\n{"prompt": "q1", "row": 1}\n',     # the input file itself
    b'{"prompt": "only line, no newline"}',                            # an unterminated foreign line
    b'{"index": 0, "status": "success", "output": "x"}\nhello world\n',  # ours, then a foreign line
    b"\x89PNG\r\n\x1a\n\0\0\0binary",
    b"\n",
])
def test_foreign_file_is_refused_and_left_byte_for_byte(server, tmp_path, content):
    out = tmp_path / "prompts.jsonl"
    out.write_bytes(content)
    with pytest.raises(ValueError, match="not a flexllm batch output file"):
        run_batch(make_client(server), [user("a"), user("b")], out)
    assert out.read_bytes() == content
    assert server.requests == []
    assert not (tmp_path / "prompts.jsonl.lock").exists() or content.startswith(b'{"index"')


def test_empty_file_and_torn_record_tail_are_ours(server, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"")
    assert run_batch(make_client(server), [user("a")], out) == ["echo: a"]
    out.write_bytes(b'{"index":0,"sta')  # a crash mid-write of the very first record
    assert run_batch(make_client(server), [user("a")], out) == ["echo: a"]
    assert [r["index"] for r in read_records(out)] == [0]


# -- 2. a mismatch found midway ---------------------------------------------------------------------------

def test_generator_mismatch_midway_leaves_the_file_as_it_was(server, tmp_path):
    out = tmp_path / "out.jsonl"
    client = make_client(server, concurrency_limit=1)
    server.add_rule(contains="a0", status=400)
    server.add_rule(contains="a1", status=400)
    run_batch(client, [user(f"a{i}") for i in range(6)], out)
    before = out.read_bytes()
    server.clear()

    def other():  # new inputs for the failed indexes 0 and 1, then a finished index that differs
        for i in range(6):
            yield user(f"b{i}")

    with pytest.raises(ValueError, match="index 2"):
        run_batch(client, other(), out)
    assert out.read_bytes() == before


# -- 3. a lone surrogate ----------------------------------------------------------------------------------

def test_lone_surrogate_fails_alone_with_a_readable_record(server, tmp_path):
    out = tmp_path / "out.jsonl"
    bad = json.loads('"broken emoji \\ud83d"')
    prompts = [user("s0"), user(bad), user("s2")]
    results, summary = run_batch(make_client(server), prompts, out, return_summary=True)
    assert results == ["echo: s0", None, "echo: s2"]
    records = {r["index"]: r for r in read_records(out)}
    assert records[1]["status"] == "error" and "surrogate" in records[1]["error"]
    assert records[1]["input"] == prompts[1]
    assert summary["failed"] == 1
    results = run_batch(make_client(server), prompts, out)  # a rerun does not abort either
    assert results == ["echo: s0", None, "echo: s2"]


# -- 4. resume holds indexes, not records -----------------------------------------------------------------

def records_held():
    """Record-like dicts alive right now (an index plus an input: what an output line decodes to)."""
    gc.collect()  # garbage left in cycles by earlier tests is not held by anyone (it flaked on a loaded box)
    return sum(1 for o in gc.get_objects() if type(o) is dict and "index" in o and "input" in o)


def test_resume_holds_no_records_in_memory(server, tmp_path):
    out = tmp_path / "out.jsonl"
    n = 3000
    with open(out, "w") as f:
        for i in range(n):
            f.write(json.dumps({"index": i, "status": "success", "output": f"echo: r{i}",
                                "input": user(f"r{i}"), "usage": None, "latency": 0.1}) + "\n")
    held = []

    def gen():
        for i in range(n + 5):
            if i == n // 2:
                held.append(records_held())
            yield user(f"r{i}")

    items = 0
    for item in make_client(server).iter_chat_completions_batch(gen(), output_file=str(out)):
        items += 1
        del item
    assert items == n + 5 and len(server.requests) == 5
    assert held[0] < 50, f"{held[0]} records held in memory halfway through a resume of {n}"


def test_resume_state_is_one_8_byte_offset_and_one_bit_per_index(tmp_path):
    from flexllm._checkpoint import Checkpoint

    out = tmp_path / "out.jsonl"
    with open(out, "w") as f:
        for i in range(1000):
            f.write(json.dumps({"index": i, "status": "success" if i % 3 else "error", "output": "x",
                                "input": user(f"r{i}")}) + "\n")
    checkpoint = Checkpoint(str(out)).open()
    try:
        assert records_held() == 0
        assert len(checkpoint.done) == 666 and 0 not in checkpoint.done and 1 in checkpoint.done
        assert (len(checkpoint._offsets._slots), checkpoint._offsets._slots.itemsize) == (1000, 8)
        assert len(checkpoint.done._bits) == 125  # one bit per index
    finally:
        checkpoint.close()


def test_a_fresh_run_holds_one_bit_per_item(tmp_path):
    from flexllm._checkpoint import Checkpoint
    from flexllm.types import BatchResultItem

    checkpoint = Checkpoint(str(tmp_path / "out.jsonl")).open()
    try:
        for i in range(4000):
            checkpoint.write(BatchResultItem(i, "x", None, "success", None, 0.0), user(f"r{i}"))
        assert len(checkpoint.done) == 4000 and len(checkpoint.done._bits) == 500
        assert len(checkpoint._offsets._slots) == 0 and not checkpoint.needs_compaction
    finally:
        checkpoint.close(compact=True)


# -- 5. corrected metadata --------------------------------------------------------------------------------

def test_stored_metadata_wins_and_a_difference_is_warned(server, tmp_path, caplog_flexllm):
    out = tmp_path / "out.jsonl"
    prompts = [user(f"m{i}") for i in range(4)]
    run_batch(make_client(server), prompts, out, metadata_list=[{"id": i} for i in range(4)])
    corrected = [{"id": i} for i in range(4)]
    corrected[2] = {"id": "fixed"}
    items = {i.index: i for i in make_client(server).iter_chat_completions_batch(
        prompts, output_file=str(out), metadata_list=corrected)}
    assert items[2].metadata == {"id": 2} and items[2].resumed
    warnings = [r.getMessage() for r in caplog_flexllm.records if r.levelno == logging.WARNING]
    assert any("metadata" in w and "index 2" in w for w in warnings), warnings


# -- 6. disk full mid-write -------------------------------------------------------------------------------

def test_full_disk_mid_write_leaves_whole_lines_and_resumes(server, tmp_path, small_disk):
    out = small_disk / "out.jsonl"
    filler = fill(small_disk, 40_000)
    prompts = [user(f"f{i} " + "x" * 3000) for i in range(40)]  # ~6 KB per record: full after a few
    client = make_client(server, concurrency_limit=2)
    with pytest.raises(OSError, match="out.jsonl.*No space left"):
        run_batch(client, prompts, out)
    data = out.read_bytes()
    assert data.endswith(b"\n") and len(read_records(out)) >= 1
    os.unlink(filler)
    server.clear()
    assert run_batch(client, prompts, out) == [f"echo: f{i} " + "x" * 3000 for i in range(40)]
    assert sorted(r["index"] for r in read_records(out)) == list(range(40))


def test_a_partial_write_is_truncated_back_to_the_last_whole_line(server, tmp_path, monkeypatch):
    import flexllm._checkpoint as cp

    out = tmp_path / "out.jsonl"
    real_write = os.write
    calls = {"n": 0}

    def half_then_enospc(fd, data):
        if data.startswith(b'{"index"'):
            calls["n"] += 1
            if calls["n"] == 4:
                real_write(fd, data[: len(data) // 2])
                raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(cp.os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space left"):
        run_batch(make_client(server, concurrency_limit=1), [user(f"w{i}") for i in range(10)], out)
    monkeypatch.undo()
    indexes = [r["index"] for r in read_records(out)]  # every line whole (an answer in flight may follow)
    assert out.read_bytes().endswith(b"\n") and indexes[:3] == [0, 1, 2] and 3 not in indexes


# -- 7. a consumer that stops early -----------------------------------------------------------------------

def test_breaking_out_keeps_every_answer_in_flight(server, tmp_path, caplog_flexllm):
    out = tmp_path / "out.jsonl"
    server.configure(latency=0.3)
    for _ in make_client(server, concurrency_limit=6).iter_chat_completions_batch(
            [user(f"i{i}") for i in range(100)], output_file=str(out)):
        break
    wait_for(lambda: lock_is_free(out), what="the batch to release its output file")
    assert count_lines(out) == len(server.requests) >= 6  # every request that was sent was paid for and kept
    assert sorted({r["index"] for r in read_records(out)}) == sorted(
        int(r.body["messages"][0]["content"][1:]) for r in server.requests)
    assert any("kept" in r.getMessage() for r in caplog_flexllm.records)


def test_breaking_out_without_an_output_file_never_says_rerun_to_resume(server, caplog_flexllm):
    """Without output_file nothing is kept and nothing can be resumed: the log lines must not promise it."""
    server.configure(latency=0.3)
    client = make_client(server, concurrency_limit=6)
    for _ in client.iter_chat_completions_batch([user(f"n{i}") for i in range(100)]):
        break
    # the answers in flight are waited for on a background thread, which logs when they are in: wait for it
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "flexllm-batch-close"],
             what="the batch to finish the requests in flight")
    said = [r.getMessage() for r in caplog_flexllm.records if "consumer" in r.getMessage()]
    assert said and not [m for m in said if "resume" in m or "kept" in m], said
    assert client.chat_completions_sync(user("after")) == "echo: after"


def test_breaking_out_of_the_async_iterator_keeps_answers_in_flight(server, tmp_path):
    out = tmp_path / "out.jsonl"
    server.configure(latency=0.3)
    client = make_client(server, concurrency_limit=6)

    async def main():
        async for _ in client.aiter_chat_completions_batch([user(f"i{i}") for i in range(100)],
                                                           output_file=str(out)):
            break

    asyncio.run(main())
    wait_for(lambda: lock_is_free(out), what="the batch to release its output file")
    assert count_lines(out) == len(server.requests) >= 6


# -- 8. compaction on a nearly full disk, stale temp files ------------------------------------------------

def test_failed_compaction_keeps_the_file_and_returns_results(server, tmp_path, small_disk):
    out = small_disk / "out.jsonl"
    prompts = [user(f"c{i} " + "y" * 2000) for i in range(30)]
    server.add_rule(contains="c3 ", status=500)
    client = make_client(server)
    run_batch(client, prompts, out)
    server.clear()
    fill(small_disk, 12_000)  # room to append the retried item, not for a second copy of the file
    results = run_batch(client, prompts, out)
    assert results == [f"echo: c{i} " + "y" * 2000 for i in range(30)]
    assert sorted({r["index"] for r in read_records(out) if r["status"] == "success"}) == list(range(30))
    assert [p.name for p in small_disk.iterdir() if ".tmp-" in p.name] == []


def test_stale_temp_files_of_dead_runs_are_removed(server, tmp_path):
    out = tmp_path / "out.jsonl"
    run_batch(make_client(server), [user("a")], out)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"out.jsonl.tmp-{dead.pid}"
    stale.write_bytes(out.read_bytes())
    alive = tmp_path / f"out.jsonl.tmp-{os.getppid()}"
    alive.write_bytes(out.read_bytes())
    foreign = tmp_path / "out.jsonl.tmp-notes"
    foreign.write_bytes(b"my notes\n")
    not_ours = tmp_path / "out.jsonl.tmp-1"
    not_ours.write_bytes(b"someone else's\n")
    run_batch(make_client(server), [user("a")], out)
    assert not stale.exists()
    assert alive.exists() and foreign.read_bytes() == b"my notes\n" and not_ours.exists()


# -- 9. compaction keeps mode, owner and links ------------------------------------------------------------

def compacting_rerun(server, out, n=6):
    prompts = [user(f"k{i}") for i in range(n)]
    server.add_rule(contains="k2", status=500)
    run_batch(make_client(server), prompts, out)
    server.clear()
    assert run_batch(make_client(server), prompts, out) == [f"echo: k{i}" for i in range(n)]


def test_compaction_keeps_mode_and_owner(server, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"")
    os.chmod(out, 0o600)
    if os.geteuid() == 0:
        os.chown(out, 4321, 4321)
    compacting_rerun(server, out)
    st = os.stat(out)
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (4321, 4321)
    assert [r["index"] for r in read_records(out)] == list(range(6))  # it was compacted


def test_compaction_writes_through_a_symlink(server, tmp_path):
    real = tmp_path / "data" / "real.jsonl"
    real.parent.mkdir()
    link = tmp_path / "out.jsonl"
    link.symlink_to(real)
    compacting_rerun(server, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert [r["index"] for r in read_records(real)] == list(range(6))


# -- 16. pipes and other non-regular files ----------------------------------------------------------------

def test_a_fifo_output_works_without_lock_or_resume(server, tmp_path):
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    results = run_batch(make_client(server), [user(f"p{i}") for i in range(5)], fifo)
    reader.join(30)
    assert results == [f"echo: p{i}" for i in range(5)]
    lines = got[0].splitlines()
    assert sorted(json.loads(ln)["index"] for ln in lines) == list(range(5))
    assert not (tmp_path / "fifo.lock").exists()
