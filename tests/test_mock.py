"""The built-in mock server itself, over raw httpx: endpoints, directives, recording, control, CLI, load."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from flexllm.mock import MockServer

from .conftest import wait_for


def chat(server, text, **body):
    return httpx.post(server.url + "/chat/completions",
                      json={"model": "m", "messages": [{"role": "user", "content": text}], **body}, timeout=10)


def sse_events(response):
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            out.append(line[6:])
    return out


def test_openai_reply_is_deterministic_echo_with_usage(server):
    r = chat(server, "hello world")
    data = r.json()
    assert r.status_code == 200 and data["choices"][0]["message"]["content"] == "echo: hello world"
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    assert chat(server, "hello world").json()["choices"] == data["choices"]
    assert len(chat(server, "x", n=3).json()["choices"]) == 3


def test_openai_stream_with_usage_and_done(server):
    with httpx.stream("POST", server.url + "/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "a b c"}], "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "echo: a b c"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_truncated_stream_has_no_done(server):
    with httpx.stream("POST", server.url + "/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "[[mock:truncate=1]] a b c d e f"}],
            "stream": True}) as r:
        events = sse_events(r)
    assert events and "[DONE]" not in events


@pytest.mark.parametrize("directive, status, header", [
    ("status=429;retry_after=3", 429, ("retry-after", "3")),
    ("status=429;retry_after_ms=250", 429, ("retry-after-ms", "250")),
    ("status=503;should_retry=false", 503, ("x-should-retry", "false")),
    ("status=400;message=bad things", 400, None),
    ("quota=1", 429, None),
])
def test_error_directives(server, directive, status, header):
    r = chat(server, f"[[mock:{directive}]] x")
    assert r.status_code == status
    assert "error" in r.json()
    if header:
        assert r.headers[header[0]] == header[1]
    if "message=" in directive:
        assert r.json()["error"]["message"] == "bad things"
    if "quota" in directive:
        assert r.json()["error"]["code"] == "insufficient_quota"


def test_times_limits_a_fault_to_the_first_attempts(server):
    statuses = [chat(server, "[[mock:status=500;times=2]] t").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert [r.attempt for r in server.requests] == [1, 2, 3]


def test_drop_and_malformed(server):
    with pytest.raises(httpx.TransportError):
        chat(server, "[[mock:drop=1]] d")
    r = chat(server, "[[mock:malformed=1]] m")
    with pytest.raises(ValueError):
        json.loads(r.content)


@pytest.mark.parametrize("mode, field", [("field", "reasoning_content"), ("reasoning", "reasoning")])
def test_think_fields(server, mode, field):
    msg = chat(server, f"[[mock:think={mode}]] q").json()["choices"][0]["message"]
    assert msg[field] == "thinking about: q" and msg["content"] == "echo: q"


def test_think_tags(server):
    assert chat(server, "[[mock:think=tags]] q").json()["choices"][0]["message"]["content"] == \
        "<think>thinking about: q</think>echo: q"
    assert chat(server, "[[mock:think=closing]] q").json()["choices"][0]["message"]["content"] == \
        "thinking about: q</think>echo: q"


def test_rules_apply_to_matching_requests(server):
    server.add_rule(contains="boom", status=502, times=1)
    assert chat(server, "boom").status_code == 502
    assert chat(server, "boom").status_code == 200
    assert chat(server, "fine").status_code == 200


def test_error_rate_and_latency_settings(server):
    server.configure(error_rate=1.0)
    assert chat(server, "x").status_code == 503
    server.configure(error_rate=0.0, latency=0.05)
    r = chat(server, "y")
    assert r.status_code == 200 and server.requests[-1].fault is None


def test_recording_redacts_secrets(server):
    httpx.post(server.url + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "k"}]},
               headers={"Authorization": "Bearer sk-secret-1"})
    rec = server.requests[-1]
    digest = hashlib.sha256(b"Bearer sk-secret-1").hexdigest()[:8]
    assert rec.headers["authorization"] == f"<redacted sha256:{digest}>"
    assert "sk-secret-1" not in json.dumps(rec.to_dict())
    assert rec.body["messages"][0]["content"] == "k" and rec.status == 200


def test_require_key():
    with MockServer(require_key="right") as s:
        assert chat(s, "x").status_code == 401
        ok = httpx.post(s.url + "/chat/completions", headers={"Authorization": "Bearer right"},
                        json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert ok.status_code == 200


def test_gemini_endpoints(server):
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    r = httpx.post(server.root_url + "/v1beta/models/gemini-2.5-flash:generateContent", json=body)
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert parts == [{"text": "thinking about: hi", "thought": True}, {"text": "echo: hi"}]
    assert r.json()["usageMetadata"]["thoughtsTokenCount"] > 0
    with httpx.stream("POST", server.root_url + "/v1/projects/p/locations/l/publishers/google/models/g:"
                      "streamGenerateContent?alt=sse", json={"contents": body["contents"]}) as s:
        chunks = [json.loads(e) for e in sse_events(s)]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"]) == "echo: hi"
    err = httpx.post(server.root_url + "/v1beta/models/g:generateContent", json={"contents": [
        {"role": "user", "parts": [{"text": "[[mock:status=429;retry_delay=2]] x"}]}]}).json()["error"]
    assert err["status"] == "RESOURCE_EXHAUSTED" and err["details"][0]["retryDelay"] == "2s"


def test_control_endpoints(server):
    chat(server, "a")
    listed = httpx.get(server.root_url + "/_mock/requests").json()
    assert len(listed) == 1 and listed[0]["body"]["messages"][0]["content"] == "a"
    assert httpx.get(server.root_url + "/_mock/health").json() == {"ok": True}
    httpx.post(server.root_url + "/_mock/reset")
    assert server.requests == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel receive stamps (SO_TIMESTAMP) are Linux's")
def test_arrival_is_when_the_request_reached_the_server_not_when_a_busy_handler_read_it(server):
    # rate tests count starts on this clock: a handler that is busy (or starved of CPU on a loaded machine)
    # when a request arrives must not move the request later, bunching it with the next one
    def post(text):
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(post("[[mock:latency=2]] held"))
        wait_for(lambda: server.requests, what="the first request")
        s.sendall(post("queued"))  # same connection: its handler reads it only after answering the first
        wait_for(lambda: len(server.requests) == 2, what="the second request")
    first, second = server.requests
    assert second.body["messages"][0]["content"] == "queued"
    assert second.time < first.time + 2, "stamped when read (after the 2 s hold), not when it arrived"


def test_two_hundred_concurrent_slow_connections():
    with MockServer(latency=1.5) as s:  # long enough that 200 threads all arrive on a loaded 2-core machine
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        with httpx.Client(limits=limits, timeout=30) as client, ThreadPoolExecutor(200) as pool:
            def one(i):
                return client.post(s.url + "/chat/completions",
                                   json={"model": "m", "messages": [{"role": "user", "content": f"c{i}"}]}).json()

            replies = list(pool.map(one, range(200)))
        assert [r["choices"][0]["message"]["content"] for r in replies] == [f"echo: c{i}" for i in range(200)]
        assert s.max_in_flight > 100  # they really were served at the same time


def test_command_line_start_request_and_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "flexllm.mock", "--port", "0", "--latency", "0"],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        line = proc.stdout.readline()
        assert line.startswith("flexllm mock server listening on http://127.0.0.1:")
        url = line.strip().rsplit(" ", 1)[-1]
        r = httpx.post(url + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "p"}]})
        assert r.json()["choices"][0]["message"]["content"] == "echo: p"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
