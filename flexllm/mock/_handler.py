"""The mock server's HTTP side: one handler per keep-alive connection that records each request, injects
the faults its directives ask for and hands a successful answer to the provider's dialect to shape.

The server's state (recorded requests, rules, counters) lives in `MockServer`; this module only reads
and updates it through the handler's `mock` attribute.
"""
from __future__ import annotations

import hashlib
import io
import json
import socket
import ssl
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterable, Optional

from . import _batches, _schema
from ._arrival import stamped_reader
from ._common import Turn
from ._directives import collect, strip
from ._routes import answer, dialect_for

__all__ = ["RecordedRequest"]

_SECRET_NAMES = ("authorization", "x-goog-api-key", "api-key", "x-api-key")


def _redact(name: str, value: str) -> str:
    if name in _SECRET_NAMES or "key" in name or "token" in name:
        return "<redacted sha256:%s>" % hashlib.sha256(value.encode()).hexdigest()[:8]
    return value


@dataclass
class RecordedRequest:
    """One request as the server saw it (secrets in headers replaced by a short hash)."""

    time: float
    method: str
    path: str
    headers: Dict[str, str]
    body: Any
    attempt: int
    status: int = 0
    fault: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True
    ssl_context: Optional[ssl.SSLContext] = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:  # TLS handshake on the connection's own thread, never the accept loop
            request = self.ssl_context.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hung up (timeout test, killed batch) or failed the TLS handshake is normal here
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flexllm-mock"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall
    mock: Any  # the `MockServer` served (set by its `_bind`; not imported: _server imports this module)
    _in_flight = False
    _trickle = 0.0
    _stamps = None

    def setup(self) -> None:
        super().setup()
        stamps = stamped_reader(self.connection)  # requests are timed by the kernel's arrival stamp
        if stamps is not None:
            self.rfile.close()
            self._stamps, self.rfile = stamps, io.BufferedReader(stamps)

    def handle_one_request(self) -> None:
        if self._stamps is not None:
            self._stamps.reset()
        super().handle_one_request()

    def _arrived(self) -> float:
        return self._stamps.arrival() if self._stamps is not None else time.time()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request logging
        pass

    # -- plumbing -----------------------------------------------------------------------------------
    def _reply_started(self) -> None:
        # in-flight ends when the answer starts: the client may send its next request right after
        if self._in_flight:
            self._in_flight = False
            self.mock._leave()

    def _send_json(self, status: int, payload: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._reply_started()
        data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._write(data)

    def _write(self, data: bytes) -> None:
        """Write `data`; with the `trickle=SECONDS` directive, one byte at a time, SECONDS apart."""
        gap = self._trickle
        if not gap:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            self.wfile.flush()
            time.sleep(gap)

    def _send_sse(self, events: Iterable[bytes]) -> None:
        self._reply_started()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for data in events:
            if self._trickle:  # one byte per chunk: a server that keeps the socket busy yet sends no event
                for i in range(len(data)):
                    self._write(b"1\r\n%s\r\n" % data[i:i + 1])
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        self._reply_started()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- verbs ----------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        if self._batch("GET", b""):
            return
        if self.path.startswith("/_mock/requests"):
            return self._send_json(200, [r.to_dict() for r in self.mock.requests])
        if self.path.startswith("/_mock/health"):
            return self._send_json(200, {"ok": True})
        if self.path.startswith("/v1/models"):
            return self._send_json(200, {"object": "list", "data": [{"id": "mock-model", "object": "model"}]})
        self._send_json(404, {"error": {"message": f"no route for GET {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        arrived = self._arrived()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.startswith("/_mock/reset"):
            self.mock.clear()
            return self._send_json(200, {"ok": True})
        if self._batch("POST", raw):
            return
        self.mock._enter()
        self._in_flight = True
        try:
            self._handle(arrived, raw)
        finally:
            self._reply_started()

    def _batch(self, method: str, raw: bytes) -> bool:
        """Serve a provider-batch endpoint (see `_batches`); False when the path is not one."""
        found = _batches.route(method, self.path)
        if found is None:
            return False
        kind, groups = found
        mock = self.mock
        path, _, query = self.path.partition("?")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"multipart": True, "bytes": len(raw)}
        headers = {k.lower(): _redact(k.lower(), v) for k, v in self.headers.items()}
        rec = RecordedRequest(self._arrived(), method, path, headers, body, 1)
        mock._record(rec)
        dialect = _batches.dialect(kind)
        if mock.require_key is not None and dialect.api_key(self.headers) != mock.require_key:
            rec.status, rec.fault = 401, "auth"
            self._send_json(401, dialect.error_body(401, "mock: invalid API key"))
            return True
        latency = mock._latency()
        if latency > 0:  # also lets a test kill a client while its create call is at the server
            time.sleep(latency)
        store = mock.batch_store
        if kind == "openai":
            status, payload = store.openai(method, groups, self.headers, raw, query)
        elif kind == "anthropic":
            status, payload = store.anthropic(method, groups, self.headers, raw, query)
        elif kind == "gemini_create":
            status, payload = store.gemini_create(groups, raw)
        else:
            status, payload = store.gemini(method, groups)
        rec.status = status
        self._send_json(status, payload)
        return True

    def _handle(self, arrived: float, raw: bytes) -> None:
        self._trickle = 0.0  # the handler lives as long as its keep-alive connection: no directive carries over
        mock = self.mock
        path = self.path
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): _redact(k.lower(), v) for k, v in self.headers.items()}
        rec = RecordedRequest(arrived, "POST", path, headers, body, mock._attempt(path, raw))
        mock._record(rec)
        dialect = dialect_for(path)
        if dialect is None:
            rec.status = 404
            return self._send_json(404, {"error": {"message": f"no route for POST {path}"}})
        if not isinstance(body, dict):
            rec.status = 400
            return self._send_json(400, dialect.error_body(400, "request body is not a JSON object"))
        all_text, last_user = dialect.texts(body)
        d = collect(mock._rules_snapshot(), all_text, path)
        attempt_ok = "times" not in d or rec.attempt <= int(d["times"])

        if mock.require_key is not None and dialect.api_key(self.headers) != mock.require_key:
            rec.status, rec.fault = 401, "auth"
            return self._send_json(401, dialect.error_body(401, "mock: invalid API key"))

        invalid = dialect.validate(self.headers, body) if hasattr(dialect, "validate") else None
        if invalid:
            rec.status, rec.fault = 400, "invalid"
            return self._send_json(400, dialect.error_body(400, invalid))

        self._trickle = float(d.get("trickle") or 0.0) if attempt_ok else 0.0
        latency = float(d["latency"]) if "latency" in d else mock._latency()
        if latency > 0:
            time.sleep(latency)
        if attempt_ok and d.get("drop"):
            rec.status, rec.fault = 0, "drop"
            return self._drop()
        if attempt_ok and (d.get("quota") or d.get("status")):
            status = 429 if d.get("quota") else int(d["status"])
            extra: Dict[str, str] = {}
            if "retry_after" in d:
                extra["Retry-After"] = d["retry_after"]
            if "retry_after_ms" in d:
                extra["retry-after-ms"] = d["retry_after_ms"]
            if "should_retry" in d:
                extra["x-should-retry"] = d["should_retry"]
            rec.status, rec.fault = status, "quota" if d.get("quota") else "status"
            err = dialect.error_body(status, d.get("message", f"mock: injected {status}"), quota=bool(d.get("quota")),
                                     retry_delay=d.get("retry_delay"))
            return self._send_json(status, err, extra)
        if mock._random_error():
            rec.status, rec.fault = 503, "error_rate"
            return self._send_json(503, dialect.error_body(503, "mock: random failure (error_rate)"))
        if attempt_ok and d.get("malformed"):
            rec.status, rec.fault = 200, "malformed"
            return self._send_json(200, b'{"id": "mock", "choices": [{"message": ')

        last = strip(last_user).strip()
        seq = mock._next_seq()
        tools = d.get("tool") or d.get("tool_calls")
        calls = _schema.tool_calls(tools, d.get("tool_args"), seq) if tools else None
        turn = Turn(body, path, seq, answer(d, dialect, body, last, calls), last, d,
                    truncate=bool(attempt_ok and d.get("truncate")), calls=calls, faults=attempt_ok)
        rec.status = 200
        rec.fault = "truncate" if turn.truncate else None
        if "invalid_json" in d and rec.attempt <= _schema.how_many(d["invalid_json"], d.get("times")):
            turn.answer, rec.fault = _schema.broken_json(turn.answer), "invalid_json"
        limit = dialect.token_limit(body) if hasattr(dialect, "token_limit") else None
        if limit is not None and "finish" not in d and len(turn.answer.split()) > limit:
            turn.answer = " ".join(turn.answer.split()[:limit])  # a reply cut at max_tokens, as a model's is
            d["finish"] = dialect.CUT_OFF
        if dialect.is_stream(path, body) and not d.get("plain"):  # plain=1: a server that ignores stream=true
            return self._send_sse(dialect.stream(turn))
        self._send_json(200, dialect.reply(turn))
