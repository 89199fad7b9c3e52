"""Pull code and data out of model replies: fenced code blocks, JSON / Python literals, tolerant JSON.

Everything here runs in linear time on any input (line and character scanners, no backtracking
regular expressions) and never evaluates code: `parse_to_obj` uses `json`, `ast.literal_eval` and a
tolerant JSON reader, nothing else. Failures raise `ValueError` saying what was tried.
"""
from __future__ import annotations

import ast
import json
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple

__all__ = ["extract_code_snippets", "parse_to_code", "parse_to_obj"]

MAX_DEPTH = 200  # deeper literals are refused rather than risking the interpreter's recursion limit
_DATA_LANGS = ("", "json", "json5", "jsonc", "javascript", "js", "python", "py", "python3")


def _fence(line: str) -> Optional[Tuple[str, int, str]]:
    """(fence char, fence length, info string) if `line` opens/closes a fence, else None.

    Any indentation is accepted: models nest fences in list items (`1. Run:` then a fence 4 spaces in).
    """
    stripped = line.lstrip(" \t")
    if not stripped or stripped[0] not in "`~":
        return None
    ch = stripped[0]
    rest = stripped.lstrip(ch)
    length = len(stripped) - len(rest)
    if length < 3:
        return None
    info = rest.strip()
    if ch == "`" and "`" in info:  # CommonMark: a backtick fence's info string has no backticks
        return None
    return ch, length, info


def _language(info: str) -> str:
    word = info.split(None, 1)[0] if info else ""
    word = word.strip("{}.")
    if word.startswith("language-"):
        word = word[len("language-"):]
    return word.split("=", 1)[0].lower() if "=" not in word[:1] else ""


def extract_code_snippets(text: str) -> List[Dict[str, str]]:
    """Every fenced block (``` or ~~~, 3+ long) as `{"language", "code"}`, in order.

    A closing fence uses the same character and is at least as long as the opening one; a block left
    open at the end (a truncated reply) runs to the end of the text.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    out: List[Dict[str, str]] = []
    lines = text.replace("\r\n", "\n").split("\n")
    i, n = 0, len(lines)
    while i < n:
        opened = _fence(lines[i])
        i += 1
        if opened is None:
            continue
        ch, length, info = opened
        indent = len(lines[i - 1]) - len(lines[i - 1].lstrip(" \t"))  # the fence's: taken off each code line
        body: List[str] = []
        while i < n:
            closing = _fence(lines[i])
            i += 1
            if closing is not None and closing[0] == ch and closing[1] >= length and not closing[2]:
                break
            line = lines[i - 1]
            body.append(line[min(indent, len(line) - len(line.lstrip(" \t"))):])
        out.append({"language": _language(info), "code": "\n".join(body)})
    return out


def parse_to_code(text: str) -> str:
    """The code in a reply: the first fenced block's code, else the whole text stripped.

    A reasoning model's `<think>…</think>` part is skipped (a draft in the thoughts is not the answer).
    """
    if isinstance(text, str):
        text = _without_thoughts(text)
    snippets = extract_code_snippets(text)
    if snippets:
        return snippets[0]["code"]
    return text.strip()


# -- objects ---------------------------------------------------------------------------------------

def _structure(text: str) -> Iterator[Tuple[int, str]]:
    """(index, char) of every character outside quoted strings (escapes respected), in one pass."""
    in_str: Optional[str] = None
    escaped = False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == in_str:
                in_str = None
        elif ch in "\"'":
            in_str = ch
        else:
            yield i, ch


def _depth(text: str) -> int:
    depth = best = 0
    for _, ch in _structure(text):
        if ch in "[{(":
            depth += 1
            best = max(best, depth)
        elif ch in "]})":
            depth -= 1
    return best


MAX_SPANS = 16  # bracketed spans tried in prose: a bound keeps parse_to_obj linear on any input


def _balanced_spans(text: str) -> Iterator[str]:
    """Balanced {...} / [...] spans (strings respected), left to right, at most MAX_SPANS of them.

    Prose often holds a bracketed non-value first ("the format {name: <string>}"), so later spans are
    tried too; each scan is one pass from its opening bracket.
    """
    pos, found, n = 0, 0, len(text)
    while found < MAX_SPANS and pos < n:
        curly, square = text.find("{", pos), text.find("[", pos)
        start = curly if square < 0 or 0 <= curly < square else square
        if start < 0:
            return
        found += 1
        end = _span_end(text, start)
        if end is None:
            pos = start + 1
            continue
        yield text[start:end]
        pos = end


def _span_end(text: str, start: int) -> Optional[int]:
    stack: List[str] = []
    pairs = {"{": "}", "[": "]"}
    for i, ch in _structure(text[start:]):
        if ch in pairs:
            stack.append(pairs[ch])
            if len(stack) > MAX_DEPTH:
                return None
        elif ch in "]}":
            if not stack or ch != stack[-1]:
                return None
            stack.pop()
            if not stack:
                return start + i + 1
    return None


def _without_thoughts(text: str) -> str:
    """The answer part of a reasoning model's reply: the text after `</think>` (when there is any)."""
    end = text.find("</think>")
    if end < 0:
        return text
    answer = text[end + len("</think>"):]
    return answer if answer.strip() else text


