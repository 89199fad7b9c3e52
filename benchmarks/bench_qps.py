"""max_qps=20 over 200 requests: achieved rate and the most starts the server saw in any 1-s window."""
from __future__ import annotations

import time

from _common import emit, mock_server, pin, prompts, recorded

from flexllm import OpenAIClient


def qps(n: int = 200, max_qps: float = 20.0) -> None:
    with mock_server(latency=0.05) as url:
        recorded(url)
        client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=50, max_qps=max_qps)
        start = time.perf_counter()
        out = client.chat_completions_batch_sync(prompts(n), show_progress=False)
        wall = time.perf_counter() - start
        assert all(out)
        times = sorted(r["time"] for r in recorded(url))
    worst = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    achieved = (len(times) - 1) / (times[-1] - times[0])
    emit("max_qps", n=n, max_qps=max_qps, achieved_qps=round(achieved, 2),
         achieved_ratio=f"{achieved / max_qps:.1%}", max_in_any_1s_window=worst, wall_s=round(wall, 2),
         target=">= 95% and never above max_qps")


if __name__ == "__main__":
    pin(0)
    qps()
