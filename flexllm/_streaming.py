"""The streaming half of the request pipeline: open a stream (retried until its first event), relay its
events, check that it ended with its end marker, and fill the cache with what a plain call would store.

`Pipeline` (in `_pipeline`) mixes this in; it provides the transport, retry policy, limiter seam and cache.
"""
from __future__ import annotations

import contextlib
import json
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import _cancel
from ._limiter import Limiter, Reservation, TokenNeed
from ._logging import get_logger
from .errors import RateLimitError, ResponseParseError, StreamTruncatedError
from .http import Transport
from .providers.base import RequestSpec, StreamReply
from .types import StreamEvent
from ._results import cache_entry, is_answer, result_from_cache, wire_params


__all__ = ["Opened", "StreamingMixin"]

logger = get_logger("flexllm")

#: an open stream: (closer, the rest of its events, its first event, its budget reservations)
Opened = Tuple[contextlib.ExitStack, Iterator[StreamEvent], Optional[StreamEvent], List[Reservation]]
_SSE_FIELDS = ("data:", "event:", "id:", "retry:", ":")
_MAX_PLAIN_LINES = 10_000  # a plain JSON reply is kept whole only up to this many lines


class StreamingMixin:
    """Streaming methods of `Pipeline` (kept apart so each module stays small)."""

    # -- streaming -----------------------------------------------------------------------------------
    def stream(self, messages: List[dict], model: str, params: Dict[str, Any], *,
               skip_cache: bool = False,
               via: Optional[Callable[[Dict[str, Any], Optional[str]], Iterator[StreamEvent]]] = None
               ) -> Iterator[StreamEvent]:
        """Events of one streamed reply. Retries happen only before the first event is yielded.

        A schema `response_format` is sent in its wire form; streamed text is not validated. `via`: a
        pool's loop opens the stream on one of its endpoints instead (given the params and cache key).
        """
        params = wire_params(params)
        cache = None if skip_cache else self.cache
        key = None
        if cache is not None:
            key = self.cache_key(messages, model, params)
            entry = cache.get(key)
            if entry is not None:
                result = result_from_cache(entry)
                yield StreamEvent(content=result.content, reasoning=result.reasoning_content or "",
                                  usage=result.usage, finish_reason=result.finish_reason, done=True,
                                  tool_calls=[dict(c, index=i) for i, c in enumerate(result.tool_calls or ())] or None,
                                  result=result)
                return
        if via is not None:
            yield from via(params, key)
            return
        spec = self.adapter.build_request(messages, model, params, stream=True)
        need = self.token_need(messages, model, params)
        opened = self.retry.call(lambda: self._open_stream(spec, model, need))
        yield from self.relay(opened, model, key)

    def attempt_stream(self, messages: List[dict], model: str, params: Dict[str, Any], need: Optional[TokenNeed],
                       *, extra: Sequence[Limiter] = (), on_start: Optional[Callable[[], None]] = None) -> "Opened":
        """Open one stream (one HTTP attempt, no retry): the pool's unit of work; finish with `relay`."""
        spec = self.adapter.build_request(messages, model, params, stream=True)
        return self._open_stream(spec, model, need, extra, on_start)

    def relay(self, opened: "Opened", model: str, key: Optional[str] = None) -> Iterator[StreamEvent]:
        """Yield an opened stream's events, settle its budgets, close it, cache the whole reply, and end
        with a `done` event carrying the result."""
        stack, events, first, reservations = opened
        reply = StreamReply()
        try:
            event: Optional[StreamEvent] = first
            while event is not None:
                reply.add(event)
                yield event
                event = next(events, None)
        finally:
            stack.close()
            if reservations:
                self._settle(reservations, usage=reply.usage)
        result = self.adapter.stream_result(reply, model=model)  # raises for a blocked or refused reply
        cache = self.cache
        if key is not None and cache is not None and is_answer(result):
            cache.set(key, cache_entry(result))
        yield StreamEvent(done=True, result=result)

    def _open_stream(self, spec: RequestSpec, model: str, need: Optional[TokenNeed] = None,
                     extra: Sequence[Limiter] = (), on_start: Optional[Callable[[], None]] = None) -> "Opened":
        stack = contextlib.ExitStack()
        window = self.window
        if window is not None:
            ticket = window.enter()
            outcome = {"limited": False}
            stack.callback(lambda: window.leave(ticket, outcome["limited"]))
        self._slots.acquire()
        stack.callback(self._slots.release)
        reservations: List[Reservation] = []
        try:
            reservations = self._start(need, extra, on_start)
            _cancel.check()
            status, headers, lines = stack.enter_context(self.transport.stream(spec, model=model))
            if not 200 <= status < 300:
                error = self.adapter.map_error(status, self._decode_error(Transport.read_body(lines)), headers,
                                               model=model)
                if window is not None:
                    outcome["limited"] = isinstance(error, RateLimitError)
                self._settle(reservations, headers=headers, error=error)
                reservations = []
                raise error
            if reservations:
                self._settle(reservations, headers=headers, final=False)  # the tokens when the stream ends
            events = self._events(lines, model)
            first = next(events, None)  # errors up to the first event are retried by the caller
            return stack, events, first, reservations
        except BaseException as exc:
            if reservations:
                self._settle(reservations, error=exc)
            stack.close()
            raise

    def _events(self, lines: Iterator[str], model: str) -> Iterator[StreamEvent]:
        saw_done = False
        finish = None
        parse = self.adapter.stream_parser(model)
        plain: Optional[List[str]] = []  # lines before any SSE field: a reply that is not a stream at all
        for line in lines:
            if plain is not None:
                if line.startswith(_SSE_FIELDS) or len(plain) > _MAX_PLAIN_LINES:
                    plain = None
                elif line.strip():
                    plain.append(line)
                    continue
            event = parse(line)
            if event is None:
                continue
            if event.done:
                saw_done = True
                break
            finish = event.finish_reason or finish
            if event.content or event.reasoning or event.usage or event.finish_reason or event.tool_calls or \
                    event.refusal:
                yield event
        if plain:
            yield self._plain_reply("\n".join(plain), model)
            return
        if not self.adapter.stream_complete(saw_done, finish):
            raise StreamTruncatedError("stream ended before its end marker (connection closed early)",
                                       provider=self.adapter.name, model=model)

    def _plain_reply(self, text: str, model: str) -> StreamEvent:
        """A stream request answered with plain JSON (a server that ignores `stream`, a proxy's error with
        status 200): the reply as one event, or the error it reports — never a "truncated stream"."""
        try:
            data = json.loads(text)
        except ValueError:
            raise ResponseParseError(f"stream reply is neither SSE nor JSON: {self.adapter.redact(text)[:200]!r}",
                                     provider=self.adapter.name, model=model) from None
        if not isinstance(data, dict):
            raise ResponseParseError("stream reply is neither SSE nor a JSON object", provider=self.adapter.name,
                                     model=model)
        err = data.get("error")
        if err:
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) and 400 <= code <= 599 else 500
            raise self.adapter.map_error(status, data, {}, model=model)
        r = self.adapter.parse_response(data, model=model)
        return StreamEvent(content=r.content, reasoning=r.reasoning_content or "", usage=r.usage,
                           finish_reason=r.finish_reason, done=False,
                           tool_calls=[dict(c, index=i) for i, c in enumerate(r.tool_calls or ())] or None)

