"""flexllm inside Ray Data: `LLMMapper`, a callable class for `Dataset.map_batches` (extra `flexllm[ray]`).

    import ray
    from flexllm import RateLimit
    from flexllm.integrations.ray import LLMMapper

    ds = ray.data.read_json("prompts/")          # rows with "messages" or "prompt", plus an id column
    out = ds.map_batches(LLMMapper, fn_constructor_kwargs=dict(
              model="qwen", base_url="http://vllm:8000/v1",
              rate_limit=RateLimit(max_qps=200, shared="redis://redis:6379/0", name="vllm-fleet"),
              id_column="id", checkpoint_dir="/nfs/job-42/checkpoint"),
          concurrency=8, batch_size=256)

Each actor builds one flexllm client and runs flexllm's own batch engine over every block it is given
(threads, retries with Retry-After, typed errors). A row that fails comes back with `status="error"` and
the error text in `error`; it never raises out of the block. All actors share one budget through the
`RateLimit`'s store (a plain picklable value: each actor connects to the store itself, lazily).

With `id_column` and `checkpoint_dir`, every answered row is appended at once to this actor's own file in
`checkpoint_dir` (see `flexllm.integrations._rows`); a rerun answers rows whose id is already there from the
checkpoint, without a request. Ray is not imported here: the class is plain Python that Ray instantiates.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .._logging import get_logger
from ._rows import RowCheckpoint

__all__ = ["LLMMapper"]

logger = get_logger("flexllm")

#: the columns every output block gains
RESULT_COLUMNS = ("output", "status", "error", "reasoning_content", "finish_reason",
                  "prompt_tokens", "completion_tokens")


def _plain(value: Any) -> Any:
    """A plain Python value from what Ray hands over (numpy arrays and scalars inside lists and dicts)."""
    tolist = getattr(value, "tolist", None)
    if tolist is not None and not isinstance(value, (str, bytes)):
        value = tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class LLMMapper:
    """Answers each row of a Ray Data block with flexllm's batch engine; one client per actor.

    Rows carry a conversation in `messages_column` (a list of `{"role", "content"}` dicts) or a single
    user prompt in `prompt_column` (`system_prompt`, if given, is put in front). Output rows keep every
    input column and gain `output` (the reply text, named by `output_column`), `status` ("success",
    "cached", "resumed" or "error"), `error`, `reasoning_content`, `finish_reason`, `prompt_tokens`,
    `completion_tokens`.

    `**request_kwargs` (temperature, max_tokens, thinking, …) go to every request; `client_kwargs` to the
    client constructor (timeout, retry_times, proxy, …).
    """

    def __init__(self, model: Optional[str] = None, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 *, provider: str = "auto", rate_limit: Any = None, cache: Any = None,
                 id_column: Optional[str] = None, checkpoint_dir: Optional[str] = None,
                 messages_column: str = "messages", prompt_column: str = "prompt",
                 system_prompt: Optional[str] = None, output_column: str = "output", concurrency_limit: int = 32,
                 client_kwargs: Optional[Dict[str, Any]] = None, **request_kwargs: Any) -> None:
        from ..client import LLMClient

        if checkpoint_dir is not None and not id_column:
            raise ValueError("checkpoint_dir needs id_column: the checkpoint is keyed by each row's id")
        kwargs = dict(client_kwargs or {})
        if rate_limit is not None:
            kwargs["rate_limit"] = rate_limit
        self.client = LLMClient(model=model, base_url=base_url, api_key=api_key, provider=provider, cache=cache,
                                concurrency_limit=concurrency_limit, **kwargs)
        self.id_column = id_column
        self.messages_column = messages_column
        self.prompt_column = prompt_column
        self.system_prompt = system_prompt
        self.output_column = output_column
        self.request_kwargs = request_kwargs
        self.checkpoint = RowCheckpoint(checkpoint_dir) if checkpoint_dir is not None else None

    # -- one block -----------------------------------------------------------------------------------
    def __call__(self, batch: Any) -> Any:
        """Answer every row of `batch` (a dict of columns or a pandas DataFrame); same format back."""
        columns = {name: batch[name] for name in batch.keys()} if hasattr(batch, "keys") else dict(batch)
        n = len(next(iter(columns.values()))) if columns else 0
        conversations = [self._conversation(columns, i) for i in range(n)]
        out: Dict[str, List[Any]] = {name: [None] * n for name in RESULT_COLUMNS}
        out["status"] = ["error"] * n
        todo = list(range(n))
        ids: List[Any] = []
        if self.id_column is not None:
            if self.id_column not in columns:
                raise ValueError(f"id_column {self.id_column!r} is not a column of the dataset "
                                 f"(columns: {', '.join(map(str, columns))})")
            ids = _plain(columns[self.id_column])
        if self.checkpoint is not None:
            for pos, record in self.checkpoint.lookup(ids, conversations).items():
                self._fill(out, pos, record, "resumed")
            todo = [i for i in range(n) if out["status"][i] == "error"]
        if todo:
            self._run(todo, conversations, ids, out)
        if self.checkpoint is not None:
            self.checkpoint.flush()
        out[self.output_column] = out.pop("output")
        return _with_columns(batch, out)

    def _run(self, todo: List[int], conversations: List[Any], ids: List[Any], out: Dict[str, List[Any]]) -> None:
        reached = set()
        try:
            items = self.client.iter_chat_completions_batch((conversations[i] for i in todo), show_progress=False,
                                                            **self.request_kwargs)
            for item in items:
                pos = todo[item.index]
                reached.add(pos)
                if item.status == "error":
                    out["error"][pos] = item.error
                    continue
                record = {"status": item.status, "output": item.content,
                          "reasoning_content": item.reasoning_content,
                          "finish_reason": getattr(item, "finish_reason", None), "usage": item.usage}
                self._fill(out, pos, record, item.status)
                if self.checkpoint is not None:
                    self.checkpoint.append(ids[pos], conversations[pos], record)
        except Exception as exc:  # the block as a whole could not run: every row not reached says why
            logger.error("flexllm block of %d rows stopped: %s", len(todo), exc)
            for pos in todo:
                if pos not in reached:
                    out["error"][pos] = f"{type(exc).__name__}: {exc}"
            return
        for pos in todo:
            if pos not in reached:  # the batch stopped early (e.g. an exhausted quota)
                out["error"][pos] = "not run: the batch stopped early (see the flexllm log); rerun to resume"

    @staticmethod
    def _fill(out: Dict[str, List[Any]], pos: int, record: Dict[str, Any], status: str) -> None:
        usage = record.get("usage") or {}
        out["output"][pos] = record.get("output")
        out["status"][pos] = status
        out["error"][pos] = None
        out["reasoning_content"][pos] = record.get("reasoning_content")
        out["finish_reason"][pos] = record.get("finish_reason")
        out["prompt_tokens"][pos] = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        out["completion_tokens"][pos] = usage.get("completion_tokens") if isinstance(usage, dict) else None

    def _conversation(self, columns: Dict[str, Any], i: int) -> Any:
        """The row's messages; an unusable row is passed on as it is and fails alone in the engine."""
        value = None
        if self.messages_column in columns:
            value = _plain(columns[self.messages_column][i])
        if value is None and self.prompt_column in columns:
            value = _plain(columns[self.prompt_column][i])
        if isinstance(value, str):
            value = [{"role": "user", "content": value}]
        elif isinstance(value, list):  # Arrow gives every message every key of any message: drop the nulls
            value = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in value]
        if self.system_prompt and isinstance(value, list) and value and not (
                isinstance(value[0], dict) and value[0].get("role") == "system"):
            value = [{"role": "system", "content": self.system_prompt}] + value
        return value

    def __repr__(self) -> str:
        return f"LLMMapper(client={self.client!r}, checkpoint={getattr(self.checkpoint, 'directory', None)!r})"


def _with_columns(batch: Any, new: Dict[str, List[Any]]) -> Any:
    """`batch` plus the result columns, in the format it came in (pandas DataFrame or dict of columns)."""
    if hasattr(batch, "assign") and hasattr(batch, "columns"):  # pandas
        return batch.assign(**new)
    result = dict(batch)
    try:
        import numpy as np

        for name, values in new.items():
            array = np.empty(len(values), dtype=object)
            array[:] = values
            result[name] = array
    except ImportError:  # pragma: no cover - Ray always brings numpy
        result.update(new)
    return result
