"""Each provider reads only its own key variables (plus FLEXLLM_API_KEY); a key never travels to another
provider's host (issue 11 item 31)."""
import argparse
import hashlib
import json

import pytest

from flexllm import LLMClient, cli

from .conftest import user
from .test_cli import run

OPENAI_KEY = "sk-openai-0123456789abcdef"
GEMINI_KEY = "AIzaGeminiKey0123456789abcdef"
KEY_VARS = ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "FLEXLLM_API_KEY",
            "OPENAI_BASE_URL", "FLEXLLM_BASE_URL")


def _hash(value):
    return "<redacted sha256:%s>" % hashlib.sha256(value.encode()).hexdigest()[:8]


@pytest.fixture
def env(monkeypatch):
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _sent_keys(server):
    return [v for r in server.requests for k, v in r.headers.items() if k in ("authorization", "x-goog-api-key",
                                                                                 "x-api-key")]


def test_openai_key_never_reaches_gemini(server, env):
    env.setenv("OPENAI_API_KEY", OPENAI_KEY)
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        LLMClient(model="gemini-2.5-flash", base_url=server.root_url, provider="gemini")
    env.setenv("GEMINI_API_KEY", GEMINI_KEY)
    c = LLMClient(model="gemini-2.5-flash", base_url=server.root_url, provider="gemini", retry_times=0)
    assert c.chat_completions_sync(user("hi")) == "echo: hi"
    assert _sent_keys(server) == [_hash(GEMINI_KEY)]


def test_gemini_key_never_reaches_an_openai_compatible_server(server, env):
    env.setenv("GEMINI_API_KEY", GEMINI_KEY)
    env.setenv("GOOGLE_API_KEY", GEMINI_KEY)
    env.setenv("OPENAI_API_KEY", OPENAI_KEY)  # not sent either: the mock is not OpenAI's host
    c = LLMClient(model="gemini-2.5-flash", base_url=server.url, provider="openai", retry_times=0)
    c.chat_completions_sync(user("hi"))
    assert _sent_keys(server) == []


@pytest.mark.parametrize("provider, base_url, var, key", [
    ("gemini", "https://api.openai.com/v1", "GEMINI_API_KEY", GEMINI_KEY),
    ("gemini", "https://api.anthropic.com", "GOOGLE_API_KEY", GEMINI_KEY),
    ("openai", "https://generativelanguage.googleapis.com/v1beta/openai", "OPENAI_API_KEY", OPENAI_KEY),
    ("anthropic", "https://api.openai.com/v1", "ANTHROPIC_API_KEY", "sk-ant-0123456789abcdef"),
])
def test_an_env_key_is_never_sent_to_another_providers_host(env, provider, base_url, var, key):
    env.setenv(var, key)
    try:
        c = LLMClient(model="some-model", base_url=base_url, provider=provider)
    except ValueError:
        return  # refusing to build the client is fine too
    spec = c.adapter.build_request(user("x"), "some-model", {})
    assert key not in json.dumps(spec.headers)


def test_generic_key_is_read_by_every_provider(server, env):
    env.setenv("FLEXLLM_API_KEY", "flexllm-generic-key-123")
    c = LLMClient(model="gemini-2.5-flash", base_url=server.root_url, provider="gemini", retry_times=0)
    c.chat_completions_sync(user("hi"))
    assert _sent_keys(server) == [_hash("flexllm-generic-key-123")]


def _args(**kw):
    base = dict(model=None, base_url=None, api_key=None, provider="auto", retries=0, timeout=5.0)
    base.update(kw)
    return argparse.Namespace(**base)


def test_cli_openai_base_url_is_for_openai_only(env):
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    env.setenv("GEMINI_API_KEY", GEMINI_KEY)
    c = cli._client(_args(model="gemini-2.5-flash"))
    assert c.provider == "gemini" and "127.0.0.1:9" not in c.adapter.base_url
    c = cli._client(_args(model="gemini-2.5-flash", provider="gemini"))
    assert c.provider == "gemini" and "127.0.0.1:9" not in c.adapter.base_url
    c = cli._client(_args(model="gpt-4o-mini"))
    assert c.provider == "openai" and c.adapter.base_url == "http://127.0.0.1:9/v1"


def test_cli_batch_with_openai_key_and_gemini_model_sends_no_openai_key(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(json.dumps({"prompt": "hi"}) + "\n")
    r = run("batch", str(inp), "-o", str(out), "--model", "gemini-2.5-flash", "--provider", "gemini",
            "--base-url", server.root_url, "--no-progress", env={"OPENAI_API_KEY": OPENAI_KEY})
    assert r.returncode == 2, r.stderr
    assert "GEMINI_API_KEY" in r.stderr and OPENAI_KEY not in r.stderr + r.stdout
    assert server.requests == []
    r = run("batch", str(inp), "-o", str(out), "--model", "gemini-2.5-flash", "--provider", "gemini",
            "--base-url", server.root_url, "--no-progress",
            env={"OPENAI_API_KEY": OPENAI_KEY, "GEMINI_API_KEY": GEMINI_KEY})
    assert r.returncode == 0, r.stderr
    assert _sent_keys(server) == [_hash(GEMINI_KEY)]
