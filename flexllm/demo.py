"""`python -m flexllm.demo` (`make demo`): a real batch against the built-in mock server, interrupted
and resumed — no API key, no network. An entry point, so it prints."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import List

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples", "prompts.jsonl")
OUT_DIR = "demo-output"
OUT = os.path.join(OUT_DIR, "out.jsonl")


def say(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def lines_on_disk() -> int:
    try:
        with open(OUT, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def batch_cmd(url: str) -> List[str]:
    return [sys.executable, "-m", "flexllm", "batch", EXAMPLE, "-o", OUT, "--model", "mock-model",
            "--base-url", url, "--concurrency", "4", "--qps", "15"]


def main() -> int:
    os.makedirs(OUT_DIR, exist_ok=True)
    for stale in (OUT, OUT + ".lock"):
        if os.path.exists(stale):
            os.remove(stale)
    with open(EXAMPLE, encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())

    say("Starting the built-in mock server (OpenAI-compatible, 150-250 ms latency per reply)")
    mock = subprocess.Popen([sys.executable, "-m", "flexllm.mock", "--port", "0", "--latency", "0.15",
                             "--jitter", "0.1"], stdout=subprocess.PIPE, text=True)
    try:
        line = mock.stdout.readline().strip()
        url = line.rsplit(" ", 1)[-1]
        print(line)

        say(f"Running a batch of {total} prompts: 4 in flight, at most 15 starts per second")
        print("$ flexllm batch " + " ".join(batch_cmd(url)[4:]), flush=True)
        run = subprocess.Popen(batch_cmd(url))
        deadline = time.monotonic() + 60
        while lines_on_disk() < total // 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        say("Pressing Ctrl-C halfway through (SIGINT)")
        run.send_signal(signal.SIGINT)
        run.wait(60)
        print(f"The batch stopped with exit code {run.returncode}. Results already on disk: "
              f"{lines_on_disk()} of {total} lines in {OUT} — every line is a whole JSON record.")

        say("Running the same command again: it resumes and only asks for what is missing")
        rerun = subprocess.run(batch_cmd(url))
        print(f"Exit code {rerun.returncode}; {OUT} now has {lines_on_disk()} lines, one per input, "
              "in the order they finished (each record carries its input's `index`).")

        say(f"The first 3 records of {OUT}")
        with open(OUT, encoding="utf-8") as f:
            for record_line in list(f)[:3]:
                record = json.loads(record_line)
                shown = {k: record[k] for k in ("index", "status", "output", "metadata") if k in record}
                print(json.dumps(shown, ensure_ascii=False))
        say("Done. Try `flexllm --help`, or point --base-url at a real server (vLLM, Ollama, OpenAI, …).")
        return 0 if rerun.returncode == 0 and lines_on_disk() == total else 1
    finally:
        mock.terminate()
        mock.wait(10)


if __name__ == "__main__":
    sys.exit(main())
