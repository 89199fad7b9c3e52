"""`flexllm batch` flags for issue 14, through real subprocesses against the mock server."""
import csv
import json

from .conftest import read_records
from .test_cli import run

PRICED = "gpt-4o-mini"


def write_lines(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def batch(server, inp, out, *extra, model="mock-model"):
    return run("batch", str(inp), "-o", str(out), "--model", model, "--base-url", server.url, "--no-progress",
               *extra)


def asked(server):
    return sorted(r.body["messages"][-1]["content"] for r in server.requests)


def test_redo_length_with_a_bigger_max_tokens(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, [{"prompt": "hi"}, {"prompt": "one two three four"}, {"prompt": "yo"}])
    first = batch(server, inp, out, "--max-tokens", "2")
    assert first.returncode == 0, first.stderr
    assert [r["finish_reason"] for r in sorted(read_records(out), key=lambda r: r["index"])] == \
        ["stop", "length", "stop"]
    server.clear()
    second = batch(server, inp, out, "--max-tokens", "50", "--redo", "length")
    assert second.returncode == 0, second.stderr
    assert asked(server) == ["one two three four"]
    records = read_records(out)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert records[1]["output"] == "echo: one two three four" and records[1]["finish_reason"] == "stop"


def test_schema_file_validates_and_stores_parsed(server, tmp_path):
    inp, out, schema = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "schema.json"
    write_lines(inp, [{"prompt": "ann"}, {"prompt": "[[mock:invalid_json=1]] bob"}])
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string"}},
                                  "required": ["name"]}))
    res = batch(server, inp, out, "--schema", str(schema))
    assert res.returncode == 0, res.stderr
    records = sorted(read_records(out), key=lambda r: r["index"])
    assert [r["parsed"] for r in records] == [{"name": "ann"}, {"name": "bob"}]
    assert [r["attempts"] for r in records] == [1, 2]
    assert server.requests[0].body["response_format"]["type"] == "json_schema"


def test_bad_schema_files_are_usage_errors_before_any_request(server, tmp_path):
    inp, out, schema = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "schema.json"
    write_lines(inp, [{"prompt": "x"}])
    schema.write_text(json.dumps({"type": "objekt"}))
    res = batch(server, inp, out, "--schema", str(schema))
    assert res.returncode == 2 and "response_format is not a valid JSON Schema" in res.stderr
    schema.write_text("{not json")
    res = batch(server, inp, out, "--schema", str(schema))
    assert res.returncode == 2 and "is not valid JSON" in res.stderr
    assert server.requests == []


def test_max_cost_stops_with_exit_1_and_a_higher_cap_resumes(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, [{"prompt": f"item {i:03d}"} for i in range(30)])
    res = batch(server, inp, out, "--max-cost", "0.00002", model=PRICED)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("flexllm: stopped at the cost cap") and "--max-cost" in last
    done = len(read_records(out))
    assert 0 < done < 30 and len(server.requests) == done
    server.clear()
    res = batch(server, inp, out, "--max-cost", "1", model=PRICED)
    assert res.returncode == 0, res.stderr
    assert len(server.requests) == 30 - done and len(read_records(out)) == 30


def test_max_cost_with_an_unpriced_model_is_refused(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, [{"prompt": "x"}])
    res = batch(server, inp, out, "--max-cost", "5")
    assert res.returncode == 2 and "no price is known for model 'mock-model'" in res.stderr
    assert server.requests == [] and not out.exists()


