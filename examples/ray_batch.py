"""Answer a dataset of prompts with Ray Data and flexllm, resumably — runs on a laptop against the built-in mock.

    pip install "flexllm[ray]"
    python examples/ray_batch.py                      # 300 rows, 2 actors, the built-in mock server
    python examples/ray_batch.py --rows 2000 --qps 50 --redis redis://127.0.0.1:6379/0

Kill it at any point (Ctrl-C, kill -9) and run the same command again: rows already answered come back
from the checkpoint directory without a request; only the rest are asked. The answers are written to
--out as JSON Lines, one line per id, when the run completes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--base-url", help="an OpenAI-compatible server (default: start the built-in mock server)")
    p.add_argument("--model", default="mock-model")
    p.add_argument("--checkpoint-dir", default="ray-demo-checkpoint")
    p.add_argument("--out", default="ray-demo-answers.jsonl")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight per actor")
    p.add_argument("--qps", type=float, default=20.0, help="one budget for all actors (requests per second)")
    p.add_argument("--redis", help="redis://host:port/db for a budget shared across machines")
    p.add_argument("--latency", type=float, default=0.05, help="the built-in mock server's reply latency")
    args = p.parse_args(argv)

    import ray

    from flexllm.integrations.ray import LLMMapper

    server = None
    base_url = args.base_url
    if base_url is None:
        from flexllm.mock import MockServer

        server = MockServer(latency=args.latency).start()
        base_url = server.url
    try:
        from flexllm import RateLimit

        shared = args.redis or "sqlite:///" + os.path.abspath(args.checkpoint_dir + ".limits.db")
        rate_limit = RateLimit(max_qps=args.qps, shared=shared, name="ray-demo") if args.qps else None
    except ImportError:  # a flexllm without the shared budget: each actor paces itself
        rate_limit = None
    ray.init(address="local", num_cpus=max(2, args.actors), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    started = time.time()
    ds = ray.data.from_items([{"id": i, "prompt": f"Summarise item {i}"} for i in range(args.rows)])
    out = ds.map_batches(LLMMapper, fn_constructor_kwargs=dict(
        model=args.model, base_url=base_url, rate_limit=rate_limit, id_column="id",
        checkpoint_dir=args.checkpoint_dir, concurrency_limit=args.concurrency),
        concurrency=args.actors, batch_size=50)
    counts: dict = {}
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in out.iter_rows():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            f.write(json.dumps({k: row[k] for k in ("id", "status", "output", "error")}, default=str) + "\n")
    os.replace(tmp, args.out)  # the answers file appears whole, once the run is complete
    ray.shutdown()
    if server is not None:
        server.stop()
    print(f"{args.rows} rows in {time.time() - started:.1f} s: {counts} -> {args.out}", file=sys.stderr)
    return 0 if counts.get("error", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
