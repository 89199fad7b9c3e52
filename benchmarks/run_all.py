"""Run every benchmark, each in its own process: `make bench` (`make bench-quick`: BENCH_QUICK=1, smaller runs)."""
from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHES = ["bench_throughput.py", "bench_scale.py", "bench_qps.py", "bench_budget.py", "bench_cache.py",
           "bench_cli.py", "bench_memory.py", "bench_cli_memory.py"]


def main() -> int:
    failed = 0
    print(f"== load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for name in sys.argv[1:] or BENCHES:
        print(f"== {name}", flush=True)
        rc = subprocess.call([sys.executable, os.path.join(HERE, name)], cwd=os.path.dirname(HERE))
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
