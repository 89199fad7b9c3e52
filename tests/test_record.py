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
