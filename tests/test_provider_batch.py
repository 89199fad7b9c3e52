"""Provider batch mode (half-price batches) over HTTP against the mock's OpenAI and Gemini batch endpoints."""
import json
from collections import Counter

import pytest

from flexllm import LLMClient, OutputFileLockedError, ResponseCacheConfig
from flexllm._batch_ledger import format_ranges, parse_ranges
from flexllm._checkpoint import Checkpoint
from flexllm.pricing import BATCH_DISCOUNT, get_model_pricing
from flexllm.providers.openai_batch import OpenAIBatchAPI

from .conftest import read_records, wait_for

FAST = 86400 * 20  # mock seconds per real second: a 1 h batch takes ~2 ms, the 24 h window ~50 ms
TERMINAL = ("completed", "expired", "failed", "cancelled")


def prompts(n, fmt="q{}"):
    return [[{"role": "user", "content": fmt.format(i)}] for i in range(n)]


def openai_client(server, **kw):
    kw.setdefault("model", "gpt-4o-mini")
    return LLMClient(base_url=server.url, retry_times=0, **kw)


def gemini_client(server, **kw):
    return LLMClient(model="gemini-2.5-flash", base_url=server.root_url, api_key="gk-test", provider="gemini",
                     retry_times=0, **kw)


def claude_client(server, **kw):
    return LLMClient(model="claude-haiku-4-5", base_url=server.root_url, api_key="sk-ant-test", provider="anthropic",
                     retry_times=0, **kw)


CLIENTS = {"openai": openai_client, "gemini": gemini_client, "anthropic": claude_client}


def ledger(path):
    return [json.loads(line) for line in open(str(path) + ".batches")]


def settle(server):
    wait_for(lambda: all(b["status"] in TERMINAL for b in server.batches), what="mock batches to finish")


def by_index(path):
    out = {}
    for r in read_records(path):
        if r["status"] in ("success", "cached") or r["index"] not in out:
            out[r["index"]] = r
    return out


def test_ranges_round_trip():
    assert format_ranges([5, 0, 1, 2, 7, 8, 10]) == "0-2,5,7-8,10"
    assert list(parse_ranges("0-2,5,7-8,10")) == [0, 1, 2, 5, 7, 8, 10]
    assert format_ranges([]) == "" and list(parse_ranges("")) == []


def test_batch_price_is_half_the_live_price():
    live, batch = get_model_pricing("gpt-4o-mini"), get_model_pricing("gpt-4o-mini", batch=True)
    assert BATCH_DISCOUNT == 0.5
    assert batch == {"input": live["input"] / 2, "output": live["output"] / 2}


