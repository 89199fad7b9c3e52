"""The public methods shared by every client and the pool: sync core methods and their async twins.

A concrete class provides `_complete`, `_stream` and `_batch_runner`; everything else is written once
here. Each `async def` awaits its sync twin on the object's own thread pool (DESIGN §1).
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from ._aio import aiter_in_thread, run_in_thread, run_stoppable
from ._logging import get_logger
from ._items import BATCH_OPTIONS
from ._messages import check_messages
from ._pipeline import Outcome
from .types import BatchResultItem, ChatCompletionResult, StreamEvent

__all__ = ["ClientAPI"]

logger = get_logger("flexllm")

Reply = Union[str, ChatCompletionResult, Dict[str, Any]]


def _reply_of(item: BatchResultItem, return_usage: bool) -> Optional[Union[str, ChatCompletionResult]]:
    """What a batch returns for one item: None (failed), its text, or a ChatCompletionResult (with .parsed)."""
    if item.status == "error":
        return None
    if return_usage:
        return ChatCompletionResult(item.content or "", item.usage, item.reasoning_content, item.tool_calls,
                                    item.finish_reason, item.parsed)
    return item.content


def _refuse_events(kwargs: Dict[str, Any]) -> None:
    """`events=` outside a stream: ValueError (it is flexllm's word, never a request parameter)."""
    if "events" in kwargs:
        raise ValueError("events= belongs to chat_completions_stream_sync / chat_completions_stream; "
                         "a single call or a batch returns whole replies (return_usage=True for their parts)")


def _refuse_batch_options(kwargs: Dict[str, Any]) -> None:
    """Batch options on a single call or stream: ValueError (sent in the body they would be ignored or a 400)."""
    if not BATCH_OPTIONS.isdisjoint(kwargs):  # per call: one C-level check
        options = sorted(BATCH_OPTIONS.intersection(kwargs))
        raise ValueError(f"{', '.join(o + '=' for o in options)} belong to batches (chat_completions_batch_sync, "
                         "iter_chat_completions_batch); a single call or stream does not take them")


class ClientAPI:
    """Mixin with the user-facing methods. Subclasses set `model`, `concurrency_limit` and implement hooks."""

    model: Optional[str]
    concurrency_limit: int
    _executor: Optional[ThreadPoolExecutor] = None
    _executor_pid = 0
    _executor_lock = threading.Lock()

    # -- hooks ---------------------------------------------------------------------------------------
    def _complete(self, messages: List[dict], model: str, params: Dict[str, Any], *, skip_cache: bool,
                  read_cache: bool) -> Outcome:
        raise NotImplementedError

    def _stream(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                skip_cache: bool) -> Iterator[StreamEvent]:
        raise NotImplementedError

    def _batch_runner(self) -> Any:
        raise NotImplementedError

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Refused with a message saying what to do (pickle's own was "cannot pickle '_queue.SimpleQueue'")."""
        raise TypeError(f"{type(self).__name__} cannot be pickled: it holds connections, threads and its API key. "
                        "Build one in each process (a module-level client, or a Ray actor's constructor: "
                        "flexllm.integrations.ray.LLMMapper) and pass picklable settings such as RateLimit instead")

    def close(self) -> None:
        """Release connections, the cache handle and the async thread pool."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    # -- plumbing ------------------------------------------------------------------------------------
    def _model(self, model: Optional[str]) -> str:
        chosen = model or self.model
        if not chosen:
            raise ValueError("no model given: pass model= to the client or to the call")
        return chosen

    def _pool(self) -> ThreadPoolExecutor:
        """The thread pool the async twins run on: made on first use, and again in a forked child (the
        parent's pool has no threads there, yet counts them as idle: work queued on it would never run)."""
        executor = self._executor
        if executor is None or self._executor_pid != os.getpid():
            with self._executor_lock:
                if self._executor is None or self._executor_pid != os.getpid():
                    self._executor = ThreadPoolExecutor(max_workers=2 * self.concurrency_limit + 4,
                                                        thread_name_prefix="flexllm-async")
                    self._executor_pid = os.getpid()
                executor = self._executor
        return executor

    # -- single requests -----------------------------------------------------------------------------
    def chat_completions_sync(self, messages: List[dict], model: Optional[str] = None, return_raw: bool = False,
                              return_usage: bool = False, skip_cache: bool = False, **kwargs: Any) -> Reply:
        """One reply: text by default, `ChatCompletionResult` with return_usage, the provider's JSON with return_raw.

        Raises a typed `LLMError` when the request fails after retries. Raw replies are always live
        (the cache stores results, not the provider's bytes), but they still fill the cache.
        `response_format=` a Pydantic model class returns the validated model instance (`.parsed` of the
        result with return_usage); a JSON Schema dict is validated too and the text returned as usual.
        """
        _refuse_events(kwargs)
        _refuse_batch_options(kwargs)
        outcome = self._complete(check_messages(messages), self._model(model), kwargs, skip_cache=skip_cache,
                                 read_cache=not return_raw)
        if return_raw:
            return outcome.raw if outcome.raw is not None else {}
        if return_usage:
            return outcome.result
        if isinstance(kwargs.get("response_format"), type):
            return outcome.result.parsed
        return outcome.result.text

    async def chat_completions(self, messages: List[dict], model: Optional[str] = None, return_raw: bool = False,
                               return_usage: bool = False, skip_cache: bool = False, **kwargs: Any) -> Reply:
        """Async twin of `chat_completions_sync` (runs it on this client's thread pool)."""
        return await run_in_thread(self._pool(), self.chat_completions_sync, messages, model, return_raw,
                                   return_usage, skip_cache, **kwargs)

    def chat_completions_stream_sync(self, messages: List[dict], model: Optional[str] = None,
                                     skip_cache: bool = False, events: bool = False,
                                     **kwargs: Any) -> Iterator[Union[str, StreamEvent]]:
        """The reply's text pieces as they arrive; retries happen only before the first piece is yielded.

        `events=True` yields `StreamEvent`s instead (content, reasoning, tool_calls deltas, usage,
        finish_reason) and, after a complete reply, one last event with `done=True` whose `result` is the
        whole reply — what a view relaying server-sent events needs to show thinking, tool calls, usage
        and the finish reason.
        """
        _refuse_batch_options(kwargs)
        stream = self._stream(check_messages(messages), self._model(model), kwargs, skip_cache=skip_cache)
        if events:
            yield from stream
            return
        text = False
        for event in stream:
            if event.content:
                text = True
                yield event.content
            elif event.result is not None and not text and event.result.tool_calls:
                yield event.result.text  # a reply that only calls tools: its calls as JSON, never nothing

    async def chat_completions_stream(self, messages: List[dict], model: Optional[str] = None,
                                      skip_cache: bool = False, events: bool = False,
                                      **kwargs: Any) -> AsyncIterator[Union[str, StreamEvent]]:
        """Async twin of `chat_completions_stream_sync` (text pieces, or `StreamEvent`s with events=True)."""
        async for piece in aiter_in_thread(
                self._pool(), lambda: self.chat_completions_stream_sync(messages, model, skip_cache, events,
                                                                        **kwargs)):
            yield piece

    # -- batches -------------------------------------------------------------------------------------
    def iter_chat_completions_batch(self, messages_list: Iterable[List[dict]], output_file: Optional[str] = None,
                                    show_progress: bool = False, flush_interval: float = 1.0,
                                    metadata_list: Optional[List[dict]] = None, model: Optional[str] = None,
                                    skip_cache: bool = False, *, params_list: Any = None, redo: Any = None,
                                    max_cost_usd: Optional[float] = None, **kwargs: Any) -> Iterator[BatchResultItem]:
        """Yield a `BatchResultItem` per item as it finishes (resumed items first), keeping memory bounded.

        `messages_list` may be any iterable (e.g. a generator reading a file). With `output_file`, each
        finished item is appended to it at once and a rerun resumes (DESIGN §6). `params_list`: one dict
        of kwargs per item (model, temperature, response_format, …) over the call's. `redo`: "length",
        "all" or `callable(record) -> bool` — finished records of an earlier run to ask again (failed ones
        always are). `max_cost_usd`: no request starts once it could pass this spend.
        """
        return self._batch_job(model, kwargs, output_file, metadata_list, show_progress, flush_interval, skip_cache,
                               params_list=params_list, redo=redo, max_cost_usd=max_cost_usd).run(messages_list)

    def _batch_job(self, model: Optional[str], kwargs: Dict[str, Any], output_file: Optional[str],
                   metadata_list: Any, show_progress: bool, flush_interval: float, skip_cache: bool, *,
                   params_list: Any = None, redo: Any = None, max_cost_usd: Optional[float] = None,
                   stop: Optional[threading.Event] = None) -> Any:
        from .batch import BatchJob

        _refuse_events(kwargs)
        model = self._model(model)
        self._batch_runner().check_params(model, kwargs)  # a parameter the provider refuses fails the batch now
        return BatchJob(self._batch_runner(), model, kwargs, output_file=output_file,
                        metadata_list=metadata_list, show_progress=show_progress, flush_interval=flush_interval,
                        skip_cache=skip_cache, params_list=params_list, redo=redo, max_cost_usd=max_cost_usd,
                        stop=stop)

    def chat_completions_batch_sync(self, messages_list: Iterable[List[dict]], output_file: Optional[str] = None,
                                    show_progress: bool = True, return_summary: bool = False,
                                    flush_interval: float = 1.0, metadata_list: Optional[List[dict]] = None,
                                    model: Optional[str] = None, skip_cache: bool = False, *,
                                    return_usage: bool = False, params_list: Any = None, redo: Any = None,
                                    max_cost_usd: Optional[float] = None,
                                    **kwargs: Any) -> Union[List[Any], Tuple[List[Any], dict]]:
        """Replies in input order (`None` for a failed item), or `(replies, summary)` with return_summary.

        `return_usage=True` gives `ChatCompletionResult`s (usage, finish_reason, tool_calls, and `.parsed`,
        the validated structured reply). Other keywords: see `iter_chat_completions_batch`.
        """
        return self._batch(messages_list, output_file, show_progress, return_summary, flush_interval,
                           metadata_list, model, skip_cache,
                           dict(kwargs, return_usage=return_usage, params_list=params_list, redo=redo,
                                max_cost_usd=max_cost_usd))

    def _batch(self, messages_list: Iterable[List[dict]], output_file: Optional[str], show_progress: bool,
               return_summary: bool, flush_interval: float, metadata_list: Optional[List[dict]],
               model: Optional[str], skip_cache: bool, kwargs: Dict[str, Any],
               stop: Optional[threading.Event] = None) -> Any:
        kwargs = dict(kwargs)
        return_usage = kwargs.pop("return_usage", False)
        options = {k: kwargs.pop(k, None) for k in ("params_list", "redo", "max_cost_usd")}
        job = self._batch_job(model, kwargs, output_file, metadata_list, show_progress, flush_interval, skip_cache,
                              stop=stop, **options)
        items = job.run(messages_list)  # validates first, so job.total is known from here on
        results: List[Any] = [None] * job.total if job.total is not None else []
        for item in items:
            index = item.index
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            results[index] = item.content if not return_usage and item.status != "error" else \
                _reply_of(item, return_usage)
        if job.total is not None and len(results) < job.total:
            results.extend([None] * (job.total - len(results)))
        return (results, job.summary()) if return_summary else results

    async def chat_completions_batch(self, messages_list: Iterable[List[dict]], output_file: Optional[str] = None,
                                     show_progress: bool = True, return_summary: bool = False,
                                     flush_interval: float = 1.0, metadata_list: Optional[List[dict]] = None,
                                     model: Optional[str] = None, skip_cache: bool = False,
                                     **kwargs: Any) -> Union[List[Optional[str]], Tuple[List[Optional[str]], dict]]:
        """Async twin of `chat_completions_batch_sync` (the batch runs on worker threads).

        Cancelling the await stops the batch like Ctrl-C: no new request or retry starts, answers already
        in flight are recorded, and the output file is unlocked before CancelledError reaches the caller.
        """
        stop = threading.Event()

        def abort() -> None:
            runner_abort = getattr(self._batch_runner(), "abort", None)
            if runner_abort is not None:
                runner_abort()

        return await run_stoppable(self._pool(), functools.partial(
            self._batch, messages_list, output_file, show_progress, return_summary, flush_interval, metadata_list,
            model, skip_cache, kwargs, stop), stop, abort)

    async def aiter_chat_completions_batch(self, messages_list: Iterable[List[dict]],
                                           **kwargs: Any) -> AsyncIterator[BatchResultItem]:
        """Async twin of `iter_chat_completions_batch`."""
        async for item in aiter_in_thread(self._pool(),
                                          lambda: self.iter_chat_completions_batch(messages_list, **kwargs)):
            yield item

    def submit_batch(self, messages_list: Iterable[List[dict]], output_file: str = "out.jsonl",
                     metadata_list: Optional[List[dict]] = None, wait: bool = False,
                     fallback_online_after: Optional[float] = None, *, model: Optional[str] = None,
                     poll_interval: float = 30.0, show_progress: bool = False, skip_cache: bool = False,
                     dry_run: bool = False, max_batch_attempts: Optional[int] = 3,
                     **kwargs: Any) -> Dict[str, Any]:
        """Half-price provider batch (OpenAI Batch API, Anthropic Message Batches, Gemini batch mode).

        One call collects finished provider batches, submits what is neither done nor in flight, and
        returns a summary.

        Call it again (e.g. from cron) with the same arguments to collect finished batches into
        `output_file` and submit what is left; `wait=True` polls until nothing is in flight;
        `fallback_online_after` (hours) sends items of a batch unfinished after that long through the
        live engine; an item the provider answered with an error in `max_batch_attempts` batches (same
        input) is not submitted again (None: no cap). See `flexllm.provider_batch` and README "Half-price
        batches".
        """
        return self._submit_batch(messages_list, output_file, metadata_list, wait, fallback_online_after, model=model,
                                  poll_interval=poll_interval, show_progress=show_progress, skip_cache=skip_cache,
                                  dry_run=dry_run, max_batch_attempts=max_batch_attempts, **kwargs)

    def _submit_batch(self, messages_list: Iterable[List[dict]], output_file: str = "out.jsonl",
                      metadata_list: Optional[List[dict]] = None, wait: bool = False,
                      fallback_online_after: Optional[float] = None, *, model: Optional[str] = None,
                      poll_interval: float = 30.0, show_progress: bool = False, skip_cache: bool = False,
                      dry_run: bool = False, stop: Optional[threading.Event] = None,
                      max_batch_attempts: Optional[int] = 3, **kwargs: Any) -> Dict[str, Any]:
        from .provider_batch import ProviderBatchJob

        _refuse_events(kwargs)
        self._batch_runner().check_params(self._model(model), kwargs)
        job = ProviderBatchJob(self, self._model(model), kwargs, output_file=output_file,
                               metadata_list=metadata_list, wait=wait, fallback_online_after=fallback_online_after,
                               poll_interval=poll_interval, show_progress=show_progress, skip_cache=skip_cache,
                               stop=stop, max_batch_attempts=max_batch_attempts)
        return job.run(messages_list, dry_run=dry_run)

    async def asubmit_batch(self, messages_list: Iterable[List[dict]], **kwargs: Any) -> Dict[str, Any]:
        """Async twin of `submit_batch`. Cancelling the await stops a waiting run (no further poll, submit or
        download starts) and returns once the output file is unlocked, so a rerun can start right away."""
        stop = threading.Event()
        return await run_stoppable(self._pool(), lambda: self._submit_batch(messages_list, stop=stop, **kwargs),
                                   stop, lambda: None)

    # -- resources -----------------------------------------------------------------------------------
    def __enter__(self) -> "ClientAPI":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "ClientAPI":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Async twin of `close`."""
        self.close()
