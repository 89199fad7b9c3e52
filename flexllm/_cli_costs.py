"""What the `flexllm` command prints about tokens and prices (`tokens`, `pricing`, `batch --dry-run`): nothing
here sends a request. Kept apart from `flexllm.cli`, which runs requests."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ._cli_args import EXIT_FAILED, EXIT_OK
from ._input import read_jsonl

__all__ = ["cmd_pricing", "cmd_tokens", "dry_run_line"]


def dry_run_line(messages_list: List[List[dict]], model: str, max_tokens: Optional[int]) -> str:
    """One line: items, input tokens and the estimated cost of a live batch (nothing is sent)."""
    from .pricing import estimate_batch_cost, get_model_pricing

    est = estimate_batch_cost(messages_list, model=model, avg_output_tokens=max_tokens or 0)
    line = f"dry run: {est['count']} items, {est['input_tokens']} input tokens"
    if get_model_pricing(model) is None:
        return line + f", cost unknown (no price for model {model!r}; see `flexllm pricing`); nothing sent"
    line += f", estimated cost ${est['estimated_cost_usd']:.6f} (input ${est['input_cost']:.6f}"
    if max_tokens:
        line += f" + output ${est['output_cost']:.6f} at most, {max_tokens} reply tokens each)"
    else:
        line += " + replies: pass --max-tokens to bound them)"
    return line + "; nothing sent"


def cmd_tokens(args: argparse.Namespace, model: str) -> int:
    """`flexllm tokens`: items, prompt tokens and the estimated cost of an input file for `model`."""
    from .pricing import estimate_batch_cost, get_model_pricing

    messages_list, _ = read_jsonl(args.input, args.system, args.limit)
    est = estimate_batch_cost(messages_list, model=model, avg_output_tokens=args.avg_output_tokens)
    print(f"model: {model}")
    print(f"items: {est['count']}")
    print(f"input tokens: {est['input_tokens']}")
    if args.avg_output_tokens:
        print(f"expected output tokens: {est['estimated_output_tokens']}")
    if get_model_pricing(model) is None:
        print("estimated cost: unknown (no price for this model; see `flexllm pricing`)")
    else:
        print(f"estimated cost: ${est['estimated_cost_usd']:.4f} (input ${est['input_cost']:.4f}"
              f" + output ${est['output_cost']:.4f})")
    return EXIT_OK


def cmd_pricing(args: argparse.Namespace) -> int:
    """`flexllm pricing [MODEL]`: the price table, or one model's prices."""
    from .pricing import BATCH_DISCOUNT, MODEL_PRICING, PRICES_TAKEN_ON, get_cached_input_price, get_model_pricing

    if args.model:
        price = get_model_pricing(args.model)
        if price is None:
            print(f"flexllm: no price known for {args.model!r} (see `flexllm pricing`)", file=sys.stderr)
            return EXIT_FAILED
        print(f"{args.model}: input ${price['input'] * 1e6:g} / 1M tokens (cached input "
              f"${get_cached_input_price(args.model) * 1e6:g}), output ${price['output'] * 1e6:g} / 1M tokens"
              f"; provider batch (--provider-batch): input ${price['input'] * BATCH_DISCOUNT * 1e6:g}, output "
              f"${price['output'] * BATCH_DISCOUNT * 1e6:g}")
        return EXIT_OK
    width = max(len(k) for k in MODEL_PRICING)
    print(f"{'model':<{width}}  {'input $/1M':>10}  {'cached in':>9}  {'output $/1M':>11}  {'batch in':>8}  "
          f"{'batch out':>9}   (list prices taken {PRICES_TAKEN_ON}; batch = provider batch APIs at "
          f"{BATCH_DISCOUNT:.0%}; cached in = prompt-cache reads, the input price where none is published)")
    for name in sorted(MODEL_PRICING):
        p = MODEL_PRICING[name]
        print(f"{name:<{width}}  {p['input'] * 1e6:>10g}  {get_cached_input_price(name) * 1e6:>9g}  "
              f"{p['output'] * 1e6:>11g}  {p['input'] * BATCH_DISCOUNT * 1e6:>8g}  "
              f"{p['output'] * BATCH_DISCOUNT * 1e6:>9g}")
    return EXIT_OK
