"""Tiny forward proxies for tests: plain HTTP (absolute-form and CONNECT) and SOCKS5, on 127.0.0.1.

Each counts what it relayed and records the credentials it was given, so a test can prove that a
request really went through it.
"""
import select
import socket
import socketserver
import struct
import threading
import urllib.parse
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _relay(a, b):
    """Copy bytes both ways until one side closes."""
    socks = [a, b]
    try:
        while True:
            readable, _, _ = select.select(socks, [], [], 30)
            if not readable:
                return
            for s in readable:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _auth(self):
        value = self.headers.get("Proxy-Authorization", "")
        self.server.auths.append(value)
        if self.server.echo_407:  # a proxy answering in its own shape, quoting what it was sent
            body = f"<html>407 Proxy Authentication Required: got {value} for {self.path}</html>".encode()
            self.send_response(407)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return False
        return True

    def do_CONNECT(self):  # noqa: N802
        if not self._auth():
            return
        host, port = self.path.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        self.server.connects.append(self.path)
        self.send_response(200, "Connection established")
        self.end_headers()
        _relay(self.connection, upstream)
        upstream.close()
        self.close_connection = True

    def _forward(self):
        if not self._auth():
            return
        url = urllib.parse.urlsplit(self.path)
        self.server.forwarded.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-authorization", "connection")}
        conn.request(self.command, url.path + (f"?{url.query}" if url.query else ""), body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = _forward  # noqa: N815


class _Served:
    """Serve `self.server` on a daemon thread inside a with-block."""

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class HTTPProxy(_Served):
    """A forward proxy: absolute-form requests for http:// targets, CONNECT tunnels for https://."""

    def __init__(self, echo_407=False):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self.server.daemon_threads = True
        self.server.auths, self.server.forwarded, self.server.connects = [], [], []
        self.server.echo_407 = echo_407


class _SocksHandler(socketserver.BaseRequestHandler):
    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.request.recv(n - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    def handle(self):
        sock = self.request
        ver, n = self._read(2)
        methods = self._read(n)
        if self.server.credentials is not None:
            if 2 not in methods:
                sock.sendall(b"\x05\xff")
                return
            sock.sendall(b"\x05\x02")
            _, ulen = self._read(2)
            user = self._read(ulen).decode()
            (plen,) = self._read(1)
            password = self._read(plen).decode()
            self.server.auths.append((user, password))
            ok = (user, password) == self.server.credentials
            sock.sendall(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return
        else:
            sock.sendall(b"\x05\x00")
        _, cmd, _, atyp = self._read(4)
        if atyp == 1:
            host = socket.inet_ntoa(self._read(4))
        elif atyp == 3:
            (length,) = self._read(1)
            host = self._read(length).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, self._read(16))
        (port,) = struct.unpack("!H", self._read(2))
        upstream = socket.create_connection((host, port))
        self.server.connects.append((host, port))
        sock.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("0.0.0.0") + struct.pack("!H", 0))
        _relay(sock, upstream)
        upstream.close()


class SocksProxy(_Served):
    """A SOCKS5 proxy (CONNECT only), optionally with username/password authentication."""

    def __init__(self, credentials=None):
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SocksHandler)
        self.server.daemon_threads = True
        self.server.credentials = credentials
        self.server.auths, self.server.connects = [], []