def test_max_cost_with_an_unpriced_model_on_one_input_line_is_refused_before_any_request(server, tmp_path):
    """README: an unpriced model and a cap is a ValueError before any request. A line's own "params" model
    was only found when the batch reached it: the lines before it had been sent and paid for."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c", "params": {"model": "weird-model"}}])
    res = batch(server, inp, out, "--max-cost", "5", model=PRICED)
    assert res.returncode == 2 and "weird-model" in res.stderr and "in.jsonl:3" in res.stderr, res.stderr
    assert server.requests == [] and (not out.exists() or out.read_bytes() == b"")


def test_dry_run_counts_and_prices_and_sends_nothing(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, [{"prompt": "hello there"}] * 4)
    res = batch(server, inp, out, "--dry-run", "--max-tokens", "100", model=PRICED)
    assert res.returncode == 0, res.stderr
    assert "dry run: 4 items" in res.stderr and "estimated cost $" in res.stderr and "nothing sent" in res.stderr
    assert server.requests == [] and not out.exists()


def test_csv_format_for_spreadsheets(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "results.csv"
    write_lines(inp, [{"prompt": "a", "row": 1}, {"prompt": "=1+1", "row": 2}, {"prompt": "[[mock:status=400]] c"}])
    res = batch(server, inp, out, "--format", "csv")
    assert res.returncode == 1  # one item failed
    assert f"csv: {out} (3 rows)" in res.stderr
    assert len(read_records(tmp_path / "results.jsonl")) == 3  # the checkpoint stays JSONL
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["output"] == "echo: a" and rows[0]["row"] == "1" and rows[0]["finish_reason"] == "stop"
    assert rows[1]["prompt"] == "'=1+1"  # never run as a formula
    assert rows[2]["status"] == "error" and "HTTP 400" in rows[2]["error"]


def test_csv_keeps_metadata_fields_named_like_its_own_columns(server, tmp_path):
    """An input field called `status`, `error`, `output` or `index` (common in real data) is metadata: the CSV
    must not silently drop it because a built-in column has that name."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "results.csv"
    write_lines(inp, [{"prompt": "a", "id": 7, "status": "draft", "error": "none", "output": "x", "index": 70}])
    res = batch(server, inp, out, "--format", "csv")
    assert res.returncode == 0, res.stderr
    with open(out, newline="", encoding="utf-8") as f:
        [row] = list(csv.DictReader(f))
    assert (row["index"], row["status"], row["output"], row["error"]) == ("0", "success", "echo: a", "")
    assert row["id"] == "7" and row["metadata.status"] == "draft" and row["metadata.error"] == "none"
    assert row["metadata.output"] == "x" and row["metadata.index"] == "70"


def test_params_on_an_input_line(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(inp, [{"prompt": "a", "params": {"model": "other-model", "temperature": 0.9}},
                      {"prompt": "b", "tag": "t"}])
    res = batch(server, inp, out, "--temperature", "0.1", "--thinking", "false")
    assert res.returncode == 0, res.stderr
    seen = {r.body["messages"][-1]["content"]: r.body for r in server.requests}
    assert (seen["a"]["model"], seen["a"]["temperature"]) == ("other-model", 0.9)
    assert (seen["b"]["model"], seen["b"]["temperature"]) == ("mock-model", 0.1)
    assert seen["b"]["chat_template_kwargs"] == {"enable_thinking": False}
    records = sorted(read_records(out), key=lambda r: r["index"])
    assert records[0]["params"] == {"model": "other-model", "temperature": 0.9}
    assert "params" not in (records[0].get("metadata") or {})  # taken out of the metadata
    assert records[1]["metadata"] == {"tag": "t"}
    write_lines(inp, [{"prompt": "a", "params": "hot"}])
    res = batch(server, inp, tmp_path / "o2.jsonl")
    assert res.returncode == 2 and "in.jsonl:1" in res.stderr and '"params" must be a JSON object' in res.stderr


def test_an_unwritable_csv_is_named_and_the_jsonl_is_kept(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "res.csv"
    write_lines(inp, [{"prompt": "a"}])
    out.mkdir()  # the CSV path is a directory
    res = batch(server, inp, out, "--format", "csv")
    assert res.returncode == 1 and f"cannot write the CSV {out}" in res.stderr
    assert read_records(tmp_path / "res.jsonl")[0]["output"] == "echo: a"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no half-written CSV left behind


def test_redo_with_an_output_that_cannot_be_resumed_is_refused(server, tmp_path):
    """`redo=` without output_file is a ValueError (README); `-o -` (or a device) cannot be resumed either, yet
    `--redo length -o -` ran the whole batch and silently redid nothing."""
    inp = tmp_path / "in.jsonl"
    write_lines(inp, [{"prompt": "a"}])
    res = batch(server, inp, "-", "--redo", "length")
    assert res.returncode == 2 and "redo" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert server.requests == []
