"""The `flexllm` command through real subprocesses against the mock server."""
import json
import os
import signal
import subprocess
import sys

import pytest

from .conftest import count_lines, read_records, wait_for

KEY = "sk-cli-SECRET-424242"


def run(*args, env=None, input=None, timeout=60):
    full_env = dict(os.environ, PYTHONPATH=os.getcwd())
    for name in ("FLEXLLM_BASE_URL", "OPENAI_BASE_URL", "FLEXLLM_API_KEY", "OPENAI_API_KEY", "FLEXLLM_MODEL"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "flexllm", *args], capture_output=True, text=True, env=full_env,
                          input=input, timeout=timeout)


def popen(*args):
    return subprocess.Popen([sys.executable, "-m", "flexllm", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()), text=True)


def write_input(path, n, start=0):
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"prompt": f"q{i}", "row": i}) + "\n")








def batch_args(server, inp, out, *extra):
    return ("batch", str(inp), "-o", str(out), "--model", "mock-model", "--base-url", server.url, *extra)


def test_batch_end_to_end_with_metadata_and_summary(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 20)
    with open(inp, "a") as f:
        f.write("\n" + json.dumps({"messages": [{"role": "user", "content": "m"}], "tag": "x"}) + "\n")
    res = run(*batch_args(server, inp, out, "--system", "be nice", "--temperature", "0.5"))
    assert res.returncode == 0, res.stderr
    recs = {r["index"]: r for r in read_records(out)}
    assert len(recs) == 21
    assert recs[3]["output"] == "echo: q3" and recs[3]["metadata"] == {"row": 3}
    assert recs[3]["input"][0] == {"role": "system", "content": "be nice"}
    assert recs[20]["metadata"] == {"tag": "x"}
    assert "success: 21" in res.stderr and res.stdout == ""
    assert server.requests[0].body["temperature"] == 0.5
    assert "\x1b[" not in res.stderr  # no TTY: log lines, no drawn progress bar


def test_failed_items_exit_1_and_are_retried_by_rerun(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 5)
    server.add_rule(contains="q2", status=500)
    res = run(*batch_args(server, inp, out, "--retries", "0"))
    assert res.returncode == 1 and "failed: 1" in res.stderr and "rerun" in res.stderr
    server.clear()
    res = run(*batch_args(server, inp, out))
    assert res.returncode == 0 and "resumed: 4" in res.stderr
    assert len(server.requests) == 1


@pytest.mark.parametrize("line, message", [
    ("{not json", "in.jsonl:3: not valid JSON"),
    ('{"text": "no prompt"}', "in.jsonl:3: needs \"messages\" or \"prompt\""),
    ('{"messages": "hi"}', "in.jsonl:3: \"messages\" must be"),
])
def test_bad_input_line_exits_2_naming_the_line(server, tmp_path, line, message):
    inp = tmp_path / "in.jsonl"
    write_input(inp, 2)
    with open(inp, "a") as f:
        f.write(line + "\n")
    res = run(*batch_args(server, inp, tmp_path / "out.jsonl"))
    assert res.returncode == 2 and message in res.stderr
    assert server.requests == []


