"""Peak RSS of a 50,000-item batch to a file, and of the iterator API at 10k vs 50k (flat in N).

Each measurement runs in a fresh process so peaks do not mix.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from _common import ROOT, emit, mock_server, peak_rss_mb, pin


def child(url: str, mode: str, n: int, out: str) -> None:
    from flexllm import OpenAIClient

    client = OpenAIClient(base_url=url, model="mock-model", concurrency_limit=50)
    gen = ([{"role": "user", "content": f"m{i} memory benchmark prompt"}] for i in range(n))
    if mode == "list":
        results = client.chat_completions_batch_sync(list(gen), output_file=out, show_progress=False)
        assert len(results) == n and all(results)
    else:
        done = sum(1 for item in client.iter_chat_completions_batch(gen, output_file=out) if item.content)
        assert done == n
    print(f"{peak_rss_mb():.1f}")


def measure(url: str, mode: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.jsonl")
        res = subprocess.run([sys.executable, __file__, "child", url, mode, str(n), out], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    with mock_server(latency=0.0) as url:
        full = measure(url, "list", 50_000)
        it10 = measure(url, "iter", 10_000)
        it50 = measure(url, "iter", 50_000)
    emit("memory", list_50k_peak_rss_mb=full, iter_10k_peak_rss_mb=it10, iter_50k_peak_rss_mb=it50,
         iter_growth=f"{it50 / it10:.2f}x", target="list <= 150 MB; iterator flat in N")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        pin(0)
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
