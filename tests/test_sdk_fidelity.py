"""Our mock server, checked by other people's clients: the official openai, anthropic and google-genai SDKs
talk to it for plain, streamed, tool-call and error replies, and its raw JSON validates against their
(strict pydantic) response types. A mock we wrote could share our misunderstanding; theirs cannot."""
import json
import warnings

import httpx
import pytest

from .conftest import user

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pydantic = pytest.importorskip("pydantic")

TOOLS_OPENAI = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOLS_CLAUDE = [{"name": "get_weather", "input_schema": TOOLS_OPENAI[0]["function"]["parameters"]}]
TOOL_Q = '[[mock:tool=get_weather;tool_args={"city": "Paris"}]] weather?'
CLAUDE = "claude-haiku-4-5"


def sse_data(response):
    """The JSON payloads of an SSE response (skipping [DONE])."""
    out = []
    for line in response.text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


# -- OpenAI ---------------------------------------------------------------------------------------------

@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)


def test_openai_sdk_plain_and_raw_validates(server, oai):
    from openai.types.chat import ChatCompletion

    r = oai.chat.completions.create(model="m", messages=user("hi"))
    assert r.choices[0].message.content == "echo: hi" and r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    raw = httpx.post(server.url + "/chat/completions", json={"model": "m", "messages": user("[[mock:think=1]] t")}).json()
    ChatCompletion.model_validate(raw, strict=False)


def test_openai_sdk_stream_with_usage(server, oai):
    from openai.types.chat import ChatCompletionChunk

    chunks = list(oai.chat.completions.create(model="m", messages=user("a b c"), stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b c"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    body = {"model": "m", "messages": user(TOOL_Q), "stream": True, "tools": TOOLS_OPENAI,
            "stream_options": {"include_usage": True}}
    for payload in sse_data(httpx.post(server.url + "/chat/completions", json=body)):
        ChatCompletionChunk.model_validate(payload)


def test_openai_sdk_tool_calls_plain_and_streamed(oai):
    r = oai.chat.completions.create(model="m", messages=user(TOOL_Q), tools=TOOLS_OPENAI)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    args, names = "", []
    for chunk in oai.chat.completions.create(model="m", messages=user(TOOL_Q), tools=TOOLS_OPENAI, stream=True):
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            names += [d.function.name] if d.function and d.function.name else []
            args += d.function.arguments or "" if d.function else ""
    assert names == ["get_weather"] and json.loads(args) == {"city": "Paris"}


@pytest.mark.parametrize("directive, cls", [("status=400", "BadRequestError"), ("status=404", "NotFoundError"),
                                            ("status=429", "RateLimitError"), ("status=503", "InternalServerError"),
                                            ("quota=1", "RateLimitError")])
def test_openai_sdk_errors(oai, directive, cls):
    with pytest.raises(getattr(openai, cls)) as info:
        oai.chat.completions.create(model="m", messages=user(f"[[mock:{directive}]] e"))
    assert info.value.body["message"]  # the SDK found the error object where OpenAI puts it


def test_openai_sdk_authentication_error(server):
    server.require_key = "right-key"
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).chat.completions.create(
                model="m", messages=user("x"))
        assert info.value.body["type"] == "authentication_error"
    finally:
        server.require_key = None


# -- Anthropic --------------------------------------------------------------------------------------------

@pytest.fixture
def ant(server):
    warnings.simplefilter("ignore", DeprecationWarning)
    return anthropic.Anthropic(base_url=server.root_url, api_key="sk-ant-test", max_retries=0)


def test_anthropic_sdk_plain_thinking_and_raw_validates(server, ant):
    m = ant.messages.create(model=CLAUDE, max_tokens=2000, system="be brief", messages=user("hi"),
                            thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in m.content] == ["thinking", "text"] and m.content[1].text == "echo: hi"
    assert m.stop_reason == "end_turn" and m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    raw = httpx.post(server.root_url + "/v1/messages", headers=headers, json={
        "model": CLAUDE, "max_tokens": 10, "messages": user("[[mock:cache_read=5]] r")}).json()
    anthropic.types.Message.model_validate(raw)


