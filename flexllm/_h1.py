"""A lean HTTP/1.1 exchange for the common case: one request, one whole reply, keep-alive sockets.

Why it exists: with blocking I/O in a thread pool every blocking call releases the GIL and must win it
back. At 1,000 requests in flight, replies arrive in bursts and each re-acquisition waits behind every
other woken thread (a GIL convoy); httpx + httpcore + h11 make ~10 blocking calls (send per header
block and body, a readiness poll per reuse, a poll before each timed read) and ~1,800 Python calls per
request. This path makes one `send` (keeping the GIL: see `_send_holding_gil`) and, for a reply that fits
in one segment, one `recv` (the only GIL release of a request), in about a tenth of the Python calls. `http.Transport` uses it for non-streaming requests when nothing needs
httpx's extras (proxies from the environment, custom clients, odd URLs) and httpx for everything else.

It raises httpx's exception types, so errors are mapped in one place (`http._mapped`), and sends the
same request headers httpx would. The `timeout` of an exchange is a deadline for the whole request
(connect, send, every read), not per read.
"""
from __future__ import annotations

import collections
import socket
import ssl
import struct
import sys
import time
import zlib
from typing import Callable, Deque, List, Mapping, Optional, Set, Tuple

import httpx

from . import _cancel

__all__ = ["Origin", "Prepared"]

_KEEPALIVE_EXPIRY = 5.0  # httpx's default: uvicorn (vLLM, SGLang) drops idle connections after 5 s
_READ = 65536
_LINUX = sys.platform.startswith("linux")
_TCP_ESTABLISHED = 1
_USER_AGENT = f"python-httpx/{httpx.__version__}"
_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}
_BAD_HEADER_CHARS = ("\r", "\n", "\0")


class Prepared:
    """A request encoded ahead of time: the bytes to write and the origin to write them to."""

    __slots__ = ("origin", "payload", "timeout")

    def __init__(self, origin: "Origin", payload: bytes, timeout: float) -> None:
        self.origin, self.payload, self.timeout = origin, payload, timeout


