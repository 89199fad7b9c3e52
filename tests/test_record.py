"""The output record format: one module writes and reads it; key order, round trip, surrogate-safe."""
import json

from flexllm._record import decode, encode, is_record, to_item, torn_tail_is_ours
from flexllm.types import BatchResultItem


def test_key_order_and_round_trip():
    item = BatchResultItem(3, "hi", {"total_tokens": 2}, "success", None, 0.123456, {"id": 3}, "thought")
    line = encode(item, [{"role": "user", "content": "é"}])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    record = json.loads(line)
    assert list(record) == ["index", "status", "output", "input", "metadata", "usage", "latency",
                            "reasoning_content", "finish_reason", "attempts"]
    assert "é".encode() in line  # readable UTF-8, not \\u escapes
    back = to_item(decode(line))
    assert back.resumed and (back.index, back.content, back.metadata, back.latency) == (3, "hi", {"id": 3}, 0.1235)


def test_lone_surrogate_is_written_as_an_escape_and_reads_back():
    bad = json.loads('"x\\ud83d"')
    line = encode(BatchResultItem(0, None, None, "error", "ValueError: lone surrogate", 0.0), [{"role": "user",
                                                                                          "content": bad}])
    assert b"\\ud83d" in line
    assert decode(line)["input"][0]["content"] == bad


def test_what_counts_as_ours():
    assert is_record({"index": 0, "status": "error"})
    for foreign in ({"prompt": "x"}, {"index": "0", "status": "success"}, {"index": True, "status": "success"},
                    {"index": -1, "status": "success"}, {"index": 1, "status": "done"}, [1]):
        assert not is_record(foreign)
    assert decode(b'{"index": 0, "status": "success"}') is None  # no newline: torn
    assert torn_tail_is_ours(b'{"index":12,"status":"succ') and torn_tail_is_ours(b'{"ind')
    assert torn_tail_is_ours(b'{"index": 5, "st') and torn_tail_is_ours(b"")
    assert not torn_tail_is_ours(b'{"prompt": "hello"}')


def _strict(raw):
    """Parse like every JSON reader but Python's: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(raw, parse_constant=refuse)


def test_metadata_with_nan_is_written_as_json_and_resumes_without_a_warning(server, tmp_path, caplog):
    """pandas' missing values are float NaN: `metadata_list=df.to_dict("records")` must still give JSON Lines
    that jq, JavaScript or a database loader read, and rerunning the same call must not claim the metadata
    changed."""
    import logging

    from flexllm import LLMClient

    out = tmp_path / "out.jsonl"
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    metadata = [{"id": 0, "score": float("nan")}, {"id": 1, "score": float("inf"), "tags": [float("-inf"), 1.5]},
                {"id": 2, "score": 0.5}]
    client = LLMClient(model="m", base_url=server.url)
    assert client.chat_completions_batch_sync(messages, output_file=str(out), metadata_list=metadata,
                                              show_progress=False) == ["echo: q0", "echo: q1", "echo: q2"]
    records = {r["index"]: r for r in (_strict(line) for line in out.read_bytes().splitlines())}
    assert records[0]["metadata"] == {"id": 0, "score": None}
    assert records[1]["metadata"] == {"id": 1, "score": None, "tags": [None, 1.5]}
    assert records[2]["metadata"] == {"id": 2, "score": 0.5}
    caplog.set_level(logging.WARNING, logger="flexllm")
    _, summary = client.chat_completions_batch_sync(messages, output_file=str(out), metadata_list=metadata,
                                                    show_progress=False, return_summary=True)
    assert summary["resumed"] == 3 and len(server.requests) == 3
    assert not [r for r in caplog.records if "metadata" in r.getMessage()]
