"""The OpenAI Batch API of the mock: multipart `/v1/files`, `/v1/batches`, output and error files."""
from __future__ import annotations

import json
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Dict, List, Optional, Tuple

from . import _openai
from ._batch_core import BatchCore, _Batch, _Item

__all__ = ["OpenAIBatches"]

MAX_REQUESTS, MAX_BYTES = 50_000, 200_000_000


class OpenAIBatches(BatchCore):
    """Mixin of `BatchStore`: the OpenAI Batch API over the shared batch store."""

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
        page, more = self._page("openai", query, "after")
        data = [self._openai_object(b) for b in page]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": more}
