"""Property test of the output file: random runs of appends, full disks, SIGKILLs, foreign lines, mismatches
and resumes; after each, every finished answer is on disk once, no line is torn, a foreign file is untouched."""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flexllm._checkpoint as cp_module
from flexllm._checkpoint import Checkpoint
from flexllm._record import dumps
from flexllm.types import BatchResultItem

N = 8
INPUTS = [[{"role": "user", "content": f"x{i} é"}] for i in range(N)]


@contextmanager
def full_disk(fd, keep):
    """Writes to `fd` put `keep` bytes on disk, then fail with ENOSPC (as a filling disk does)."""
    real = os.write

    def write(target, data):
        if target != fd:
            return real(target, data)
        if keep:
            real(target, bytes(data)[:keep])
        raise OSError(28, "No space left on device")

    cp_module.os.write = write
    try:
        yield
    finally:
        cp_module.os.write = real


def killed(checkpoint):
    """What SIGKILL leaves: descriptors closed by the kernel, no fsync, no compaction, lock released."""
    checkpoint._closing.set()
    if checkpoint._flusher is not None:
        checkpoint._flusher.join()
    checkpoint._close_fds()
    checkpoint._reader.close()
    checkpoint._unlock()


def lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), "torn last line"
    return [json.loads(line) for line in data.splitlines()]


op = st.tuples(st.integers(0, N - 1), st.booleans(), st.sampled_from(["ok", "ok", "ok", "enospc"]),
               st.integers(0, 60))
run = st.fixed_dictionaries({
    "ops": st.lists(op, max_size=10),
    "end": st.sampled_from(["close", "compact", "kill"]),
    "torn": st.integers(0, 200),
    "flush": st.sampled_from([0.0, 1.0]),
    "foreign": st.sampled_from([None, None, None, b"not ours\n", b'{"prompt": "p"}\n', b'{"prompt": "cut']),
    "mismatch": st.booleans(),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(run, min_size=1, max_size=6))
def test_random_runs_keep_every_finished_answer_exactly_once(runs):
    workdir = tempfile.mkdtemp()
    path = os.path.join(workdir, "out.jsonl")
    answers = {}  # index -> the output of its latest finished record that reached the file
    try:
        for number, r in enumerate(runs):
            before_run = open(path, "rb").read() if os.path.exists(path) else b""
            if r["foreign"] is not None and before_run.endswith(b"\n"):  # someone else's text in our file
                with open(path, "ab") as f:
                    f.write(r["foreign"])
                before = open(path, "rb").read()
                with pytest.raises(ValueError, match="not a flexllm batch output file"):
                    Checkpoint(path).open()
                assert open(path, "rb").read() == before  # untouched
                os.truncate(path, len(before) - len(r["foreign"]))

            checkpoint = Checkpoint(path, flush_interval=r["flush"]).open()
            assert set(checkpoint.done) == set(answers)
            for index in checkpoint.done:
                assert checkpoint.resume(index, INPUTS[index])["output"] == answers[index]
            if r["mismatch"] and answers:  # a rerun with other inputs: found midway, the file goes back
                for index, _ok, _, _ in r["ops"]:
                    if index not in answers:
                        checkpoint.write(BatchResultItem(index, "stray", None, "success", None, 0.0), INPUTS[index])
                with pytest.raises(ValueError, match="different input"):
                    checkpoint.resume(min(answers), [{"role": "user", "content": "other"}])
                checkpoint.close(compact=True)
                assert open(path, "rb").read() == before_run  # a torn tail it had is back too
                continue

            for index, ok, fault, keep in r["ops"]:
                item = BatchResultItem(index, f"a{index}-{number}" if ok else None, None,
                                       "success" if ok else "error", None if ok else "ServerError: 500", 0.0)
                if fault == "enospc":
                    with full_disk(checkpoint._fd, keep), pytest.raises(OSError, match="No space left"):
                        checkpoint.write(item, INPUTS[index])
                    lines(path)  # cut back to a whole line at once
                    continue
                checkpoint.write(item, INPUTS[index])
                if ok:
                    answers[index] = item.content

            if r["end"] == "kill":
                killed(checkpoint)
                record = dumps({"index": 0, "status": "success", "output": "never finished",
                                "input": INPUTS[0]})  # our writer's bytes (compact JSON), torn below
                with open(path, "ab") as f:  # the write the kill interrupted
                    f.write(record[: r["torn"] % len(record)])
            else:
                checkpoint.close(compact=r["end"] == "compact")

        final = Checkpoint(path).open()
        final.needs_compaction = True  # compact whatever is there
        final.close(compact=True)
        records = lines(path)
        indexes = [rec["index"] for rec in records]
        assert indexes == sorted(set(indexes)), "one record per index, in order"
        finished = {rec["index"]: rec["output"] for rec in records if rec["status"] == "success"}
        assert finished == answers
    finally:
        shutil.rmtree(workdir)
