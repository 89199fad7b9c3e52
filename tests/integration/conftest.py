"""A real third-party OpenAI-compatible server: the LiteLLM proxy, offline, on a free 127.0.0.1 port.

The proxy serves two kinds of models: its own fake-completion models (`mock_response`, no upstream at all)
and models relayed to our mock server as the upstream, so that upstream errors, retry hints and cut
streams reach flexllm in the proxy's own shapes. Nothing leaves 127.0.0.1: every URL the proxy would
fetch at start is switched to its bundled copy, and any HTTP(S) proxy-routed call would go to a dead
local port.
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from flexllm.mock import MockServer

MASTER_KEY = "sk-litellm-master-7c1d"  # the proxy's key (what flexllm sends)
UPSTREAM_KEY = "sk-upstream-93ab"      # what the proxy sends to our mock upstream
START_BOUND = 240.0                    # the proxy imports a lot: ~25 s on a busy 2-core machine

TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}

OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_MODEL_COST_MAP_URL": "http://127.0.0.1:9/",
    "LITELLM_BLOG_POSTS_URL": "http://127.0.0.1:9/",
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": "http://127.0.0.1:9/",
    "LITELLM_AUTOROUTER_PRESETS_URL": "http://127.0.0.1:9/",
    "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}


def _config(upstream_url: str) -> dict:
    def fake(name, **params):
        return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_key": "unused", **params}}

    def relayed(name, key):
        return {"model_name": name, "litellm_params": {"model": "openai/upstream-model", "api_key": key,
                                                       "api_base": upstream_url}}

    return {
        "model_list": [
            fake("fake-plain", mock_response="Hello from LiteLLM"),
            fake("fake-tools", mock_response="", mock_tool_calls=[TOOL_CALL]),
            fake("fake-429", mock_response="litellm.RateLimitError"),
            fake("fake-500", mock_response="litellm.InternalServerError"),
            relayed("upstream", UPSTREAM_KEY),
            relayed("upstream-badkey", "sk-wrong-upstream-key"),
        ],
        # the proxy must not retry or cool models down itself: we count our own attempts
        "litellm_settings": {"num_retries": 0, "request_timeout": 60},
        "router_settings": {"num_retries": 0, "disable_cooldowns": True},
        "general_settings": {"master_key": MASTER_KEY},
    }


def _answers(proc, port, deadline, proxy) -> bool:
    """Wait (bounded) until the proxy answers; False if it exited because its port was taken meanwhile."""
    while True:
        if proc.poll() is not None:
            with open(proxy.log_path, errors="replace") as f:
                if "address already in use" in f.read().lower():
                    return False
            pytest.fail(f"the LiteLLM proxy exited with {proc.returncode} at start:\n{proxy.log_tail()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"the LiteLLM proxy did not answer within {START_BOUND:.0f} s:\n{proxy.log_tail()}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """A running LiteLLM proxy and the mock server behind its relayed models."""

    def __init__(self, url: str, upstream: MockServer, log_path: str) -> None:
        self.url = url
        self.upstream = upstream
        self.log_path = log_path

    def log_tail(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]


@pytest.fixture(scope="session")
def litellm_proxy(tmp_path_factory):
    """Start the proxy once per session (bounded wait until it answers); stop it afterwards."""
    if importlib.util.find_spec("litellm") is None:
        pytest.skip("the LiteLLM proxy is not installed (pip install -e '.[proxy-tests]'; needs Python >= 3.10)")
    workdir = tmp_path_factory.mktemp("litellm")
    upstream = MockServer(require_key=UPSTREAM_KEY).start()
    config = workdir / "config.json"  # YAML is a superset of JSON
    config.write_text(json.dumps(_config(upstream.url)))
    log_path = str(workdir / "proxy.log")
    env = dict(os.environ, **OFFLINE_ENV)
    deadline = time.monotonic() + START_BOUND
    proc = None
    try:
        for _ in range(3):  # the free port may be taken by another process before the proxy binds it (~20 s on)
            port = _free_port()
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-c", "import litellm; litellm.run_server()", "--config",
                                         str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers",
                                         "1"], cwd=str(workdir), env=env, stdout=log, stderr=subprocess.STDOUT)
            proxy = Proxy(f"http://127.0.0.1:{port}/v1", upstream, log_path)
            if _answers(proc, port, deadline, proxy):
                break
        else:
            pytest.fail(f"the LiteLLM proxy found no free port to listen on:\n{proxy.log_tail()}")
        yield proxy
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        upstream.stop()


@pytest.fixture
def proxy(litellm_proxy):
    """The session's proxy with its upstream's recordings and rules cleared for this test."""
    litellm_proxy.upstream.clear()
    yield litellm_proxy
    litellm_proxy.upstream.clear()
