"""Latency-bound efficiency: 2,000 × 200 ms replies at concurrency 100 (CPU per request: bench_scale.py)."""
from __future__ import annotations

import logging
import time

from _common import QUICK, emit, lean_server, pin, prompts, raw_httpx

from flexllm import OpenAIClient


def latency_bound(n: int = 2000, latency: float = 0.2, concurrency: int = 100) -> None:
    ideal = n * latency / concurrency
    with lean_server(latency=latency) as url:
        base = raw_httpx(url, prompts(n, "w"), concurrency)
        client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=concurrency)
        start = time.perf_counter()
        out = client.chat_completions_batch_sync(prompts(n), show_progress=False)
        cold = time.perf_counter() - start  # includes creating the client's pools and threads
        start = time.perf_counter()
        out = client.chat_completions_batch_sync(prompts(n, "again"), show_progress=False)
        ours = time.perf_counter() - start
        assert all(out), "every request must succeed"
    emit("latency_bound", n=n, latency_s=latency, concurrency=concurrency, ideal_s=round(ideal, 3),
         flexllm_s=round(ours, 3), httpx_s=round(base, 3), flexllm_efficiency=f"{ideal / ours:.1%}",
         flexllm_cold_efficiency=f"{ideal / cold:.1%}",
         httpx_efficiency=f"{ideal / base:.1%}", target=">= 97%")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    pin(0)
    latency_bound(n=1000 if QUICK else 2000)
