"""`flexllm batch --provider-batch` as a cron job: real processes, SIGKILLed at random points, rerun until done."""
import json
import os
import random
import signal
import subprocess
import sys

from .conftest import count_lines, read_records, wait_for
from .test_cli import run, write_input

TERMINAL = ("completed", "expired", "failed", "cancelled")


def args(server, inp, out, *extra, model="gpt-4"):
    return ("batch", str(inp), "-o", str(out), "--model", model, "--base-url", server.url, "--provider-batch",
            "--retries", "1", *extra)


def start(*argv):
    return subprocess.Popen([sys.executable, "-m", "flexllm", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.getcwd()), text=True)


def summary_of(stderr):
    out = {}
    for line in stderr.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.isidentifier():
            out[key] = value
    return out


# where a run can die: right when one of its requests reaches the server (the server holds each batch
# request for `latency` seconds, so the client dies with it in flight), or once results start landing
KILL_POINTS = {
    "upload": lambda r: r.method == "POST" and r.path == "/v1/files",
    "create": lambda r: r.method == "POST" and r.path == "/v1/batches",
    "poll": lambda r: r.method == "GET" and r.path.startswith("/v1/batches/"),
    "download": lambda r: r.method == "GET" and r.path.endswith("/content"),
}


def one_run(server, inp, out, point):
    """Run the command once; SIGKILL it when it reaches `point` (None: let it finish)."""
    seen = len(server.requests)
    lines = count_lines(out)
    proc = start(*args(server, inp, out))
    if point == "records":
        wait_for(lambda: proc.poll() is not None or count_lines(out) > lines, timeout=60, what="a record")
    elif point is not None:
        hit = KILL_POINTS[point]
        wait_for(lambda: proc.poll() is not None or any(hit(r) for r in server.requests[seen:]), timeout=60,
                 what=f"the run to reach {point}")
    if point is not None and proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)
    stderr = proc.stderr.read()
    proc.stderr.close()
    return proc, stderr


def test_cron_loop_survives_sigkill_anywhere_and_halves_the_cost(server, tmp_path):
    server.configure(batch_time_scale=86400 * 4, latency=0.15)  # a 1 h batch: ~10 ms; the server holds requests
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rng = random.Random(20261127)
    codes, killed_at = [], []
    for first, n in ((0, 25), (25, 40)):  # the cron job's input grows between cycles: new lines are picked up
        with open(inp, "a") as f:
            f.write("".join(json.dumps({"prompt": f"q{i}", "row": i}) + "\n" for i in range(first, n)))
        # kill points in the order a job reaches them, each 0-2 times, chosen at random
        plan = [p for p in ("upload", "create", "poll", "download", "records") for _ in range(rng.choice((1, 1, 2)))]
        for _ in range(30):
            point = plan.pop(0) if plan else None
            proc, stderr = one_run(server, inp, out, point)
            if proc.returncode == -9:
                killed_at.append(point)
            codes.append(proc.returncode)
            if proc.returncode == 0 and not plan:
                break
            assert proc.returncode in (0, 75, -9), stderr
            if proc.returncode == 75:  # work at the provider: the next cron run comes once it could be done
                wait_for(lambda: all(b["status"] in TERMINAL for b in server.batches), what="mock batches")
        assert codes[-1] == 0, (codes, killed_at)
    # the kills really landed mid-run (each of these requests is held by the server while we kill)
    assert set(KILL_POINTS) <= set(killed_at), killed_at

    records = read_records(out)
    assert sorted(r["index"] for r in records) == list(range(n))  # every index exactly once
    assert all(r["output"] == f"echo: q{r['index']}" and r["metadata"] == {"row": r["index"]} for r in records)
    assert all(r["via"] == "provider-batch" for r in records)
    # each item went into exactly one provider batch (no batch here expired or failed), and the ledger
    # knows every batch the provider has
    submitted = [cid for b in server.batches for cid in b["custom_ids"]]
    assert sorted(int(c.split("-")[0]) for c in submitted) == list(range(n))
    ledger = [json.loads(line) for line in open(str(out) + ".batches")]
    created = {e["batch_id"] for e in ledger if e["event"] == "created"}
    assert created == {b["id"] for b in server.batches}

    final = summary_of(stderr)
    live = run("batch", str(inp), "-o", str(tmp_path / "live.jsonl"), "--model", "gpt-4", "--base-url", server.url)
    assert live.returncode == 0
    live_cost = float(summary_of(live.stderr)["estimated_cost_usd"])
    assert live_cost > 0
    assert abs(float(final["job_cost_usd"]) - live_cost / 2) <= live_cost * 1e-3
    assert abs(float(final["job_live_cost_usd"]) - live_cost) <= live_cost * 1e-3


