"""Shared fixtures: a real mock server on 127.0.0.1 per test module, fresh state per test."""
import contextlib
import json
import logging
import socket
import subprocess
import threading
import time

import pytest

from flexllm.mock import MockServer


@pytest.fixture(scope="module")
def _server():
    with MockServer() as server:
        yield server


@pytest.fixture
def server(_server):
    """The module's mock server, with its recordings, rules and settings reset for this test."""
    _server.clear()
    _server.configure(latency=0.0, jitter=0.0, error_rate=0.0)
    yield _server
    _server.clear()


@pytest.fixture
def caplog_flexllm(caplog):
    caplog.set_level(logging.DEBUG, logger="flexllm")
    return caplog


def user(text):
    return [{"role": "user", "content": text}]


def read_records(path):
    """Every JSON line of an output file."""
    with open(path, "rb") as f:
        return [json.loads(line) for line in f]


def count_lines(path):
    """Complete lines in a file (0 if it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


_HELD_PORTS = []  # sockets bound to a port and never listening, kept for the whole session


def closed_port():
    """A 127.0.0.1 port where connections are refused, for the whole session. Closing a probe socket and
    hoping nobody takes its port is a race on a machine running many suites; a bound socket that never
    listens refuses connections, and no other process (nor an outgoing connection) can take its port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD_PORTS.append(s)
    return s.getsockname()[1]


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll a condition with a bound (never a bare sleep that hopes it is long enough)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class FakeClock:
    """A clock tests move by hand; `sleep` advances it instead of waiting."""

    def __init__(self):
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        with self.lock:
            self.now += seconds


@contextlib.contextmanager
def mounted_tmpfs(path, options):
    """A real tmpfs mounted at `path` (a directory) with mount `options` (e.g. "size=256k", "ro,size=64k"),
    unmounted afterwards; the test is skipped where mounting is not allowed."""
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
