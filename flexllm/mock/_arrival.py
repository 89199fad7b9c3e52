"""When a request reached the mock server: the kernel's receive time of its first bytes (Linux, plain TCP).

Why: the handler thread of a busy server (or of a test process whose other threads hold the GIL) may
read a request hundreds of milliseconds after it arrived; `time.time()` taken then bunches requests
that arrived evenly spaced, so rate-limit counts on the server's clock would see bursts the client never
sent. The kernel stamps each segment as it arrives (SO_TIMESTAMP, the same wall clock as `time.time()`);
where that is not available (TLS, other systems) the handler's own clock is used.
"""
from __future__ import annotations

import io
import socket
import struct
import sys
import time
from typing import Optional

__all__ = ["StampedReader", "stamped_reader"]

_SO_TIMESTAMP = 29  # Linux SO_TIMESTAMP (= SCM_TIMESTAMP); the socket module does not export it
_TIMEVAL = struct.Struct("ll")
_ANC_SIZE = socket.CMSG_SPACE(_TIMEVAL.size) if hasattr(socket, "CMSG_SPACE") else 0


class StampedReader(io.RawIOBase):
    """The raw reader under a handler's `rfile`: remembers when the first bytes since `reset()` arrived."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.first: Optional[float] = None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        n, ancdata, _flags, _addr = self._sock.recvmsg_into([buf], _ANC_SIZE)
        if n and self.first is None:
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMP and len(data) >= _TIMEVAL.size:
                    sec, usec = _TIMEVAL.unpack_from(data)
                    self.first = sec + usec / 1e6
            if self.first is None:
                self.first = time.time()
        return n

    def reset(self) -> None:
        """Forget the last arrival (called before each request is read)."""
        self.first = None

    def arrival(self) -> float:
        """The kernel's receive time of the first bytes read since `reset()` (now if nothing came since)."""
        return self.first if self.first is not None else time.time()


def stamped_reader(sock: socket.socket) -> Optional[StampedReader]:
    """A `StampedReader` for a plain TCP socket on Linux with receive timestamps on, else None."""
    if not sys.platform.startswith("linux") or not _ANC_SIZE or type(sock) is not socket.socket:  # not TLS
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMP, 1)
    except OSError:
        return None
    return StampedReader(sock)
