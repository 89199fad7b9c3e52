"""Runs a workload on upstream flexllm 0.17.10 (aiohttp) in its own venv; prints one JSON line.

Used by the benchmarks as a same-run baseline, never imported by flexllm. Called as
`benchmarks/.venv-upstream/bin/python benchmarks/_upstream.py MODE URL N CONCURRENCY [CACHE_DIR]`,
MODE = `live` (CPU and wall of one batch after a warm-up batch) or `cache` (a live batch, then the same
batch again fully cached, 3 times: the best wall and CPU seconds). Upstream's API: `OpenAIClient(base_url, api_key, model,
concurrency_limit, max_qps, cache=ResponseCacheConfig)`, `chat_completions_batch_sync(messages_list,
show_progress=False)` (it runs `asyncio.run` inside).
"""
from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import warnings


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _prompts(n: int, tag: str) -> list:
    return [[{"role": "user", "content": f"{tag}{i} benchmark prompt"}] for i in range(n)]


def main() -> int:
    mode, url, n, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # the client's core, like ours
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("LOGURU_LEVEL", "ERROR")
    from flexllm import OpenAIClient, ResponseCacheConfig

    try:  # upstream logs through its own logger; keep the benchmark output clean
        from loguru import logger as _loguru

        _loguru.remove()
    except ImportError:
        pass
    cache = ResponseCacheConfig(enabled=True, ttl=0, cache_dir=sys.argv[5]) if mode == "cache" else None
    client = OpenAIClient(base_url=url, api_key="EMPTY", model="mock-model", concurrency_limit=concurrency,
                          max_qps=10 ** 9, cache=cache)
    out: dict = {"version": __import__("flexllm").__version__}
    if mode == "live":
        client.chat_completions_batch_sync(_prompts(min(n, 200), "uwarm"), show_progress=False)
        c0, t0 = _cpu(), time.perf_counter()
        res = client.chat_completions_batch_sync(_prompts(n, "u"), show_progress=False)
        out.update(cpu_s=_cpu() - c0, wall_s=time.perf_counter() - t0, ok=sum(r is not None for r in res))
    else:
        items = _prompts(n, "uc")
        t0 = time.perf_counter()
        client.chat_completions_batch_sync(items, show_progress=False)
        out["live_s"] = time.perf_counter() - t0
        best_wall = best_cpu = float("inf")
        for _ in range(3):
            c0, t0 = time.process_time(), time.perf_counter()
            res = client.chat_completions_batch_sync(items, show_progress=False)
            best_wall = min(best_wall, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        out.update(cached_s=best_wall, cached_cpu_s=best_cpu, ok=sum(r is not None for r in res))
    print("UPSTREAM " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
