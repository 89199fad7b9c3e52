"""The batch output record: the one place that writes and reads a line of an output file.

A record is one JSON object per line, keys in the order of `FIELDS` (compatible with flexllm 0.2 files):
`{"index", "status", "output", "input", "metadata"?, "usage", "latency", "reasoning_content"?, "finish_reason",
"tool_calls"?, "parsed"?, "attempts", "params"?, "error"?, "via"?, "batch_id"?}` (`parsed`: the structured
reply as JSON; `params`: the item's own entry of params_list; the last two in provider-batch mode).
Files written before a field existed still resume.
Adding a field is one line in `FIELDS` (plus the attribute on `BatchResultItem`).
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, Optional, Tuple

from .types import BatchResultItem

__all__ = ["DONE_STATUSES", "FIELDS", "STATUSES", "decode", "dumps", "encode", "is_record", "same_json", "to_item",
           "torn_tail_is_ours"]

STATUSES = frozenset({"success", "cached", "error"})
#: statuses whose item is finished: a rerun does not ask again
DONE_STATUSES = frozenset({"success", "cached"})

#: (record key, BatchResultItem attribute or None for the item's input messages, written even when None)
FIELDS: Tuple[Tuple[str, Optional[str], bool], ...] = (
    ("index", "index", True),
    ("status", "status", True),
    ("output", "content", True),
    ("input", None, True),
    ("metadata", "metadata", False),
    ("usage", "usage", True),
    ("latency", "latency", True),
    ("reasoning_content", "reasoning_content", False),
    ("finish_reason", "finish_reason", True),
    ("tool_calls", "tool_calls", False),
    ("parsed", "parsed", False),
    ("attempts", "attempts", True),
    ("params", "params", False),
    ("error", "error", False),
    ("via", "via", False),
    ("batch_id", "batch_id", False),
)

# a line cut by a crash mid-write starts like one of ours (or is a prefix of that start)
_START = b'{"index":'
_TORN = re.compile(rb'\{"index":\s*\d')


def encode(item: BatchResultItem, messages: Any) -> bytes:
    """One whole line (ending in a newline) for `item`, whose input was `messages`."""
    record: Dict[str, Any] = {}
    for key, attr, always in FIELDS:
        value = messages if attr is None else getattr(item, attr)
        if value is not None or always:
            record[key] = value
    record["latency"] = round(item.latency or 0.0, 4)
    return dumps(record)


def dumps(record: Dict[str, Any]) -> bytes:
    """A record as one line of UTF-8 JSON; a lone surrogate (not valid Unicode) is kept as a `\\udXXX` escape.

    NaN and infinities (pandas' missing values in metadata) are not JSON: they are written as null."""
    try:
        return _line(record, False)
    except UnicodeEncodeError:
        return _line(record, True)


def _line(record: Dict[str, Any], escape: bool) -> bytes:
    try:
        text = json.dumps(record, ensure_ascii=escape, separators=(",", ":"), default=_plain, allow_nan=False)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        text = json.dumps(_finite(record), ensure_ascii=escape, separators=(",", ":"),
                          default=lambda value: _finite(_plain(value)))
    return (text + "\n").encode("ascii" if escape else "utf-8")


def _finite(value: Any) -> Any:
    """`value` with every NaN / infinity (in dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if value - value == 0.0 else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def same_json(stored: Any, given: Any) -> bool:
    """True when `given` is written as `stored` (NaN as null, tuples as lists, other objects as their text)."""
    return stored == given or stored == json.loads(dumps({"v": given}))["v"]


def _plain(value: Any) -> Any:
    """JSON for what json cannot write itself: a parsed Pydantic model as its data, numpy values as
    numbers and lists, anything else as text."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    if hasattr(value, "dtype") and callable(getattr(value, "tolist", None)):
        return value.tolist()  # numpy.int64(5) -> 5, an array -> a list (not their text)
    return str(value)


def is_record(obj: Any) -> bool:
    """True when a decoded JSON value has the shape of one of our records."""
    if not isinstance(obj, dict):
        return False
    index = obj.get("index")
    return type(index) is int and index >= 0 and obj.get("status") in STATUSES


def decode(raw: bytes) -> Optional[Dict[str, Any]]:
    """The record on a complete line (ending in a newline), or None when the line is not one of ours."""
    if not raw.endswith(b"\n"):
        return None  # torn write: never trust a line without its newline
    try:
        record = json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError
        return None
    return record if is_record(record) else None


def torn_tail_is_ours(tail: bytes) -> bool:
    """True when an unterminated last line looks like our record cut by a crash (not someone else's text)."""
    return _START.startswith(tail) or bool(_TORN.match(tail))


def to_item(record: Dict[str, Any], metadata: Optional[dict] = None) -> BatchResultItem:
    """The `BatchResultItem` of a record read back from the file (a resumed item)."""
    values = {attr: record.get(key) for key, attr, _ in FIELDS if attr is not None}
    values["latency"] = float(values["latency"] or 0.0)
    values["attempts"] = values["attempts"] if type(values["attempts"]) is int else 0
    if "metadata" not in record:
        values["metadata"] = metadata
    return BatchResultItem(**values, resumed=True)
