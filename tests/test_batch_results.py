"""Batches that keep everything, redo what was cut off, validate schemas, take per-item params and stop at a budget.

Every test talks HTTP to the mock server; the mock cuts a reply at `max_tokens` words (finish_reason
"length"), answers a requested JSON schema with a valid instance, and takes `[[mock:...]]` directives.
"""
import json
import logging

import pytest
from pydantic import BaseModel

from flexllm import ChatCompletionResult, LLMClient, ResponseCacheConfig
from flexllm.pricing import get_model_pricing

from .conftest import read_records, user

PRICED = "gpt-4o-mini"


class Person(BaseModel):
    name: str
    age: int


def client_for(server, model=PRICED, **kw):
    kw.setdefault("retry_delay", 0.01)
    return LLMClient(model=model, base_url=server.url, **kw)


def asked(server):
    """The user texts the server was asked, in arrival order."""
    return [r.body["messages"][-1]["content"] for r in server.requests]


# -- results carry everything -------------------------------------------------------------------------

def test_items_and_records_carry_finish_reason_tool_calls_usage_and_attempts(server, tmp_path):
    out = tmp_path / "out.jsonl"
    msgs = [user("one two three four"), user('[[mock:tool=lookup;tool_args={"q": 1}]] t'),
            user("[[mock:status=500;times=1]] flaky"), user("[[mock:status=400]] bad")]
    c = client_for(server)
    items = {i.index: i for i in c.iter_chat_completions_batch(msgs, output_file=str(out), max_tokens=3)}
    assert items[0].content == "echo: one two" and items[0].finish_reason == "length" and items[0].attempts == 1
    assert items[1].finish_reason == "tool_calls" and items[1].tool_calls[0]["function"] == \
        {"name": "lookup", "arguments": '{"q": 1}'}
    assert items[2].status == "success" and items[2].attempts == 2 and items[2].finish_reason == "stop"
    assert items[3].status == "error" and items[3].attempts == 1 and items[3].finish_reason is None
    records = {r["index"]: r for r in read_records(out)}
    for r in records.values():
        assert {"finish_reason", "usage", "attempts"} <= set(r)
    assert records[0]["finish_reason"] == "length" and records[0]["usage"]["completion_tokens"] == 3
    assert records[1]["tool_calls"] == items[1].tool_calls
    assert "tool_calls" not in records[0] and records[2]["attempts"] == 2


def test_return_usage_gives_results_with_none_for_failed_items(server):
    c = client_for(server)
    res = c.chat_completions_batch_sync([user("a b c d"), user("[[mock:status=400]] x"), user("ok")],
                                        show_progress=False, return_usage=True, max_tokens=2)
    assert res[1] is None
    assert isinstance(res[0], ChatCompletionResult) and res[0].finish_reason == "length"
    assert res[0].usage["completion_tokens"] == 2 and res[2].content == "echo: ok"
    assert c.chat_completions_batch_sync([user("ok")], show_progress=False) == ["echo: ok"]  # seed call unchanged


def test_old_output_files_without_the_new_fields_still_resume(server, tmp_path):
    out = tmp_path / "old.jsonl"
    with open(out, "w") as f:  # flexllm 0.2 records: no finish_reason, attempts, usage
        f.write(json.dumps({"index": 0, "output": "old answer", "status": "success", "input": user("a")}) + "\n")
        f.write(json.dumps({"index": 1, "output": None, "status": "error", "input": user("b"),
                            "error": "boom"}) + "\n")
    c = client_for(server)
    items = {i.index: i for i in c.iter_chat_completions_batch([user("a"), user("b")], output_file=str(out),
                                                                redo="length")}
    assert items[0].resumed and items[0].content == "old answer" and items[0].attempts == 0
    assert items[1].content == "echo: b"
    assert asked(server) == ["b"]


# -- redo ---------------------------------------------------------------------------------------------

def test_redo_length_asks_only_the_cut_off_items_and_replaces_their_records(server, tmp_path):
    out = str(tmp_path / "out.jsonl")
    msgs = [user("short"), user("a much longer question"), user("x"), user("another long one here")]
    c = client_for(server)
    first = c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, max_tokens=3)
    assert first == ["echo: short", "echo: a much", "echo: x", "echo: another long"]
    server.clear()
    second, summary = c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, max_tokens=50,
                                                    redo="length", return_summary=True)
    assert sorted(asked(server)) == ["a much longer question", "another long one here"]
    assert second == ["echo: short", "echo: a much longer question", "echo: x", "echo: another long one here"]
    assert summary["resumed"] == 2 and summary["success"] == 2
    records = read_records(out)
    assert [r["index"] for r in records] == [0, 1, 2, 3]  # one record per index after compaction
    assert all(r["finish_reason"] == "stop" for r in records)
    server.clear()
    c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, redo="length")
    assert server.requests == []  # nothing is cut off any more


