"""The lean HTTP/1.1 path (`flexllm._h1`) against scripted raw servers: every reply framing a server may
use, stale keep-alive connections, the whole-request deadline, header injection, abort, TLS, proxies."""
import gzip
import json
import os
import socket
import ssl
import threading

import pytest

from flexllm import APIConnectionError, APITimeoutError, LLMError, OpenAIClient
from flexllm._netconfig import TransportOptions
from flexllm.http import Transport
from flexllm.providers.base import RequestSpec

from .conftest import user, wait_for

DATA = os.path.join(os.path.dirname(__file__), "data")


def reply_json(text="hi"):
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


def read_request(conn, buf=b""):
    """One whole request from a connection: (head, body, rest); head None when the client hung up."""
    while b"\r\n\r\n" not in buf:
        more = conn.recv(65536)
        if not more:
            return None, b"", b""
        buf += more
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head, rest[:length], rest[length:]


class RawServer:
    """A TCP server on 127.0.0.1; `handler(conn, server)` scripts each connection in its own thread."""

    def __init__(self, handler, tls=False):
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = []
        self.events = {}
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(os.path.join(DATA, "tls-cert.pem"), os.path.join(DATA, "tls-key.pem"))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def event(self, name):
        return self.events.setdefault(name, threading.Event())

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def serve_each(reply):
    """A handler answering every request on a connection with `reply(request_number)` bytes."""
    def handler(conn, server):
        rest = b""
        while True:
            head, body, rest = read_request(conn, rest)
            if head is None:
                return
            server.requests.append((head, body))
            conn.sendall(reply(len(server.requests)))
    return handler


def client(server, **kw):
    kw.setdefault("retry_times", 0)
    return OpenAIClient(base_url=server.url, model="m", **kw)


def ok(body, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + \
        b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize("shape", ["plain", "chunked", "gzip", "continue", "split", "http10-until-close"])
def test_every_reply_framing_is_read_whole(shape):
    body = reply_json("framed " * 200)

    def reply(n):
        if shape == "plain":
            return ok(body)
        if shape == "chunked":
            pieces = [body[i:i + 97] for i in range(0, len(body), 97)]
            chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
            return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                    + b"0\r\nX-Trailer: t\r\n\r\n")
        if shape == "gzip":
            packed = gzip.compress(body)
            return ok(packed, b"Content-Encoding: gzip\r\n")
        if shape == "continue":
            return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(body)
        if shape == "split":
            return ok(body)
        return b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body

    def handler(conn, server):
        rest = b""
        while True:
            head, _, rest = read_request(conn, rest)
            if head is None:
                return
            server.requests.append(head)
            data = reply(len(server.requests))
            if shape == "split":  # the reply in many small writes: the client must keep reading
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(0, len(data), 50):
                    conn.sendall(data[i:i + 50])
            else:
                conn.sendall(data)
            if shape == "http10-until-close":
                return

    server = RawServer(handler)
    c = client(server)
    assert c.chat_completions_sync(user("a")) == "framed " * 200
    assert c.chat_completions_sync(user("b")) == "framed " * 200
    assert len(server.requests) == 2
    assert all(c._pipeline.transport._targets.values()), "served by the lean path, not httpx"
    # keep-alive: one connection for both, except where the server ends the reply by closing
    assert server.connections == (2 if shape == "http10-until-close" else 1)
    server.close()


def test_request_is_one_well_formed_http11_message():
    server = RawServer(serve_each(lambda n: ok(reply_json())))
    c = OpenAIClient(base_url=server.url, model="m", api_key="sk-k", default_headers={"X-Extra": "1"})
    assert c.chat_completions_sync(user("héllo")) == "hi"
    head, body = server.requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["authorization"] == "Bearer sk-k" and headers["x-extra"] == "1"
    assert headers["content-type"] == "application/json" and headers["accept"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body)["messages"] == user("héllo")
    server.close()


@pytest.mark.parametrize("gil_holding_send", [True, False])
def test_a_request_larger_than_the_send_buffer_arrives_whole(gil_holding_send, monkeypatch):
    # the first write is one non-blocking send(2) that keeps the GIL; what does not fit in the socket
    # buffer (a big prompt: 9 MB is over any default buffer) must still go out whole, through sendall;
    # without that send (no ctypes, not Linux) sendall does it all
    from flexllm import _h1

    if not gil_holding_send:
        monkeypatch.setattr(_h1, "_SEND", None)

    def handler(conn, server):
        head, body, _ = read_request(conn)
        server.requests.append((head, body))
        conn.sendall(ok(reply_json("big")))

    server = RawServer(handler)
    c = client(server, timeout=60)
    text = "".join(chr(0x4e00 + i % 2000) for i in range(3_000_000))  # ~9 MB of UTF-8
    assert c.chat_completions_sync(user(text)) == "big"
    head, body = server.requests[0]
    assert json.loads(body)["messages"][0]["content"] == text
    server.close()


