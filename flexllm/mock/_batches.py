"""Provider batch endpoints of the mock server: OpenAI `/v1/files` + `/v1/batches`, Gemini batch mode.

Batches live in memory and move through the providers' real status names on the server's clock, sped
up by a time scale (mock seconds per real second; server setting `batch_time_scale`, default 3600, or
the `[[mock:batch_time_scale=N]]` directive in any item): a batch takes `batch_hours` mock hours
(default 1) and expires after the 24 h window. Directives in an item's text (with `times=N`: only the
first N submissions of that item):

    batch_fault=expire    the batch never finishes: at 24 h it expires, the first half answered and the
                          rest returned with `batch_expired`
    batch_fault=invalid   the batch fails validation (status `failed`, `errors.data`)
    batch_error=STATUS    this item fails with STATUS in the error file (a partially failed batch)
    reply=TEXT            this item's answer (default "echo: <last user message>")
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Dict, List, Optional, Tuple

from types import ModuleType

from . import _gemini, _openai
from ._common import Turn
from ._directives import collect, strip

__all__ = ["BatchStore", "dialect", "route"]

WINDOW_HOURS = 24.0
MAX_REQUESTS, MAX_BYTES = 50_000, 200_000_000
_OPENAI = re.compile(r"^/v1/(files|batches)(?:/([^/?]+))?(?:/(content|cancel))?$")
_GEMINI_CREATE = re.compile(r"^/(v1beta|v1)/models/([^/:]+):batchGenerateContent$")
_GEMINI_BATCH = re.compile(r"^/(v1beta|v1)/batches(?:/([^/:?]+))?(?::(cancel))?$")


def route(method: str, path: str) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """(handler name, path groups) for a batch endpoint, else None."""
    bare = path.split("?", 1)[0]
    m = _OPENAI.match(bare)
    if m:
        return "openai", m.groups()
    m = _GEMINI_CREATE.match(bare)
    if m and method == "POST":
        return "gemini_create", m.groups()
    m = _GEMINI_BATCH.match(bare)
    if m:
        return "gemini", m.groups()
    return None


def dialect(kind: str) -> ModuleType:
    """The chat dialect whose error bodies, keys and replies a batch endpoint uses."""
    return _openai if kind == "openai" else _gemini


@dataclass
class _Item:
    custom_id: str
    body: Dict[str, Any]
    error_status: Optional[int] = None


@dataclass
class _Batch:
    id: str
    provider: str
    model: str
    created: float
    duration: float  # real seconds until done
    window: float  # real seconds until expiry
    items: List[_Item]
    fault: Optional[str] = None
    tag: Optional[str] = None
    metadata: Dict[str, Any] = field(default_factory=dict)
    input_file_id: Optional[str] = None
    cancelled_at: Optional[float] = None
    outputs: Optional[Tuple[Optional[str], Optional[str]]] = None  # OpenAI output/error file ids


class BatchStore:
    """The mock's batches and files. Thread-safe (one lock)."""

    def __init__(self, mock: Any) -> None:
        self.mock = mock
        self.time_scale = 3600.0
        self._lock = threading.Lock()
        self.files: Dict[str, Dict[str, Any]] = {}
        self.batches: Dict[str, _Batch] = {}
        self.submissions: Counter = Counter()

    def clear(self) -> None:
        """Forget every batch and file; back to the default time scale."""
        with self._lock:
            self.time_scale = 3600.0
            self.files.clear()
            self.batches.clear()
            self.submissions.clear()

    def snapshot(self) -> List[Dict[str, Any]]:
        """Every batch: id, provider, tag, custom_ids, fault and current status (for tests' assertions)."""
        with self._lock:
            batches = list(self.batches.values())
        return [{"id": b.id, "provider": b.provider, "model": b.model, "tag": b.tag, "fault": b.fault,
                 "custom_ids": [i.custom_id for i in b.items], "status": self._phase(b)} for b in batches]

    # -- lifecycle ------------------------------------------------------------------------------------
    def _new(self, provider: str, model: str, items: List[_Item], tag: Optional[str]) -> _Batch:
        fault, hours, scale = None, 1.0, self.time_scale
        rules = self.mock._rules_snapshot()
        for item in items:
            all_text, last = (_gemini.texts(item.body) if provider == "gemini" else _openai.texts(item.body))
            d = collect(rules, all_text, "/batch")
            key = hashlib.sha256(json.dumps(item.body, sort_keys=True).encode()).hexdigest()
            with self._lock:
                self.submissions[key] += 1
                attempt = self.submissions[key]
            active = "times" not in d or attempt <= int(d["times"])
            if active and d.get("batch_fault"):
                fault = d["batch_fault"]
            if active and d.get("batch_error"):
                item.error_status = int(d["batch_error"])
            hours = float(d.get("batch_hours", hours))
            scale = float(d.get("batch_time_scale", scale))
        prefix = "batch_" if provider == "openai" else "batches/"
        return _Batch(prefix + uuid.uuid4().hex[:24], provider, model, time.time(), hours * 3600 / scale,
                      WINDOW_HOURS * 3600 / scale, items, fault, tag)

    def _phase(self, b: _Batch) -> str:
        """Normalised phase: validating, in_progress, finalizing, completed, failed, expired, cancelled."""
        now = time.time()
        elapsed = now - b.created
        if b.cancelled_at is not None:
            return "cancelled" if now - b.cancelled_at >= min(0.05, b.duration) else "cancelling"
        if b.fault == "invalid":
            return "validating" if elapsed < 0.05 * b.duration else "failed"
        if b.fault == "expire":
            return "expired" if elapsed >= b.window else ("validating" if elapsed < 0.05 * b.window
                                                           else "in_progress")
        if elapsed >= b.duration:
            return "completed"
        if elapsed < 0.1 * b.duration:
            return "validating"
        return "in_progress" if elapsed < 0.9 * b.duration else "finalizing"

    def _answered(self, b: _Batch, phase: str) -> List[_Item]:
        if phase == "completed":
            return b.items
        if phase == "expired":
            return b.items[: len(b.items) // 2]
        return []

    def _reply(self, provider: str, item: _Item, seq: int, model: str) -> Dict[str, Any]:
        """The same reply the live endpoint gives for this body (directives, echo, schema-shaped JSON)."""
        from ._server import _answer  # the live endpoint's answer rule (imported late: _server imports us)

        chat = dialect(provider)
        all_text, last = chat.texts(item.body)
        d = collect(self.mock._rules_snapshot(), all_text, "/batch")
        last = strip(last).strip()
        path = f"/v1beta/models/{model}:generateContent" if provider == "gemini" else "/v1/chat/completions"
        return chat.reply(Turn(item.body, path, seq, _answer(d, chat, item.body, last, None), last, d))

    # -- OpenAI ---------------------------------------------------------------------------------------
    def openai(self, method: str, groups: Tuple[str, ...], headers: Any, raw: bytes, query: str) -> Tuple[int, Any]:
        kind, obj_id, action = groups
        if kind == "files":
            if method == "POST" and obj_id is None:
                return self._upload(headers, raw)
            with self._lock:
                f = self.files.get(obj_id or "")
            if f is None:
                return 404, _openai.error_body(404, f"No such File object: {obj_id}")
            if action == "content":
                return 200, f["content"]
            return 200, {k: v for k, v in f.items() if k != "content"}
        if method == "POST" and obj_id is None:
            return self._openai_create(raw)
        if obj_id is None:
            return 200, self._openai_list(query)
        with self._lock:
            b = self.batches.get(obj_id)
        if b is None or b.provider != "openai":
            return 404, _openai.error_body(404, f"No batch found with id '{obj_id}'.")
        if action == "cancel" and method == "POST":
            with self._lock:
                if b.cancelled_at is None and self._phase(b) not in ("completed", "failed", "expired"):
                    b.cancelled_at = time.time()
        return 200, self._openai_object(b)

    def _upload(self, headers: Any, raw: bytes) -> Tuple[int, Any]:
        ctype = headers.get("Content-Type", "")
        if "multipart/form-data" not in ctype:
            return 400, _openai.error_body(400, "file uploads must be multipart/form-data")
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
        fields: Dict[str, Any] = {}
        filename = "upload.jsonl"
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if name == "file":
                filename = part.get_filename() or filename
            fields[name] = payload
        if "file" not in fields:
            return 400, _openai.error_body(400, "missing required parameter: 'file'")
        purpose = fields.get("purpose", b"").decode()
        if purpose != "batch":
            return 400, _openai.error_body(400, f"'{purpose}' is not a valid purpose for this mock (use 'batch')")
        file_id = "file-" + uuid.uuid4().hex[:24]
        obj = {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": int(time.time()),
               "filename": filename, "purpose": purpose, "content": fields["file"]}
        with self._lock:
            self.files[file_id] = obj
        return 200, {k: v for k, v in obj.items() if k != "content"}

    def _openai_create(self, raw: bytes) -> Tuple[int, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, _openai.error_body(400, "body is not JSON")
        with self._lock:
            f = self.files.get(body.get("input_file_id") or "")
        if f is None:
            return 400, _openai.error_body(400, f"input_file_id {body.get('input_file_id')!r} not found")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return 400, _openai.error_body(400, "endpoint must be /v1/chat/completions, completion_window 24h")
        items: List[_Item] = []
        errors: List[Dict[str, Any]] = []
        seen: set = set()
        lines = f["content"].splitlines()
        if len(lines) > MAX_REQUESTS or len(f["content"]) > MAX_BYTES:
            errors.append({"code": "too_many_requests", "message": "batch file exceeds 50,000 requests / 200 MB"})
        for n, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                cid, rbody = row["custom_id"], row["body"]
                if row.get("url") != "/v1/chat/completions" or row.get("method") != "POST":
                    raise ValueError("url/method")
            except (ValueError, KeyError, TypeError):
                errors.append({"code": "invalid_request", "message": "invalid request line", "line": n})
                continue
            if cid in seen:
                errors.append({"code": "duplicate_custom_id", "message": f"duplicate custom_id {cid}", "line": n})
            seen.add(cid)
            items.append(_Item(cid, rbody))
        model = str((items[0].body.get("model") if items else "") or "")
        if any(i.body.get("model") != model for i in items):
            errors.append({"code": "mixed_models", "message": "all requests in a batch must use one model"})
        b = self._new("openai", model, items, (body.get("metadata") or {}).get("flexllm_tag"))
        b.metadata, b.input_file_id = body.get("metadata") or {}, f["id"]
        if errors:
            b.fault = "invalid"
            b.metadata = dict(b.metadata, _errors=errors)
        with self._lock:
            self.batches[b.id] = b
        return 200, self._openai_object(b)

    def _openai_object(self, b: _Batch) -> Dict[str, Any]:
        phase = self._phase(b)
        stamp = lambda t: int(t)  # noqa: E731 - OpenAI reports whole unix seconds
        answered = self._answered(b, phase)
        obj: Dict[str, Any] = {
            "id": b.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
            "input_file_id": b.input_file_id, "completion_window": "24h", "status": phase,
            "output_file_id": None, "error_file_id": None, "created_at": stamp(b.created),
            "in_progress_at": None, "expires_at": stamp(b.created + b.window) + 1, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None, "request_counts": {"total": len(b.items), "completed": 0, "failed": 0},
            "metadata": {k: v for k, v in b.metadata.items() if not k.startswith("_")}}
        if phase == "failed":
            obj["errors"] = {"object": "list", "data": b.metadata.get("_errors") or [
                {"code": "invalid_request", "message": "mock: batch failed validation", "param": None,
                 "line": 1}]}
            obj["failed_at"] = stamp(b.created)
            obj["request_counts"]["total"] = 0
            return obj
        if phase in ("completed", "expired", "cancelled"):
            output_id, error_id = self._openai_files(b, phase, answered)
            obj["output_file_id"], obj["error_file_id"] = output_id, error_id
            good = sum(1 for i in answered if i.error_status is None)
            obj["request_counts"] = {"total": len(b.items), "completed": good, "failed": len(b.items) - good}
            obj[{"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[phase]] = \
                stamp(time.time())
        return obj

    def _openai_files(self, b: _Batch, phase: str, answered: List[_Item]) -> Tuple[Optional[str], Optional[str]]:
        with self._lock:
            if b.outputs is not None:
                return b.outputs
        out: List[bytes] = []
        err: List[bytes] = []
        done = {id(i) for i in answered}
        for item in b.items:
            row: Dict[str, Any] = {"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": item.custom_id}
            if id(item) not in done:
                code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(phase, "batch_failed")
                row.update(response=None, error={"code": code, "message": f"mock: request not run ({phase})"})
                err.append(json.dumps(row).encode())
            elif item.error_status is not None:
                row.update(response={"status_code": item.error_status, "request_id": "req_mock",
                                     "body": _openai.error_body(item.error_status, "mock: injected batch item error")},
                           error=None)
                err.append(json.dumps(row).encode())
            else:
                reply = self._reply("openai", item, self.mock._next_seq(), b.model)
                row.update(response={"status_code": 200, "request_id": "req_mock", "body": reply}, error=None)
                out.append(json.dumps(row).encode())
        ids: List[Optional[str]] = []
        with self._lock:
            if b.outputs is not None:
                return b.outputs
            for lines in (out, err):
                if not lines:
                    ids.append(None)
                    continue
                fid = "file-" + uuid.uuid4().hex[:24]
                content = b"\n".join(lines) + b"\n"
                self.files[fid] = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                   "filename": f"{b.id}_output.jsonl", "purpose": "batch_output", "content": content}
                ids.append(fid)
            b.outputs = (ids[0], ids[1])
            return b.outputs

    def _openai_list(self, query: str) -> Dict[str, Any]:
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        limit = int(params.get("limit", 20))
        with self._lock:
            rows = sorted((b for b in self.batches.values() if b.provider == "openai"), key=lambda b: -b.created)
        after = params.get("after")
        if after:
            ids = [b.id for b in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        page = rows[:limit]
        data = [self._openai_object(b) for b in page]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit}

    # -- Gemini ---------------------------------------------------------------------------------------
    def gemini_create(self, groups: Tuple[str, ...], raw: bytes) -> Tuple[int, Any]:
        _, model = groups
        try:
            batch = json.loads(raw)["batch"]
            rows = batch["inputConfig"]["requests"]["requests"]
            items = [_Item(str((r.get("metadata") or {}).get("key", n)), r["request"]) for n, r in enumerate(rows)]
        except (ValueError, KeyError, TypeError):
            return 400, _gemini.error_body(400, "batch.inputConfig.requests.requests is required")
        if len(raw) > 20_000_000:
            return 400, _gemini.error_body(400, "inlined requests exceed 20 MB; use a file")
        b = self._new("gemini", model, items, batch.get("displayName"))
        b.metadata = {"displayName": batch.get("displayName")}
        with self._lock:
            self.batches[b.id] = b
        return 200, self._gemini_op(b)

    def gemini(self, method: str, groups: Tuple[str, ...]) -> Tuple[int, Any]:
        _, batch_id, action = groups
        if batch_id is None:
            with self._lock:
                rows = sorted((b for b in self.batches.values() if b.provider == "gemini"), key=lambda b: -b.created)
            return 200, {"operations": [self._gemini_op(b) for b in rows[:100]]}
        with self._lock:
            b = self.batches.get("batches/" + batch_id)
        if b is None:
            return 404, _gemini.error_body(404, f"Batch batches/{batch_id} not found.")
        if action == "cancel" and method == "POST":
            with self._lock:
                if b.cancelled_at is None and self._phase(b) not in ("completed", "failed", "expired"):
                    b.cancelled_at = time.time()
            return 200, {}
        return 200, self._gemini_op(b)

    def _gemini_op(self, b: _Batch) -> Dict[str, Any]:
        phase = self._phase(b)
        state = {"validating": "PENDING", "in_progress": "RUNNING", "finalizing": "RUNNING", "cancelling": "RUNNING",
                 "completed": "SUCCEEDED", "failed": "FAILED", "expired": "EXPIRED",
                 "cancelled": "CANCELLED"}[phase]
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(b.created)) + f".{int(b.created % 1 * 1e6):06d}Z"
        meta: Dict[str, Any] = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
                                "model": f"models/{b.model}", "displayName": b.metadata.get("displayName"),
                                "createTime": created, "updateTime": created, "name": b.id,
                                "batchStats": {"requestCount": str(len(b.items))}, "state": "BATCH_STATE_" + state}
        op: Dict[str, Any] = {"name": b.id, "metadata": meta}
        if phase in ("completed", "failed", "expired", "cancelled"):
            op["done"] = True
        if phase == "failed":
            op["error"] = {"code": 3, "message": "mock: batch failed validation"}
        if phase == "completed":
            rows = []
            for item in b.items:
                row: Dict[str, Any] = {"metadata": {"key": item.custom_id}}
                if item.error_status is not None:
                    row["error"] = {"code": item.error_status, "message": "mock: injected batch item error"}
                else:
                    row["response"] = self._reply("gemini", item, self.mock._next_seq(), b.model)
                rows.append(row)
            output = {"inlinedResponses": {"inlinedResponses": rows}}
            meta["output"] = output
            op["response"] = dict(output, **{"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                                                       "GenerateContentBatchOutput"})
        return op