def test_redo_all_and_a_callable(server, tmp_path):
    out = str(tmp_path / "out.jsonl")
    msgs = [user(f"q{i}") for i in range(4)]
    c = client_for(server)
    c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False)
    server.clear()
    c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False,
                                  redo=lambda record: record["output"].endswith(("1", "3")))
    assert sorted(asked(server)) == ["q1", "q3"]
    server.clear()
    c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, redo="all")
    assert sorted(asked(server)) == ["q0", "q1", "q2", "q3"]
    assert [r["index"] for r in read_records(out)] == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs, words", [
    ({"redo": "length"}, "redo= needs an output_file"),
    ({"redo": "sometimes", "output_file": "x.jsonl"}, "redo must be one of"),
    ({"params_list": [{}]}, "params_list has 1 entries"),
    ({"params_list": [{}, "hot"]}, "params_list[1] must be a dict"),
    ({"params_list": [{}, {"response_format": {"type": "nope"}}]}, "params_list[1]: response_format"),
    ({"response_format": {"type": "nope"}}, "response_format is not a valid JSON Schema"),
    ({"max_cost_usd": 1.0, "model": "my-local-model"}, "no price is known for model 'my-local-model'"),
    ({"max_cost_usd": 0}, "max_cost_usd must be a number > 0"),
])
def test_bad_batch_arguments_fail_before_any_request(server, tmp_path, monkeypatch, kwargs, words):
    monkeypatch.chdir(tmp_path)
    c = client_for(server)
    with pytest.raises(ValueError) as info:
        c.chat_completions_batch_sync([user("a"), user("b")], show_progress=False, **kwargs)
    assert words in str(info.value)
    assert server.requests == [] and not (tmp_path / "x.jsonl").exists()


# -- structured output in batches ---------------------------------------------------------------------

def test_schema_batch_reasks_invalid_json_and_stores_parsed(server, tmp_path):
    out = str(tmp_path / "out.jsonl")
    msgs = [user(f"[[mock:invalid_json=1]] p{i}") if i % 2 else user(f"p{i}") for i in range(6)]
    c = client_for(server)
    items = {i.index: i for i in c.iter_chat_completions_batch(msgs, output_file=out, response_format=Person)}
    assert all(i.status == "success" and isinstance(i.parsed, Person) for i in items.values())
    assert [items[i].attempts for i in range(6)] == [1, 2, 1, 2, 1, 2]
    records = {r["index"]: r for r in read_records(out)}
    assert records[3]["parsed"] == {"name": "p3", "age": 1} and records[3]["attempts"] == 2
    server.clear()
    again = c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, response_format=Person,
                                          return_usage=True)
    assert server.requests == [] and again[3].parsed == Person(name="p3", age=1)  # resumed as model instances
    texts = c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, response_format=Person)
    assert Person.model_validate_json(texts[3]) == Person(name="p3", age=1)  # batches return text, as always


def test_valid_json_failing_the_schema_never_lands_as_success(server, tmp_path):
    out = str(tmp_path / "out.jsonl")
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    msgs = [user('[[mock:reply={"age": "old"}]] a'), user("b")]
    c = client_for(server)
    res, summary = c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, return_summary=True,
                                                 response_format=schema, return_usage=True)
    assert res[0] is None and res[1].parsed == {"age": 1}
    assert summary["errors"] == {"ResponseValidationError": 1} and summary["retries"] == 2
    [bad] = [r for r in read_records(out) if r["index"] == 0]
    assert bad["status"] == "error" and bad["attempts"] == 3 and "'old' is not of type 'integer'" in bad["error"]
    one = res[1].usage
    assert bad["usage"]["completion_tokens"] == 3 * 2  # three paid replies of two words each
    assert summary["completion_tokens"] == bad["usage"]["completion_tokens"] + one["completion_tokens"]
    price = get_model_pricing(PRICED)
    paid = (summary["prompt_tokens"] * price["input"] + summary["completion_tokens"] * price["output"])
    assert summary["estimated_cost_usd"] == pytest.approx(paid)


def test_cached_replies_are_validated_too(server, tmp_path):
    cache = ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path / "cache"))
    c = client_for(server, cache=cache)
    assert c.chat_completions_batch_sync([user("c")], show_progress=False, response_format=Person) == \
        ['{"name": "c", "age": 1}']
    server.clear()
    res = c.chat_completions_batch_sync([user("c")], show_progress=False, response_format=Person, return_usage=True)
    assert res[0].parsed == Person(name="c", age=1) and server.requests == []


