"""No API key ever reaches an exception (message, .body, repr, traceback locals), a log line or a file.

Keys are deliberately not shaped like `sk-…` here, so the generic log scrubber cannot hide a leak: only
the exact-key redaction and construction-time checks are under test.
"""
import logging
import sys
import traceback

import pytest

from flexllm import (
    APIConnectionError,
    AuthenticationError,
    GeminiClient,
    LLMClient,
    LLMClientPool,
    LLMError,
    OpenAIClient,
    ResponseCacheConfig,
)
from flexllm.mock import MockServer

from .conftest import read_records, user

KEY = "zq7Kp2mXv9LrT4wB8nYc3Hs6"  # no well-known prefix: only our own redaction can hide it


def _everything(exc):
    """str, repr, .body, .headers and the formatted traceback with every frame's locals."""
    tb = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
    return "\n".join([str(exc), repr(exc), repr(getattr(exc, "body", None)), repr(getattr(exc, "headers", None)),
                      "".join(tb.format())])


def _fail(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - we inspect whatever came out
        return exc
    raise AssertionError("expected a failure")


# -- item 10: keys with stray whitespace -------------------------------------------------------------

@pytest.mark.parametrize("raw", [KEY + "\n", KEY + "\r\n", "  " + KEY + "\t", "\ufeff" + KEY + "\r"])
def test_key_with_surrounding_whitespace_is_stripped_openai(raw):
    with MockServer(require_key=KEY) as s:
        c = OpenAIClient(base_url=s.url, api_key=raw, model="m", retry_times=0)
        assert c.chat_completions_sync(user("hi")) == "echo: hi"
        c.close()


@pytest.mark.parametrize("raw", [KEY + "\n", KEY + "\r\n", " " + KEY])
def test_key_with_surrounding_whitespace_is_stripped_gemini(raw):
    with MockServer(require_key=KEY) as s:
        c = GeminiClient(api_key=raw, base_url=s.root_url, model="gemini-2.5-flash", retry_times=0)
        assert c.chat_completions_sync(user("hi")) == "echo: hi"
        c.close()


def test_key_with_surrounding_whitespace_is_stripped_in_a_pool():
    with MockServer(require_key=KEY) as s:
        pool = LLMClientPool(endpoints=[{"base_url": s.url, "api_key": KEY + "\r\n", "model": "m"}], retry_times=0)
        assert pool.chat_completions_sync(user("hi")) == "echo: hi"
        pool.close()


@pytest.mark.parametrize("make", [
    lambda k: OpenAIClient(base_url="http://127.0.0.1:9/v1", api_key=k, model="m"),
    lambda k: LLMClient(model="m", base_url="http://127.0.0.1:9/v1", api_key=k),
    lambda k: GeminiClient(api_key=k, model="gemini-2.5-flash"),
    lambda k: LLMClientPool(endpoints=[{"base_url": "http://127.0.0.1:9/v1", "api_key": k, "model": "m"}]),
])
@pytest.mark.parametrize("bad", [KEY[:10] + "\n" + KEY[10:], KEY[:10] + " " + KEY[10:], KEY[:5] + "\x00" + KEY[5:],
                                 KEY[:5] + "\u2019" + KEY[5:]])
def test_key_with_inner_control_character_is_a_clear_error_without_the_key(make, bad):
    exc = _fail(lambda: make(bad))
    assert isinstance(exc, ValueError)
    assert "api_key" in str(exc)
    # (the constructor's own parameters are its frames' locals: only the error itself is checked here)
    text = str(exc) + repr(exc) + "".join(traceback.format_exception_only(type(exc), exc))
    assert KEY[:10] not in text and KEY[10:] not in text and KEY[5:] not in text


def test_bad_header_value_is_not_retried_and_not_echoed(server):
    c = OpenAIClient(base_url=server.url, model="m", retry_times=3, retry_delay=0.01)
    exc = _fail(lambda: c.chat_completions_sync(user("x"), extra_headers={"X-Custom": KEY + "\n"}))
    assert isinstance(exc, (LLMError, ValueError))
    assert not isinstance(exc, APIConnectionError)  # a bad header never becomes a retried connection error
    assert KEY not in str(exc) and KEY not in repr(exc)  # (the caller's own kwargs stay in their frame's locals)
    assert server.requests == []


# -- item 11: redact first, then cut; exc.body redacted too -------------------------------------------

@pytest.mark.parametrize("pad", [480, 490, 495])
def test_error_body_echoing_the_key_is_redacted_before_it_is_cut(server, tmp_path, caplog, pad):
    caplog.set_level(logging.DEBUG, logger="flexllm")
    echoed = "x" * pad + f" received Authorization: Bearer {KEY} and api key {KEY}"
    server.add_rule(contains="boom", status=401, message=echoed)
    c = OpenAIClient(base_url=server.url, api_key=KEY, model="m", retry_times=0)
    exc = _fail(lambda: c.chat_completions_sync(user("boom")))
    assert isinstance(exc, AuthenticationError)
    text = _everything(exc)
    for piece in (KEY, KEY[:6], KEY[-6:]):
        assert piece not in text
    out = tmp_path / "out.jsonl"
    c.chat_completions_batch_sync([user("boom")], output_file=str(out), show_progress=False)
    assert KEY[:6] not in out.read_text() and KEY[-6:] not in out.read_text()
    [rec] = read_records(out)
    assert rec["status"] == "error" and "401" in rec["error"]
    assert KEY[:6] not in caplog.text


def test_gemini_error_body_echoing_the_key_is_redacted(server):
    server.add_rule(contains="boom", status=403, message="y" * 495 + f" key={KEY}")
    c = GeminiClient(api_key=KEY, base_url=server.root_url, model="gemini-2.5-flash", retry_times=0)
    exc = _fail(lambda: c.chat_completions_sync(user("boom")))
    assert isinstance(exc, AuthenticationError)
    text = _everything(exc)
    assert KEY[:6] not in text and KEY[-6:] not in text


def test_stream_error_echoing_the_key_is_redacted(server):
    server.add_rule(contains="boom", status=401, message=f"bad key {KEY}")
    c = OpenAIClient(base_url=server.url, api_key=KEY, model="m", retry_times=0)
    exc = _fail(lambda: list(c.chat_completions_stream_sync(user("boom"))))
    assert isinstance(exc, AuthenticationError)
    assert KEY not in _everything(exc)


# -- item 12: no repr and no traceback local shows a secret -------------------------------------------

def test_reprs_of_our_objects_hide_the_key(server, tmp_path):
    c = OpenAIClient(base_url=server.url, api_key=KEY, model="m",
                     cache=ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path)))
    g = GeminiClient(api_key=KEY, base_url=server.root_url)
    pool = LLMClientPool(endpoints=[{"base_url": server.url, "api_key": KEY, "model": "m"}])
    spec = c.adapter.build_request(user("x"), "m", {})
    objects = [c, g, pool, pool.router, c.adapter, g.adapter, spec, c._pipeline, c._pipeline.transport,
               c._pipeline.transport.prepare(spec), g.adapter.build_request(user("x"), "g", {}), pool.clients[0],
               *pool.router.providers]
    for obj in objects:
        assert KEY not in repr(obj), type(obj).__name__
        assert KEY not in str(obj), type(obj).__name__


