"""A 5,000-item batch run live, then re-run fully cached: hits per second next to upstream 0.17.10's
(its own LMDB cache, same server, same run). Best of 3 re-runs each, by wall time and by CPU time (CPU
time of the client process is steadier on a shared machine)."""
from __future__ import annotations

import tempfile
import time

from _common import QUICK, emit, lean_server, pin, prompts, upstream

from flexllm import OpenAIClient, ResponseCacheConfig


def main(n: int, reruns: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp, lean_server(latency=0.0) as url:
        cache = ResponseCacheConfig.persistent(cache_dir=tmp + "/ours")
        client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=50, cache=cache)
        items = prompts(n, "c")
        start = time.perf_counter()
        live, s1 = client.chat_completions_batch_sync(items, show_progress=False, return_summary=True)
        live_s = time.perf_counter() - start
        walls, cpus = [], []
        for _ in range(reruns):
            c0, t0 = time.process_time(), time.perf_counter()
            again, s2 = client.chat_completions_batch_sync(items, show_progress=False, return_summary=True)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            assert again == live and s2["cached"] == n, s2
        client.close()
        up = upstream("cache", url, n, 50, f"{tmp}/upstream")
    wall, cpu = min(walls), min(cpus)
    figures = dict(n=n, live_s=round(live_s, 3), cached_s=round(wall, 3), hits_per_s=int(n / wall),
                   hits_per_cpu_s=int(n / cpu), speedup=f"{live_s / wall:.1f}x")
    if up and up.get("ok") == n:
        figures.update(upstream_hits_per_s=int(n / up["cached_s"]), upstream_hits_per_cpu_s=int(n / up["cached_cpu_s"]),
                       vs_upstream_wall=f"{up['cached_s'] / wall:.2f}x", vs_upstream_cpu=f"{up['cached_cpu_s'] / cpu:.2f}x")
    emit("cache", **figures, target=">= upstream 0.17.10's hits/s")


if __name__ == "__main__":
    pin(0)
    main(2000 if QUICK else 5000)
