"""`flexllm ask` stopped by SIGTERM (systemd, `timeout`, a supervisor) while its request is at a slow server:
it died by the signal's default (exit -15, sometimes a traceback); now it exits 143 with one short line."""
import json
import os
import signal
import subprocess
import sys

from .conftest import wait_for


def _env():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for name in ("FLEXLLM_BASE_URL", "OPENAI_BASE_URL", "FLEXLLM_API_KEY", "OPENAI_API_KEY", "FLEXLLM_MODEL"):
        env.pop(name, None)
    return env


def _sigterm_ask_when(ready, *argv):
    """Start `flexllm ask *argv`, send SIGTERM once `ready(proc)` holds (bounded wait); (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "flexllm", "ask", *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        wait_for(lambda: proc.poll() is not None or ready(proc), timeout=60, what="ask to reach the point")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_sigterm_during_ask_exits_143_with_one_line(server):
    code, err = _sigterm_ask_when(lambda proc: len(server.requests) >= 1, "[[mock:latency=60]] slow", "--model", "m",
                                  "--base-url", server.url)
    assert code == 143, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "SIGTERM" in err, err
    assert len(server.requests) == 1  # not retried on the way out


def _reading_stdin(pid):
    """Whether process `pid` is blocked in read(0, …) (Linux /proc: syscall number 0 on x86-64, fd 0)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    return fields[:2] == ["0", "0x0"]


def test_sigterm_while_ask_reads_its_question_from_stdin_exits_143():
    """The question comes on stdin and never ends (a stuck pipe): SIGTERM there ended it by the signal's
    default (the handler was installed only once the request was sent)."""
    import platform

    import pytest

    if platform.machine() != "x86_64" or not os.path.exists(f"/proc/{os.getpid()}/syscall"):
        pytest.skip("needs Linux x86-64 /proc/<pid>/syscall to see the read on stdin")
    code, err = _sigterm_ask_when(lambda proc: _reading_stdin(proc.pid), "--model", "m", "--base-url",
                                  "http://127.0.0.1:9/v1")
    assert code == 143, (code, err)
    assert "Traceback" not in err and "SIGTERM" in err and len(err.strip().splitlines()) == 1, err


def test_max_cost_on_stdin_stops_at_an_unpriced_line_naming_it_and_resumes(server, tmp_path):
    """With stdin the lines are not read ahead, so a line whose own model has no price is found when it is
    reached: the run stops there naming `-:line` and the model (exit 2, as the same line in a file), keeps
    every finished record, sends nothing for that line, and a rerun with the line fixed resumes."""
    from .conftest import read_records

    out = tmp_path / "out.jsonl"
    rows = [{"prompt": f"q{i}"} for i in range(5)] + [{"prompt": "x", "params": {"model": "no-such-priced-model"}}] + \
        [{"prompt": f"r{i}"} for i in range(3)]
    env = _env()
    argv = [sys.executable, "-m", "flexllm", "batch", "-", "-o", str(out), "--model", "gpt-4o-mini",
            "--base-url", server.url, "--api-key", "k", "--max-cost", "5", "--no-progress"]
    stdin = "".join(json.dumps(r) + "\n" for r in rows)
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "-:6:" in res.stderr and "'no-such-priced-model'" in res.stderr and "rerun" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not any(r.body.get("model") == "no-such-priced-model" for r in server.requests)
    done = {r["index"] for r in read_records(out)}
    assert all(r["status"] == "success" for r in read_records(out)) and done <= set(range(5))
    sent_before = len(server.requests)
    rows[5]["params"]["model"] = "gpt-4o-mini"
    res = subprocess.run(argv, input="".join(json.dumps(r) + "\n" for r in rows), capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(r["index"] for r in read_records(out)) == list(range(9))
    assert len(server.requests) - sent_before == 9 - len(done)  # finished lines were not asked again
