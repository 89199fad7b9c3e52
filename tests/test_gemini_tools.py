"""Gemini: OpenAI-shaped tools, tool_choice, tool results and URLs built from odd model names / base URLs."""
import json

import pytest

from flexllm import GeminiClient
from flexllm.providers.gemini import GeminiAdapter

from .conftest import user

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "strict": True,
                                         "parameters": {"type": "object", "additionalProperties": False,
                                                        "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


def adapter(**kw):
    return GeminiAdapter(api_key="test-key-123", **kw)


def build(messages, **params):
    return adapter().build_request(messages, "gemini-2.5-flash", params)


def test_function_declarations_take_the_json_schema_and_drop_openai_only_keys():
    body = build(user("x"), tools=[TOOL]).json
    [decl] = body["tools"][0]["functionDeclarations"]
    assert decl == {"name": "get_weather", "description": "Weather in a city",
                    "parametersJsonSchema": TOOL["function"]["parameters"]}


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice_maps_to_function_calling_config(choice, config):
    body = build(user("x"), tools=[TOOL], tool_choice=choice).json
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_bad_tool_choice_is_a_clear_error():
    with pytest.raises(ValueError, match="tool_choice"):
        build(user("x"), tools=[TOOL], tool_choice="sometimes")


def test_tool_results_name_the_function_and_parallel_results_share_one_turn():
    messages = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
    ]
    contents = build(messages).json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert [p["functionCall"]["name"] for p in contents[1]["parts"]] == ["get_weather", "get_time"]
    responses = [p["functionResponse"] for p in contents[2]["parts"]]
    assert responses == [{"name": "get_weather", "response": {"temp": 21}},
                         {"name": "get_time", "response": {"result": "12:00"}}]


def test_invalid_tool_call_arguments_are_a_clear_error():
    messages = [user("x")[0], {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]
    with pytest.raises(ValueError, match="arguments"):
        build(messages)


@pytest.mark.parametrize("base_url, model, url", [
    (None, "gemini-2.5-flash", "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"),
    (None, "models/gemini-2.5-flash", "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"),
    (None, "tunedModels/my-tuned-1", "https://generativelanguage.googleapis.com/v1beta/tunedModels/my-tuned-1:generateContent"),
    ("https://proxy.example/v1beta/", "gemini-2.5-flash", "https://proxy.example/v1beta/models/gemini-2.5-flash:generateContent"),
    ("https://proxy.example/v1beta/models", "gemini-2.5-flash", "https://proxy.example/v1beta/models/gemini-2.5-flash:generateContent"),
    ("https://proxy.example/gemini", "gemini-2.5-flash", "https://proxy.example/gemini/v1beta/models/gemini-2.5-flash:generateContent"),
    ("https://proxy.example/v1", "gemini-2.5-flash", "https://proxy.example/v1/models/gemini-2.5-flash:generateContent"),
    (None, "gemini-2.5-flash?alt=x#y", "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash%3Falt%3Dx%23y:generateContent"),
    (None, "../../evil", "https://generativelanguage.googleapis.com/v1beta/models/..%2F..%2Fevil:generateContent"),
])
def test_urls_for_odd_model_names_and_base_urls(base_url, model, url):
    spec = adapter(base_url=base_url).build_request(user("x"), model, {})
    assert spec.url == url


def test_tool_round_trip_over_http(server):
    c = GeminiClient(api_key="test-key-123", base_url=server.root_url, model="gemini-2.5-flash", retry_times=0)
    r = c.chat_completions_sync(user('[[mock:tool=get_weather;tool_args={"city": "Paris"}]] weather?'),
                                tools=[TOOL], tool_choice="required", return_usage=True)
    assert r.tool_calls and r.finish_reason == "tool_calls"
    follow = [{"role": "user", "content": "weather?"},
              {"role": "assistant", "content": None, "tool_calls": r.tool_calls},
              {"role": "tool", "tool_call_id": r.tool_calls[0]["id"], "content": json.dumps({"temp": 21})}]
    assert c.chat_completions_sync(follow, tools=[TOOL]).startswith("echo:")
    sent = server.requests[-1].body
    assert sent["contents"][-1]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_a_tool_result_whose_id_matches_no_earlier_call_is_refused_before_any_request(server):
    """Gemini needs the function's name: an unmatched tool_call_id used to be sent as the name."""
    c = GeminiClient(api_key="test-key-123", base_url=server.root_url, model="gemini-2.5-flash", retry_times=0)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    orphan = [{"role": "user", "content": "weather?"},
              {"role": "assistant", "content": None, "tool_calls": [call]},
              {"role": "tool", "tool_call_id": "call_typo", "content": "21C"}]
    with pytest.raises(ValueError, match="call_typo"):
        c.chat_completions_sync(orphan, tools=[TOOL])
    assert len(server.requests) == 0
    matched = orphan[:2] + [{"role": "tool", "tool_call_id": "call_1", "content": "21C"}]
    results, summary = c.chat_completions_batch_sync([orphan, matched], tools=[TOOL], show_progress=False,
                                                     return_summary=True)
    assert results[0] is None and results[1].startswith("echo:")  # that item fails alone
    assert summary["failed"] == 1 and summary["errors"] == {"ValueError": 1}
    assert len(server.requests) == 1
    assert server.requests[0].body["contents"][-1]["parts"][0]["functionResponse"]["name"] == "get_weather"
