"""The provider registry: detection, key isolation between providers, foreign parameters, extension."""
import hashlib

import pytest

from flexllm import GeminiClient, LLMClient, LLMClientPool, OpenAIClient
from flexllm.cli import build_parser
from flexllm.mock import _routes as mock_routes
from flexllm.providers import Provider, detect, names, registry
from flexllm.providers.openai import OpenAIAdapter

from .conftest import user

KEY_ENVS = ("FLEXLLM_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in KEY_ENVS:
        monkeypatch.delenv(name, raising=False)


def hashed(key):
    return "<redacted sha256:%s>" % hashlib.sha256(key.encode()).hexdigest()[:8]


@pytest.mark.parametrize("url, model, key, expected", [
    ("https://generativelanguage.googleapis.com", "x", None, "gemini"),
    ("https://us-central1-aiplatform.googleapis.com", None, None, "gemini"),
    ("https://api.openai.com/v1", "gemini-2.5-flash", None, "openai"),  # the URL wins over the model
    ("http://localhost:8000/v1", "gemini-2.5-flash", None, "openai"),  # a proxy speaking OpenAI's dialect
    ("https://evilgoogleapis.com", None, None, "openai"),
    (None, "gemini-2.5-flash", None, "gemini"),
    (None, "models/gemini-2.5-pro", None, "gemini"),
    (None, "some-model", "AIzaSyXXXX", "gemini"),
    (None, "some-model", None, "openai"),
])
def test_detection_reads_the_registry(url, model, key, expected):
    assert detect(url, model, key) == expected


def test_unknown_provider_names_the_known_ones():
    with pytest.raises(ValueError, match="gemini") as info:
        LLMClient(model="m", base_url="http://x/v1", provider="nope")
    assert "openai" in str(info.value) and "nope" in str(info.value)


def test_cli_choices_are_the_registry(capsys):
    for name in ("auto",) + names():
        assert build_parser().parse_args(["ask", "--provider", name, "q"]).provider == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ask", "--provider", "nope", "q"])
    assert "nope" in capsys.readouterr().err


def test_a_registered_provider_is_used_everywhere(server, monkeypatch):
    """Registering one adapter is all it takes: LLMClient, auto-detection, the CLI and the pool see it."""
    class ToyAdapter(OpenAIAdapter):
        name = "toy"

    def make(*, base_url, api_key, model=None, thinking=None, default_headers=None):
        return ToyAdapter(base_url=server.url, api_key=api_key, default_headers=default_headers)

    monkeypatch.setitem(registry._REGISTRY, "toy", Provider("toy", make, hosts=("toy.test",), env_keys=("TOY_KEY",)))
    monkeypatch.setenv("TOY_KEY", "toy-secret")
    c = LLMClient(model="m", base_url="https://api.toy.test/v1")
    assert c.provider == "toy" and c.chat_completions_sync(user("t")) == "echo: t"
    assert server.requests[-1].headers["authorization"] == hashed("Bearer toy-secret")
    assert build_parser().parse_args(["ask", "--provider", "toy", "q"]).provider == "toy"
    pool = LLMClientPool(endpoints=[{"base_url": "https://toy.test/v1", "model": "m"}])
    assert pool.clients[0].provider == "toy"


def test_each_provider_reads_only_its_own_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-gemini-secret")
    # an OpenAI-compatible server that is not OpenAI never receives OPENAI_API_KEY, nor Gemini's key
    OpenAIClient(base_url=server.url, model="m").chat_completions_sync(user("a"))
    assert "authorization" not in server.requests[-1].headers
    LLMClient(model="m", base_url=server.url).chat_completions_sync(user("b"))
    assert "authorization" not in server.requests[-1].headers
    # Gemini reads its own
    GeminiClient(base_url=server.root_url, model="gemini-2.5-flash").chat_completions_sync(user("c"))
    assert server.requests[-1].headers["x-goog-api-key"] == hashed("AIza-gemini-secret")
    # the generic variable serves every provider, after the provider's own
    monkeypatch.setenv("FLEXLLM_API_KEY", "generic-secret")
    OpenAIClient(base_url=server.url, model="m").chat_completions_sync(user("d"))
    assert server.requests[-1].headers["authorization"] == hashed("Bearer generic-secret")
    GeminiClient(base_url=server.root_url, model="gemini-2.5-flash").chat_completions_sync(user("e"))
    assert server.requests[-1].headers["x-goog-api-key"] == hashed("AIza-gemini-secret")


def test_openai_key_goes_to_openai_hosts_only(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret\n")
    a = OpenAIClient(base_url="https://api.openai.com/v1", model="gpt-4o").adapter
    spec = a.build_request(user("x"), "gpt-4o", {})
    assert spec.headers["Authorization"] == "Bearer sk-openai-secret"
    b = OpenAIClient(base_url="https://api.deepseek.com/v1", model="m").adapter
    assert "Authorization" not in b.build_request(user("x"), "m", {}).headers


def test_another_providers_parameters_are_rejected_by_name(server):
    c = OpenAIClient(base_url=server.url, model="m")
    with pytest.raises(ValueError, match="safety_settings"):
        c.chat_completions_sync(user("x"), safety_settings=[])
    g = GeminiClient(api_key="AIza-k", base_url=server.root_url, model="gemini-2.5-flash")
    with pytest.raises(ValueError, match="logit_bias"):
        g.chat_completions_sync(user("x"), logit_bias={})
    assert server.requests == []


def test_mock_dispatches_through_a_table_of_dialect_modules(server):
    import httpx

    assert {d.__name__.rsplit("._", 1)[1] for d in mock_routes.DIALECTS} >= {"openai", "gemini"}
    assert mock_routes.dialect_for("/v1/chat/completions").__name__.endswith("_openai")
    assert mock_routes.dialect_for("/v1beta/models/gemini-2.5-flash:generateContent").__name__.endswith("_gemini")
    assert httpx.post(server.root_url + "/nowhere", json={}).status_code == 404
