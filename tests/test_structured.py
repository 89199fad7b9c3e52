"""Structured output over real HTTP: schemas in the provider's native form, replies validated, re-asked, typed."""
from typing import Callable, List

import pytest
from pydantic import BaseModel, ConfigDict

from flexllm import (
    ChatCompletionResult,
    GeminiClient,
    LLMClient,
    ResponseCacheConfig,
    ResponseValidationError,
)
from flexllm.structured import json_schema_of, response_schema

from .conftest import user


class Person(BaseModel):
    name: str
    age: int


class Team(BaseModel):
    title: str
    members: List[Person]


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}, "tag": {"type": "string"}},
          "required": ["n", "tag"], "additionalProperties": False}


def client_for(server, **kw):
    kw.setdefault("retry_delay", 0.01)
    return LLMClient(model="mock-model", base_url=server.url, **kw)


def test_model_class_is_sent_as_json_schema_and_returns_the_instance(server):
    c = client_for(server)
    person = c.chat_completions_sync(user("bob"), response_format=Person)
    assert isinstance(person, Person) and person.name == "bob"
    [req] = server.requests
    fmt = req.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Person"
    assert fmt["json_schema"]["schema"] == Person.model_json_schema()
    assert "validation_retries" not in req.body
    r = c.chat_completions_sync(user("bob"), response_format=Team, return_usage=True)
    assert isinstance(r, ChatCompletionResult) and isinstance(r.parsed, Team)
    assert r.parsed.members[0].name == "bob"  # nested $defs/$ref resolved on both sides


def test_gemini_gets_response_json_schema(server):
    g = GeminiClient(api_key="k", base_url=server.root_url, model="gemini-2.5-flash")
    person = g.chat_completions_sync(user("ann"), response_format=Person)
    assert person == Person(name="ann", age=1)
    config = server.requests[-1].body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == Person.model_json_schema()


@pytest.mark.parametrize("fmt", [SCHEMA, {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA}}])
def test_schema_dicts_bare_or_wrapped_validate_and_keep_returning_text(server, fmt):
    c = client_for(server)
    text = c.chat_completions_sync(user("x"), response_format=fmt)
    assert text == '{"n": 1, "tag": "x"}'
    assert json_schema_of(server.requests[-1].body["response_format"])[1] == SCHEMA
    r = c.chat_completions_sync(user("x"), response_format=fmt, return_usage=True)
    assert r.parsed == {"n": 1, "tag": "x"}


def test_json_object_passes_through_unvalidated(server):
    c = client_for(server)
    assert c.chat_completions_sync(user("plain"), response_format={"type": "json_object"}) == "echo: plain"
    assert server.requests[-1].body["response_format"] == {"type": "json_object"}


def test_invalid_json_once_is_asked_again_and_counted(server):
    c = client_for(server)
    r = c.chat_completions_sync(user("[[mock:invalid_json=1]] bob"), response_format=Person, return_usage=True)
    assert r.parsed == Person(name="bob", age=1)
    assert [q.fault for q in server.requests] == ["invalid_json", None]
    one = c.chat_completions_sync(user("bob"), response_format=Person, return_usage=True).usage
    assert r.usage["prompt_tokens"] == 2 * one["prompt_tokens"]  # both requests were paid for


def test_valid_json_failing_the_schema_never_succeeds(server):
    c = client_for(server)
    with pytest.raises(ResponseValidationError) as info:
        c.chat_completions_sync(user('[[mock:reply={"n": "seven", "tag": "t"}]] q'), response_format=SCHEMA)
    err = info.value
    assert len(server.requests) == 3  # the first ask and validation_retries=2 re-asks
    assert err.attempts == 3
    assert "'seven' is not of type 'integer'" in str(err) and err.error.startswith("'seven'")
    assert '{"n": "seven", "tag": "t"}' in str(err)


def test_the_error_shows_only_the_first_200_characters_of_the_reply(server):
    c = client_for(server)
    long_reply = "x" * 150 + "Y" * 150
    with pytest.raises(ResponseValidationError) as info:
        c.chat_completions_sync(user(f"[[mock:reply={long_reply}]] q"), response_format=Person,
                                validation_retries=0)
    assert len(server.requests) == 1
    assert info.value.reply == long_reply[:200] and "Y" * 51 not in str(info.value)
    assert "not valid JSON" in str(info.value)


