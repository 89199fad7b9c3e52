"""Shared benchmark plumbing: servers in their own process (own core), the raw-httpx and upstream baselines.

`BENCH_QUICK=1` (`make bench-quick`) shrinks every workload so the whole run takes about a minute.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "benchmarks")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
UPSTREAM_VERSION = "0.17.10"
UPSTREAM_VENV = os.path.join(HERE, ".venv-upstream")


def pin(core: int) -> None:
    """Keep this process on one core (client and server on separate cores where possible)."""
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {core % os.cpu_count()})


@contextlib.contextmanager
def _served(cmd: List[str], what: str) -> Iterator[str]:
    """Run a server command on the last core until the block ends; yields the URL from its first line."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True,
                            preexec_fn=lambda: pin((os.cpu_count() or 1) - 1))
    try:
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"{what} did not start: {line!r}")
        yield line.strip().rsplit(" ", 1)[-1]
    finally:
        proc.terminate()
        proc.wait(10)


def mock_server(latency: float = 0.0, jitter: float = 0.0) -> "contextlib.AbstractContextManager[str]":
    """A `python -m flexllm.mock` subprocess on the last core; yields its OpenAI base URL."""
    return _served([sys.executable, "-m", "flexllm.mock", "--port", "0", "--latency", str(latency),
                    "--jitter", str(jitter)], "mock server")


def lean_server(latency: float = 0.0) -> "contextlib.AbstractContextManager[str]":
    """benchmarks/_server.py (one asyncio loop) on the last core; yields its OpenAI base URL.

    For the scale and CPU benchmarks: it holds any number of slow replies without becoming the bottleneck
    (`server_stats` tells how late its replies went out). flexllm.mock stays for fault-injection runs.
    """
    return _served([sys.executable, os.path.join(HERE, "_server.py"), "--latency", str(latency)],
                   "benchmark server")


def server_stats(url: str, reset: bool = True) -> dict:
    """The lean server's counters (requests, peak in flight, latest reply vs schedule, its CPU seconds)."""
    root = url.rsplit("/v1", 1)[0]
    stats = httpx.get(root + "/_stats", timeout=30).json()
    if reset:
        httpx.get(root + "/_reset", timeout=30)
    return stats


def upstream(mode: str, url: str, n: int, concurrency: int, *extra: str) -> Optional[dict]:
    """Run `_upstream.py` under flexllm 0.17.10 in its own venv (created on first use); None if unavailable.

    The venv lives in benchmarks/.venv-upstream (gitignored): a baseline for the benchmarks, never a
    dependency of flexllm.
    """
    python = os.path.join(UPSTREAM_VENV, "bin", "python")
    if not os.path.exists(python):
        print(f"(creating {UPSTREAM_VENV} with flexllm=={UPSTREAM_VERSION} for the upstream baseline)", flush=True)
        ok = subprocess.call([sys.executable, "-m", "venv", UPSTREAM_VENV]) == 0 and subprocess.call(
            [python, "-m", "pip", "install", "--quiet", f"flexllm=={UPSTREAM_VERSION}"]) == 0
        if not ok:
            print("(upstream baseline unavailable: could not install it)", flush=True)
            return None
    out = subprocess.run([python, os.path.join(HERE, "_upstream.py"), mode, url, str(n), str(concurrency), *extra],
                         capture_output=True, text=True, cwd=HERE, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("UPSTREAM "):
            return json.loads(line[len("UPSTREAM "):])
    print(f"(upstream baseline failed: {out.stderr.strip()[-500:]})", flush=True)
    return None


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


def cpu_split() -> tuple:
    """(user, system) CPU seconds of this process so far: the kernel's share (network stack, wake-ups)
    differs between a saturated zero-latency run and 1,000 connections each idle for a second."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(name: str, **figures) -> None:
    """One result line, human-readable, plus a JSON line for tooling."""
    shown = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"{name}: {shown}", flush=True)
    print("JSON " + json.dumps({"bench": name, **figures}), flush=True)
