"""The transport: the only module that does network I/O.

Each flexllm client owns its connection pool (httpx, keep-alive), created lazily and re-created after
`os.fork()` (gunicorn/celery prefork). httpx's exceptions are translated here, in one place, into
flexllm's tree and raised `from` the original.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import ssl
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

import httpx

from . import _cancel, _h1
from ._constants import DEFAULT_CONNECT_TIMEOUT
from ._logging import get_logger, redact_secrets
from ._messages import find_lone_surrogate
from ._netconfig import TransportOptions, proxy_of
from .errors import APIConnectionError, APITimeoutError, LLMError
from .providers.base import RequestSpec

__all__ = ["Transport", "dumps"]

logger = get_logger(__name__)


def dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON for a request body; ValueError (never sent, never retried) when it is not JSON."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:  # named in the text it is in, not by its offset in the body
        raise ValueError(f"the request holds {find_lone_surrogate(body) or 'a lone surrogate'}, which is not "
                         "valid Unicode and cannot be sent; fix the input") from None
    except (TypeError, ValueError) as exc:  # a set, a date, NaN/inf: the caller's parameter, not the network
        raise ValueError(f"the request body cannot be sent as JSON ({exc}); pass plain JSON values "
                         "(str, int, float, bool, None, list, dict) in messages and parameters") from None


def _without_frames(exc: BaseException) -> BaseException:
    """`exc` and the exceptions chained to it, stripped of their tracebacks.

    httpx/httpcore frames hold the request headers in their locals; a traceback formatted with locals
    (Sentry, Django's debug page, rich's show_locals) would print the key. The type and message stay.
    """
    seen = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return exc


@contextlib.contextmanager
def _mapped(provider: str, model: str, redact: Callable[[str], str], proxy_at: Optional[str] = None) -> Iterator[None]:
    """httpx's exceptions as ours; `proxy_at` (host:port of proxy=) is named when connecting to it failed
    (through a proxy every connection goes to the proxy, so a refused or timed-out connect is the proxy's)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        proxy = proxy_of(exc, proxy_at) if isinstance(exc, httpx.ConnectTimeout) else None
        what = f"could not connect to the proxy {proxy} in time" if proxy else "request timed out"
        raise APITimeoutError(redact(f"{what} ({type(exc).__name__}: {exc})"),
                              provider=provider, model=model) from _without_frames(exc)
    except (httpx.LocalProtocolError, UnicodeEncodeError) as exc:
        # a header that cannot be sent: our request is wrong, so no retry; its text would quote the value
        raise LLMError(f"the request could not be sent ({type(exc).__name__}): a header value holds a line break, "
                       "a control character or non-ASCII text; check api_key, default_headers and extra_headers",
                       provider=provider, model=model) from None
    except (httpx.TransportError, httpx.StreamError) as exc:
        proxy = proxy_of(exc, proxy_at) if isinstance(exc, httpx.ConnectError) else None
        what = f"could not connect to the proxy {proxy}" if proxy else "connection failed"
        raise APIConnectionError(redact(f"{what} ({type(exc).__name__}: {exc})"),
                                 provider=provider, model=model) from _without_frames(exc)


def seconds(timeout: Any) -> float:
    """`timeout` as float seconds; True/False are refused (they would silently mean 1 s / 0 s)."""
    if isinstance(timeout, bool):
        raise ValueError(f"timeout must be a number of seconds above 0, got {timeout!r}")
    return float(timeout)


class _Deadline(dict):
    """httpcore's per-request timeout dict, whose values are the time left until one deadline.

    httpcore looks `timeouts.get("read")` (and connect/write) up before every socket operation and sets it
    on the socket, so answering with the time left makes `timeout` a deadline for the whole request: a
    server trickling a byte at a time cannot keep a call alive, and no watchdog thread is needed. A stream
    re-arms it after each line (a deadline per gap between lines).
    """

    __slots__ = ("total", "until")

    def __init__(self, total: float) -> None:
        if not 0 < total < float("inf"):  # also refuses NaN
            raise ValueError(f"timeout must be a number of seconds above 0, got {total!r}")
        super().__init__(connect=min(DEFAULT_CONNECT_TIMEOUT, total), read=total, write=total, pool=total)
        self.total = total
        self.until: Optional[float] = None

    def arm(self) -> None:
        """Start (or restart) the clock: the next `total` seconds are all the request gets."""
        self.until = time.monotonic() + self.total

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        value = dict.get(self, key, default)
        if self.until is None or value is None:
            return value
        return min(value, max(self.until - time.monotonic(), 0.001))  # 0 would make the socket non-blocking


class _Watched(httpx.SyncByteStream):
    """A response body that checks its request's deadline between the chunks it reads.

    httpcore fixes a body's socket read timeout when the body starts, so a server sending a byte now and
    then would never trip it; this check does (a stalled read is still bounded by that read timeout).
    """

    def __init__(self, inner: httpx.SyncByteStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        deadline = self._deadline
        for chunk in self._inner:
            if deadline.until is not None and time.monotonic() > deadline.until:
                raise httpx.ReadTimeout(f"no complete reply within the {deadline.total:g} s timeout")
            yield chunk

    def close(self) -> None:
        self._inner.close()


class Transport:
    """Sends RequestSpecs over pooled, lazily created httpx.Clients. Thread-safe and fork-safe.

    The pool is sharded: httpcore's connection pool does work quadratic in its number of connections
    on every request (each idle connection re-counts all the others), which at 100 connections costs
    more CPU than the request itself. Each thread keeps to one shard of at most ~8 busy connections, so
    keep-alive still works and the bookkeeping stays small. The shards share one SSL context.
    """

    SHARD_CONNECTIONS = 8

    def __init__(self, *, timeout: float, max_connections: int, provider: str,
                 redact: Callable[[str], str] = redact_secrets,
                 client_factory: Optional[Callable[[], httpx.Client]] = None,
                 options: Optional[TransportOptions] = None) -> None:
        self.provider = provider
        self._options = options or TransportOptions()
        self._timeout = httpx.Timeout(timeout, connect=min(DEFAULT_CONNECT_TIMEOUT, timeout))
        self._total = seconds(timeout)  # each chat request's deadline (`_Deadline`); a call's own timeout wins
        _Deadline(self._total)  # validate now: a bad timeout is the caller's error, never a retried failure
        # a shard never blocks on its own limit: the client's semaphore bounds the total in flight (a request
        # abandoned by a cancelled await gave its slot back while still on the wire: it must not block either)
        self._limits = httpx.Limits(max_connections=None, max_keepalive_connections=max_connections)
        self._redact = redact
        self._proxy_at = self._options.proxy_at  # named in "could not connect to the proxy host:port" errors
        self._factory = client_factory
        self._lock = threading.Lock()
        self._nshards = 1 if client_factory else max(1, -(-max_connections // self.SHARD_CONNECTIONS))
        self._clients: List[Optional[httpx.Client]] = [None] * self._nshards
        self._pid = os.getpid()
        self._local = threading.local()
        self._next_shard = itertools.count()
        self._sockets: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()  # every socket we opened, for abort()
        self._extensions = {"trace": self._trace}
        # non-streaming requests take the lean HTTP/1.1 path (`_h1`) unless something needs httpx
        self._lean = (client_factory is None and not self._options.proxy and not self._options.http2
                      and not _proxies_in_environment())
        self._origins: Dict[str, _h1.Origin] = {}  # "scheme://host:port" -> its keep-alive sockets
        self._targets: Dict[str, Optional[Tuple[_h1.Origin, str]]] = {}  # url -> (origin, target) or None
        self._max_connections = max_connections

    def _get_client(self) -> httpx.Client:
        local = self._local
        shard = getattr(local, "shard", None)
        if shard is None:
            shard = local.shard = next(self._next_shard) % self._nshards
        client = self._clients[shard]
        if client is not None and self._pid == os.getpid():
            return client
        with self._lock:
            if self._pid != os.getpid():
                # after fork the parent's sockets are shared: never reuse them, never close them here
                self._clients = [None] * self._nshards
                self._sockets = weakref.WeakSet()
                self._origins, self._targets = {}, {}
                self._pid = os.getpid()
            client = self._clients[shard]
            if client is None:
                client = self._clients[shard] = self._new_client()
            return client

    def _new_client(self) -> httpx.Client:
        if self._factory is not None:
            return self._factory()
        # proxy=, verify= and http2= (TransportOptions); one SSL context shared by the shards
        return httpx.Client(timeout=self._timeout, limits=self._limits, follow_redirects=False,
                            verify=self._options.ssl_context(), **self._options.client_kwargs())

    def prepare(self, spec: RequestSpec, *, model: str = "") -> "httpx.Request | _h1.Prepared":
        """Build (and encode) the request ahead of time, so nothing slow sits between rate-limit and wire."""
        with _mapped(self.provider, model, self._redact, self._proxy_at):
            lean = self._origin(spec.url) if self._lean else None
            if lean is None:
                return self._request(spec)
            origin, target = lean
            return origin.prepare(spec.method, target, spec.headers, dumps(spec.json), self._total_of(spec))

    def _total_of(self, spec: RequestSpec) -> float:
        """The request's deadline in seconds: its own timeout, else the client's (ValueError if not above 0)."""
        if spec.timeout is None:
            return self._total
        return _Deadline(seconds(spec.timeout)).total  # validates

    def _request(self, spec: RequestSpec) -> httpx.Request:
        client = self._get_client()
        deadline = _Deadline(self._total_of(spec))
        return client.build_request(spec.method, spec.url, headers=spec.headers, content=dumps(spec.json),
                                    extensions={"timeout": deadline, **self._extensions})

    @staticmethod
    def _arm(request: httpx.Request) -> None:
        deadline = request.extensions.get("timeout")
        if isinstance(deadline, _Deadline):
            deadline.arm()

    @staticmethod
    def _watch(response: httpx.Response, request: httpx.Request) -> httpx.Response:
        deadline = request.extensions.get("timeout")
        if isinstance(deadline, _Deadline) and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _Watched(response.stream, deadline)
        return response

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        # httpcore reports each new connection's network stream (TCP, then TLS): remember its socket so that
        # abort() can wake a thread blocked reading from it (closing the pool does not)
        if event[-9:] == ".complete" and event[:11] == "connection.":
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with self._lock:
                    self._sockets.add(sock)

    def _origin(self, url: str) -> Optional[Tuple[_h1.Origin, str]]:
        """The lean path's origin and request target for a URL, or None where httpx must handle it."""
        if self._pid != os.getpid():
            self._get_client()  # resets the httpx shards and the origins after fork
        try:
            return self._targets[url]
        except KeyError:
            pass
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lean = None
        if (parts.scheme in ("http", "https") and parts.hostname and "@" not in parts.netloc
                and target.isascii() and target.isprintable() and " " not in target and not parts.fragment):
            key = f"{parts.scheme}://{parts.netloc}"
            with self._lock:
                origin = self._origins.get(key)
                if origin is None:
                    origin = self._origins[key] = _h1.Origin(
                        parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                        parts.netloc, self._lean_ssl() if parts.scheme == "https" else None,
                        self._timeout.connect or DEFAULT_CONNECT_TIMEOUT, self._max_connections)
            lean = (origin, target)
        if len(self._targets) > 256:  # URLs per client are few; never let this grow without bound
            self._targets.clear()
        self._targets[url] = lean
        return lean

    def _lean_ssl(self) -> ssl.SSLContext:
        """The same TLS settings httpx gets (verify=: certifi, a CA bundle, a context, or no checks)."""
        ctx = self._options.ssl_context()
        if ctx is False:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def send(self, request: "RequestSpec | httpx.Request", *, model: str) -> Tuple[int, Mapping[str, str], bytes]:
        """Send one request (a spec, or one from `prepare`) and read the whole body: (status, headers, body)."""
        if isinstance(request, RequestSpec):
            request = self.prepare(request, model=model)
        if isinstance(request, _h1.Prepared):
            with _mapped(self.provider, model, self._redact, self._proxy_at):
                return request.origin.send(request)
        with _mapped(self.provider, model, self._redact, self._proxy_at):
            if isinstance(request, RequestSpec):
                request = self._request(request)
            self._arm(request)
            response = self._watch(self._get_client().send(request, stream=True), request)
            try:
                return response.status_code, response.headers, response.read()
            finally:
                response.close()

    def request(self, method: str, url: str, *, headers: Mapping[str, str], model: str, content: Any = None,
                files: Any = None, data: Any = None, timeout: Optional[float] = None
                ) -> Tuple[int, Mapping[str, str], bytes]:
        """One non-chat request (provider batch files and jobs): a body, or multipart `files=`/`data=`."""
        kwargs: dict = {"headers": headers}
        if content is not None:
            kwargs["content"] = content
        if files is not None:
            kwargs["files"], kwargs["data"] = files, data
        if timeout:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(DEFAULT_CONNECT_TIMEOUT, timeout))
        with _mapped(self.provider, model, self._redact, self._proxy_at):
            response = self._get_client().request(method, url, **kwargs)
            return response.status_code, response.headers, response.content

    @contextlib.contextmanager
    def stream(self, spec: RequestSpec, *, model: str) -> Iterator[Tuple[int, Mapping[str, str], Iterator[str]]]:
        """Open a streaming request: (status, headers, iterator of text lines). Closes on exit."""
        with _mapped(self.provider, model, self._redact, self._proxy_at):
            request = self._request(spec)
            self._arm(request)
            response = self._watch(self._get_client().send(request, stream=True), request)
        scope = _cancel.current()
        if scope is not None and scope.abandon and response.http_version == "HTTP/1.1":
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                scope.watch(sock)  # an async consumer that leaves cuts a stalled stream at once
            else:
                scope = None
        else:
            scope = None
        try:
            yield response.status_code, response.headers, self._lines(response, request, model)
        finally:
            if scope is not None:
                scope.unwatch()
            response.close()

    def _lines(self, response: httpx.Response, request: httpx.Request, model: str) -> Iterator[str]:
        arm = self._arm
        with _mapped(self.provider, model, self._redact, self._proxy_at):
            for line in response.iter_lines():
                arm(request)  # the deadline is per gap between lines, not for the whole stream
                yield line

    @staticmethod
    def read_body(lines: Iterator[str]) -> bytes:
        """The rest of a streamed (error) response as bytes."""
        return "\n".join(lines).encode("utf-8")

    def abort(self) -> None:
        """Fail every request in flight at once (shut their sockets down), then close the pool."""
        with self._lock:
            sockets, self._sockets = list(self._sockets) if self._pid == os.getpid() else [], weakref.WeakSet()
            origins = list(self._origins.values()) if self._pid == os.getpid() else []
        for origin in origins:
            origin.abort()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass
        self.close()

    def close(self) -> None:
        """Close pooled connections (only those this process opened); the next request reopens."""
        with self._lock:
            clients, self._clients = self._clients, [None] * self._nshards
            origins, self._origins, self._targets = self._origins, {}, {}
            if self._pid == os.getpid():
                for client in clients:
                    if client is not None:
                        client.close()
                for origin in origins.values():
                    origin.close()


def _proxies_in_environment() -> bool:
    """httpx (trust_env) routes through HTTP(S)_PROXY / ALL_PROXY: such requests stay on httpx."""
    return any(os.environ.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                                  "http_proxy", "https_proxy", "all_proxy"))
