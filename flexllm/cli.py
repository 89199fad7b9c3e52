"""The `flexllm` command: run JSONL batch jobs from cron, ask one question, serve the mock, price a job.

Exit codes of `flexllm batch`: 0 every item succeeded; 1 some failed (a rerun retries them), the run
stopped early, or another run holds the output file; 2 usage or input errors; 130 interrupted;
75 (`--provider-batch` only) items are still being processed at the provider: rerun later to collect.
`flexllm ask` stopped by SIGTERM exits 143 with one line on stderr.
This module and `_cli_costs` (tokens, pricing, dry runs) are the only ones of flexllm that print.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from ._cli_args import THINKING as THINKING  # importable from here, as before the split
from ._cli_args import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PENDING, EXIT_TERMINATED, EXIT_USAGE, build_parser
from ._cli_costs import cmd_pricing, cmd_tokens, dry_run_line
from ._input import BatchInput, UsageError, read_jsonl

__all__ = ["main"]



def _env(*names: str) -> Optional[str]:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


# -- input ---------------------------------------------------------------------------------------------

def _detect(model: str) -> str:
    from .providers import detect

    return detect(None, model)


def _client(args: argparse.Namespace, **extra: Any):
    from . import LLMClient, RateLimitStoreError

    model = args.model or _env("FLEXLLM_MODEL")
    if not model:
        raise UsageError("no model: pass --model or set FLEXLLM_MODEL")
    base_url = args.base_url or _env("FLEXLLM_BASE_URL")
    if not base_url and (args.provider if args.provider != "auto" else _detect(model)) == "openai":
        base_url = _env("OPENAI_BASE_URL")  # OpenAI's variable, for the OpenAI dialect only
    api_key = args.api_key  # None: the provider reads its own environment variable, then FLEXLLM_API_KEY
    try:
        return LLMClient(model=model, base_url=base_url, api_key=api_key, provider=args.provider,
                         retry_times=args.retries, timeout=args.timeout, **extra)
    except ValueError as exc:
        raise UsageError(f"{exc} (pass --base-url or set FLEXLLM_BASE_URL)" if "base_url" in str(exc)
                         else str(exc)) from None
    except RateLimitStoreError as exc:  # the shared budget's store cannot be reached: say which, nothing sent
        raise UsageError(exc.message) from None


def _rate_limit(args: argparse.Namespace):
    """The RateLimit the budget flags ask for, or None (then --qps stays this run's private limit)."""
    from .errors import LLMError
    from .ratelimit import RATE_LIMIT_STORE_ENV, RateLimit

    # a store from the environment is a shared budget too: --qps counts against it (as --help says)
    shared = args.rate_limit_store or args.rate_limit_name or os.environ.get(RATE_LIMIT_STORE_ENV, "").strip()
    if not (shared or args.rpm or args.tpm):
        return None
    try:
        return RateLimit(max_qps=args.qps if shared else None, max_rpm=args.rpm, max_tpm=args.tpm,
                         shared=args.rate_limit_store or None, name=args.rate_limit_name or "default")
    except (ValueError, LLMError) as exc:
        raise UsageError(str(exc)) from None


def _params(args: argparse.Namespace) -> Dict[str, Any]:
    params: Dict[str, Any] = {}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.thinking is not None:
        params["thinking"] = {"true": True, "false": False}.get(args.thinking, args.thinking)
    return params


def _flag_named(exc: ValueError, args: argparse.Namespace) -> str:
    """A refused parameter's message, naming the flag it came from when it was --thinking."""
    text = str(exc)
    return f"--thinking {args.thinking}: {text}" if args.thinking is not None and "thinking" in text else text


def _schema(path: Optional[str]) -> Dict[str, Any]:
    """`{"response_format": schema}` from a --schema file ({} without one); UsageError when unreadable."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            schema = json.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read --schema {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"--schema {path} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {path} must hold a JSON object (a JSON Schema)")
    return {"response_format": schema}


def _item_params(metadata: List[dict]) -> Optional[List[Optional[dict]]]:
    """Each input line's own `params` object, taken out of its metadata (None when no line has one)."""
    if not any("params" in row for row in metadata):
        return None
    return [row.pop("params", None) for row in metadata]


def _stdout_gone() -> None:
    """Point stdout at /dev/null so the interpreter's final flush into a closed pipe raises nothing."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("flexllm: %(message)s"))
    log = logging.getLogger("flexllm")
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


# -- commands ------------------------------------------------------------------------------------------

def cmd_batch(args: argparse.Namespace) -> int:
    from . import ResponseCacheConfig

    from ._export import csv_path_for, write_csv

    _setup_logging(args.quiet)
    if args.format == "csv" and args.output == "-":  # the CSV is written from the file once the run ends
        raise UsageError("--format csv needs an output file (-o results.csv), not -")
    checkpoint, csv_out = csv_path_for(args.output) if args.format == "csv" else (args.output, None)
    if not args.provider_batch and (args.wait or args.fallback_online_after is not None):  # never silently ignored
        raise UsageError("--wait and --fallback-online-after go with --provider-batch")
    if args.provider_batch or getattr(args, "dry_run", False):
        messages_list, metadata = read_jsonl(args.input, args.system, args.limit)
        params_list = _item_params(metadata)
    else:  # a live batch streams its input: memory does not grow with the file
        source = BatchInput(args.input, args.system, args.limit, priced=args.max_cost is not None)
        messages_list, metadata, params_list = source.messages(), source.metadata(), source.params()
    params = dict(_params(args), **_schema(args.schema))
    cache = None
    if args.cache or args.cache_dir or args.cache_ttl is not None:
        options: Dict[str, Any] = {"enabled": True}
        if args.cache_dir:
            options["cache_dir"] = args.cache_dir
        if args.cache_ttl is not None:
            options["ttl"] = args.cache_ttl
        cache = ResponseCacheConfig(**options)
    if getattr(args, "dry_run", False) and not args.provider_batch:  # sends nothing: no base URL or key needed
        model = args.model or _env("FLEXLLM_MODEL")
        if not model:
            raise UsageError("no model: pass --model or set FLEXLLM_MODEL")
        print(dry_run_line(messages_list, model, args.max_tokens), file=sys.stderr)
        return EXIT_OK
    limit = _rate_limit(args)
    client = _client(args, concurrency_limit=args.concurrency, cache=cache, rate_limit=limit,
                     max_qps=None if limit is not None and limit.max_qps else args.qps)
    if args.provider_batch:
        unsupported = [flag for flag, given in (("--max-cost", args.max_cost),
                                                ("--redo", args.redo), ("a \"params\" input line", params_list),
                                                ("--format csv", csv_out)) if given]
        if unsupported:
            client.close()
            raise UsageError(f"--provider-batch does not take {', '.join(unsupported)} (live batches do)")
        try:  # as for a live batch: a parameter the provider refuses stops here, naming its flag
            client._batch_runner().check_params(client._model(None), params)
        except ValueError as exc:
            client.close()
            raise UsageError(_flag_named(exc, args)) from None
        return _provider_batch(args, client, messages_list, metadata, params)
    try:  # a parameter the provider refuses (--thinking minimal for Claude) stops here, before any request
        job = client._batch_job(None, params, checkpoint, metadata, not args.no_progress, 1.0, False,
                                params_list=params_list, redo=args.redo, max_cost_usd=args.max_cost)
    except ValueError as exc:
        client.close()
        raise UsageError(_flag_named(exc, args)) from None
    summary, code = _guarded(client, lambda: _drain_job(job, messages_list),
                             f"results so far are in {checkpoint}. Rerun the same command to resume.")
    if summary is None:
        return code
    _print_summary(summary, checkpoint)
    if csv_out:
        try:
            print(f"csv: {csv_out} ({write_csv(checkpoint, csv_out)} rows)", file=sys.stderr)
        except OSError as exc:
            print(f"flexllm: cannot write the CSV {csv_out}: {exc.strerror}; the results are in {checkpoint} "
                  "(rerun the same command to write it)", file=sys.stderr)
            return EXIT_FAILED
    if summary.get("stopped_reason") == "budget":
        print(f"flexllm: stopped at the cost cap: ${summary['estimated_cost_usd']:.6f} spent of --max-cost "
              f"{args.max_cost}; results so far are in {checkpoint}, rerun with a higher --max-cost to continue",
              file=sys.stderr)
    if summary["failed"] or summary.get("stopped_reason"):
        return EXIT_FAILED
    return EXIT_OK


def _drain_job(job: Any, messages_list: Any) -> Dict[str, Any]:
    """Run a batch for its file and summary only: no list of replies grows with the input."""
    for _ in job.run(messages_list):
        pass
    return job.summary()


def _guarded(client: Any, run: Any, interrupted: str) -> Tuple[Optional[Dict[str, Any]], int]:
    """`(summary, 0)` from a batch call, or `(None, exit code)` for a locked file / Ctrl-C; closes the client."""
    from . import OutputFileLockedError

    try:
        return run(), EXIT_OK
    except OutputFileLockedError as exc:
        print(f"flexllm: {exc.message}", file=sys.stderr)
        return None, EXIT_FAILED
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except (IsADirectoryError, NotADirectoryError, FileNotFoundError, PermissionError) as exc:
        raise UsageError(f"cannot write the output file: {exc}") from None
    except OSError as exc:  # e.g. a full disk mid-run: what was written is whole, a rerun resumes
        if exc.errno == errno.EROFS:  # nothing can be written there: a rerun would fail the same way
            raise UsageError(f"cannot write the output file: {exc}") from None
        if exc.errno == errno.EPIPE:  # `-o - | head`: the reader left; nothing to resume from a pipe
            _stdout_gone()
            print("flexllm: the output pipe was closed by its reader; stopped", file=sys.stderr)
            return None, EXIT_FAILED
        print(f"flexllm: {exc}; {interrupted}", file=sys.stderr)
        return None, EXIT_FAILED
    except KeyboardInterrupt:
        print(f"flexllm: interrupted; {interrupted}", file=sys.stderr)
        return None, EXIT_INTERRUPTED
    finally:
        client.close()


def _provider_batch(args: argparse.Namespace, client: Any, messages_list: List[List[dict]],
                    metadata: List[dict], params: Dict[str, Any]) -> int:
    summary, code = _guarded(client, lambda: client.submit_batch(
        messages_list, output_file=args.output, metadata_list=metadata, wait=args.wait,
        fallback_online_after=args.fallback_online_after, poll_interval=args.poll_interval,
        max_batch_attempts=args.max_batch_attempts or None,
        show_progress=args.wait and not args.no_progress, dry_run=getattr(args, "dry_run", False), **params),
        f"submitted batches are in {args.output}.batches and results so far in {args.output}. "
        "Rerun the same command to collect and continue.")
    if summary is None:
        return code
    lines = [f"output: {args.output} (ledger {args.output}.batches)"]
    lines += [f"{k}: {v}" for k, v in summary.items() if k != "errors"]
    if summary.get("errors"):
        lines.append("errors: " + ", ".join(f"{k} × {v}" for k, v in sorted(summary["errors"].items())))
    if summary.get("dry_run"):
        print("\n".join(lines), file=sys.stderr)
        return EXIT_OK
    if summary["complete"]:
        code = EXIT_OK
    elif summary["in_flight"]:
        lines.append("items are still at the provider: rerun the same command later to collect them")
        code = EXIT_PENDING
    elif summary.get("gave_up") and summary["gave_up"] + summary["done"] == summary["total"]:
        lines.append(f"{summary['gave_up']} item(s) failed in {args.max_batch_attempts} provider batches each and are "
                     "not submitted again: their error records say why; fix those inputs or raise --max-batch-attempts")
        code = EXIT_FAILED
    else:
        lines.append("some items failed or could not be submitted; rerun the same command to retry them")
        code = EXIT_FAILED
    print("\n".join(lines), file=sys.stderr)
    return code


def _print_summary(summary: Dict[str, Any], output: str) -> None:
    lines = [f"output: {output}"]
    for key in ("total", "success", "cached", "resumed", "failed", "retries", "elapsed_s", "requests_per_s",
                "prompt_tokens", "completion_tokens", "total_tokens", "estimated_cost_usd"):
        lines.append(f"{key}: {summary[key]}")
    if summary.get("budget_wait_s") or summary.get("tokens_reserved") or summary.get("rate_limited_429"):
        lines.append(f"rate budget: waited {summary.get('budget_wait_s', 0)}s, tokens reserved "
                     f"{summary.get('tokens_reserved', 0)} / used {summary.get('tokens_used', 0)}, "
                     f"429s {summary.get('rate_limited_429', 0)}")
    if summary["errors"]:
        lines.append("errors: " + ", ".join(f"{k} × {v}" for k, v in sorted(summary["errors"].items())))
    if summary.get("stopped_reason"):
        lines.append(f"stopped early: {summary['stopped_reason']}")
    if summary["failed"]:
        lines.append("some items failed; rerun the same command to retry them")
    print("\n".join(lines), file=sys.stderr)


def cmd_ask(args: argparse.Namespace) -> int:
    """`flexllm ask`: stream one answer. Ctrl-C exits 130, SIGTERM 143 with one line (never a traceback),
    whether it comes while the question is read from stdin or while the answer streams."""
    from ._cancel import sigterm_as_interrupt

    restore = sigterm_as_interrupt()  # scoped to this command: the previous handler is put back below
    try:
        return _ask(args)
    except KeyboardInterrupt as exc:
        if exc.args == ("SIGTERM",):  # systemd, `timeout`: one line and the shell's code
            print("\nflexllm: stopped by SIGTERM", file=sys.stderr)
            return EXIT_TERMINATED
        return EXIT_INTERRUPTED
    finally:
        restore()


def _ask(args: argparse.Namespace) -> int:
    from .errors import LLMError

    _setup_logging(quiet=True)
    question = args.question if args.question not in (None, "-") else sys.stdin.read()
    if not question.strip():
        raise UsageError("no question: pass it as an argument or on stdin")
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
        [{"role": "user", "content": question}]
    client = _client(args)
    try:
        text, finish = False, None
        for event in client.chat_completions_stream_sync(messages, events=True, **_params(args)):
            piece = event.content
            if not piece and event.result is not None and not text and event.result.tool_calls:
                piece = event.result.text  # a reply that only calls tools: its calls as JSON (as the text API)
            if piece:
                text = True
                sys.stdout.write(piece)
                sys.stdout.flush()
            finish = event.finish_reason or finish
        sys.stdout.write("\n")
        if finish == "length":  # a truncated answer looks like a whole one on a terminal: say so
            sys.stdout.flush()
            print("flexllm: the answer was cut off at the token limit (finish_reason=length); raise --max-tokens",
                  file=sys.stderr)
    except LLMError as exc:
        print(f"\nflexllm: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `flexllm ask … | head`: the reader has what it wanted
        _stdout_gone()
        return EXIT_OK
    except ValueError as exc:  # a parameter this provider does not take (e.g. --thinking minimal for Claude)
        raise UsageError(_flag_named(exc, args)) from None
    finally:
        client.close()
    return EXIT_OK


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the `flexllm` console script and `python -m flexllm`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "batch":
            return cmd_batch(args)
        if args.command == "ask":
            return cmd_ask(args)
        if args.command == "mock":
            from .mock.__main__ import serve

            return serve(args)
        if args.command == "tokens":
            return cmd_tokens(args, args.model or _env("FLEXLLM_MODEL") or "gpt-4o")
        return cmd_pricing(args)
    except UsageError as exc:
        print(f"flexllm: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
