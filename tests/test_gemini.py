"""Gemini: the pure adapter's mappings, and every client method over real HTTP against flexllm.mock."""
import datetime
import logging
import os
import sys
import threading

import pytest

from flexllm import (
    ChatCompletionResult,
    ContentBlockedError,
    GeminiClient,
    LLMClient,
    QuotaExceededError,
    RateLimitError,
    ResponseCacheConfig,
    ServerError,
    StreamTruncatedError,
)
from flexllm.errors import BadRequestError
from flexllm.providers.gemini import GeminiAdapter, detect_gemini, gemini_thinking_config
from flexllm.providers.vertex_auth import VertexTokenProvider

from .conftest import user

KEY = "AIza-test-SECRET-key-0001"


def adapter(**kw):
    kw.setdefault("api_key", KEY)
    return GeminiAdapter(**kw)


# -- pure mapping ---------------------------------------------------------------------------------------

def test_messages_map_to_contents_and_system_instruction():
    img = "data:image/png;base64,iVBORw0KGgo="
    spec = adapter().build_request([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image_url", "image_url": {"url": img}},
                                     {"type": "image_url", "image_url": {"url": "gs://b/cat.jpg"}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and?"}], "gemini-2.5-flash", {})
    body = spec.json
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    parts = body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert parts[2] == {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/cat.jpg"}}
    assert spec.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert spec.headers["x-goog-api-key"] == KEY and KEY not in spec.url


def test_params_map_to_generation_config():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    cfg = adapter().build_request(user("x"), "gemini-2.5-flash", {
        "max_tokens": 10, "stop": "END", "n": 2, "temperature": 0.1, "top_p": 0.9, "seed": 7, "top_k": 3,
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}).json["generationConfig"]
    assert cfg == {"maxOutputTokens": 10, "stopSequences": ["END"], "candidateCount": 2, "temperature": 0.1,
                   "topP": 0.9, "seed": 7, "topK": 3, "responseMimeType": "application/json",
                   "responseJsonSchema": schema}


def test_unknown_kwarg_is_a_clear_error_and_pass_through_works():
    with pytest.raises(ValueError, match="logit_bias"):
        adapter().build_request(user("x"), "gemini-2.5-flash", {"logit_bias": {}})
    body = adapter().build_request(user("x"), "gemini-2.5-flash", {
        "generationConfig": {"responseModalities": ["TEXT"]}, "safety_settings": [{"category": "c"}],
        "extra_body": {"labels": {"team": "a"}}, "maxOutputTokens": 5}).json
    assert body["generationConfig"] == {"maxOutputTokens": 5, "responseModalities": ["TEXT"]}
    assert body["safetySettings"] == [{"category": "c"}] and body["labels"] == {"team": "a"}


@pytest.mark.parametrize("thinking, model, expected", [
    (None, "gemini-2.5-flash", None),
    (False, "gemini-2.5-flash", {"thinkingBudget": 0}),
    (False, "gemini-2.5-pro", {"thinkingBudget": 128}),
    (False, "gemini-3-pro-preview", {"thinkingLevel": "low"}),
    (True, "gemini-2.5-flash", {"includeThoughts": True}),
    ("minimal", "gemini-3-flash", {"thinkingLevel": "minimal"}),
    ("high", "gemini-3-pro", {"thinkingLevel": "high"}),
])
def test_thinking_levels(thinking, model, expected):
    assert gemini_thinking_config(thinking, model) == expected


def test_invalid_thinking_rejected():
    with pytest.raises(ValueError):
        adapter(thinking="max")


@pytest.mark.parametrize("url, model, expected", [
    ("https://generativelanguage.googleapis.com", None, True),
    ("https://us-central1-aiplatform.googleapis.com", "x", True),
    (None, "gemini-2.5-flash", True),
    (None, "models/gemini-2.0-flash", True),
    ("http://localhost:8000/v1", "gemini-2.5-flash", False),
    (None, "gpt-4o", False),
])
def test_detect_gemini(url, model, expected):
    assert detect_gemini(url, model) is expected


def test_reply_parts_usage_and_blocks():
    a = adapter()
    r = a.parse_response({"candidates": [{"content": {"parts": [{"text": "hm", "thought": True}, {"text": "A"},
                                                                {"functionCall": {"name": "f", "args": {"x": 1}}}]},
                                          "finishReason": "MAX_TOKENS"}],
                          "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2,
                                            "thoughtsTokenCount": 4, "totalTokenCount": 9}}, model="g")
    assert (r.content, r.reasoning_content, r.finish_reason) == ("A", "hm", "length")
    assert r.usage == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9, "thoughts_tokens": 4}
    assert r.tool_calls[0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    with pytest.raises(ContentBlockedError) as info:
        a.parse_response({"promptFeedback": {"blockReason": "SAFETY"}}, model="g")
    assert info.value.reason == "SAFETY"
    with pytest.raises(ContentBlockedError):
        a.parse_response({"candidates": [{"content": {"parts": []}, "finishReason": "RECITATION"}]}, model="g")


def test_error_mapping_retry_info_and_daily_quota():
    a = adapter()
    err = a.map_error(429, {"error": {"code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}}, {}, model="g")
    assert type(err) is RateLimitError and err.retry_after == 17.0 and "slow" in str(err)
    quota = a.map_error(429, {"error": {"code": 429, "message": "q", "details": [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}, {}, model="g")
    assert type(quota) is QuotaExceededError
    assert type(a.map_error(400, {"error": {"message": f"API key {KEY} invalid"}}, {}, model="g")) is BadRequestError
    assert KEY not in str(a.map_error(400, {"error": {"message": f"API key {KEY} invalid"}}, {}, model="g"))


def test_vertex_url_and_bearer_token():
    spec = GeminiAdapter(project_id="proj", location="europe-west4", use_vertex_ai=True,
                         token_provider=lambda: "tok").build_request(user("x"), "gemini-2.5-pro", {}, stream=True)
    assert spec.url == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/proj/locations/europe-west4/"
                        "publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    assert spec.headers["Authorization"] == "Bearer tok"


class FakeCredentials:
    def __init__(self):
        self.token = None
        self.expiry = None
        self.calls = 0
        self.lock = threading.Lock()

    def refresh(self, request):
        with self.lock:
            self.calls += 1
            self.token = f"t{self.calls}"
            self.expiry = datetime.datetime.fromtimestamp(now[0] + 3600, datetime.timezone.utc).replace(tzinfo=None)


now = [1_000_000.0]


def test_token_refreshed_before_expiry_not_every_call_and_once_under_threads():
    creds = FakeCredentials()
    provider = VertexTokenProvider(credentials=creds, clock=lambda: now[0], request_factory=object)
    threads = [threading.Thread(target=provider) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert creds.calls == 1 and provider() == "t1"
    now[0] += 3000  # 10 minutes before expiry: still fresh
    assert provider() == "t1"
    now[0] += 400  # inside the 5-minute margin: refreshed before it expires
    assert provider() == "t2" and creds.calls == 2


# -- over HTTP ------------------------------------------------------------------------------------------

def gclient(server, **kw):
    kw.setdefault("retry_delay", 0.01)
    return GeminiClient(api_key=KEY, model="gemini-2.5-flash", base_url=server.root_url, **kw)


def test_every_method_over_http(server, tmp_path):
    import asyncio

    c = gclient(server)
    assert c.provider == "gemini"
    assert c.chat_completions_sync(user("hi")) == "echo: hi"
    r = c.chat_completions_sync(user("u"), return_usage=True)
    assert isinstance(r, ChatCompletionResult) and r.usage["total_tokens"] > 0
    assert "".join(c.chat_completions_stream_sync(user("a b c"))) == "echo: a b c"
    out = c.chat_completions_batch_sync([user(f"g{i}") for i in range(5)], output_file=str(tmp_path / "o.jsonl"),
                                        show_progress=False)
    assert out == [f"echo: g{i}" for i in range(5)]

    async def main():
        return await c.chat_completions(user("as")), [p async for p in c.chat_completions_stream(user("x y"))]

    text, pieces = asyncio.run(main())
    assert text == "echo: as" and "".join(pieces) == "echo: x y"
    paths = {r.path for r in server.requests}
    assert "/v1beta/models/gemini-2.5-flash:generateContent" in paths
    assert "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse" in paths
    assert all(KEY not in r.path for r in server.requests)
    assert all(r.headers["x-goog-api-key"].startswith("<redacted") for r in server.requests)


def test_llmclient_picks_gemini_by_provider(server):
    c = LLMClient(model="gemini-2.5-flash", base_url=server.root_url, api_key=KEY, provider="gemini")
    assert c.provider == "gemini" and c.chat_completions_sync(user("p")) == "echo: p"


def test_request_mapping_seen_by_server(server):
    gclient(server).chat_completions_sync([{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}],
                                          max_tokens=5, temperature=0.2, thinking=False)
    body = server.requests[-1].body
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert body["generationConfig"] == {"maxOutputTokens": 5, "temperature": 0.2,
                                        "thinkingConfig": {"thinkingBudget": 0}}


def test_thought_parts_go_to_reasoning_content(server):
    r = gclient(server, thinking=True).chat_completions_sync(user("why"), return_usage=True)
    assert r.content == "echo: why" and r.reasoning_content == "thinking about: why"
    assert server.requests[-1].body["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}
    assert "thinking" not in "".join(gclient(server, thinking=True).chat_completions_stream_sync(user("s")))


def test_429_with_retry_info_is_honoured(server):
    assert gclient(server).chat_completions_sync(user("[[mock:status=429;retry_delay=0.5;times=1]] r")) == "echo: r"
    first, second = server.requests
    assert second.time - first.time >= 0.5


def test_daily_quota_is_not_retried(server):
    with pytest.raises(QuotaExceededError):
        gclient(server).chat_completions_sync(user("[[mock:quota=1]] q"))
    assert len(server.requests) == 1


def test_block_reason_is_typed(server):
    with pytest.raises(ContentBlockedError, match="SAFETY"):
        gclient(server).chat_completions_sync(user("[[mock:block=SAFETY]] b"))
    assert len(server.requests) == 1


def test_truncated_stream_is_an_error(server):
    with pytest.raises(StreamTruncatedError):
        list(gclient(server, retry_times=0).chat_completions_stream_sync(user("[[mock:truncate=1]] a b c d")))


def test_cache_works_for_gemini(server, tmp_path):
    c = gclient(server, cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    assert c.chat_completions_sync(user("c")) == c.chat_completions_sync(user("c"))
    assert len(server.requests) == 1


def test_key_never_in_url_exception_or_log(server, caplog):
    caplog.set_level(logging.DEBUG)
    c = gclient(server, retry_times=1)
    with pytest.raises(Exception) as info:
        c.chat_completions_sync(user(f"[[mock:status=400;message=bad key {KEY}]] k"))
    assert KEY not in str(info.value)
    with pytest.raises(ServerError):
        c.chat_completions_sync(user("[[mock:status=503]] k"))
    assert KEY not in caplog.text and KEY not in repr(c)
    assert all(KEY not in r.path for r in server.requests)


def test_missing_key_is_clear(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key"):
        GeminiClient()
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    assert GeminiClient().provider == "gemini"


def test_vertex_over_http_uses_bearer_token_and_vertex_path(server):
    c = GeminiClient(project_id="proj", location="us-central1", use_vertex_ai=True, access_token="ya29.token",
                     base_url=server.root_url, model="gemini-2.5-pro")
    assert c.chat_completions_sync(user("v")) == "echo: v"
    rec = server.requests[-1]
    assert rec.path == "/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent"
    assert rec.headers["authorization"].startswith("<redacted") and "x-goog-api-key" not in rec.headers


_VERTEX_PROBE = """
import traceback
from flexllm import GeminiClient
try:
    GeminiClient(project_id="proj", use_vertex_ai=True)
except ValueError as exc:
    print("ValueError", repr(exc), str(exc))
    traceback.print_exc()
"""


@pytest.mark.parametrize("file_text", [None, '{"type": "service_account", "private_key": "SECRET-KEY-xyz"}'])
def test_vertex_without_credentials_is_a_clear_value_error_at_construction(tmp_path, file_text):
    """No Application Default Credentials (or a broken key file): flexllm's own ValueError saying what to
    configure, not google-auth's DefaultCredentialsError; nothing of the key file in it. A subprocess keeps
    google-auth away from this machine's gcloud config and the GCE metadata server."""
    import subprocess
    import sys

    pytest.importorskip("google.auth")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCLOUD", "CLOUDSDK"))}
    env.update(NO_GCE_CHECK="true", CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), PYTHONPATH=os.getcwd())
    if file_text is not None:
        (tmp_path / "key.json").write_text(file_text)
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(tmp_path / "key.json")
    res = subprocess.run([sys.executable, "-c", _VERTEX_PROBE], capture_output=True, text=True, env=env, timeout=60)
    out = res.stdout + res.stderr
    assert res.stdout.startswith("ValueError"), out  # like a missing api_key: a configuration error
    assert "access_token=" in res.stdout and "GOOGLE_APPLICATION_CREDENTIALS" in res.stdout
    assert "DefaultCredentialsError" not in res.stderr  # not chained: the traceback is flexllm's alone
    assert "SECRET-KEY" not in out


def test_vertex_without_its_extra_is_a_value_error_naming_the_extra(monkeypatch):
    """Like every missing extra (socks, http2, structured): a ValueError at construction naming what to install."""
    monkeypatch.setitem(sys.modules, "google.auth", None)  # `import google.auth` raises ImportError
    with pytest.raises(ValueError, match=r"flexllm\[vertex\]"):
        GeminiClient(project_id="proj", use_vertex_ai=True)


def test_vertex_credentials_that_cannot_refresh_are_flexllm_errors_before_any_request(server):
    """A revoked service-account key (google-auth RefreshError) is an AuthenticationError, an unreachable
    token endpoint (TransportError) an APIConnectionError — flexllm's types, so callers and pools can tell
    them apart; nothing reaches the model endpoint."""
    gae = pytest.importorskip("google.auth.exceptions")
    from flexllm import APIConnectionError, AuthenticationError

    class Creds:
        token, expiry = None, None

        def __init__(self, error):
            self.error = error

        def refresh(self, request):
            raise self.error

    for error, kind in ((gae.RefreshError("invalid_grant: Invalid JWT Signature.", {"error": "invalid_grant"}),
                         AuthenticationError),
                        (gae.TransportError("connection refused"), APIConnectionError)):
        c = GeminiClient(project_id="proj", use_vertex_ai=True, credentials=Creds(error), base_url=server.root_url,
                         retry_times=0)
        with pytest.raises(kind, match="Vertex AI"):
            c.chat_completions_sync(user("x"))
        with pytest.raises(kind, match="Vertex AI"):
            c.chat_completions_batch_sync([user("a"), user("b")], show_progress=False)
    assert len(server.requests) == 0