def test_submit_exits_then_next_run_collects_into_output_and_cache(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    out = tmp_path / "out.jsonl"
    cache = ResponseCacheConfig(enabled=True, cache_dir=str(tmp_path / "cache"))
    items = prompts(5)
    meta = [{"row": i} for i in range(5)]
    with openai_client(server, cache=cache, api_key="sk-LEDGER-SECRET-1") as client:
        first = client.submit_batch(items, output_file=str(out), metadata_list=meta, temperature=0.2)
        assert first["submitted"] == 5 and first["in_flight"] == 5 and first["batches_submitted"] == 1
        assert first["earliest_expected_finish"] and not first["complete"]
        assert not out.exists() or read_records(out) == []
        upload = [r for r in server.requests if r.path == "/v1/files"][0]
        assert upload.headers["content-type"].startswith("multipart/form-data")
        settle(server)
        second = client.submit_batch(items, output_file=str(out), metadata_list=meta, temperature=0.2)
    assert second["collected"] == 5 and second["submitted"] == 0 and second["complete"]
    records = read_records(out)
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    r3 = records[3]
    assert r3["status"] == "success" and r3["output"] == "echo: q3" and r3["via"] == "provider-batch"
    assert r3["metadata"] == {"row": 3} and r3["input"] == items[3] and r3["usage"]["total_tokens"] > 0
    assert r3["batch_id"] == server.batches[0]["id"]
    events = [e["event"] for e in ledger(out)]
    assert events[:2] == ["intent", "created"] and events[-1] == "collected"
    assert "sk-LEDGER-SECRET-1" not in (out.read_text() + open(str(out) + ".batches").read())
    # the per-request body is the live one (one mapping): the temperature reached the batch file
    assert server.batch_store.files and all(b"\"temperature\":0.2" in f["content"]
                                            for f in server.batch_store.files.values() if f["purpose"] == "batch")
    # the cache was filled: a live call for the same request is answered without the server
    server.clear()
    with openai_client(server, cache=cache) as client:
        assert client.chat_completions_sync(items[2], temperature=0.2) == "echo: q2"
    assert server.requests == []
    # a third run finds nothing to do
    with openai_client(server, cache=cache) as client:
        third = client.submit_batch(items, output_file=str(out), metadata_list=meta, temperature=0.2)
    assert third["complete"] and third["submitted"] == 0 and server.batches == []


def test_wait_polls_until_collected_and_cost_is_half_of_live(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    items = prompts(12, "question number {} please")
    with openai_client(server, model="gpt-4") as client:
        summary = client.submit_batch(items, output_file=str(tmp_path / "b.jsonl"), wait=True, poll_interval=0.02)
        _, live = client.chat_completions_batch_sync(items, output_file=str(tmp_path / "l.jsonl"),
                                                     show_progress=False, return_summary=True)
    assert summary["complete"] and summary["collected"] == 12
    assert summary["prompt_tokens"] == live["prompt_tokens"] and live["estimated_cost_usd"] > 0
    assert summary["estimated_cost_usd"] == pytest.approx(live["estimated_cost_usd"] / 2, rel=1e-3)
    price = get_model_pricing("gpt-4")
    exact = live["prompt_tokens"] * price["input"] + live["completion_tokens"] * price["output"]
    assert summary["estimated_cost_usd"] == pytest.approx(exact / 2)
    assert summary["job_cost_usd"] == pytest.approx(summary["job_live_cost_usd"] / 2)


def test_split_to_the_provider_caps(server, tmp_path, monkeypatch):
    server.configure(batch_time_scale=FAST)
    monkeypatch.setattr(OpenAIBatchAPI, "MAX_REQUESTS", 4)
    with openai_client(server) as client:
        summary = client.submit_batch(prompts(10), output_file=str(tmp_path / "o.jsonl"))
    assert summary["batches_submitted"] == 3
    assert sorted(len(b["custom_ids"]) for b in server.batches) == [2, 4, 4]
    server.clear()
    server.configure(batch_time_scale=FAST)
    monkeypatch.setattr(OpenAIBatchAPI, "MAX_REQUESTS", 50_000)
    monkeypatch.setattr(OpenAIBatchAPI, "MAX_BYTES", 600)  # each line is ~170 bytes
    with openai_client(server) as client:
        client.submit_batch(prompts(10), output_file=str(tmp_path / "p.jsonl"))
    sizes = [len(b["custom_ids"]) for b in server.batches]
    assert sum(sizes) == 10 and max(sizes) <= 3 and len(sizes) >= 4
    assert {b["model"] for b in server.batches} == {"gpt-4o-mini"}


def _submissions(server):
    """custom_id → how many mock batches it was submitted in."""
    return Counter(cid for b in server.batches for cid in b["custom_ids"])


@pytest.mark.parametrize("fault, returned", [("expire", 2), ("invalid", 4)])
def test_expired_or_failed_batch_items_are_resubmitted_never_lost(server, tmp_path, fault, returned):
    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="q1", batch_fault=fault, times=1)
    out = str(tmp_path / "o.jsonl")
    items = prompts(4)
    with openai_client(server) as client:
        client.submit_batch(items, output_file=out)
        settle(server)
        assert server.batches[0]["status"] == ("expired" if fault == "expire" else "failed")
        second = client.submit_batch(items, output_file=out)
        assert second["returned"] == returned and second["collected"] == 4 - returned
        assert second["submitted"] == returned  # the returned items go out again at once
        settle(server)
        third = client.submit_batch(items, output_file=out)
    assert third["complete"]
    recs = by_index(out)
    assert {i: r["output"] for i, r in recs.items()} == {i: f"echo: q{i}" for i in range(4)}
    assert all(r["status"] == "success" for r in read_records(out))  # nothing recorded for the returned ones
    counts = _submissions(server)
    resubmitted = {cid for cid, n in counts.items() if n == 2}
    assert len(resubmitted) == returned and max(counts.values()) == 2
    statuses = [e.get("status") for e in ledger(out) if e["event"] == "collected"]
    assert statuses[0] == ("expired" if fault == "expire" else "failed")
    assert not any(e.get("failed") for e in ledger(out))  # returned items never count against max_batch_attempts


def test_partially_failed_batch_records_per_item_errors_then_retries_them(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="q2", batch_error=400, times=1)
    out = str(tmp_path / "o.jsonl")
    with openai_client(server) as client:
        client.submit_batch(prompts(4), output_file=out)
        settle(server)
        second = client.submit_batch(prompts(4), output_file=out)
        assert second["failed"] == 1 and second["collected"] == 3 and second["errors"] == {"BadRequestError": 1}
        err = [r for r in read_records(out) if r["status"] == "error"][0]
        assert err["index"] == 2 and err["via"] == "provider-batch" and "injected batch item error" in err["error"]
        assert second["submitted"] == 1  # the failed item goes out again, like a live rerun retries errors
        settle(server)
        third = client.submit_batch(prompts(4), output_file=out)
    assert third["complete"]
    assert [r["index"] for r in read_records(out)] == [0, 1, 2, 3]  # compacted: one record per index
    assert by_index(out)[2]["output"] == "echo: q2"


@pytest.mark.parametrize("make", ["openai", "anthropic"])
def test_an_item_the_provider_always_rejects_is_given_up_after_max_batch_attempts(server, tmp_path, make):
    # without a cap a waiting run (or a cron loop "until exit 0") resubmitted it for ever
    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="q2", batch_error=400)  # every time
    out = str(tmp_path / "o.jsonl")
    with CLIENTS[make](server) as client:
        runs = [client.submit_batch(prompts(4), output_file=out, wait=True, poll_interval=0.02) for _ in range(3)]
        assert [r["gave_up"] for r in runs] == [0, 0, 1]  # each run submits an item at most once
        first = runs[-1]
        assert first["in_flight"] == 0 and not first["complete"]
        assert first["done"] == 3 and by_index(out)[2]["status"] == "error"
        sent = _submissions(server)
        assert [n for cid, n in sent.items() if cid.startswith("2-")] == [3]  # the default cap
        again = client.submit_batch(prompts(4), output_file=out)  # a cron rerun: nothing goes out again
        assert again["submitted"] == 0 and again["gave_up"] == 1
        more = client.submit_batch(prompts(4), output_file=out, wait=True, poll_interval=0.02, max_batch_attempts=4)
        assert more["submitted"] == 1 and more["gave_up"] == 1
        fixed = prompts(4)
        fixed[2] = [{"role": "user", "content": "the second question, reworded"}]  # an edited input counts afresh
        done = client.submit_batch(fixed, output_file=out, wait=True, poll_interval=0.02)
    assert done["complete"] and done["gave_up"] == 0
    failed = [e for e in ledger(out) if e["event"] == "collected" and e.get("failed")]
    assert len(failed) == 4 and all(e["failed"][0].startswith("2-") for e in failed)
    with pytest.raises(ValueError, match="max_batch_attempts"):
        CLIENTS[make](server).submit_batch(prompts(1), output_file=out, max_batch_attempts=0)


