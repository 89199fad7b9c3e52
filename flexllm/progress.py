"""Batch progress: a rich bar on a terminal, a log line every few seconds elsewhere (cron, CI)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Optional

from ._constants import PROGRESS_LOG_INTERVAL
from ._logging import get_logger

__all__ = ["BatchProgress"]

logger = get_logger("flexllm")


class BatchProgress:
    """Observes a batch's finished items. Thread-safe: the batch's workers call `advance` (one lock).

    `enabled=False` costs nothing; when stderr is not a terminal it logs instead of drawing.
    """

    def __init__(self, total: Optional[int], *, enabled: bool = True, description: str = "batch",
                 clock: Callable[[], float] = time.monotonic, log_interval: float = PROGRESS_LOG_INTERVAL,
                 force_terminal: Optional[bool] = None, show_cost: bool = False,
                 status: Optional[Callable[[], str]] = None) -> None:
        self.total = total
        self.enabled = enabled
        self._clock = clock
        self._log_interval = log_interval
        self._status = status  # e.g. the rate budget: "window 12/50, budget wait 3.1s, 429s 2"
        self._start = clock()
        self._last_log = self._start
        self.done = self.cached = self.failed = self.tokens = 0
        #: USD spent so far (shown when `show_cost`: the model's price is known)
        self.cost = 0.0
        self.show_cost = show_cost
        self._progress = None
        self._task = None
        self._lock = threading.Lock()
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True, force_terminal=force_terminal)
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=None), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>6.1f}/s"), TextColumn("ETA"), TimeRemainingColumn(compact=True),
                TextColumn("[cyan]cached {task.fields[cached]}[/] [red]failed {task.fields[failed]}[/] "
                           "tok {task.fields[tokens]}" + (" ${task.fields[cost]:.4f}" if show_cost else "")),
                TextColumn("{task.fields[status]}"),
                console=console, transient=False, refresh_per_second=8, expand=True)
            self._task = self._progress.add_task(description, total=total, rate=0.0, cached=0, failed=0, tokens=0,
                                                 cost=0.0, status="")
            self._progress.start()

    def advance(self, status: str, tokens: int = 0, resumed: bool = False, cost: float = 0.0) -> None:
        """Count one finished item (and what it cost)."""
        if not self.enabled:
            return
        with self._lock:
            self._advance(status, tokens, cost)

    def advance_many(self, items: List[Any]) -> None:
        """Count several finished items (BatchResultItems that cost nothing now: resumed, cached, invalid)."""
        if not self.enabled or not items:
            return
        tokens = cached = failed = 0
        for item in items:
            if item.status == "cached":
                cached += 1
            elif item.status == "error":
                failed += 1
            used = (item.usage or {}).get("total_tokens") or 0
            tokens += used if isinstance(used, int) else 0
        with self._lock:
            self.cached += cached
            self.failed += failed
            self._advance("", tokens, 0.0, len(items))

    def _advance(self, status: str, tokens: int, cost: float, count: int = 1) -> None:
        self.done += count
        self.tokens += tokens
        self.cost += cost
        if status == "cached":
            self.cached += 1
        elif status == "error":
            self.failed += 1
        now = self._clock()
        rate = self.done / max(now - self._start, 1e-9)
        if self._progress is not None:
            self._progress.update(self._task, advance=count, rate=rate, cached=self.cached, failed=self.failed,
                                  tokens=self.tokens, cost=self.cost, status=self._status() if self._status else "")
        elif now - self._last_log >= self._log_interval:
            self._last_log = now
            self.log_line(rate)

    def log_line(self, rate: float) -> None:
        """One progress line through logging (for cron jobs and CI logs)."""
        of = f"/{self.total}" if self.total is not None else ""
        status = self._status() if self._status else ""
        logger.info("batch progress: %d%s done, %.1f/s, cached %d, failed %d, tokens %d%s%s",
                    self.done, of, rate, self.cached, self.failed, self.tokens,
                    f", cost ${self.cost:.4f}" if self.show_cost else "", f", {status}" if status else "")

    def close(self) -> None:
        """Stop drawing (the last state stays on screen)."""
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            elif self.enabled and self.done:
                self.log_line(self.done / max(self._clock() - self._start, 1e-9))