@pytest.mark.parametrize("how", ["status", "connect", "stream", "timeout"])
def test_traceback_locals_of_failed_calls_hide_the_key(server, how):
    server.add_rule(contains="slow", latency=3)
    url = "http://127.0.0.1:9/v1" if how == "connect" else server.url
    c = OpenAIClient(base_url=url, api_key=KEY, model="m", retry_times=1, retry_delay=0.01, timeout=0.5)
    server.require_key = "other"
    try:
        if how == "stream":
            exc = _fail(lambda: list(c.chat_completions_stream_sync(user("x"))))
        elif how == "timeout":
            server.require_key = None
            exc = _fail(lambda: c.chat_completions_sync(user("slow")))
        else:
            exc = _fail(lambda: c.chat_completions_sync(user("x")))
    finally:
        server.require_key = None
    assert isinstance(exc, LLMError)
    assert KEY not in _everything(exc)


def test_rich_traceback_with_locals_hides_the_key(server):
    rich_traceback = pytest.importorskip("rich.traceback")
    from rich.console import Console

    server.require_key = "other"
    c = OpenAIClient(base_url=server.url, api_key=KEY, model="m", retry_times=0)
    try:
        c.chat_completions_sync(user("x"))
    except LLMError:
        console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(rich_traceback.Traceback.from_exception(*sys.exc_info(), show_locals=True))
        assert KEY not in console.export_text()
    else:
        raise AssertionError("expected a 401")
    finally:
        server.require_key = None


def _registered_adapters():
    from flexllm.providers import make_adapter, names

    out = []
    for name in names():
        for base_url in (None, "http://127.0.0.1:1/v1"):
            try:
                out.append(make_adapter(name, base_url=base_url, api_key=KEY, model="m"))
                break
            except ValueError:
                continue
    return out


@pytest.mark.parametrize("adapter", _registered_adapters(), ids=lambda a: a.name)
@pytest.mark.parametrize("body", [
    {"error": {"message": "x" * 495 + f" key {KEY}", "type": "authentication_error", "status": "UNAUTHENTICATED"}},
    {"type": "error", "error": {"type": "authentication_error", "message": "y" * 497 + KEY}},
    {"detail": "z" * 490 + f"Bearer {KEY}"},
    "w" * 498 + KEY,
])
def test_every_adapter_redacts_before_it_cuts(adapter, body):
    exc = adapter.map_error(401, body, {"x-echo": KEY}, model="m")
    text = _everything(exc)
    for piece in (KEY, KEY[:4], KEY[-4:]):
        assert piece not in text, adapter.name


@pytest.mark.parametrize("adapter", _registered_adapters(), ids=lambda a: a.name)
@pytest.mark.parametrize("line", [
    f'data: {{"error": {{"message": "{"q" * 495} {KEY}", "type": "overloaded_error"}}}}',
    f'data: {{"type": "error", "error": {{"type": "api_error", "message": "{"q" * 498}{KEY}"}}}}',
    f"data: not json {'p' * 190}{KEY}",
])
def test_every_adapter_redacts_stream_errors(adapter, line):
    parse = adapter.stream_parser("m")
    try:
        parse(line)
    except LLMError as exc:
        # (the raw line stays in the parser's frame locals: only the error itself is checked here)
        text = str(exc) + repr(exc) + repr(getattr(exc, "body", None))
        for piece in (KEY, KEY[:4], KEY[-4:]):
            assert piece not in text, adapter.name
