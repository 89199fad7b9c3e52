"""README promises of the `flexllm` command, attacked from outside (real subprocesses, the mock server)."""
import json

from .conftest import mounted_tmpfs, read_records
from .test_cli import batch_args, run, write_input


def test_dry_run_needs_no_base_url_or_key(tmp_path):
    # README: `flexllm batch prompts.jsonl -o out.jsonl --model gpt-4o-mini --max-tokens 256 --max-cost 20 --dry-run`
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 3)
    res = run("batch", str(inp), "-o", str(out), "--model", "gpt-4o-mini", "--max-tokens", "256",
              "--max-cost", "20", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "dry run: 3 items" in res.stderr and "estimated cost $" in res.stderr
    assert not out.exists()


def test_output_path_that_is_a_directory_is_a_usage_error(server, tmp_path):
    inp = tmp_path / "in.jsonl"
    write_input(inp, 2)
    res = run(*batch_args(server, inp, tmp_path))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "is a directory" in res.stderr
    assert len(server.requests) == 0


def test_input_with_a_byte_order_mark_and_crlf_is_read(server, tmp_path):
    # files saved by Windows editors start with a UTF-8 BOM and end lines with CRLF
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "id": 1}\r\n{"prompt": "b"}\r\n')
    res = run(*batch_args(server, inp, out))
    assert res.returncode == 0, res.stderr
    recs = sorted(read_records(out), key=lambda r: r["index"])
    assert [r["output"] for r in recs] == ["echo: a", "echo: b"] and recs[0]["metadata"] == {"id": 1}
    tok = run("tokens", str(inp), "--model", "gpt-4o")
    assert tok.returncode == 0 and "items: 2" in tok.stdout


def test_a_file_saved_in_a_windows_code_page_is_named_as_not_utf8(server, tmp_path):
    # cp1252 / Latin-1 "café": byte 0xE9 is not UTF-8. The line fails alone (as README says); the message must
    # name the byte and the encoding, not a "lone surrogate" the user never wrote
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_bytes('{"prompt": "café"}\n{"prompt": "tea"}\n'.encode("cp1252"))
    res = run(*batch_args(server, inp, out))
    assert res.returncode == 1, res.stderr
    assert f"{inp}:1:" in res.stderr and "0xe9" in res.stderr and "not UTF-8" in res.stderr
    recs = {r["index"]: r for r in read_records(out)}
    assert recs[1]["status"] == "success" and recs[0]["status"] == "error"
    assert "0xe9" in recs[0]["error"] and "not UTF-8" in recs[0]["error"]


def test_an_output_on_a_read_only_file_system_is_a_usage_error_not_rerun_to_resume(server, tmp_path):
    """Nothing can be written there, so nothing was kept and a rerun fails the same way: exit 2 naming the
    cause, no "results so far ... rerun to resume" (nor "submitted batches are in ..." for provider batches)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    with mounted_tmpfs(ro, "ro,size=64k"):
        inp = tmp_path / "in.jsonl"
        write_input(inp, 2)
        for extra in ((), ("--provider-batch",)):
            res = run(*batch_args(server, inp, ro / "out.jsonl", *extra))
            assert res.returncode == 2, res.stderr
            assert "Read-only file system" in res.stderr and "rerun" not in res.stderr.lower(), res.stderr
        assert len(server.requests) == 0


def test_negative_limit_is_a_usage_error(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 2)
    res = run(*batch_args(server, inp, out, "--limit", "-1"))
    assert res.returncode == 2 and "--limit" in res.stderr
    assert len(server.requests) == 0


def test_ask_dash_reads_the_question_from_stdin(server):
    res = run("ask", "-", "--model", "m", "--base-url", server.url, input="from stdin\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "echo: from stdin"
    assert json.dumps(server.requests[0].body["messages"][-1]["content"]).strip('"') == "from stdin\\n"


def test_ask_with_a_parameter_the_provider_refuses_is_a_usage_error(server):
    # `--thinking minimal` is offered by the CLI; Claude has no such level: exit 2 naming it, no traceback
    res = run("ask", "hi", "--model", "claude-haiku-4-5", "--provider", "anthropic", "--base-url",
              server.url.rsplit("/v1", 1)[0], "--thinking", "minimal", env={"ANTHROPIC_API_KEY": "sk-ant"})
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "thinking" in res.stderr
    assert len(server.requests) == 0


def test_mock_on_a_taken_port_or_bad_rate_says_so_without_a_traceback(server):
    port = server.url.split(":")[2].split("/")[0]
    for args, words in ((("--port", port), "cannot listen"), (("--error-rate", "1.5"), "--error-rate"),
                        (("--latency", "-1"), "--latency")):
        res = run("mock", *args, timeout=30)
        assert res.returncode == 2, (args, res.stderr)
        assert words in res.stderr and "Traceback" not in res.stderr


def test_zero_rate_limits_and_max_tokens_are_usage_errors_not_no_limit(server, tmp_path):
    # `--qps 0` / `--rpm 0` / `--tpm 0` used to run with no limit at all; `--max-tokens 0` was sent
    inp = tmp_path / "in.jsonl"
    write_input(inp, 2)
    for flag in ("--qps", "--rpm", "--tpm", "--max-tokens"):
        res = run(*batch_args(server, inp, tmp_path / "out.jsonl", flag, "0"))
        assert res.returncode == 2 and flag in res.stderr, (flag, res.stderr)
    assert len(server.requests) == 0


def _piped_into_a_closed_reader(args):
    """Run `flexllm ARGS | head -c 10`: (exit code, stderr)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "flexllm", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.read(10)
    proc.stdout.close()  # the reader leaves, as `| head -c 10` does
    err = proc.stderr.read().decode()
    return proc.wait(timeout=60), err


def test_a_reader_that_leaves_the_pipe_gets_no_traceback(server, tmp_path):
    inp = tmp_path / "in.jsonl"
    write_input(inp, 400)
    code, err = _piped_into_a_closed_reader(batch_args(server, inp, "-", "--no-progress", "--quiet"))
    assert code == 1 and "Traceback" not in err and "pipe was closed" in err and "free space" not in err
    long_reply = "[[mock:reply=" + "word " * 12000 + "]] x"
    code, err = _piped_into_a_closed_reader(("ask", long_reply, "--model", "m", "--base-url", server.url))
    assert code == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_csv_format_to_stdout_is_refused_before_any_request(server, tmp_path):
    # `-o - --format csv` ran the whole batch, then failed to write "-.csv" and said the results were "in -"
    inp = tmp_path / "in.jsonl"
    write_input(inp, 2)
    res = run(*batch_args(server, inp, "-", "--format", "csv"))
    assert res.returncode == 2 and "--format csv" in res.stderr
    assert len(server.requests) == 0


def test_provider_batch_flags_without_provider_batch_are_a_usage_error(server, tmp_path):
    # `--wait` alone used to run a live batch as if it were not there
    inp = tmp_path / "in.jsonl"
    write_input(inp, 2)
    for extra in (("--wait",), ("--fallback-online-after", "6")):
        res = run(*batch_args(server, inp, tmp_path / "out.jsonl", *extra))
        assert res.returncode == 2 and "--provider-batch" in res.stderr, res.stderr
    assert len(server.requests) == 0