def test_anthropic_sdk_stream_accumulates_text_thinking_and_tools(server, ant):
    with ant.messages.stream(model=CLAUDE, max_tokens=2000, messages=user("a b c")) as stream:
        assert "".join(stream.text_stream) == "echo: a b c"
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    with ant.messages.stream(model=CLAUDE, max_tokens=2000, messages=user(TOOL_Q), tools=TOOLS_CLAUDE,
                             thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    assert final.content[0].signature and final.content[1].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    adapter = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {"model": CLAUDE, "max_tokens": 2000, "stream": True, "messages": user(TOOL_Q), "tools": TOOLS_CLAUDE,
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    events = sse_data(httpx.post(server.root_url + "/v1/messages", headers=headers, json=body))
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    for payload in events:
        if payload["type"] != "ping":  # the SDK skips pings; they are not in its event union
            adapter.validate_python(payload)


def test_anthropic_sdk_tool_use_plain(ant):
    m = ant.messages.create(model=CLAUDE, max_tokens=100, messages=user(TOOL_Q), tools=TOOLS_CLAUDE)
    block = [b for b in m.content if b.type == "tool_use"][0]
    assert block.name == "get_weather" and block.input == {"city": "Paris"} and block.id.startswith("toolu_")


@pytest.mark.parametrize("directive, cls", [("status=400", "BadRequestError"), ("status=401", "AuthenticationError"),
                                            ("status=404", "NotFoundError"), ("status=429", "RateLimitError"),
                                            ("status=529", "OverloadedError"), ("status=500", "InternalServerError")])
def test_anthropic_sdk_errors(ant, directive, cls):
    with pytest.raises(getattr(anthropic, cls)) as info:
        ant.messages.create(model=CLAUDE, max_tokens=10, messages=user(f"[[mock:{directive}]] e"))
    anthropic.types.ErrorResponse.model_validate(info.value.body)


def test_anthropic_sdk_sees_an_error_event_inside_a_stream(ant):
    with pytest.raises(anthropic.APIStatusError) as info:
        with ant.messages.stream(model=CLAUDE, max_tokens=100,
                                 messages=user("[[mock:stream_error=overloaded_error]] a b c d e f")) as stream:
            "".join(stream.text_stream)
    assert "overloaded_error" in str(info.value)


def test_anthropic_sdk_request_validation_matches_the_api(server):
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    r = httpx.post(server.root_url + "/v1/messages", headers=headers, json={"model": CLAUDE, "messages": user("x")})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    anthropic.types.ErrorResponse.model_validate(r.json())
    r = httpx.post(server.root_url + "/v1/messages", headers={"x-api-key": "k"},
                   json={"model": CLAUDE, "max_tokens": 5, "messages": user("x")})
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]


# -- Google Gen AI ----------------------------------------------------------------------------------------

@pytest.fixture
def gen(server):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    return genai.Client(api_key="AIza-test", http_options=types.HttpOptions(base_url=server.root_url,
                                                                             api_version="v1beta"))


def test_genai_sdk_plain_stream_tools_and_errors(server, gen):
    from google.genai import errors, types

    r = gen.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert r.text == "echo: hi" and r.usage_metadata.total_token_count > 0
    pieces = [c.text for c in gen.models.generate_content_stream(model="gemini-2.5-flash", contents="a b c")]
    assert "".join(pieces) == "echo: a b c"
    r = gen.models.generate_content(model="gemini-2.5-flash", contents=TOOL_Q)
    assert r.function_calls[0].name == "get_weather" and r.function_calls[0].args == {"city": "Paris"}
    with pytest.raises(errors.ClientError) as info:
        gen.models.generate_content(model="gemini-2.5-flash", contents="[[mock:status=400]] e")
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    with pytest.raises(errors.ServerError):
        gen.models.generate_content(model="gemini-2.5-flash", contents="[[mock:status=503]] e")
    raw = httpx.post(server.root_url + "/v1beta/models/gemini-2.5-flash:generateContent",
                     json={"contents": [{"role": "user", "parts": [{"text": "[[mock:think=1]] x"}]}]}).json()
    types.GenerateContentResponse.model_validate(raw)
