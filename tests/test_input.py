"""The CLI's batch input is streamed: a few lines in memory whatever the file's length, metadata in step."""
from flexllm import OpenAIClient
from flexllm._input import BatchInput

from .conftest import read_records


def test_a_long_input_file_is_held_a_few_lines_at_a_time(server, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    n = 3000
    with open(inp, "w") as f:
        for i in range(n):
            params = ', "params": {"temperature": 0.5}' if i == 7 else ""
            f.write(f'{{"prompt": "p{i}", "id": {i}{params}}}\n')
    source = BatchInput(str(inp), None, None)
    assert source.total == n and source.has_params
    held = []
    client = OpenAIClient(base_url=server.url, model="mock-model", concurrency_limit=4)
    for _ in client.iter_chat_completions_batch(source.messages(), output_file=str(out),
                                                metadata_list=source.metadata(), params_list=source.params()):
        held.append(len(source._meta) + len(source._params))
    assert len(held) == n
    assert max(held) <= 2 * (2 * 4 + 256), f"{max(held)} input lines held at once"
    records = read_records(out)
    assert all(r["metadata"] == {"id": r["index"]} and r["output"] == f"echo: p{r['index']}" for r in records)
    assert [r["params"] for r in records if "params" in r] == [{"temperature": 0.5}]
    seventh = [r.body for r in server.requests if r.body["messages"][-1]["content"] == "p7"]
    assert seventh[0]["temperature"] == 0.5


def test_without_params_nothing_piles_up(server, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(f'{{"prompt": "q{i}", "id": {i}}}\n' for i in range(500)))
    source = BatchInput(str(inp), None, None)
    assert not source.has_params and source.params() is None
    client = OpenAIClient(base_url=server.url, model="mock-model", concurrency_limit=4)
    held = [len(source._meta) + len(source._params) for _ in client.iter_chat_completions_batch(
        source.messages(), metadata_list=source.metadata(), output_file=str(tmp_path / "out.jsonl"))]
    assert len(held) == 500 and max(held) <= 2 * 4 + 256 and len(source._params) == 0