class Origin:
    """Keep-alive connections to one scheme://host:port. Thread-safe: idle sockets sit in a deque
    (append/pop are atomic), sockets in use in a set, so `abort()` can interrupt blocked reads."""

    def __init__(self, scheme: str, host: str, port: int, host_header: str,
                 ssl_context: Optional[ssl.SSLContext], connect_timeout: float, max_idle: int) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self._ssl = ssl_context if scheme == "https" else None
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._idle: Deque[Tuple[socket.socket, float]] = collections.deque()
        self._busy: Set[socket.socket] = set()
        self._head = (f"Host: {host_header}\r\nAccept-Encoding: gzip, deflate\r\n"
                      f"Connection: keep-alive\r\n")
        self._closed = False

    # -- request encoding ----------------------------------------------------------------------------
    def prepare(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
                timeout: float) -> Prepared:
        """Encode the request line, headers (httpx's defaults first) and body into one buffer."""
        lines = [f"{method} {target} HTTP/1.1\r\n", self._head]
        has_accept = has_agent = False
        for name, value in headers.items():
            if any(c in name or c in value for c in _BAD_HEADER_CHARS) or ":" in name:
                raise httpx.LocalProtocolError(f"illegal character in the {name!r} request header")
            low = name.lower()
            if low in ("content-length", "host", "transfer-encoding", "connection"):
                continue  # framing is ours
            has_accept = has_accept or low == "accept"
            has_agent = has_agent or low == "user-agent"
            lines.append(f"{name}: {value}\r\n")
        if not has_accept:
            lines.append("Accept: */*\r\n")
        if not has_agent:
            lines.append(f"User-Agent: {_USER_AGENT}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        try:
            head = "".join(lines).encode("ascii")
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError("request headers must be ASCII text") from None
        return Prepared(self, head + body, timeout)

    # -- the exchange --------------------------------------------------------------------------------
    def send(self, request: Prepared) -> Tuple[int, httpx.Headers, bytes]:
        """Write the request, read the whole reply: (status, headers, decoded body)."""
        deadline = time.monotonic() + request.timeout
        sock = self._checkout(deadline)
        busy = self._busy
        busy.add(sock)
        scope = _cancel.current()
        if scope is not None and scope.abandon:
            scope.watch(sock)  # a cancelled await shuts this socket down (see _cancel.Scope)
        else:
            scope = None
        keep = False
        try:
            try:
                payload = request.payload
                sent = _send_holding_gil(sock, payload) if self._ssl is None else 0
                if sent < len(payload):
                    self._set_deadline(sock, deadline, write=True)
                    sock.sendall(memoryview(payload)[sent:] if sent else payload)
            except (socket.timeout, BlockingIOError):
                raise httpx.WriteTimeout("timed out while sending the request") from None
            except OSError as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__) from None
            status, headers, body, keep = self._read(sock, deadline)
            return status, headers, body
        finally:
            busy.discard(sock)
            if scope is not None:
                scope.unwatch()
                keep = keep and not scope.event.is_set()
            if keep and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append((sock, time.monotonic()))
            else:
                _close(sock)

    def close(self) -> None:
        """Close idle sockets; those in use close when their request ends."""
        self._closed = True
        while self._idle:
            try:
                _close(self._idle.pop()[0])
            except IndexError:
                break

    def abort(self) -> None:
        """Interrupt reads in progress at once (they fail with a connection error)."""
        for sock in list(self._busy):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _checkout(self, deadline: float) -> socket.socket:
        idle = self._idle
        now = time.monotonic()
        while idle:
            try:
                sock, since = idle.pop()
            except IndexError:
                break
            if now - since < _KEEPALIVE_EXPIRY and _alive(sock):
                return sock
            _close(sock)
        return self._connect(deadline)

    def _connect(self, deadline: float) -> socket.socket:
        timeout = min(self._connect_timeout, max(deadline - time.monotonic(), 0.001))
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except socket.timeout:
            raise httpx.ConnectTimeout(f"timed out connecting to {self.host}:{self.port}") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                try:
                    sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
                except socket.timeout:
                    raise httpx.ConnectTimeout(f"TLS handshake with {self.host} timed out") from None
                except (ssl.SSLError, OSError) as exc:
                    raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
            else:
                sock.settimeout(None)  # blocking; the kernel enforces the deadline (SO_RCVTIMEO)
        except BaseException:
            _close(sock)
            raise
        return sock

    def _set_deadline(self, sock: socket.socket, deadline: float, write: bool = False) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        if self._ssl is not None or not _LINUX:
            sock.settimeout(remaining)  # TLS: the ssl module needs its own timeout handling
            return
        # plain TCP on Linux: a kernel timeout on a blocking socket costs no extra poll (and no extra
        # GIL hand-off) per call; 0 would mean "forever", so at least 1 ms
        usec = max(int(remaining * 1e6), 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO if write else socket.SO_RCVTIMEO,
                        struct.pack("ll", usec // 1000000, usec % 1000000))

    def _recv(self, sock: socket.socket, deadline: float, size: int = _READ) -> bytes:
        try:
            self._set_deadline(sock, deadline)
            return sock.recv(size)
        except (socket.timeout, BlockingIOError):
            raise httpx.ReadTimeout("timed out waiting for the reply") from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from None

    def _read(self, sock: socket.socket, deadline: float) -> Tuple[int, httpx.Headers, bytes, bool]:
        buf = self._recv(sock, deadline)
        if not buf:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > 1 << 20:
                    raise httpx.RemoteProtocolError("reply headers are larger than 1 MiB")
                more = self._recv(sock, deadline)
                if not more:
                    raise httpx.RemoteProtocolError("Server disconnected in the middle of the reply headers.")
                buf += more
                end = buf.find(b"\r\n\r\n")
            status, raw, version = _parse_head(buf[:end])
            buf = buf[end + 4:]
            if 100 <= status < 200:  # 100 Continue / 103 Early Hints: the real reply follows
                if not buf:
                    buf = self._recv(sock, deadline)
                continue
            break
        fields = {}
        for name, value in raw:
            fields[name.lower()] = value
        conn = fields.get(b"connection", b"").lower()
        keep = b"close" not in conn and (version == b"HTTP/1.1" or b"keep-alive" in conn)
        if status in (204, 304):
            body = b""
        elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            body = self._read_chunked(sock, deadline, buf)
        elif b"content-length" in fields:
            try:
                length = int(fields[b"content-length"])
            except ValueError:
                raise httpx.RemoteProtocolError("invalid Content-Length in the reply") from None
            body = self._read_exact(sock, deadline, buf, length)
        else:  # delimited by the server closing the connection
            parts = [buf]
            while True:
                more = self._recv(sock, deadline)
                if not more:
                    break
                parts.append(more)
            body, keep = b"".join(parts), False
        encoding = fields.get(b"content-encoding", b"").strip().lower()
        if encoding and encoding != b"identity":
            body = _decode(body, encoding.decode("latin-1"))
        return status, httpx.Headers(raw), body, keep

    def _read_exact(self, sock: socket.socket, deadline: float, buf: bytes, length: int) -> bytes:
        if len(buf) >= length:
            if len(buf) > length:
                raise httpx.RemoteProtocolError("the server sent more bytes than its Content-Length")
            return buf
        parts = [buf]
        have = len(buf)
        while have < length:
            more = self._recv(sock, deadline, min(length - have, 1 << 20))
            if not more:
                raise httpx.RemoteProtocolError(
                    f"peer closed connection without sending complete message body: received {have} bytes, "
                    f"expected {length}")
            parts.append(more)
            have += len(more)
        return b"".join(parts)

    def _read_chunked(self, sock: socket.socket, deadline: float, buf: bytes) -> bytes:
        parts: List[bytes] = []
        data = bytearray(buf)
        pos = 0
        while True:
            eol = data.find(b"\r\n", pos)
            while eol < 0:
                pos = self._more(sock, deadline, data, pos)
                eol = data.find(b"\r\n", pos)
            try:
                size = int(bytes(data[pos:eol]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise httpx.RemoteProtocolError("malformed chunk size in the reply") from None
            pos = eol + 2
            if size == 0:  # trailers (ignored) end with an empty line
                while True:
                    eol = data.find(b"\r\n", pos)
                    while eol < 0:
                        pos = self._more(sock, deadline, data, pos)
                        eol = data.find(b"\r\n", pos)
                    line_empty = eol == pos
                    pos = eol + 2
                    if line_empty:
                        return b"".join(parts)
            while len(data) < pos + size + 2:
                pos = self._more(sock, deadline, data, pos)
            parts.append(bytes(data[pos:pos + size]))
            pos += size + 2

    def _more(self, sock: socket.socket, deadline: float, data: bytearray, pos: int) -> int:
        """Append one more read to `data` (dropping what was consumed); returns the new `pos`."""
        more = self._recv(sock, deadline)
        if not more:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        del data[:pos]
        data += more
        return 0


def _parse_head(head: bytes) -> Tuple[int, List[Tuple[bytes, bytes]], bytes]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line in the reply: {lines[0][:100]!r}")
    raw: List[Tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise httpx.RemoteProtocolError("malformed header line in the reply")
        raw.append((name, value.strip()))
    return int(parts[1]), raw, parts[0]


def _decode(body: bytes, encoding: str) -> bytes:
    for name in reversed([e.strip() for e in encoding.split(",")]):
        wbits = _ENCODINGS.get(name)
        if wbits is None:
            continue  # like httpx: an encoding it cannot decode is passed through
        try:
            body = zlib.decompress(body, wbits)
        except zlib.error:
            if name == "deflate":  # some servers send raw deflate without the zlib header
                try:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
                    continue
                except zlib.error:
                    pass
            raise httpx.DecodingError(f"reply body could not be decoded as {name}") from None
    return body


def _libc_send() -> Optional[Callable[..., int]]:
    """libc's send(2) called without releasing the GIL (ctypes.PyDLL), Linux only; None elsewhere."""
    if not _LINUX:
        return None
    try:
        import ctypes

        send = ctypes.PyDLL(None, use_errno=True).send
        send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
        send.restype = ctypes.c_ssize_t
        return send
    except (ImportError, OSError, AttributeError):
        return None


_SEND = _libc_send()
_FIRST_SEND = 1 << 16  # bytes the GIL-holding send may write: a request, not a 9 MB prompt
_SEND_FLAGS = getattr(socket, "MSG_DONTWAIT", 0x40) | getattr(socket, "MSG_NOSIGNAL", 0x4000)


def _send_holding_gil(sock: socket.socket, payload: bytes) -> int:
    """Bytes of `payload` written at once by one non-blocking send(2) that keeps the GIL (0 if none).

    A request fits in the socket's send buffer nearly always, so the write never waits; keeping the GIL
    across it saves the hand-off Python's own `send` makes (release, then win the GIL back behind every
    other woken thread), one of the two per request at 1,000 in flight. Anything unusual (buffer full,
    an error) returns what was written and the caller's `sendall` does the rest or raises as usual."""
    if _SEND is None:
        return 0
    try:
        sent = _SEND(sock.fileno(), payload, min(len(payload), _FIRST_SEND), _SEND_FLAGS)
    except Exception:  # ctypes.ArgumentError (a payload that is not bytes): the usual way
        return 0
    return sent if sent > 0 else 0


def _alive(sock: socket.socket) -> bool:
    """Is an idle keep-alive connection still open on the server side? Linux: the TCP state, read
    without a syscall that releases the GIL; elsewhere a zero-timeout readability check (a readable idle
    connection has been closed by the server, or holds bytes that belong to no request)."""
    try:
        if _LINUX and not isinstance(sock, ssl.SSLSocket):
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_ESTABLISHED
        import select

        return not select.select([sock], [], [], 0)[0]
    except (OSError, ValueError):
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