def test_exit_75_while_in_flight_then_wait_collects(server, tmp_path):
    server.configure(batch_time_scale=86400 * 20)
    server.add_rule(contains="q1", batch_hours=100_000, times=1)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 3)
    first = run(*args(server, inp, out))
    assert first.returncode == 75 and "in_flight: 3" in first.stderr and "rerun" in first.stderr
    assert "earliest_expected_finish: 20" in first.stderr
    server.clear()  # the provider forgot the batch (HTTP 404): its items are submitted again, not lost
    server.configure(batch_time_scale=86400 * 20)
    waited = run(*args(server, inp, out, "--wait", "--poll-interval", "0.05"))
    assert waited.returncode == 0, waited.stderr
    assert sorted(r["index"] for r in read_records(out)) == [0, 1, 2]


def test_dry_run_shows_the_batch_price_and_sends_nothing(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 10)
    res = run(*args(server, inp, out, "--dry-run", "--max-tokens", "20"))
    assert res.returncode == 0, res.stderr
    s = summary_of(res.stderr)
    assert s["to_submit"] == "10" and float(s["live_input_cost_usd"]) > 0
    assert abs(float(s["estimated_input_cost_usd"]) - float(s["live_input_cost_usd"]) / 2) < 1e-8
    assert abs(float(s["estimated_cost_usd"]) - float(s["live_cost_usd"]) / 2) < 1e-8
    assert float(s["live_cost_usd"]) > float(s["live_input_cost_usd"])  # 20 reply tokens each, at most
    assert server.requests == [] and not out.exists()


def test_pricing_shows_the_batch_price():
    one = run("pricing", "gpt-4o-mini")
    assert one.returncode == 0 and "provider batch" in one.stdout and "input $0.075" in one.stdout
    table = run("pricing")
    assert "batch in" in table.stdout and "50%" in table.stdout


def test_provider_batch_to_stdout_or_a_fifo_is_refused_before_anything_is_submitted(server, tmp_path):
    """A provider batch resumes from its output file and keeps a ledger beside it: `-o -` used to submit (and
    pay for) every item, then fail writing '-' and leave './-.batches'; a FIFO hung the run forever."""
    inp = tmp_path / "in.jsonl"
    write_input(inp, 3)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out in ("-", str(fifo)):
        done = run(*args(server, inp, out), timeout=60)
        assert done.returncode == 2, done.stderr
        assert "--provider-batch" in done.stderr and "regular" in done.stderr and "Traceback" not in done.stderr
    assert server.requests == [] and sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "in.jsonl"]
    assert not os.path.exists("-.batches")


def test_sigterm_stops_a_waiting_provider_batch_like_ctrl_c(server, tmp_path):
    """`timeout 1h flexllm batch ... --provider-batch --wait` (cron) and systemd stop with SIGTERM: it used to
    kill the process by the signal (no message, exit -15); now it exits 130 like Ctrl-C and a rerun collects."""
    server.configure(batch_time_scale=3600)  # a 1 h batch: about one second
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    with open(inp, "w") as f:
        f.write("".join(json.dumps({"prompt": f"w{i} [[mock:batch_hours=2000;times=1]]"}) + "\n" for i in range(3)))
    proc = start(*args(server, inp, out, "--wait", "--poll-interval", "0.2"))
    wait_for(lambda: proc.poll() is not None or sum(r.path.startswith("/v1/batches/") for r in server.requests) >= 2,
             timeout=60, what="the run to poll")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert "interrupted" in stderr and "Rerun" in stderr and "Traceback" not in stderr
    creates = [r for r in server.requests if r.method == "POST" and r.path == "/v1/batches"]
    assert len(creates) == 1


def test_schema_flag_works_with_provider_batches_as_the_readme_says(server, tmp_path):
    """README: a schema response_format is sent in provider batches and each reply validated when collected
    (`parsed`); only params lines, --redo, --max-cost and --format csv are live-only. The CLI refused --schema."""
    server.configure(batch_time_scale=86400)
    inp, out, schema = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "person.schema.json"
    write_input(inp, 3)
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string"}},
                                  "required": ["name"], "additionalProperties": False}))
    done = run(*args(server, inp, out, "--schema", str(schema), "--wait", "--poll-interval", "0.2"))
    assert done.returncode == 0, done.stderr
    records = read_records(out)
    assert len(records) == 3 and all(r["via"] == "provider-batch" and isinstance(r["parsed"], dict)
                                     and "name" in r["parsed"] for r in records), records


def test_a_cron_loop_ends_when_an_always_failing_item_is_given_up(server, tmp_path):
    # "rerun until exit 0" never ended with an item the provider rejects every time: after
    # --max-batch-attempts failed batches the run says so and exits 1 without submitting it again
    server.configure(batch_time_scale=86400 * 20)
    server.add_rule(contains="q1", batch_error=400)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp, 3)
    codes = [run(*args(server, inp, out, "--wait", "--poll-interval", "0.02", "--max-batch-attempts", "2"))
             for _ in range(3)]
    assert [c.returncode for c in codes] == [1, 1, 1]
    assert "not submitted again" not in codes[0].stderr and "--max-batch-attempts" in codes[1].stderr
    assert summary_of(codes[2].stderr)["gave_up"] == "1" and summary_of(codes[2].stderr)["submitted"] == "0"
    assert sum(1 for b in server.batches for cid in b["custom_ids"] if cid.startswith("1-")) == 2
