"""The shared rate budget: µs per reservation in each store, and the rate 4 processes achieve together.

1. Overhead: 2,000 reservations (one start + its tokens, then the settle) against the in-process store, a
   SQLite file and a local redis-server (started here on a free port when `redis-server` is installed).
2. Four processes, each its own client with RateLimit(max_qps=20, shared=...), 60 requests each, against
   one mock server: achieved aggregate rate / allowed, and the most starts the server saw in any 1 s.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from _common import emit, mock_server, pin, recorded

from flexllm import RateLimit
from flexllm._limiter import Limiter

CHILD = textwrap.dedent("""
    import sys
    from flexllm import LLMClient, RateLimit
    url, store, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    client = LLMClient(model="m", base_url=url, concurrency_limit=8,
                       rate_limit=RateLimit(max_qps=20, shared=store, name="bench"))
    prompts = [[{"role": "user", "content": f"{tag}{i}"}] for i in range(60)]
    assert all(client.chat_completions_batch_sync(prompts, show_progress=False))
""")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_redis():
    exe = shutil.which("redis-server")
    if exe is None:
        return None, None
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, None


def overhead(store: str, label: str, n: int = 2000) -> None:
    limiter = Limiter(RateLimit(max_qps=1e9, max_tpm=1e12, shared=store, name=f"overhead-{label}"))
    usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    start = time.perf_counter()
    for _ in range(n):
        r = limiter.acquire((100, 100))
        limiter.settle(r, usage=usage)
    per = (time.perf_counter() - start) / n * 1e6
    emit("budget_overhead", store=label, reservations=n, us_per_acquire_and_settle=round(per, 1))


def four_processes(store: str, label: str) -> None:
    with mock_server(latency=0.05) as url:
        recorded(url)
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, url, store, f"p{p}-"]) for p in range(4)]
        for p in procs:
            assert p.wait(300) == 0
        times = sorted(r["time"] for r in recorded(url))
    worst = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    achieved = (len(times) - 1) / (times[-1] - times[0])
    emit("budget_4_processes", store=label, requests=len(times), allowed_qps=20, achieved_qps=round(achieved, 2),
         achieved_ratio=f"{achieved / 20:.1%}", max_in_any_1s_window=worst, target=">= 95%, never above 21")


def main() -> None:
    pin(0)
    tmp = tempfile.mkdtemp(prefix="flexllm-bench-budget-")
    redis_proc, redis_url = start_redis()
    try:
        stores = [("memory", "memory"), (f"sqlite:///{tmp}/limits.db", "sqlite")]
        if redis_url:
            stores.append((redis_url, "redis"))
        for store, label in stores:
            overhead(store, label)
        for store, label in stores[1:]:
            four_processes(store, label)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
        os.environ.pop("FLEXLLM_RATE_LIMIT_STORE", None)


if __name__ == "__main__":
    main()
