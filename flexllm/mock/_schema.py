"""Structured replies for the mock: a JSON value that fits the requested schema, and tool calls.

Pure helpers shared by the dialects. A request that asks for a JSON schema (each dialect's
`requested_schema(body)` finds it) gets a small valid instance of it, with the user's text in its
strings, unless a `reply=` directive says otherwise.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

_FORMATS = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00",
            "email": "mock@example.com", "uri": "https://example.com/", "uuid": "00000000-0000-0000-0000-000000000000"}
_DEPTH = 12


def example(schema: Dict[str, Any], text: str) -> Any:
    """A small value valid for `schema` (objects get every property; strings carry `text`)."""
    return _value(schema, schema, text, 0)


def _value(node: Any, root: Dict[str, Any], text: str, depth: int) -> Any:
    if not isinstance(node, dict) or depth > _DEPTH:
        return None
    if "$ref" in node:
        return _value(_resolve(root, node["$ref"]), root, text, depth + 1)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return node["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in node.get(key) or () if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return _value(options[0], root, text, depth + 1)
    if node.get("allOf"):
        merged: Dict[str, Any] = {}
        for part in node["allOf"]:
            merged.update(_resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part)
        return _value(merged, root, text, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = kind.lower() if isinstance(kind, str) else ("object" if "properties" in node else None)
    if kind == "object":
        props = node.get("properties") or {}
        return {k: _value(v, root, text, depth + 1) for k, v in props.items()}
    if kind == "array":
        n = int(node.get("minItems") or 1)
        return [_value(node.get("items") or {}, root, text, depth + 1) for _ in range(n)]
    if kind == "string":
        value = _FORMATS.get(node.get("format"), text or "mock")
        if "maxLength" in node:
            value = value[: int(node["maxLength"])]
        return value + "x" * max(0, int(node.get("minLength") or 0) - len(value))
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum", 0))
        value = max(1, int(low) + (1 if "exclusiveMinimum" in node else 0))
        if "maximum" in node:
            value = min(value, int(node["maximum"]))
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    return None


def _resolve(root: Dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref.lstrip("#/").split("/") if ref.startswith("#") else ():
        node = node.get(part) if isinstance(node, dict) else None
    return node


def how_many(value: str, times: Any = None) -> int:
    """Attempts a fault like `invalid_json=` applies to: a number, or a flag meaning `times=` (default once)."""
    if value.strip().isdigit():
        return int(value)
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return 0
    return int(times) if times is not None and str(times).strip().isdigit() else 1


def broken_json(answer: str) -> str:
    """Text that starts like the JSON answer but is not valid JSON (a cut-off object)."""
    return '{"answer": ' + json.dumps(answer)[:-1]


def tool_calls(names: str, args: Optional[str], seq: int) -> List[Dict[str, Any]]:
    """OpenAI-shaped tool calls for comma-separated function names; `args` is a JSON object (default {})."""
    arguments = args if args else "{}"
    return [{"id": f"call_mock_{seq}_{i}", "type": "function", "function": {"name": name.strip(),
                                                                               "arguments": arguments}}
            for i, name in enumerate(names.split(",")) if name.strip()]
