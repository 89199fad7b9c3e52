"""`flexllm batch` end to end at zero latency (100,000 input lines, concurrency 50: process start to exit,
output file written), next to a raw httpx thread pool's request rate against the same server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from _common import QUICK, ROOT, emit, lean_server, pin, prompts, raw_httpx, server_stats

CONCURRENCY = 50


def main(n: int, baseline_n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, lean_server(latency=0.0) as url:
        src, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(src, "w") as f:
            for i in range(n):
                f.write(json.dumps({"prompt": f"line {i} of the cli benchmark", "id": i}) + "\n")
        cmd = [sys.executable, "-m", "flexllm", "batch", src, "-o", out, "--base-url", url, "--model", "mock-model",
               "--concurrency", str(CONCURRENCY), "--no-progress", "--quiet"]
        server_stats(url)
        start = time.perf_counter()
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=lambda: pin(0))
        wall = time.perf_counter() - start
        rc = run.returncode
        if rc != 0:
            print(run.stdout[-2000:], run.stderr[-2000:])
        served = server_stats(url)["requests"]
        with open(out, "rb") as f:
            lines = sum(1 for _ in f)
        assert rc == 0 and lines == n and served == n, (rc, lines, served)
        raw_httpx(url, prompts(200, "w"), CONCURRENCY)
        base = raw_httpx(url, prompts(baseline_n, "h"), CONCURRENCY)
    emit("cli_batch", lines=n, concurrency=CONCURRENCY, wall_s=round(wall, 2), requests_per_s=int(n / wall),
         httpx_requests_per_s=int(baseline_n / base), httpx_n=baseline_n, vs_httpx=f"{(n / wall) / (baseline_n / base):.2f}x",
         load=round(os.getloadavg()[0], 1))


if __name__ == "__main__":
    pin(0)
    main(10000 if QUICK else 100000, 3000 if QUICK else 20000)