def test_invalid_replies_are_never_cached(server, tmp_path):
    cache = ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path))
    with client_for(server, cache=cache) as c:
        with pytest.raises(ResponseValidationError):
            c.chat_completions_sync(user("[[mock:invalid_json=1]] z"), response_format=Person, validation_retries=0)
        assert c.chat_completions_sync(user("[[mock:invalid_json=1]] z"), response_format=Person) == \
            Person(name="z", age=1)  # asked the server again: nothing invalid was cached
        assert len(server.requests) == 2
        assert c.chat_completions_sync(user("[[mock:invalid_json=1]] z"), response_format=Person) == \
            Person(name="z", age=1)
        assert len(server.requests) == 2  # the valid reply was


def test_a_fenced_json_reply_is_accepted(server):
    c = client_for(server)
    reply = '```json\n{"name": "f", "age": 3}\n```'
    assert c.chat_completions_sync(user(f"[[mock:reply={reply}]] q"), response_format=Person) == \
        Person(name="f", age=3)


class NoSchema(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    fn: Callable[[], int]


class NotAModel:
    pass


@pytest.mark.parametrize("fmt, words", [
    ({"type": "objekt"}, "not a valid JSON Schema"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "needs 'json_schema'"),
    (NoSchema, "has no JSON schema"),
    (NotAModel, "not a Pydantic"),
    ("json", "must be a Pydantic model class"),
])
def test_bad_response_format_is_a_value_error_before_any_request(server, fmt, words):
    c = client_for(server)
    with pytest.raises(ValueError, match="response_format") as info:
        c.chat_completions_sync(user("x"), response_format=fmt)
    assert words in str(info.value)
    with pytest.raises(ValueError, match="validation_retries"):
        c.chat_completions_sync(user("x"), response_format=Person, validation_retries=-1)
    assert server.requests == []


def test_streaming_sends_the_wire_form(server):
    c = client_for(server)
    text = "".join(c.chat_completions_stream_sync(user("s"), response_format=Person))
    assert Person.model_validate_json(text) == Person(name="s", age=1)
    assert server.requests[-1].body["response_format"]["type"] == "json_schema"


def test_mock_tool_calls_and_finish_length(server):
    c = client_for(server)
    r = c.chat_completions_sync(user('[[mock:tool=get_weather,get_time;tool_args={"city": "Paris"}]] q'),
                                return_usage=True)
    assert r.finish_reason == "tool_calls"
    assert [t["function"]["name"] for t in r.tool_calls] == ["get_weather", "get_time"]
    assert r.tool_calls[0]["function"]["arguments"] == '{"city": "Paris"}'
    assert c.chat_completions_sync(user("[[mock:finish=length]] q"), return_usage=True).finish_reason == "length"
    g = GeminiClient(api_key="k", base_url=server.root_url, model="gemini-2.5-flash")
    r = g.chat_completions_sync(user('[[mock:tool=lookup;tool_args={"id": 3}]] q'), return_usage=True)
    assert r.tool_calls[0]["function"]["name"] == "lookup"
    assert g.chat_completions_sync(user("[[mock:finish=MAX_TOKENS]] q"), return_usage=True).finish_reason == "length"


def test_schemas_are_normalised_once():
    assert response_schema(Person) is response_schema(Person)
    assert response_schema(dict(SCHEMA)) is response_schema(dict(SCHEMA))
    assert response_schema({"type": "json_object"}) is None


def test_a_pool_returns_instances_fresh_and_from_the_cache(server, tmp_path):
    from flexllm import LLMClientPool

    cache = ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path))
    pool = LLMClientPool(endpoints=[{"base_url": server.url, "model": "m1"}, {"base_url": server.url, "model": "m1"}],
                         cache=cache, retry_delay=0.01)
    try:
        assert pool.chat_completions_sync(user("[[mock:invalid_json=1]] pat"), response_format=Person) == \
            Person(name="pat", age=1)
        assert pool.chat_completions_sync(user("[[mock:invalid_json=1]] pat"), response_format=Person) == \
            Person(name="pat", age=1)
        assert len(server.requests) == 2  # the first ask, its re-ask; then the cache
    finally:
        pool.close()


def test_invalid_json_as_a_flag_means_once_or_times(server):
    c = client_for(server)
    assert c.chat_completions_sync(user("[[mock:invalid_json=true]] a"), response_format=Person) == Person(name="a", age=1)
    assert [q.fault for q in server.requests] == ["invalid_json", None]
    server.clear()
    with pytest.raises(ResponseValidationError):
        c.chat_completions_sync(user("[[mock:invalid_json=yes;times=3]] b"), response_format=Person)
    assert [q.fault for q in server.requests] == ["invalid_json"] * 3
    r = c.chat_completions_sync(user("[[mock:tool_calls=f]] c"), return_usage=True)
    assert r.tool_calls[0]["function"]["name"] == "f"
