"""Latency-bound efficiency (2,000 × 200 ms at concurrency 100) and client CPU per 1,000 requests."""
from __future__ import annotations

import logging
import time

from _common import cpu_seconds, emit, mock_server, pin, prompts, raw_httpx

from flexllm import OpenAIClient


def latency_bound(n: int = 2000, latency: float = 0.2, concurrency: int = 100) -> None:
    ideal = n * latency / concurrency
    with mock_server(latency=latency) as url:
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


def cpu_per_request(n: int = 3000, concurrency: int = 50) -> None:
    with mock_server(latency=0.0) as url:
        raw_httpx(url, prompts(200, "warm"), concurrency)  # warm both paths (imports, pools)
        c0 = cpu_seconds()
        raw_httpx(url, prompts(n, "h"), concurrency)
        base = cpu_seconds() - c0
        client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=concurrency)
        client.chat_completions_batch_sync(prompts(200, "warm2"), show_progress=False)
        c0 = cpu_seconds()
        out = client.chat_completions_batch_sync(prompts(n), show_progress=False)
        ours = cpu_seconds() - c0
        assert all(out)
    per = 1000.0 / n
    emit("cpu_per_1000_requests", n=n, concurrency=concurrency, flexllm_cpu_s=round(ours * per, 3),
         httpx_cpu_s=round(base * per, 3), ratio=f"{ours / base:.2f}x", target="<= 1.15x")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    pin(0)
    latency_bound()
    cpu_per_request()
