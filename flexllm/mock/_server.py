"""The mock HTTP server: a ThreadingHTTPServer with keep-alive, fault injection and request recording."""
from __future__ import annotations

import hashlib
import importlib
import json
import random
import socket
import ssl
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .._logging import get_logger
from . import _batches, _schema
from ._common import Turn
from ._directives import Rule, collect, strip

__all__ = ["MockServer", "RecordedRequest"]

logger = get_logger(__name__)

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
    mock: "MockServer"
    _in_flight = False
    _trickle = 0.0

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
        arrived = time.time()
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
        rec = RecordedRequest(time.time(), method, path, headers, body, 1)
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
        turn = Turn(body, path, seq, _answer(d, dialect, body, last, calls), last, d,
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


def _answer(d: Dict[str, str], dialect: ModuleType, body: Dict[str, Any], last: str, calls: Any) -> str:
    """The reply text: `reply=`, else none beside tool calls, else JSON fitting a requested schema, else an echo."""
    if "reply" in d:
        return d["reply"]
    if calls:
        return ""
    requested = getattr(dialect, "requested_schema", None)
    schema = requested(body) if requested is not None else None
    if schema is not None:
        return json.dumps(_schema.example(schema, last))
    return "echo: " + last


def _dialects() -> Tuple[ModuleType, ...]:
    """The dialect module of every registered provider that has one (`flexllm.mock._<name>`)."""
    from .. import providers

    found = []
    for name in providers.names():
        try:
            found.append(importlib.import_module(f"{__package__}._{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}._{name}":
                raise
    return tuple(found)


#: the dispatch table: each dialect module says which paths it answers (`matches(path)`)
DIALECTS = _dialects()


def dialect_for(path: str) -> Optional[ModuleType]:
    """The dialect module that answers POST `path`, or None (404)."""
    for dialect in DIALECTS:
        if dialect.matches(path):
            return dialect
    return None


class MockServer:
    """An OpenAI-, Gemini- and Anthropic-compatible HTTP server on 127.0.0.1 for tests, demos and benchmarks.

    >>> with MockServer(latency=0.05) as server:
    ...     client = OpenAIClient(base_url=server.url, model="any")

    `ssl_context=` (a server-side `ssl.SSLContext`) serves HTTPS, e.g. to test `verify=` with your own CA.

    Replies echo the last user message (`"echo: <text>"`). Faults are injected per request with
    `[[mock:key=value;...]]` in a message, or for matching requests with `add_rule(...)`. Thread-safe.
    """

    def __init__(self, latency: float = 0.0, jitter: float = 0.0, error_rate: float = 0.0, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0, require_key: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None, batch_time_scale: float = 3600.0) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self._port = port
        self.require_key = require_key
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._seed = seed
        self.latency, self.jitter, self.error_rate = latency, jitter, error_rate
        self._requests: List[RecordedRequest] = []
        self._attempts: Dict[str, int] = {}
        self._rules: List[Rule] = []
        self._seq = 0
        self._in_flight = 0
        self.max_in_flight = 0
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        #: provider batches and files (OpenAI /v1/files + /v1/batches, Gemini batch mode)
        #: `batch_time_scale`: mock seconds per real second for provider batches (86400: a day in a second)
        self.batch_store = _batches.BatchStore(self, batch_time_scale)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> "MockServer":
        """Bind and serve in a background thread; returns once the socket listens."""
        self._httpd = self._bind()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="flexllm-mock", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def serve_forever(self) -> None:
        """Serve in the calling thread (the command line)."""
        self._httpd = self._bind()
        self._httpd.serve_forever(poll_interval=0.1)

    def _bind(self) -> _HTTPServer:
        httpd = _HTTPServer((self.host, self._port), type("Handler", (_Handler,), {"mock": self}))
        httpd.ssl_context = self.ssl_context
        return httpd

    def __enter__(self) -> "MockServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        """Base URL for Gemini and Claude clients (`http://127.0.0.1:PORT`; https:// with ssl_context=)."""
        return f"{'https' if self.ssl_context is not None else 'http'}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL for OpenAI-compatible clients (`http://127.0.0.1:PORT/v1`)."""
        return self.root_url + "/v1"

    # -- control ------------------------------------------------------------------------------------
    @property
    def requests(self) -> List[RecordedRequest]:
        """A snapshot of the requests recorded so far."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests, attempt counters and rules."""
        with self._lock:
            self._requests.clear()
            self._attempts.clear()
            self._rules.clear()
            self.max_in_flight = 0
            self._rng = random.Random(self._seed)
        self.batch_store.clear()

    def add_rule(self, contains: Optional[str] = None, path_contains: Optional[str] = None, **directives: Any) -> None:
        """Apply `directives` (same keys as `[[mock:...]]`) to requests whose text contains `contains`."""
        with self._lock:
            self._rules.append(Rule({k: str(v).lower() if isinstance(v, bool) else str(v)
                                     for k, v in directives.items()}, contains, path_contains))

    def configure(self, **settings: Any) -> None:
        """Change latency, jitter, error_rate or batch_time_scale (mock seconds per real second) while serving."""
        for key, value in settings.items():
            if key == "batch_time_scale":
                self.batch_store.time_scale = float(value)
                continue
            if key not in ("latency", "jitter", "error_rate"):
                raise ValueError(f"unknown setting {key!r}")
            setattr(self, key, float(value))

    @property
    def batches(self) -> List[Dict[str, Any]]:
        """The provider batches created so far: id, provider, tag, custom_ids, fault, current status."""
        return self.batch_store.snapshot()

    # -- used by the handler ------------------------------------------------------------------------
    def _rules_snapshot(self) -> List[Rule]:
        return self._rules  # appended under the lock; iteration of a list is safe enough for rules

    def _attempt(self, path: str, raw: bytes) -> int:
        key = hashlib.sha256(path.encode() + b"\0" + raw).hexdigest()
        with self._lock:
            n = self._attempts.get(key, 0) + 1
            self._attempts[key] = n
            return n

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)

    def _latency(self) -> float:
        if not self.jitter:
            return self.latency
        with self._lock:
            return self.latency + self._rng.uniform(0, self.jitter)

    def _random_error(self) -> bool:
        if not self.error_rate:
            return False
        with self._lock:
            return self._rng.random() < self.error_rate

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
