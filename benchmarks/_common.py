"""Shared benchmark plumbing: a mock server in its own process (own core), the raw-httpx baseline."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pin(core: int) -> None:
    """Keep this process on one core (client and server on separate cores where possible)."""
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {core % os.cpu_count()})


@contextlib.contextmanager
def mock_server(latency: float = 0.0, jitter: float = 0.0) -> Iterator[str]:
    """A `python -m flexllm.mock` subprocess on the last core; yields its OpenAI base URL."""
    cmd = [sys.executable, "-m", "flexllm.mock", "--port", "0", "--latency", str(latency), "--jitter", str(jitter)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True,
                            preexec_fn=lambda: pin((os.cpu_count() or 1) - 1))
    try:
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"mock server did not start: {line!r}")
        yield line.strip().rsplit(" ", 1)[-1]
    finally:
        proc.terminate()
        proc.wait(10)


def recorded(url: str) -> List[dict]:
    """The requests a mock server recorded (arrival times etc.), then reset it."""
    root = url.rsplit("/v1", 1)[0]
    data = httpx.get(root + "/_mock/requests", timeout=30).json()
    httpx.post(root + "/_mock/reset", timeout=30)
    return data


def prompts(n: int, tag: str = "b") -> List[List[dict]]:
    return [[{"role": "user", "content": f"{tag}{i} benchmark prompt"}] for i in range(n)]


def raw_httpx(url: str, items: List[List[dict]], workers: int) -> float:
    """The baseline: a plain httpx.Client in a ThreadPoolExecutor; returns wall seconds."""
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    with httpx.Client(limits=limits, timeout=120) as client:
        def one(messages):
            r = client.post(url + "/chat/completions", json={"model": "mock-model", "messages": messages})
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"]

        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, items))
        return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(name: str, **figures) -> None:
    """One result line, human-readable, plus a JSON line for tooling."""
    shown = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"{name}: {shown}", flush=True)
    print("JSON " + json.dumps({"bench": name, **figures}), flush=True)
