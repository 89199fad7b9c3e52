"""Gemini request mapping: OpenAI-shaped messages, content parts, tool calls and results, tools and tool_choice →
`contents`, `systemInstruction`, `tools` and `toolConfig`.

Pure functions used by `flexllm.providers.gemini` (kept apart so each module stays small; the adapter
there builds the rest of the request and parses replies).
"""
from __future__ import annotations

import json
import mimetypes
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .base import unmatched_tool_result

__all__ = ["to_contents", "tool_choice", "tools"]


def _data_url(url: str) -> Optional[Dict[str, Any]]:
    if not url.startswith("data:") or ";base64," not in url:
        return None
    mime, data = url[5:].split(";base64,", 1)
    return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}


def _file_part(url: str) -> Dict[str, Any]:
    mime = mimetypes.guess_type(urlsplit(url).path)[0] or "application/octet-stream"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _parts(content: Any) -> List[Dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    if not isinstance(content, list):
        raise ValueError(f"message content must be a string or a list of parts, got {type(content).__name__}")
    parts: List[Dict[str, Any]] = []
    for p in content:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            parts.append({"text": p.get("text", "")})
        elif kind in ("image_url", "file", "input_audio", "video_url"):
            ref = p.get(kind) or {}
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise ValueError(f"content part of type {kind!r} has no url")
            parts.append(_data_url(url) or _file_part(url))
        elif isinstance(p, dict) and ("inlineData" in p or "fileData" in p or "text" in p):
            parts.append(p)  # already Gemini-shaped
        else:
            raise ValueError(f"unsupported content part {kind!r}; use text, image_url (data:, gs://, https://)")
    return parts


def _declaration(fn: Any) -> Dict[str, Any]:
    """An OpenAI function definition → a Gemini functionDeclaration (JSON Schema parameters, no `strict`)."""
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ValueError("each tool of type 'function' needs a function with a name")
    decl: Dict[str, Any] = {"name": fn["name"]}
    if fn.get("description"):
        decl["description"] = fn["description"]
    if fn.get("parameters") is not None:
        decl["parametersJsonSchema"] = fn["parameters"]  # Gemini's `parameters` is an OpenAPI subset
    return decl


def tool_choice(choice: Any) -> Dict[str, Any]:
    """OpenAI's tool_choice → Gemini's functionCallingConfig."""
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if isinstance(name, str):
            return {"mode": "ANY", "allowedFunctionNames": [name]}
    raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or "
                     f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")


def _call_args(fn: Dict[str, Any]) -> Any:
    args = fn.get("arguments") or "{}"
    if not isinstance(args, str):
        return args
    try:
        return json.loads(args)
    except ValueError:
        raise ValueError(f"tool call {fn.get('name')!r}: arguments are not valid JSON") from None


def to_contents(messages: List[dict]) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """OpenAI-style messages → (contents, systemInstruction).

    A tool result names its function (looked up from the assistant's tool call with that id), and the
    results of one turn's parallel calls go back together in one user turn, as Gemini requires.
    """
    contents: List[Dict[str, Any]] = []
    system: List[Dict[str, Any]] = []
    names: Dict[str, str] = {}  # tool_call_id → function name
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(_parts(m.get("content")))
        elif role in ("user", "assistant", "model"):
            parts = _parts(m.get("content"))
            for call in m.get("tool_calls") or ():
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict):
                    raise ValueError("each tool call in an assistant message needs a 'function' object")
                if isinstance(call.get("id"), str) and isinstance(fn.get("name"), str):
                    names[call["id"]] = fn["name"]
                parts.append({"functionCall": {"name": fn.get("name"), "args": _call_args(fn)}})
            contents.append({"role": "user" if role == "user" else "model", "parts": parts})
        elif role == "tool":
            payload = m.get("content")
            try:
                payload = json.loads(payload) if isinstance(payload, str) else payload
            except ValueError:
                pass
            call_id = m.get("tool_call_id")
            name = m.get("name") or names.get(call_id if isinstance(call_id, str) else "")
            if not name:  # Gemini matches a result to its call by the function's name: never guess one
                raise unmatched_tool_result(call_id, also=", or give the tool message the function's name")
            part = {"functionResponse": {
                "name": name, "response": payload if isinstance(payload, dict) else {"result": payload}}}
            last = contents[-1] if contents else None
            if last is not None and last["role"] == "user" and last["parts"] and \
                    all("functionResponse" in p for p in last["parts"]):
                last["parts"].append(part)  # parallel calls: every result in one turn
            else:
                contents.append({"role": "user", "parts": [part]})
        else:
            raise ValueError(f"unsupported message role {role!r} for Gemini")
    return contents, ({"parts": system} if system else None)


def tools(tools: List[dict]) -> List[dict]:
    """OpenAI tools → Gemini's: the functions as one functionDeclarations entry, native tools as given."""
    decls = [_declaration(t["function"]) for t in tools if isinstance(t, dict) and t.get("type") == "function"]
    native = [t for t in tools if isinstance(t, dict) and t.get("type") != "function"]
    return ([{"functionDeclarations": decls}] if decls else []) + native
