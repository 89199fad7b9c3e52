"""SIGKILL the driver of a Ray Data job halfway, rerun the same script: every id once, nothing finished asked again."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytest.importorskip("ray", reason="the ray extra is installed by `make test`")
pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ray_batch.py"
ROWS, ACTORS, PER_ACTOR = 300, 2, 4


def checkpointed(directory):
    total = 0
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        with open(os.path.join(directory, name), "rb") as f:
            total += f.read().count(b"\n")
    return total


def run(server, tmp_path, *extra):
    cmd = [sys.executable, str(EXAMPLE), "--rows", str(ROWS), "--base-url", server.url, "--qps", "0",
           "--actors", str(ACTORS), "--concurrency", str(PER_ACTOR),
           "--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(tmp_path / "answers.jsonl"), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def settled(server, quiet=1.0, timeout=60.0):
    """Wait (bounded) until the server has seen no new request for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = len(server.requests), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = len(server.requests)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError("requests kept arriving after the driver was killed")


def map_workers(driver):
    """PIDs of the Ray actor processes running LLMMapper for `driver` (started with start_new_session=True,
    so its Ray processes are in its session): never an actor of another Ray job on the same machine (it
    once killed a concurrent test_ray run's actor, whose block Ray then re-ran: 317 requests for 300 rows)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"MapBatches(LLMMapper)" in f.read() and os.getsid(int(pid)) == driver.pid:
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def test_sigkill_an_actor_then_the_driver_then_rerun(server, tmp_path):
    """An actor dies at a third (Ray retries its block), the driver dies at a half; the rerun completes."""
    server.configure(latency=0.05)
    first = run(server, tmp_path)
    try:
        wait_for(lambda: checkpointed(tmp_path / "ckpt") >= ROWS // 3 or first.poll() is not None,
                 timeout=240, what="a third of the rows checkpointed")
        victims = map_workers(first)
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert victims, "no LLMMapper actor process found"
        os.kill(victims[0], signal.SIGKILL)
        wait_for(lambda: checkpointed(tmp_path / "ckpt") >= ROWS // 2 or first.poll() is not None,
                 timeout=240, what="half of the rows checkpointed")
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
    finally:
        first.kill()  # SIGKILL the driver alone: Ray's own processes must notice and stop its actors
        first.wait()
    try:
        before = settled(server)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # clean up anything of that run still alive
        except ProcessLookupError:
            pass
    done_at_kill = checkpointed(tmp_path / "ckpt")
    assert done_at_kill < ROWS and not (tmp_path / "answers.jsonl").exists()

    second = run(server, tmp_path)
    _, err = second.communicate(timeout=240)
    assert second.returncode == 0, err.decode()[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == list(range(ROWS))  # every id exactly once
    assert all(r["output"] == f"echo: Summarise item {r['id']}" for r in lines)
    assert sum(r["status"] == "resumed" for r in lines) >= done_at_kill
    # each row asked once, plus what was in flight in the killed actor and when the driver died
    assert len(server.requests) <= ROWS + PER_ACTOR + ACTORS * PER_ACTOR
    assert len(server.requests) - before <= ROWS - done_at_kill
