"""`flexllm batch` peak RSS at 10,000 vs 1,000,000 input lines (with metadata and an output file): the CLI
streams its input and keeps an index table, not records, so the peak must stay within 1.2x.

Each CLI run is measured from a fresh wrapper process (the peak RSS of its only child)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from _common import QUICK, ROOT, emit, lean_server, pin


def child_peak(cmd: list) -> float:
    """Run `cmd` from a fresh process and return the child's peak RSS in MB."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)")
    res = subprocess.run([sys.executable, "-c", code, *cmd], cwd=ROOT, capture_output=True, text=True,
                         preexec_fn=lambda: pin(0))
    rc, peak = res.stdout.split()
    assert rc == "0", res.stderr[-2000:]
    return float(peak)


def measure(url: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(src, "w") as f:
            for i in range(n):
                f.write(json.dumps({"prompt": f"line {i} of the memory benchmark", "id": i, "tag": "x" * 20}) + "\n")
        peak = child_peak([sys.executable, "-m", "flexllm", "batch", src, "-o", out, "--base-url", url,
                           "--model", "mock-model", "--concurrency", "50", "--no-progress", "--quiet"])
        with open(out, "rb") as f:
            assert sum(1 for _ in f) == n
        return peak


def main() -> None:
    small, large = (2_000, 50_000) if QUICK else (10_000, 1_000_000)
    with lean_server(latency=0.0) as url:
        a = measure(url, small)
        b = measure(url, large)
    emit("cli_memory", **{f"peak_rss_mb_{small}": round(a, 1), f"peak_rss_mb_{large}": round(b, 1)},
         growth=f"{b / a:.2f}x", target="<= 1.2x")


if __name__ == "__main__":
    main()