# -- per-item params ----------------------------------------------------------------------------------

def test_per_item_model_and_temperature_reach_the_server(server, tmp_path):
    out = str(tmp_path / "out.jsonl")
    msgs = [user("same")] * 3
    params = [{"temperature": 0.0}, {"temperature": 0.9, "model": "gpt-4o"}, None]
    cache = ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path / "cache"))
    c = client_for(server, cache=cache)
    c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, params_list=params, temperature=0.5,
                                  max_tokens=9)
    seen = sorted((r.body["model"], r.body["temperature"], r.body["max_tokens"]) for r in server.requests)
    assert seen == [("gpt-4o", 0.9, 9), (PRICED, 0.0, 9), (PRICED, 0.5, 9)]  # the cache told them apart
    records = {r["index"]: r for r in read_records(out)}
    assert records[1]["params"] == {"temperature": 0.9, "model": "gpt-4o"} and "params" not in records[2]
    server.clear()
    c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, params_list=params, temperature=0.5)
    assert server.requests == []  # resumed: the effective params match
    with pytest.raises(ValueError, match="index 1 was written with params_list entry"):
        c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False,
                                      params_list=[params[0], {"temperature": 0.1}, None])
    assert server.requests == []


def test_params_iterable_is_consumed_alongside_a_generator(server):
    c = client_for(server)
    msgs = (user(f"g{i}") for i in range(5))
    params = ({"max_tokens": i + 1} for i in range(5))
    items = list(c.iter_chat_completions_batch(msgs, params_list=params))
    assert sorted(r.body["max_tokens"] for r in server.requests) == [1, 2, 3, 4, 5]
    assert {i.index: i.params for i in items}[4] == {"max_tokens": 5}
    with pytest.raises(ValueError, match="params_list ran out at item 2"):
        list(c.iter_chat_completions_batch((user(f"h{i}") for i in range(4)), params_list=iter([{}, {}])))


def test_per_item_response_format(server):
    c = client_for(server)
    res = c.chat_completions_batch_sync([user("plain"), user("typed")], show_progress=False, return_usage=True,
                                        params_list=[None, {"response_format": Person}])
    assert [r.content for r in res] == ["echo: plain", '{"name": "typed", "age": 1}']
    assert [r.parsed for r in res] == [None, Person(name="typed", age=1)]


# -- budget -------------------------------------------------------------------------------------------

def one_request_cost(server):
    c = client_for(server)
    [r] = c.chat_completions_batch_sync([user("item 000")], show_progress=False, return_usage=True)
    price = get_model_pricing(PRICED)
    server.clear()
    return r.usage["prompt_tokens"] * price["input"] + r.usage["completion_tokens"] * price["output"]


@pytest.mark.parametrize("concurrency", [1, 8, 50])
def test_cost_cap_stops_within_one_request_and_a_higher_cap_resumes(server, tmp_path, concurrency):
    one = one_request_cost(server)
    out = str(tmp_path / "out.jsonl")
    msgs = [user(f"item {i:03d}") for i in range(40)]
    cap = 10.5 * one
    c = client_for(server, concurrency_limit=concurrency)
    res, summary = c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, return_summary=True,
                                                 max_cost_usd=cap)
    assert summary["stopped_reason"] == "budget"
    spent = summary["estimated_cost_usd"]
    assert cap - one - 1e-9 <= spent <= cap + one + 1e-9  # within one request's cost, whatever the concurrency
    assert summary["success"] < 40 and len(server.requests) == summary["success"]
    assert len(read_records(out)) == summary["success"]  # the results so far are on disk
    server.clear()
    res2, summary2 = c.chat_completions_batch_sync(msgs, output_file=out, show_progress=False, return_summary=True,
                                                   max_cost_usd=1.0)
    assert "stopped_reason" not in summary2 and summary2["resumed"] == summary["success"]
    assert len(server.requests) == 40 - summary["success"] and all(r is not None for r in res2)


def test_progress_shows_the_live_cost(server, caplog_flexllm):
    c = client_for(server)
    c.chat_completions_batch_sync([user("a"), user("b")], show_progress=True, max_cost_usd=1.0)
    lines = [r.getMessage() for r in caplog_flexllm.records if "batch progress" in r.getMessage()]
    assert lines and "cost $0.0000" in lines[-1]
    assert logging.getLogger("flexllm").level == logging.DEBUG  # the fixture's level, untouched by the batch
