"""The mock's batch endpoints, checked by the official SDKs: if openai, anthropic and google-genai can drive a
batch from upload to results against it, our provider-batch code is tested against the real shapes."""
import json

import pytest

from .conftest import wait_for

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

FAST = 86400 * 20


def test_openai_sdk_drives_a_batch_from_upload_to_output_and_error_files(server, tmp_path):
    from openai.types import Batch
    from openai.types.chat import ChatCompletion

    server.configure(batch_time_scale=FAST)
    server.add_rule(contains="bad", batch_error=400)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                        "body": {"model": "m", "messages": [{"role": "user", "content": text}]}})
                            + "\n" for i, text in enumerate(["a", "b", "bad"])))
    client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    uploaded = client.files.create(file=open(path, "rb"), purpose="batch")  # the SDK's own multipart
    assert uploaded.purpose == "batch" and uploaded.bytes == path.stat().st_size
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"flexllm_tag": "t1"})
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"flexllm_tag": "t1"}
    wait_for(lambda: client.batches.retrieve(batch.id).status == "completed", what="the batch to complete")
    done = client.batches.retrieve(batch.id)
    Batch.model_validate(done.model_dump(), strict=False)
    assert done.request_counts.total == 3 and done.request_counts.failed == 1
    assert [b.id for b in client.batches.list(limit=10)] == [batch.id]
    out = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["r0", "r1"]
    for o in out:
        reply = ChatCompletion.model_validate(o["response"]["body"])
        assert reply.choices[0].message.content.startswith("echo: ")
    err = [json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines()]
    assert err[0]["custom_id"] == "r2" and err[0]["response"]["status_code"] == 400


def test_anthropic_sdk_drives_a_message_batch_and_reads_its_results(server):
    server.configure(batch_time_scale=FAST)
    client = anthropic.Anthropic(base_url=server.root_url, api_key="sk-ant-test", max_retries=0)
    batch = client.messages.batches.create(requests=[
        {"custom_id": f"r{i}", "params": {"model": "claude-haiku-4-5", "max_tokens": 20,
                                          "messages": [{"role": "user", "content": f"q{i}"}]}} for i in range(2)])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 2
    wait_for(lambda: client.messages.batches.retrieve(batch.id).processing_status == "ended", what="the batch")
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.request_counts.succeeded == 2 and ended.results_url
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["r1"].type == "succeeded" and results["r1"].message.content[0].text == "echo: q1"
    assert [b.id for b in client.messages.batches.list(limit=5)] == [batch.id]
    with pytest.raises(anthropic.BadRequestError):  # validated at create, like the real API
        client.messages.batches.create(requests=[{"custom_id": "bad id!", "params": {
            "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}])


def test_genai_sdk_drives_an_inlined_batch(server):
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    server.configure(batch_time_scale=FAST)
    client = genai.Client(api_key="AIza-test", http_options=types.HttpOptions(base_url=server.root_url,
                                                                               api_version="v1beta"))
    job = client.batches.create(model="gemini-2.5-flash", src=[
        {"contents": [{"role": "user", "parts": [{"text": f"q{i}"}]}]} for i in range(2)],
        config={"display_name": "flexllm-tag"})
    assert job.display_name == "flexllm-tag" and job.name.startswith("batches/")
    wait_for(lambda: client.batches.get(name=job.name).state.name == "JOB_STATE_SUCCEEDED", what="the batch")
    done = client.batches.get(name=job.name)
    texts = [r.response.text for r in done.dest.inlined_responses]
    assert texts == ["echo: q0", "echo: q1"]
