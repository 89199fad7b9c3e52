"""The transport: the only module that does network I/O.

One `httpx.Client` per flexllm client, created lazily, pooled with keep-alive, re-created after
`os.fork()` (gunicorn/celery prefork). httpx's exceptions are translated here, in one place, into
flexllm's tree and raised `from` the original.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple

import httpx

from ._constants import DEFAULT_CONNECT_TIMEOUT
from .errors import APIConnectionError, APITimeoutError
from .providers.base import RequestSpec

__all__ = ["Transport", "dumps"]

logger = logging.getLogger(__name__)


def dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON for a request body."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@contextlib.contextmanager
def _mapped(provider: str, model: str, redact: Callable[[str], str]) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise APITimeoutError(redact(f"request timed out ({type(exc).__name__}: {exc})"),
                              provider=provider, model=model) from exc
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise APIConnectionError(redact(f"connection failed ({type(exc).__name__}: {exc})"),
                                 provider=provider, model=model) from exc


class Transport:
    """Sends RequestSpecs over a pooled, lazily created httpx.Client. Thread-safe and fork-safe."""

    def __init__(self, *, timeout: float, max_connections: int, provider: str,
                 redact: Callable[[str], str] = lambda s: s,
                 client_factory: Optional[Callable[[], httpx.Client]] = None) -> None:
        self.provider = provider
        self._timeout = httpx.Timeout(timeout, connect=min(DEFAULT_CONNECT_TIMEOUT, timeout))
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._redact = redact
        self._factory = client_factory
        self._lock = threading.Lock()
        self._client: Optional[httpx.Client] = None
        self._pid = 0

    def _get_client(self) -> httpx.Client:
        client = self._client
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # after fork the parent's sockets are shared: never reuse them, never close them here
                self._client = (self._factory() if self._factory else
                                httpx.Client(timeout=self._timeout, limits=self._limits, follow_redirects=False))
                self._pid = os.getpid()
            return self._client

    def prepare(self, spec: RequestSpec) -> httpx.Request:
        """Build (and encode) the request ahead of time, so nothing slow sits between rate-limit and wire."""
        return self._request(spec)

    def _request(self, spec: RequestSpec) -> httpx.Request:
        client = self._get_client()
        timeout = httpx.Timeout(spec.timeout, connect=min(DEFAULT_CONNECT_TIMEOUT, spec.timeout)) \
            if spec.timeout else self._timeout
        return client.build_request(spec.method, spec.url, headers=spec.headers, content=dumps(spec.json),
                                    timeout=timeout)

    def send(self, request: "RequestSpec | httpx.Request", *, model: str) -> Tuple[int, Mapping[str, str], bytes]:
        """Send one request (a spec, or one from `prepare`) and read the whole body: (status, headers, body)."""
        if isinstance(request, RequestSpec):
            request = self._request(request)
        with _mapped(self.provider, model, self._redact):
            response = self._get_client().send(request)
            try:
                return response.status_code, response.headers, response.read()
            finally:
                response.close()

    @contextlib.contextmanager
    def stream(self, spec: RequestSpec, *, model: str) -> Iterator[Tuple[int, Mapping[str, str], Iterator[str]]]:
        """Open a streaming request: (status, headers, iterator of text lines). Closes on exit."""
        with _mapped(self.provider, model, self._redact):
            response = self._get_client().send(self._request(spec), stream=True)
        try:
            yield response.status_code, response.headers, self._lines(response, model)
        finally:
            response.close()

    def _lines(self, response: httpx.Response, model: str) -> Iterator[str]:
        with _mapped(self.provider, model, self._redact):
            yield from response.iter_lines()

    @staticmethod
    def read_body(lines: Iterator[str]) -> bytes:
        """The rest of a streamed (error) response as bytes."""
        return "\n".join(lines).encode("utf-8")

    def close(self) -> None:
        """Close pooled connections (only those this process opened)."""
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                client.close()
