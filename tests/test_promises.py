"""README promises of the library, attacked from outside through the public API against the mock server."""
import pytest

from flexllm import LLMClient, LLMError


def test_lone_surrogate_in_a_single_call_is_named_not_blamed_on_headers(server):
    # half of a "\ud83d\ude00" escape pair read from a JSON file: bad input, named, never sent, never retried
    client = LLMClient(model="m", base_url=server.url, api_key="sk-ok")
    for call in (lambda: client.chat_completions_sync([{"role": "user", "content": "a\ud83d"}]),
                 lambda: list(client.chat_completions_stream_sync([{"role": "user", "content": "a\ud83d"}]))):
        with pytest.raises(ValueError, match="surrogate") as info:
            call()
        assert not isinstance(info.value, LLMError) and "header" not in str(info.value)
    assert len(server.requests) == 0
    client.close()


def test_mock_gemini_block_directive_blocks_streams_too(server):
    # README (mock): `block=` (Gemini) — a user testing a Django view's stream against our mock must see the block
    from flexllm import ContentBlockedError, GeminiClient

    client = GeminiClient(api_key="k", model="gemini-2.5-flash", base_url=server.url.replace("/v1", "/v1beta"))
    for events in (False, True):
        with pytest.raises(ContentBlockedError) as info:
            list(client.chat_completions_stream_sync([{"role": "user", "content": "[[mock:block=SAFETY]] x"}],
                                                     events=events))
        assert info.value.reason == "SAFETY"
    client.close()


def test_every_flexllm_name_the_readme_calls_is_importable():
    # README: "get_model_pricing(model, batch=True)", "BATCH_DISCOUNT (0.5)": a user writes `from flexllm import …`
    import flexllm
    from flexllm import BATCH_DISCOUNT, get_model_pricing

    assert BATCH_DISCOUNT == 0.5 and "get_model_pricing" in flexllm.__all__
    assert get_model_pricing("gpt-4o", batch=True)["input"] == get_model_pricing("gpt-4o")["input"] * 0.5


@pytest.mark.parametrize("finish", ["LANGUAGE", "OTHER", "content_filter"])
def test_gemini_empty_reply_ended_for_another_reason_is_never_an_empty_success(server, finish):
    # README: "A reply is never an empty success standing for something else" — streamed or not
    from flexllm import ContentBlockedError, GeminiClient

    client = GeminiClient(api_key="k", model="gemini-2.5-flash", base_url=server.url.replace("/v1", "/v1beta"))
    text = f"[[mock:finish={finish}]] x"
    with pytest.raises(ContentBlockedError) as info:
        client.chat_completions_sync([{"role": "user", "content": text}])
    assert info.value.reason == finish
    with pytest.raises(ContentBlockedError):
        list(client.chat_completions_stream_sync([{"role": "user", "content": text}]))
    client.close()


def test_gemini_malformed_function_call_is_retried_not_an_empty_success(server):
    from flexllm import GeminiClient, ResponseParseError

    client = GeminiClient(api_key="k", model="gemini-2.5-flash", base_url=server.url.replace("/v1", "/v1beta"),
                          retry_times=1, retry_delay=0.01)
    with pytest.raises(ResponseParseError, match="MALFORMED_FUNCTION_CALL"):
        client.chat_completions_sync([{"role": "user", "content": "[[mock:finish=MALFORMED_FUNCTION_CALL]] x"}])
    assert len(server.requests) == 2
    client.close()


