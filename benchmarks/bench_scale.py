"""Concurrency 1,000 (10,000 × 1 s replies, 3 runs, the worst counts) and client CPU per request at
concurrency 50 next to upstream flexllm 0.17.10 and a raw httpx thread pool, all in the same run.

CPU time is the client process's own (user + system, `getrusage`): on a shared machine it is steadier
than wall time. The server is benchmarks/_server.py on the other core; `server_late_ms` says how far
behind schedule its slowest reply went out, so a run where the server (or the machine) was the
bottleneck shows it.
"""
from __future__ import annotations

import logging
import os
import statistics
import time

from _common import QUICK, cpu_seconds, cpu_split, emit, lean_server, pin, prompts, raw_httpx, server_stats, upstream

from flexllm import OpenAIClient


def concurrency_1000(runs: int, n: int, concurrency: int = 1000, latency: float = 1.0) -> float:
    """Each run is a fresh client (threads and connections included, as a job sees it)."""
    ideal = n * latency / concurrency
    walls, cpus, systems, lates = [], [], [], []
    with lean_server(latency=latency) as url:
        for run in range(runs):
            server_stats(url)
            c0, s0, t0 = cpu_seconds(), cpu_split()[1], time.perf_counter()
            client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=concurrency, timeout=300)
            out = client.chat_completions_batch_sync(prompts(n, f"k{run}-"), show_progress=False)
            walls.append(time.perf_counter() - t0)
            cpus.append(cpu_seconds() - c0)
            systems.append(cpu_split()[1] - s0)
            client.close()
            assert all(out), "every request must succeed"
            lates.append(server_stats(url)["late_ms_max"])
    effs = [ideal / w for w in walls]
    cpu_ms = [1000 * c / n for c in cpus]
    emit("concurrency_1000", n=n, concurrency=concurrency, latency_s=latency, runs=runs, ideal_s=ideal,
         walls_s=[round(w, 2) for w in walls], efficiency_median=f"{statistics.median(effs):.1%}",
         efficiency_worst=f"{min(effs):.1%}", cpu_ms_per_request=round(statistics.median(cpu_ms), 3),
         of_which_kernel_ms=round(1000 * statistics.median(systems) / n, 3),
         server_late_ms=lates, load=round(os.getloadavg()[0], 1),
         target="median >= 90%, worst >= 80%")
    return statistics.median(cpu_ms)


def cpu_at_50(n: int, concurrency: int = 50) -> float:
    with lean_server(latency=0.0) as url:
        raw_httpx(url, prompts(200, "warm"), concurrency)  # warm both paths (imports, pools)
        c0 = cpu_seconds()
        raw_httpx(url, prompts(n, "h"), concurrency)
        base = cpu_seconds() - c0
        client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=concurrency)
        client.chat_completions_batch_sync(prompts(200, "warm2"), show_progress=False)
        c0, s0 = cpu_seconds(), cpu_split()[1]
        out = client.chat_completions_batch_sync(prompts(n), show_progress=False)
        ours, kernel = cpu_seconds() - c0, cpu_split()[1] - s0
        assert all(out)
        up = upstream("live", url, n, concurrency)
    per = 1000.0 / n
    figures = dict(n=n, concurrency=concurrency, flexllm_cpu_ms=round(ours * per, 3),
                   of_which_kernel_ms=round(kernel * per, 3),
                   httpx_cpu_ms=round(base * per, 3), vs_httpx=f"{ours / base:.2f}x")
    if up and up.get("ok") == n:
        figures.update(upstream_cpu_ms=round(up["cpu_s"] * per, 3), vs_upstream=f"{ours / up['cpu_s']:.2f}x")
    emit("cpu_per_request_c50", **figures, target="<= 0.8x upstream 0.17.10, <= 0.5x httpx")
    return ours * per


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    pin(0)
    c50 = cpu_at_50(1000 if QUICK else 5000)
    c1000 = concurrency_1000(runs=1 if QUICK else 3, n=3000 if QUICK else 10000)
    emit("cpu_c1000_vs_c50", c1000_cpu_ms=round(c1000, 3), c50_cpu_ms=round(c50, 3),
         ratio=f"{c1000 / c50:.2f}x", target="<= 1.5x")