def test_usage_errors_exit_2(tmp_path):
    inp = tmp_path / "in.jsonl"
    write_input(inp, 1)
    res = run("batch", str(inp), "-o", str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1")
    assert res.returncode == 2 and "--model" in res.stderr
    res = run("batch", str(inp), "-o", str(tmp_path / "o.jsonl"), "--model", "m")
    assert res.returncode == 2 and "--base-url" in res.stderr
    assert run("batch").returncode == 2


def test_env_variables_are_used_and_key_never_printed(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 3)
    env = {"FLEXLLM_BASE_URL": server.url, "FLEXLLM_MODEL": "env-model", "FLEXLLM_API_KEY": KEY}
    res = run("batch", str(inp), "-o", str(out), env=env)
    assert res.returncode == 0, res.stderr
    assert server.requests[0].body["model"] == "env-model"
    assert server.requests[0].headers["authorization"].startswith("<redacted")
    write_input(inp, 1, start=100)
    server.add_rule(status=401, message=f"bad key {KEY}")
    res = run("batch", str(inp), "-o", str(tmp_path / "o2.jsonl"), env=env)
    assert res.returncode == 1
    assert KEY not in res.stdout + res.stderr and KEY not in (tmp_path / "o2.jsonl").read_text()
    assert KEY not in run("batch", "--help", env=env).stdout


def test_resume_after_sigkill_every_index_once(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 150)
    server.configure(latency=0.03)
    proc = popen(*batch_args(server, inp, out, "--concurrency", "4"))
    wait_for(lambda: count_lines(out) >= 40)
    proc.kill()
    proc.wait(10)
    server.configure(latency=0.0)
    res = run(*batch_args(server, inp, out, "--concurrency", "4"))
    assert res.returncode == 0, res.stderr
    recs = read_records(out)
    assert sorted(r["index"] for r in recs) == list(range(150))
    assert all(r["output"] == f"echo: q{r['index']}" and r["metadata"] == {"row": r["index"]} for r in recs)
    assert len(server.requests) <= 150 + 4


def test_interrupt_exits_130_and_says_how_to_resume(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 100)
    server.configure(latency=0.05)
    proc = popen(*batch_args(server, inp, out, "--concurrency", "2"))
    wait_for(lambda: count_lines(out) >= 5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Rerun the same command to resume" in err


def test_overlapping_run_fails_clearly(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 60)
    server.configure(latency=0.05)
    first = popen(*batch_args(server, inp, out, "--concurrency", "1"))
    wait_for(lambda: count_lines(out) >= 1)
    second = run(*batch_args(server, inp, out))
    assert second.returncode == 1 and "another running batch" in second.stderr
    first.kill()
    first.wait(10)


def test_ask_streams_answer_from_argument_and_stdin(server):
    res = run("ask", "what is up", "--model", "m", "--base-url", server.url)
    assert res.returncode == 0 and res.stdout == "echo: what is up\n"
    assert server.requests[-1].body["stream"] is True
    res = run("ask", "--model", "m", "--base-url", server.url, input="from stdin")
    assert res.stdout == "echo: from stdin\n"


def test_ask_says_when_the_answer_was_cut_off_and_prints_tool_calls(server):
    res = run("ask", "[[mock:finish=length]] a long story", "--model", "m", "--base-url", server.url,
              "--max-tokens", "5")
    assert res.returncode == 0 and res.stdout == "echo: a long story\n"  # what arrived, then one line on stderr
    assert "cut off" in res.stderr and "--max-tokens" in res.stderr
    res = run("ask", "plain", "--model", "m", "--base-url", server.url)
    assert res.stderr == ""
    res = run("ask", '[[mock:tool=lookup;tool_args={"q": 1}]] go', "--model", "m", "--base-url", server.url)
    assert res.returncode == 0 and '"lookup"' in res.stdout  # a reply that only calls tools is never empty


def test_ask_error_exit_1_without_key(server):
    res = run("ask", "[[mock:status=401]] x", "--model", "m", "--base-url", server.url, "--api-key", KEY)
    assert res.returncode == 1 and "401" in res.stderr and KEY not in res.stderr + res.stdout


def test_tokens_and_pricing(tmp_path):
    inp = tmp_path / "in.jsonl"
    write_input(inp, 10)
    res = run("tokens", str(inp), "--model", "gpt-4o", "--avg-output-tokens", "100")
    assert res.returncode == 0 and "items: 10" in res.stdout and "input tokens:" in res.stdout
    assert "estimated cost: $" in res.stdout
    table = run("pricing")
    assert table.returncode == 0 and "gpt-4o-mini" in table.stdout and "deepseek-chat" in table.stdout
    one = run("pricing", "gpt-4o-mini-2024-07-18")
    assert one.returncode == 0 and "$0.15" in one.stdout and "$0.6" in one.stdout
    assert run("pricing", "no-such-model").returncode == 1


def test_mock_command_serves(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "flexllm", "mock", "--port", "0"], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        res = run("ask", "ping", "--model", "m", "--base-url", url)
        assert res.stdout == "echo: ping\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize("command", ["batch", "ask", "mock", "tokens", "pricing"])
def test_help(command):
    res = run(command, "--help")
    assert res.returncode == 0 and "usage:" in res.stdout


def test_demo_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    res = subprocess.run([sys.executable, "-m", "flexllm.demo"], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert count_lines(tmp_path / "demo-output" / "out.jsonl") == 60
    assert "resumed: " in res.stderr
    indexes = [r["index"] for r in read_records(tmp_path / "demo-output" / "out.jsonl")]
    assert "in input order" not in res.stdout or indexes == sorted(indexes)  # what it says of the file is true


def test_stdin_input_limit_and_cache(server, tmp_path):
    lines = "".join(json.dumps({"prompt": f"s{i}"}) + "\n" for i in range(8))
    cache = ("--cache-dir", str(tmp_path / "cache"))
    first = run(*batch_args(server, "-", tmp_path / "a.jsonl", "--limit", "5", *cache), input=lines)
    assert first.returncode == 0, first.stderr
    assert len(read_records(tmp_path / "a.jsonl")) == 5
    second = run(*batch_args(server, "-", tmp_path / "b.jsonl", *cache), input=lines)
    assert second.returncode == 0 and "cached: 5" in second.stderr and "success: 3" in second.stderr
    assert len(server.requests) == 8


def test_output_to_the_input_file_is_refused_untouched(server, tmp_path):
    inp = tmp_path / "prompts.jsonl"
    write_input(inp, 3)
    before = inp.read_bytes()
    res = run(*batch_args(server, inp, inp))
    assert res.returncode == 2 and "not a flexllm batch output file" in res.stderr
    assert inp.read_bytes() == before and server.requests == []


@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
def test_output_to_stdout_pipe(server, tmp_path, target):
    inp = tmp_path / "in.jsonl"
    write_input(inp, 5)
    for leftover in ("/dev/stdout.lock", "-"):  # from an older flexllm that created them
        if os.path.isfile(leftover):
            os.unlink(leftover)
    res = run(*batch_args(server, inp, target))
    assert res.returncode == 0, res.stderr
    assert sorted(json.loads(ln)["index"] for ln in res.stdout.splitlines()) == list(range(5))
    assert not os.path.exists("/dev/stdout.lock") and not os.path.exists("-")


def test_a_line_with_a_lone_surrogate_fails_alone_and_is_named(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 3)
    with open(inp, "a") as f:
        f.write('{"prompt": "half an emoji \\ud83d"}\n')
    res = run(*batch_args(server, inp, out))
    assert res.returncode == 1
    assert "in.jsonl:4" in res.stderr and "surrogate" in res.stderr
    recs = {r["index"]: r for r in read_records(out)}
    assert recs[3]["status"] == "error" and all(recs[i]["status"] == "success" for i in range(3))
