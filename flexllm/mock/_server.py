"""The mock server itself: its lifecycle (bind, serve, stop), its settings and the state its handlers share
(recorded requests, attempt counters, rules), behind one lock. The HTTP handling is in `_handler`."""
from __future__ import annotations

import hashlib
import random
import ssl
import threading
from typing import Any, Dict, List, Optional

from . import _batches
from ._directives import Rule
from ._handler import RecordedRequest, _Handler, _HTTPServer
from ._routes import DIALECTS as DIALECTS  # importable from here, as before the split
from ._routes import dialect_for as dialect_for

__all__ = ["MockServer", "RecordedRequest"]


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