def die_after_create(monkeypatch, api_class, make_client, out, n):
    """One run whose process 'dies' right after the provider created the batch, before the `created` line."""
    real_create = api_class.create

    def create_then_die(self, *a, **kw):
        real_create(self, *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(api_class, "create", create_then_die)
    with make_client() as client, pytest.raises(KeyboardInterrupt):
        client.submit_batch(prompts(n), output_file=out)
    monkeypatch.setattr(api_class, "create", real_create)
    assert [e["event"] for e in ledger(out)] == ["intent"]


@pytest.mark.parametrize("provider", ["openai", "gemini", "anthropic"])
def test_killed_after_create_before_ledger_line_is_resolved_by_tag(server, tmp_path, monkeypatch, provider):
    from flexllm._batch_api import batch_api_for

    make = CLIENTS[provider]
    with make(server) as probe:
        api_class = type(batch_api_for(probe._batch_runner().adapter, None))
    server.configure(batch_time_scale=FAST)
    out = str(tmp_path / "o.jsonl")
    die_after_create(monkeypatch, api_class, lambda: make(server), out, 3)
    settle(server)
    with make(server) as client:
        summary = client.submit_batch(prompts(3), output_file=out)
    assert summary["complete"] and summary["submitted"] == 0
    assert len(server.batches) == 1  # found by its tag (metadata / displayName / time and size), never twice
    created = [e for e in ledger(out) if e["event"] == "created"][0]
    assert created["batch_id"] == server.batches[0]["id"] and created.get("resolved") is True


def test_killed_before_create_reached_the_provider_resubmits(server, tmp_path, monkeypatch):
    server.configure(batch_time_scale=FAST)
    out = str(tmp_path / "o.jsonl")
    real_create = OpenAIBatchAPI.create

    def die(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(OpenAIBatchAPI, "create", die)
    with openai_client(server) as client, pytest.raises(KeyboardInterrupt):
        client.submit_batch(prompts(3), output_file=out)
    monkeypatch.setattr(OpenAIBatchAPI, "create", real_create)
    with openai_client(server) as client:
        summary = client.submit_batch(prompts(3), output_file=out, wait=True, poll_interval=0.02)
    assert summary["complete"] and summary["submitted"] == 3 and len(server.batches) == 1
    assert [e["event"] for e in ledger(out)][:2] == ["intent", "abandoned"]


def test_killed_during_download_loses_nothing_and_writes_nothing_twice(server, tmp_path, monkeypatch):
    server.configure(batch_time_scale=FAST)
    out = str(tmp_path / "o.jsonl")
    real_results = OpenAIBatchAPI.results

    def two_then_die(self, *a, **kw):
        for n, item in enumerate(real_results(self, *a, **kw)):
            if n == 2:
                raise KeyboardInterrupt
            yield item

    with openai_client(server) as client:
        client.submit_batch(prompts(5), output_file=out)
        settle(server)
        monkeypatch.setattr(OpenAIBatchAPI, "results", two_then_die)
        with pytest.raises(KeyboardInterrupt):
            client.submit_batch(prompts(5), output_file=out)
        assert len(read_records(out)) == 2
        monkeypatch.setattr(OpenAIBatchAPI, "results", real_results)
        summary = client.submit_batch(prompts(5), output_file=out)
    assert summary["complete"] and summary["collected"] == 3 and summary["resumed"] == 2
    assert [r["index"] for r in read_records(out)] == [0, 1, 2, 3, 4]
    assert len(server.batches) == 1


def test_overlapping_run_fails_fast(server, tmp_path):
    out = str(tmp_path / "o.jsonl")
    holder = Checkpoint(out).open()
    try:
        with openai_client(server) as client, pytest.raises(OutputFileLockedError):
            client.submit_batch(prompts(2), output_file=out)
    finally:
        holder.close()
    assert server.requests == []


def test_fallback_online_after_cancels_and_runs_live(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="slow", batch_hours=10_000)  # never finishes within the test
    out = str(tmp_path / "o.jsonl")
    items = prompts(3, "slow {}")
    with openai_client(server) as client:
        client.submit_batch(items, output_file=out)
        second = client.submit_batch(items, output_file=out, fallback_online_after=0)
        assert second["fallback_online"] == 3 and second["complete"]
        live = [r for r in server.requests if r.path == "/v1/chat/completions"]
        assert len(live) == 3
        assert [r["via"] for r in read_records(out)] == ["live"] * 3
        wait_for(lambda: server.batches[0]["status"] == "cancelled", what="the overdue batch to be cancelled")
        third = client.submit_batch(items, output_file=out)
    assert third["complete"] and third["collected"] == 0 and third["in_flight"] == 0
    assert len(read_records(out)) == 3
    assert second["estimated_cost_usd"] > 0  # live items are priced at the live rate


def test_input_edited_while_in_flight_is_not_mistaken_for_its_answer(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    out = str(tmp_path / "o.jsonl")
    with openai_client(server) as client:
        client.submit_batch(prompts(2), output_file=out)
        settle(server)
        edited = prompts(2)
        edited[1] = [{"role": "user", "content": "something else"}]
        second = client.submit_batch(edited, output_file=out)
        bad = [r for r in read_records(out) if r["status"] == "error"]
        assert [r["index"] for r in bad] == [1] and "InputChangedError" in bad[0]["error"]
        settle(server)
        third = client.submit_batch(edited, output_file=out)
    assert second["submitted"] == 1 and third["complete"]
    assert by_index(out)[1]["output"] == "echo: something else"


def test_bad_items_fail_alone_and_unknown_provider_is_a_clear_error(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    out = str(tmp_path / "o.jsonl")
    with openai_client(server) as client:
        summary = client.submit_batch([prompts(1)[0], "not messages"], output_file=out)
        assert summary["submitted"] == 1 and summary["failed"] == 1
        with pytest.raises(ValueError, match="metadata_list"):
            client.submit_batch(prompts(2), output_file=out, metadata_list=[{}])


# -- Gemini ----------------------------------------------------------------------------------------------

def test_gemini_batch_mode_submit_collect_and_partial_errors(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="q1", batch_error=500, times=1)
    out = str(tmp_path / "g.jsonl")
    with gemini_client(server) as client:
        first = client.submit_batch(prompts(3), output_file=out, temperature=0.1)
        assert first["submitted"] == 3 and first["provider"] == "gemini"
        create = [r for r in server.requests if r.path.endswith(":batchGenerateContent")][0]
        assert create.path == "/v1beta/models/gemini-2.5-flash:batchGenerateContent"
        assert create.headers["x-goog-api-key"].startswith("<redacted")
        request = create.body["batch"]["inputConfig"]["requests"]["requests"][0]
        assert request["request"]["generationConfig"] == {"temperature": 0.1}  # the live adapter's body
        settle(server)
        second = client.submit_batch(prompts(3), output_file=out, temperature=0.1)
        assert second["collected"] == 2 and second["failed"] == 1 and second["submitted"] == 1
        settle(server)
        third = client.submit_batch(prompts(3), output_file=out, temperature=0.1)
    assert third["complete"]
    assert {i: r["output"] for i, r in by_index(out).items()} == {i: f"echo: q{i}" for i in range(3)}
    assert all(r["via"] == "provider-batch" for r in by_index(out).values())


def test_async_twin(server, tmp_path):
    import asyncio

    server.configure(batch_time_scale=FAST)

    async def main():
        with openai_client(server) as client:
            return await client.asubmit_batch(prompts(2), output_file=str(tmp_path / "a.jsonl"), wait=True,
                                              poll_interval=0.02)

    assert asyncio.run(main())["complete"]


# -- Anthropic -------------------------------------------------------------------------------------------

def test_anthropic_message_batches_submit_collect_expire_and_item_errors(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="q1", batch_error=400, times=1)
    server.add_rule(contains="q3", batch_fault="expire", times=1)
    out = str(tmp_path / "c.jsonl")
    with claude_client(server) as client:
        first = client.submit_batch(prompts(4), output_file=out, max_tokens=50)
        assert first["submitted"] == 4 and first["provider"] == "anthropic"
        create = [r for r in server.requests if r.path == "/v1/messages/batches"][0]
        params = create.body["requests"][0]["params"]
        assert params["max_tokens"] == 50 and params["messages"] == [{"role": "user", "content": "q0"}]
        assert create.headers["anthropic-version"] and create.headers["x-api-key"].startswith("<redacted")
        settle(server)
        second = client.submit_batch(prompts(4), output_file=out, max_tokens=50)
        # the batch expired: the first half answered (q1 with a per-item error), the rest came back
        assert second["collected"] == 1 and second["failed"] == 1 and second["returned"] == 2
        assert second["errors"] == {"BadRequestError": 1} and second["submitted"] == 3
        settle(server)
        third = client.submit_batch(prompts(4), output_file=out, max_tokens=50)
    assert third["complete"]
    assert {i: r["output"] for i, r in by_index(out).items()} == {i: f"echo: q{i}" for i in range(4)}
    assert _submissions(server).most_common(1)[0][1] == 2 and len(server.batches) == 2


def test_anthropic_create_refused_is_abandoned_and_retried_next_run(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="q0", batch_fault="invalid", times=1)
    out = str(tmp_path / "c.jsonl")
    with claude_client(server) as client:
        first = client.submit_batch(prompts(2), output_file=out)
        assert first["submitted"] == 0 and first["submit_failed"] == 2 and first["errors"] == {"BadRequestError": 1}
        assert [e["event"] for e in ledger(out)] == ["intent", "abandoned"]
        second = client.submit_batch(prompts(2), output_file=out, wait=True, poll_interval=0.02)
    assert second["complete"] and len(server.batches) == 1


def test_anthropic_two_lost_submissions_of_one_size_are_told_apart_by_custom_ids(server, tmp_path, monkeypatch):
    from flexllm.providers.anthropic_batch import AnthropicBatchAPI

    server.configure(batch_time_scale=FAST)
    out = str(tmp_path / "c.jsonl")
    die_after_create(monkeypatch, AnthropicBatchAPI, lambda: claude_client(server), out, 2)
    # another program created a batch of the same size meanwhile
    with claude_client(server) as other:
        other.submit_batch(prompts(2, "other {}"), output_file=str(tmp_path / "other.jsonl"))
    settle(server)
    with claude_client(server) as client:
        summary = client.submit_batch(prompts(2), output_file=out)
    assert summary["complete"] and len(server.batches) == 2
    assert {r["output"] for r in read_records(out)} == {"echo: q0", "echo: q1"}


def test_anthropic_results_url_on_another_host_never_receives_the_key():
    from flexllm.providers.anthropic import AnthropicAdapter
    from flexllm.providers.anthropic_batch import AnthropicBatchAPI
    from flexllm.providers.batch_base import BatchState

    urls = []
    api = AnthropicBatchAPI(AnthropicAdapter(api_key="sk-ant-x", base_url="https://api.anthropic.com"),
                            lambda method, url, **kw: urls.append(url) or b"")
    for results_url in ("https://elsewhere.example/steal", "https://api.anthropic.com/v1/messages/batches/b1/results"):
        list(api.results("b1", BatchState("completed", "ended", "b1", raw={"results_url": results_url}), []))
    assert urls == ["https://api.anthropic.com/v1/messages/batches/b1/results"] * 2


def test_server_without_a_batch_api_is_a_clear_failure(server, tmp_path, caplog_flexllm):
    out = str(tmp_path / "o.jsonl")
    with LLMClient(model="m", base_url=server.url + "/nothing-here", retry_times=0) as client:
        summary = client.submit_batch(prompts(2), output_file=out)
    assert summary["submit_failed"] == 2 and summary["in_flight"] == 0 and not summary["complete"]
    assert "no Batch API" in caplog_flexllm.text
    assert not [e for e in ledger(out) if e["event"] == "intent"]  # nothing half-submitted


def test_structured_output_is_sent_in_wire_form_and_validated_on_collection(server, tmp_path):
    server.configure(batch_time_scale=FAST)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    out = str(tmp_path / "s.jsonl")
    with openai_client(server) as client:
        client.submit_batch(prompts(2), output_file=out, response_format=schema)
        sent = [f for f in server.batch_store.files.values() if f["purpose"] == "batch"][0]["content"]
        body = json.loads(sent.splitlines()[0])["body"]
        assert body["response_format"]["type"] == "json_schema"  # the live request's wire form
        settle(server)
        summary = client.submit_batch(prompts(2), output_file=out, response_format=schema)
        with pytest.raises(ValueError, match="max_cost_usd"):
            client.submit_batch(prompts(2), output_file=out, max_cost_usd=1.0)
    assert summary["complete"]
    records = read_records(out)
    assert all(isinstance(r["parsed"], dict) and "city" in r["parsed"] for r in records)
    assert all(r["attempts"] == 1 for r in records)


def test_mock_time_scale_is_a_constructor_setting_that_clear_keeps(tmp_path):
    from flexllm.mock import MockServer

    with MockServer(batch_time_scale=FAST) as fast:
        fast.clear()
        with LLMClient(model="m", base_url=fast.url, retry_times=0) as client:
            summary = client.submit_batch(prompts(2), output_file=str(tmp_path / "o.jsonl"), wait=True,
                                          poll_interval=0.02)
        assert summary["complete"] and fast.batches[0]["status"] == "completed"


def test_cancelling_a_waiting_asubmit_batch_stops_it_and_unlocks_the_file(server, tmp_path):
    """A cancelled `await client.asubmit_batch(..., wait=True)` returned, but the run kept polling the provider
    on its thread for ever and held the output file's lock: every rerun in that process got
    OutputFileLockedError. Now the cancellation stops it like Ctrl-C and returns once the file is unlocked."""
    import asyncio

    server.configure(batch_time_scale=3600)
    out = tmp_path / "out.jsonl"
    slow = [[{"role": "user", "content": f"[[mock:batch_hours=5000]] q{i}"}] for i in range(3)]
    client = openai_client(server, model="gpt-4o-mini")

    async def main():
        task = asyncio.ensure_future(client.asubmit_batch(slow, output_file=str(out), wait=True,
                                                          poll_interval=0.05))
        while sum(r.path.startswith("/v1/batches/") for r in server.requests) < 2:  # it is polling
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    again = client.submit_batch(slow, output_file=str(out))  # the lock is free: no OutputFileLockedError
    assert again["in_flight"] == 3 and again["submitted"] == 0
    client.close()


@pytest.mark.parametrize("kw", [{"extra_headers": {"x-gateway": "team-a"}}, {"anthropic_beta": "output-128k-2025-02-19"}])
def test_per_call_headers_are_refused_not_silently_dropped_and_client_headers_reach_the_batch(server, tmp_path, kw):
    """Per-call headers (extra_headers=, Claude's anthropic_beta=) were silently not sent by submit_batch (its
    requests are the batch's, not the items'); refused now, naming default_headers=, which does reach them."""
    out = tmp_path / "out.jsonl"
    with claude_client(server) as client:
        with pytest.raises(ValueError, match="default_headers"):
            client.submit_batch(prompts(2), output_file=str(out), **kw)
    assert server.requests == [] and not out.exists()
    with claude_client(server, default_headers={"x-gateway": "team-a"}) as client:
        client.submit_batch(prompts(2), output_file=str(out))
    creates = [r for r in server.requests if r.method == "POST" and r.path == "/v1/messages/batches"]
    assert creates and all(r.headers.get("x-gateway") == "team-a" for r in creates)
