"""`python -m flexllm.mock`: serve the mock server until SIGINT/SIGTERM."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Optional

from ._server import MockServer


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """The mock server's options (shared with `flexllm mock`)."""
    p = parser or argparse.ArgumentParser(prog="python -m flexllm.mock",
                                          description="OpenAI/Gemini/Anthropic-compatible mock LLM server (no key needed).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (0 = any free port; default 0)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each reply")
    p.add_argument("--jitter", type=float, default=0.0, help="extra random latency in [0, jitter] seconds")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 503")
    p.add_argument("--seed", type=int, default=0, help="random seed for jitter and errors")
    p.add_argument("--require-key", default=None, help="answer 401 unless this API key is sent")
    p.add_argument("--batch-time-scale", type=float, default=3600.0,
                   help="provider batches: mock seconds per real second (default 3600: a 1 h batch takes 1 s; "
                        "86400: the 24 h window passes in 1 s)")
    return p


def serve(args: argparse.Namespace) -> int:
    """Start the server from parsed options, print its URL, serve until SIGINT/SIGTERM."""
    for name in ("latency", "jitter"):
        if getattr(args, name) < 0:
            print(f"flexllm mock: --{name} must be >= 0, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if not 0 <= args.error_rate <= 1:
        print(f"flexllm mock: --error-rate must be a fraction in [0, 1], got {args.error_rate}", file=sys.stderr)
        return 2
    try:
        server = MockServer(latency=args.latency, jitter=args.jitter, error_rate=args.error_rate, seed=args.seed,
                            host=args.host, port=args.port, require_key=args.require_key,
                            batch_time_scale=args.batch_time_scale).start()
    except OSError as exc:  # the port is taken, or the address is not this host's
        print(f"flexllm mock: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"flexllm mock server listening on {server.url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
