"""A 5,000-item batch run live, then re-run fully cached: cache hits per second and the ratio."""
from __future__ import annotations

import tempfile
import time

from _common import emit, mock_server, pin, prompts

from flexllm import OpenAIClient, ResponseCacheConfig


def main(n: int = 5000) -> None:
    with tempfile.TemporaryDirectory() as tmp, mock_server(latency=0.0) as url:
        cache = ResponseCacheConfig.persistent(cache_dir=tmp)
        client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=50, cache=cache)
        items = prompts(n, "c")
        start = time.perf_counter()
        live, s1 = client.chat_completions_batch_sync(items, show_progress=False, return_summary=True)
        live_s = time.perf_counter() - start
        start = time.perf_counter()
        again, s2 = client.chat_completions_batch_sync(items, show_progress=False, return_summary=True)
        cached_s = time.perf_counter() - start
        assert again == live and s2["cached"] == n, s2
        client.close()
    emit("cache", n=n, live_s=round(live_s, 3), cached_s=round(cached_s, 3),
         hits_per_s=int(n / cached_s), live_per_s=int(n / live_s), speedup=f"{live_s / cached_s:.1f}x",
         target=">= 10,000 hits/s (original flexllm ~75,000/s)")


if __name__ == "__main__":
    pin(0)
    main()