def test_connection_closed_by_server_while_idle_is_not_reused():
    closed = threading.Event()

    def handler(conn, server):
        head, _, _ = read_request(conn)
        server.requests.append(head)
        conn.sendall(ok(reply_json(f"r{len(server.requests)}")))  # keep-alive reply ...
        conn.shutdown(socket.SHUT_RDWR)  # ... then an idle timeout closes it (as uvicorn does after 5 s)
        closed.set()

    server = RawServer(handler)
    c = client(server)  # no retries: a stale connection would surface as an error
    assert c.chat_completions_sync(user("a")) == "r1"
    assert closed.wait(30)
    assert c.chat_completions_sync(user("b")) == "r2"
    assert server.connections == 2
    server.close()


def test_connection_close_reply_header_is_honoured():
    server = RawServer(serve_each(lambda n: ok(reply_json(f"r{n}"), b"Connection: close\r\n")))
    c = client(server)
    assert [c.chat_completions_sync(user(str(i))) for i in range(3)] == ["r1", "r2", "r3"]
    assert server.connections == 3
    server.close()


def test_timeout_is_a_deadline_for_the_whole_request_not_per_read():
    sent = []

    def handler(conn, server):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):  # one byte every 0.1 s: each read is fast, the whole reply takes 100 s
            if server.event("stop").wait(0.1):
                return
            conn.sendall(b" ")
            sent.append(1)

    server = RawServer(handler)
    with pytest.raises(APITimeoutError):
        client(server, timeout=1).chat_completions_sync(user("slow"))
    server.event("stop").set()
    assert len(sent) < 500  # gave up long before the trickle ended (a per-read timeout never fires here)
    server.close()


def test_line_break_in_a_header_is_refused_before_sending_and_not_echoed():
    # clients refuse such headers at construction; the transport is the last line of defence
    server = RawServer(serve_each(lambda n: ok(reply_json())))
    transport = Transport(timeout=10, max_connections=4, provider="openai")
    spec = RequestSpec("POST", server.url + "/chat/completions", {"X-Note": "a\r\nX-Injected: secret-value"},
                       {"model": "m"}, None)
    with pytest.raises(LLMError) as info:
        transport.send(spec, model="m")
    assert "header" in str(info.value) and "secret-value" not in str(info.value)
    assert server.requests == [] and server.connections == 0
    server.close()


def test_abort_fails_requests_in_flight_at_once():
    def handler(conn, server):
        read_request(conn)
        server.event("arrived").set()
        server.event("never").wait(60)  # no reply

    server = RawServer(handler)
    c = client(server, timeout=60)
    errors = []

    def call():
        try:
            c.chat_completions_sync(user("hang"))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    assert server.event("arrived").wait(30)
    c._pipeline.abort()
    t.join(30)
    assert not t.is_alive() and isinstance(errors[0], APIConnectionError)
    assert not isinstance(errors[0], APITimeoutError)
    server.event("never").set()
    server.close()


def test_tls_keep_alive_and_chunked():
    def reply(n):
        body = reply_json(f"tls{n}")
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)

    server = RawServer(serve_each(reply), tls=True)
    transport = Transport(timeout=10, max_connections=4, provider="openai",
                          options=TransportOptions(verify=os.path.join(DATA, "tls-cert.pem")))
    spec = RequestSpec("POST", server.url + "/chat/completions", {"Content-Type": "application/json"},
                       {"model": "m", "messages": user("x")}, None)
    for n in (1, 2):
        status, headers, body = transport.send(spec, model="m")
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == f"tls{n}"
    assert server.connections == 1
    transport.close()
    server.close()


def test_proxy_from_environment_is_used(monkeypatch):
    # a "proxy" that answers itself: the request must reach it in absolute form, not the target host
    server = RawServer(serve_each(lambda n: ok(reply_json("via proxy"))))
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    c = OpenAIClient(base_url="http://flexllm-proxy-test.invalid/v1", model="m", retry_times=0)
    assert c.chat_completions_sync(user("p")) == "via proxy"
    wait_for(lambda: server.requests, what="the proxied request")
    assert server.requests[0][0].split(b"\r\n")[0] == \
        b"POST http://flexllm-proxy-test.invalid/v1/chat/completions HTTP/1.1"
    server.close()
