"""A lean OpenAI-compatible benchmark server: one asyncio event loop, one process, its own core.

The benchmarks measure the client; the server must never be what limits a run. `flexllm.mock` is a
thread-per-connection server built for fault injection: at 1,000 connections its own threads fight for
its GIL, so a slow-reply benchmark there measures the server as much as the client. This one holds any
number of connections in one thread (a timer per pending reply), answers each `/v1/chat/completions`
POST with a fixed-shape reply echoing the last user message after `--latency` seconds, and keeps counts
(`GET /_stats`: requests, peak in flight, server CPU seconds) so a run can check it was not saturated.

Run: `python benchmarks/_server.py --latency 1.0` prints `listening on http://127.0.0.1:PORT/v1`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time

_REPLY_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               b"Connection: keep-alive\r\n\r\n")


def _answer(body: bytes, seq: int) -> bytes:
    try:
        req = json.loads(body)
        last = req["messages"][-1]["content"]
        model = req.get("model", "mock-model")
    except (ValueError, KeyError, IndexError, TypeError):
        last, model = "", "mock-model"
    text = "echo: " + (last if isinstance(last, str) else "")
    n = len(text.split())
    return json.dumps({
        "id": f"chatcmpl-{seq}", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": n, "completion_tokens": n, "total_tokens": 2 * n},
    }, separators=(",", ":")).encode()


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.late_ms_max = 0.0  # how far behind schedule a reply went out (server saturation)

    def as_json(self) -> bytes:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return json.dumps({"requests": self.requests, "max_in_flight": self.max_in_flight,
                           "connections": self.connections, "late_ms_max": round(self.late_ms_max, 2),
                           "cpu_s": round(r.ru_utime + r.ru_stime, 3)}).encode()

    def reset(self) -> None:
        self.requests = self.max_in_flight = 0
        self.late_ms_max = 0.0


class Conn(asyncio.Protocol):
    def __init__(self, latency: float, stats: Stats) -> None:
        self.latency = latency
        self.stats = stats
        self.buf = b""
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1

    def connection_lost(self, exc: object) -> None:
        self.stats.connections -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.request(head.split(" ", 2), body)

    def request(self, line: list, body: bytes) -> None:
        st = self.stats
        path = line[1] if len(line) > 1 else "/"
        if path.startswith("/_stats"):
            return self.send(st.as_json())
        if path.startswith("/_reset"):
            st.reset()
            return self.send(b"{}")
        st.requests += 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        payload = _answer(body, st.requests)
        if self.latency > 0:
            due = time.monotonic() + self.latency
            self.loop.call_later(self.latency, self.reply, payload, due)
        else:
            self.reply(payload, None)

    def reply(self, payload: bytes, due: object) -> None:
        st = self.stats
        st.in_flight -= 1
        if due is not None:
            st.late_ms_max = max(st.late_ms_max, (time.monotonic() - due) * 1000)  # type: ignore[operator]
        self.send(payload)

    def send(self, payload: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(_REPLY_HEAD % len(payload) + payload)


async def serve(latency: float, port: int) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Conn(latency, stats), "127.0.0.1", port, backlog=4096)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    asyncio.run(serve(args.latency, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
