"""The `flexllm` command's arguments: every subcommand, flag, default and range check (exit 2 naming the flag).

Kept apart from `flexllm.cli`, which turns parsed arguments into library calls and prints the results.
"""
from __future__ import annotations

import argparse
from typing import Any

from . import __version__
from .providers import names as provider_names

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PENDING", "EXIT_TERMINATED", "EXIT_USAGE", "THINKING",
           "build_parser"]

THINKING = ("true", "false", "minimal", "low", "medium", "high")

#: exit codes of the `flexllm` command (see flexllm.cli's docstring)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PENDING = 0, 1, 2, 130, 75
EXIT_TERMINATED = 143  # `ask` stopped by SIGTERM: 128 + 15, what a shell reports for the signal


def _positive(kind: Any, zero: bool = False) -> Any:
    """An argparse type: a finite number above zero (or at least zero), else exit 2 naming the flag."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value >= 0 if zero else value > 0) or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero else 'above 0'}, got {text!r}")
        return value
    convert.__name__ = kind.__name__
    return convert


def _connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (flags win over environment variables)")
    g.add_argument("--model", help="model name (env FLEXLLM_MODEL)")
    g.add_argument("--base-url", help="API base URL, e.g. http://localhost:8000/v1 "
                                      "(env FLEXLLM_BASE_URL; OPENAI_BASE_URL for OpenAI-compatible models)")
    g.add_argument("--api-key", help="API key (env: the provider's own, e.g. ANTHROPIC_API_KEY, GEMINI_API_KEY, "
                                     "OPENAI_API_KEY for api.openai.com; then FLEXLLM_API_KEY; never printed)")
    g.add_argument("--provider", choices=("auto",) + provider_names(), default="auto", help="default: auto")
    g.add_argument("--retries", type=_positive(int, zero=True), default=3, help="retries after the first attempt (default 3)")
    g.add_argument("--timeout", type=_positive(float), default=120.0,
                   help="deadline per attempt in seconds; for streams per gap between lines (default 120)")
    g.add_argument("--temperature", type=_positive(float, zero=True), help="sampling temperature")
    g.add_argument("--max-tokens", type=_positive(int), help="maximum tokens in each reply")
    g.add_argument("--system", help="system message for prompt lines / the question")
    g.add_argument("--thinking", choices=THINKING, help="reasoning: true, false, or a level (default: the model's)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `flexllm` command."""
    parser = argparse.ArgumentParser(prog="flexllm", description="Reliable LLM requests from the command line.")
    parser.add_argument("--version", action="version", version=f"flexllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    b = sub.add_parser("batch", help="run a JSONL file of requests; rerun to resume",
                       description="Input lines: {\"messages\": [...]} or {\"prompt\": \"...\"}; other fields are "
                                   "kept as the record's metadata. Rerunning the same command resumes. Exit codes: "
                                   "0 all succeeded, 1 some failed or stopped early (rerun to retry), "
                                   "2 usage/input error, 130 interrupted, 75 (--provider-batch) items still at "
                                   "the provider: rerun later.")
    b.add_argument("input", help="input JSONL file, or - for stdin")
    b.add_argument("-o", "--output", required=True, help="output JSONL file (checkpoint; rerun resumes)")
    _connection_args(b)
    b.add_argument("--concurrency", type=_positive(int), default=50, help="requests in flight (default 50)")
    b.add_argument("--qps", type=_positive(float), help="maximum request starts per second")
    rl = b.add_argument_group("shared rate budget (one budget for many processes and machines; see README)")
    rl.add_argument("--rate-limit-store", metavar="URL",
                    help="sqlite:///path/limits.db or redis://host:6379/0 shared with other processes "
                         "(env FLEXLLM_RATE_LIMIT_STORE); --qps then counts against the shared budget too")
    rl.add_argument("--rate-limit-name", metavar="NAME", help="the budget's name in the store (default: default)")
    rl.add_argument("--rpm", type=_positive(float), help="maximum request starts per minute (shared budget)")
    rl.add_argument("--tpm", type=_positive(float), help="maximum tokens per minute (shared budget)")
    b.add_argument("--cache", action="store_true", help="cache replies (default dir ~/.cache/flexllm/llm_response)")
    b.add_argument("--cache-dir", help="cache directory (implies --cache)")
    b.add_argument("--cache-ttl", type=_positive(int, zero=True), help="cache entry lifetime in seconds, 0 = forever (implies --cache)")
    b.add_argument("--limit", type=_positive(int), help="only the first N input lines")
    b.add_argument("--no-progress", action="store_true", help="no progress bar / progress log lines")
    b.add_argument("--quiet", action="store_true", help="only warnings and the summary")
    pb = b.add_argument_group("provider batch mode (half price, results within 24 h; see README)")
    pb.add_argument("--provider-batch", action="store_true",
                    help="use the provider's batch API (OpenAI-compatible /v1/batches, Anthropic, Gemini): each "
                         "run collects finished batches into the output and submits the rest; exit 75 while "
                         "items are still at the provider")
    pb.add_argument("--wait", action="store_true", help="with --provider-batch: poll until nothing is in flight")
    pb.add_argument("--fallback-online-after", type=_positive(float, zero=True), metavar="HOURS",
                    help="with --provider-batch: items of a batch unfinished after HOURS go through live requests")
    pb.add_argument("--poll-interval", type=_positive(float), default=30.0, metavar="SECONDS",
                    help="with --wait: seconds between status checks (default 30)")
    pb.add_argument("--max-batch-attempts", type=_positive(int, zero=True), default=3, metavar="N",
                    help="with --provider-batch: an item the provider answered with an error in N batches is not "
                         "submitted again (default 3; 0 = no cap)")
    b.add_argument("--dry-run", action="store_true", help="count tokens and show the estimated cost (with "
                                                          "--provider-batch: at the batch price); send nothing")
    k = b.add_argument_group("what to ask for and keep")
    k.add_argument("--schema", metavar="FILE.json", help="JSON Schema every reply must match (validated; an invalid "
                                                         "reply is asked again up to 2 times, then the item fails)")
    k.add_argument("--max-cost", type=_positive(float), metavar="USD", help="stop starting requests before this run's spend "
                                                                 "would pass USD (exit 1; rerun with more to resume)")
    k.add_argument("--redo", choices=("length", "error", "all"), help="on a rerun, also ask again the finished items "
                   "cut off at --max-tokens (length) or all of them (failed ones always are)")
    k.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                   help="csv: also write OUTPUT as CSV for spreadsheets (-o x.csv keeps the checkpoint in x.jsonl)")

    a = sub.add_parser("ask", help="stream the answer to one question to stdout")
    a.add_argument("question", nargs="?", help="the question (read from stdin when omitted or -)")
    _connection_args(a)

    m = sub.add_parser("mock", help="serve the built-in OpenAI/Gemini/Anthropic-compatible mock server")
    from .mock.__main__ import build_parser as mock_parser

    mock_parser(m)

    t = sub.add_parser("tokens", help="count tokens and estimate the cost of a batch before running it")
    t.add_argument("input", help="input JSONL file (same format as batch), or -")
    t.add_argument("--model", default=None, help="model for tokenizer and prices (env FLEXLLM_MODEL; default gpt-4o)")
    t.add_argument("--system", help="system message for prompt lines")
    t.add_argument("--avg-output-tokens", type=_positive(int, zero=True), default=0, help="expected reply length per item")
    t.add_argument("--limit", type=_positive(int), help="only the first N input lines")

    pr = sub.add_parser("pricing", help="show the price table, or one model's price")
    pr.add_argument("model", nargs="?", help="a model name (prefix lookup, e.g. gpt-4o-mini-2024-07-18)")
    return parser