def _serve_json(reply):
    """A one-route HTTP server on 127.0.0.1 answering every POST with `reply` as JSON: (server, base_url)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            out = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"


def test_reply_content_list_of_non_parts_is_a_parse_error_not_an_empty_success():
    # a 2xx of the wrong type raises ResponseParseError; a list of bare strings used to come back as ""
    from flexllm import ResponseParseError

    srv, url = _serve_json({"choices": [{"message": {"role": "assistant", "content": ["a", "b"]},
                                         "finish_reason": "stop"}]})
    try:
        client = LLMClient(model="m", base_url=url, retry_times=0)
        with pytest.raises(ResponseParseError, match="content"):
            client.chat_completions_sync([{"role": "user", "content": "x"}])
        client.close()
    finally:
        srv.shutdown()
        srv.server_close()
    srv, url = _serve_json({"choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                                         "finish_reason": "stop"}]})
    try:  # content parts still work
        client = LLMClient(model="m", base_url=url, retry_times=0)
        assert client.chat_completions_sync([{"role": "user", "content": "x"}]) == "ok"
        client.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_code_fenced_inside_a_list_item_or_with_crlf_is_found_and_dedented():
    # realistic model output: numbered steps with the fence indented under the item, or CRLF line ends
    from flexllm import extract_code_snippets, parse_to_code, parse_to_obj

    nested = "1. Install:\n    ```bash\n    pip install flexllm\n    ```\n2. Run:\n   ```python\n   if x:\n       y = 2\n   ```"
    assert extract_code_snippets(nested) == [{"language": "bash", "code": "pip install flexllm"},
                                             {"language": "python", "code": "if x:\n    y = 2"}]
    assert parse_to_code(nested) == "pip install flexllm"
    assert parse_to_obj("Result:\n    ```json\n    {\"a\": [1, 2]}\n    ```") == {"a": [1, 2]}
    assert extract_code_snippets("```python\r\nx = 1\r\n```\r\n") == [{"language": "python", "code": "x = 1"}]


def test_a_per_call_api_key_never_goes_into_the_request_body_or_the_output_file(server, tmp_path):
    # secrets never reach an output file: `api_key=` on a call used to be sent as a JSON body field, and a batch
    # params entry carrying it was written into the record
    client = LLMClient(model="m", base_url=server.url)
    with pytest.raises(ValueError, match="client settings") as info:
        client.chat_completions_sync([{"role": "user", "content": "x"}], api_key="sk-PERCALL-SECRET")
    assert "sk-PERCALL-SECRET" not in str(info.value)
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="client settings") as info:
        client.chat_completions_batch_sync([[{"role": "user", "content": "x"}]], output_file=str(out),
                                           params_list=[{"api_key": "sk-PERCALL-SECRET"}])
    assert "sk-PERCALL-SECRET" not in str(info.value) and len(server.requests) == 0
    assert not out.exists() or "sk-PERCALL-SECRET" not in out.read_text()
    client.close()


def test_typed_errors_cross_process_boundaries(server):
    # multiprocessing / ProcessPoolExecutor / Ray tasks pickle the error back to the parent: every
    # APIStatusError failed to unpickle (TypeError: missing keyword-only argument 'status_code')
    import concurrent.futures
    import multiprocessing

    from flexllm import AuthenticationError, QuotaExceededError

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        for text, cls, status in (("[[mock:status=401]] x", AuthenticationError, 401),
                                  ("[[mock:quota=1]] x", QuotaExceededError, 429)):
            with pytest.raises(cls) as info:
                pool.submit(_call_in_child, server.url, text).result(timeout=120)
            assert info.value.status_code == status and info.value.provider == "openai"
            assert str(info.value).startswith("[openai/m] HTTP")


def _call_in_child(url, text):
    return LLMClient(model="m", base_url=url, retry_times=0).chat_completions_sync([{"role": "user", "content": text}])


def test_a_batch_whose_key_is_refused_stops_early_instead_of_failing_every_item(tmp_path):
    from flexllm import LLMClient
    from flexllm.mock import MockServer

    with MockServer(require_key="right-key") as srv:
        client = LLMClient(model="m", base_url=srv.url, api_key="wrong-key", concurrency_limit=1)
        results, summary = client.chat_completions_batch_sync(
            [[{"role": "user", "content": f"q{i}"}] for i in range(20)], output_file=str(tmp_path / "out.jsonl"),
            show_progress=False, return_summary=True)
        assert summary["stopped_reason"].startswith("authentication failed")
        assert len(srv.requests) < 20  # stopped, not twenty 401s
        assert results == [None] * 20


def test_events_on_a_single_call_is_refused_not_sent_in_the_body(server):
    import pytest

    from flexllm import LLMClient

    client = LLMClient(model="m", base_url=server.url)
    with pytest.raises(ValueError, match="events= belongs to chat_completions_stream"):
        client.chat_completions_sync([{"role": "user", "content": "hi"}], events=True)
    assert server.requests == []


def test_a_base_url_with_a_stray_newline_works_like_a_key_with_one(server):
    """A CRLF .env gives FLEXLLM_BASE_URL a trailing '\\r' (a key read that way is stripped): plain calls worked,
    streams raised httpx.InvalidURL (not even an LLMError) and `flexllm ask` printed a traceback."""
    from flexllm import ClaudeClient

    from .conftest import user
    from .test_cli import run

    for client in (LLMClient(model="m", base_url=server.url + "\r\n"),
                   ClaudeClient(model="claude-haiku-4-5", base_url=" " + server.root_url + "\r", api_key="sk-ant-k")):
        assert client.chat_completions_sync(user("a")) == "echo: a"
        assert "".join(client.chat_completions_stream_sync(user("b"))) == "echo: b"
    done = run("ask", "hi", env={"FLEXLLM_BASE_URL": server.url + "\r", "FLEXLLM_MODEL": "m"})
    assert done.returncode == 0 and done.stdout.strip() == "echo: hi" and "Traceback" not in done.stderr, done.stderr


def test_a_base_url_with_a_query_string_is_refused_not_sent_to_a_wrong_path(server):
    """`base_url=".../v1?api-version=2024-06-01"` (Azure habits): paths were appended after the query, so every
    request went to `/v1?api-version=…/chat/completions` and came back a 404 that did not say why. Refused at
    construction, naming base_url but not the query's value (it may be a key); nothing is sent."""
    from flexllm import ClaudeClient, LLMClientPool

    from .test_cli import run

    bad = server.url + "?api-key=SECRET-in-query"
    for make in (lambda: LLMClient(model="m", base_url=bad),
                 lambda: ClaudeClient(model="claude-haiku-4-5", base_url=server.root_url + "#frag", api_key="k"),
                 lambda: LLMClientPool(endpoints=[{"base_url": bad, "model": "m"}])):
        with pytest.raises(ValueError, match="base_url") as info:
            make()
        assert "SECRET" not in str(info.value) and "query string or fragment" in str(info.value)
    done = run("ask", "hi", "--model", "m", "--base-url", bad)
    assert done.returncode == 2 and "base_url" in done.stderr and "SECRET" not in done.stderr, done.stderr
    assert server.requests == []
