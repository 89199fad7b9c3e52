"""Anthropic Messages API request mapping: OpenAI-shaped messages, content parts, tools and formats → blocks.

Pure functions used by `flexllm.providers.anthropic` (kept apart so each module stays small).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from .base import unmatched_tool_result

__all__ = ["IMAGE_TYPES", "content_blocks", "output_format", "to_messages", "tool_choice", "tools"]

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# -- messages --------------------------------------------------------------------------------
def _media_block(url: str, what: str) -> Dict[str, Any]:
    """An image/document block for a data: URL or an http(s) URL; ValueError for what Claude cannot read."""
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        mime = head.split(";")[0].lower() or "application/octet-stream"
        if not sep or ";base64" not in head:
            raise ValueError(f"{what}: only base64 data: URLs are supported (data:<mime>;base64,...)")
        if mime in IMAGE_TYPES:
            return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
        if mime == "application/pdf":
            return {"type": "document", "source": {"type": "base64", "media_type": mime, "data": data}}
        if mime.startswith("text/"):
            try:
                text = base64.b64decode(data, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise ValueError(f"{what}: a {mime} data: URL must hold base64 of UTF-8 text") from None
            return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        raise ValueError(f"{what}: Claude does not accept {mime}; images must be one of {sorted(IMAGE_TYPES)}, "
                         "documents application/pdf or text/*")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{what}: Claude cannot fetch {scheme or 'this'}:// URLs ({url[:80]!r}); send an https:// "
                         "URL or the bytes as a base64 data: URL")
    kind = "document" if urlsplit(url).path.lower().endswith(".pdf") else "image"
    return {"type": kind, "source": {"type": "url", "url": url}}


_NATIVE_BLOCKS = frozenset({"image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
                            "search_result", "server_tool_use", "web_search_tool_result"})


def content_blocks(content: Any, where: str) -> List[Dict[str, Any]]:
    """OpenAI-style content (a string or a list of parts) → Messages API content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise ValueError(f"{where}: content must be a string or a list of parts, got {type(content).__name__}")
    blocks: List[Dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        what = f"{where} part {i}"
        if kind == "text":
            block = {"type": "text", "text": part.get("text", "")}
            if "cache_control" in part:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise ValueError(f"{what}: image_url has no url")
            blocks.append(_media_block(url, what))
        elif kind == "file":
            ref = part.get("file") or {}
            data = ref.get("file_data") if isinstance(ref, dict) else None
            if not isinstance(data, str):
                raise ValueError(f"{what}: Claude needs file.file_data (a base64 data: URL); file_id is not supported")
            blocks.append(_media_block(data if data.startswith("data:") else
                                       f"data:application/pdf;base64,{data}", what))
        elif kind in _NATIVE_BLOCKS:
            blocks.append(part)  # already Messages-API shaped
        else:
            raise ValueError(f"{what}: Claude does not accept content of type {kind!r}; use text, image_url "
                             "(data: or https:) or file")
    return blocks


def _tool_use(call: Mapping[str, Any], where: str) -> Dict[str, Any]:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    try:
        parsed = json.loads(args) if isinstance(args, str) and args.strip() else (args or {})
    except ValueError:
        raise ValueError(f"{where}: tool call arguments are not JSON: {str(args)[:80]!r}") from None
    return {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": parsed}


def to_messages(messages: List[dict]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """OpenAI-style messages → (system blocks, Messages API messages); consecutive same-role turns merge."""
    system: List[Dict[str, Any]] = []
    out: List[Dict[str, Any]] = []
    calls = set()  # ids of the assistant's tool calls so far: a tool result must answer one of them
    for i, m in enumerate(messages):
        role = m.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(content_blocks(m.get("content"), where))
            continue
        if role == "user":
            blocks = content_blocks(m.get("content"), where)
        elif role == "assistant":
            blocks = content_blocks(m.get("content"), where) + [_tool_use(c, where) for c in m.get("tool_calls") or ()]
            calls.update(b.get("id") for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use"
                         and isinstance(b.get("id"), str))  # the caller's native tool_use blocks count too
        elif role == "tool":
            if not m.get("tool_call_id"):
                raise ValueError(f"{where}: a tool message needs tool_call_id (the id of the assistant's tool call)")
            if not isinstance(m["tool_call_id"], str) or m["tool_call_id"] not in calls:
                raise unmatched_tool_result(m["tool_call_id"], where)
            result: Dict[str, Any] = {"type": "tool_result", "tool_use_id": m["tool_call_id"]}
            content = m.get("content")
            result["content"] = content if isinstance(content, str) else content_blocks(content, where)
            if m.get("is_error"):
                result["is_error"] = True
            role, blocks = "user", [result]
        else:
            raise ValueError(f"{where}: unsupported role {role!r} for Claude (system, user, assistant, tool)")
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for m in out:  # a lone text block goes as a plain string, as people write it
        c = m["content"]
        if len(c) == 1 and c[0]["type"] == "text" and len(c[0]) == 2:
            m["content"] = c[0]["text"]
    return system, out


# -- tools and formats ---------------------------------------------------------------------------
def tools(tools: Any) -> List[Dict[str, Any]]:
    out = []
    for t in tools or ():
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict):
            fn = t["function"]
            tool = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
            if fn.get("description"):
                tool["description"] = fn["description"]
            if fn.get("strict") is not None:
                tool["strict"] = fn["strict"]
            out.append(tool)
        elif isinstance(t, dict):
            out.append(t)  # Claude-native tools (input_schema, server tools such as web_search) pass through
        else:
            raise ValueError(f"tools must be dicts, got {type(t).__name__}")
    return out


def tool_choice(choice: Any, parallel: Any) -> Optional[Dict[str, Any]]:
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice in ("required", "any"):
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"):
        out = dict(choice)
    else:
        raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or {{'type': 'function', 'function': "
                         f"{{'name': ...}}}}, got {choice!r}")
    if parallel is False:
        out = dict(out or {"type": "auto"}, disable_parallel_tool_use=True)
    return out


def output_format(fmt: Any) -> Optional[Dict[str, Any]]:
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return {"type": "json_schema", "schema": schema}
    raise ValueError("Claude's structured output needs a schema: response_format={'type': 'json_schema', "
                     "'json_schema': {'name': ..., 'schema': {...}}} (json_object has no Claude equivalent)")