_WORDS = {"True": "true", "False": "false", "None": "null", "true": "true", "false": "false", "null": "null",
          "NaN": "NaN", "Infinity": "Infinity"}


def _tolerant_json(text: str) -> str:
    """Rewrite JSON-ish text (comments, single quotes, trailing commas, bare keys, Python words) as JSON."""
    out: List[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            quote, j, buf = ch, i + 1, []
            while j < n and text[j] != quote:
                if text[j] == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    buf.append("'" if nxt == "'" else "\\" + nxt)
                    j += 2
                    continue
                buf.append('\\"' if text[j] == '"' else ("\\n" if text[j] == "\n" else text[j]))
                j += 1
            if j >= n:
                raise ValueError("unterminated string")
            out.append('"' + "".join(buf) + '"')
            i = j + 1
        elif ch == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif ch == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif ch == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "]}":
                i = j  # trailing comma
            else:
                out.append(",")
                i += 1
        elif ch.isalpha() or ch == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_$"):
                j += 1
            word = text[i:j]
            k = j
            while k < n and text[k] in " \t\r\n":
                k += 1
            if k < n and text[k] == ":":
                out.append(json.dumps(word))  # bare key
            elif word in _WORDS:
                out.append(_WORDS[word])
            else:
                raise ValueError(f"unexpected word {word[:40]!r}")
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _candidates(text: str) -> Iterator[str]:
    text = _without_thoughts(text)
    seen = set()
    for snippet in extract_code_snippets(text):
        if snippet["language"] in _DATA_LANGS and snippet["code"].strip():
            seen.add(snippet["code"].strip())
            yield snippet["code"].strip()
    whole = text.strip()
    if whole and whole not in seen:
        seen.add(whole)
        yield whole
    for span in _balanced_spans(text):
        if span not in seen:
            seen.add(span)
            yield span


def parse_to_obj(text: str) -> Any:
    """The first Python/JSON value found in a reply (code block, bare text, or a {...}/[...] in prose).

    Tries `json.loads`, then `ast.literal_eval`, then tolerant JSON (comments, single quotes, trailing
    commas, bare keys). Never evaluates code. Raises ValueError naming what was tried.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    tried = 0
    for candidate in _candidates(text):
        tried += 1
        if _depth(candidate) > MAX_DEPTH:
            continue
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            pass
        try:
            with warnings.catch_warnings():  # odd escapes in model text are not the caller's concern
                warnings.simplefilter("ignore")
                return ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
        try:
            return json.loads(_tolerant_json(candidate))
        except (ValueError, RecursionError):
            pass
    raise ValueError(f"no JSON or Python literal found: tried json, ast.literal_eval and tolerant JSON on "
                     f"{tried} candidate(s) (code blocks, the whole text, bracketed spans; "
                     f"nesting over {MAX_DEPTH} is refused)")
