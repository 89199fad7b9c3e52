"""CSV export of a batch output file, for spreadsheet users (the JSONL stays the checkpoint).

One row per index (the item's finished record, else its latest error), sorted by index. Columns: index,
status, prompt (the last user message's text), output, finish_reason, error, attempts, latency, token
counts, tool_calls and parsed (as JSON text, when any item has them), then one column per metadata key
(`metadata.status` for a key named like one of those columns).
A text cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` …) gets a leading `'`.
Memory holds one file offset per index, never the records.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from ._record import DONE_STATUSES, decode

__all__ = ["csv_path_for", "write_csv"]

_BASE = ["index", "status", "prompt", "output", "finish_reason", "error", "attempts", "latency",
         "prompt_tokens", "completion_tokens", "total_tokens"]
_OPTIONAL = ["tool_calls", "parsed"]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_path_for(output: str) -> Tuple[str, str]:
    """`(checkpoint, csv)` paths for a `-o` path: `x.csv` → (`x.jsonl`, `x.csv`); `x.jsonl` → (`x.jsonl`, `x.csv`)."""
    root, ext = os.path.splitext(output)
    if ext.lower() == ".csv":
        return root + ".jsonl", output
    return output, (root if ext.lower() in (".jsonl", ".json", ".ndjson") else output) + ".csv"


def write_csv(jsonl_path: str, csv_path: str) -> int:
    """Write the CSV of an output file (atomically replaced); returns the number of rows."""
    best: Dict[int, Tuple[bool, int]] = {}
    meta_keys: Dict[str, None] = {}
    optional: Dict[str, None] = {}
    with open(jsonl_path, "rb") as f:
        offset = 0
        for raw in f:
            record = decode(raw)
            if record is not None:
                done = record.get("status") in DONE_STATUSES
                prev = best.get(record["index"])
                if prev is None or done or not prev[0]:
                    best[record["index"]] = (done, offset)
                meta = record.get("metadata")
                for key in meta if isinstance(meta, dict) else ():
                    meta_keys.setdefault(str(key), None)
                for key in _OPTIONAL:
                    if record.get(key) is not None:
                        optional.setdefault(key, None)
            offset += len(raw)
        columns = _BASE + [k for k in _OPTIONAL if k in optional]
        meta_columns = list(meta_keys)
        tmp = f"{csv_path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                writer = csv.writer(out)
                # a metadata field named like one of ours (an input's own "status") keeps its value as metadata.X
                writer.writerow(columns + [f"metadata.{k}" if k in columns else k for k in meta_columns])
                for index in sorted(best):
                    f.seek(best[index][1])
                    record = decode(f.readline()) or {}
                    writer.writerow(_row(record, columns, meta_columns))
            os.replace(tmp, csv_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return len(best)


def _row(record: Dict[str, Any], columns: List[str], meta_columns: List[str]) -> List[Any]:
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    values: Dict[str, Any] = dict(record, prompt=_last_user_text(record.get("input")))
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        values[key] = usage.get(key)
    row = [_cell(values.get(c)) for c in columns]
    meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
    return row + [_cell(meta.get(k)) for k in meta_columns]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and value[:1] in _FORMULA and not _is_number(value):
        return "'" + value  # a spreadsheet would run it as a formula (CSV injection)
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _last_user_text(messages: Any) -> Optional[str]:
    if not isinstance(messages, list):
        return None
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and "text" in p)
            return content if isinstance(content, str) else None
    return None
