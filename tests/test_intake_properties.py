"""Property test of a batch's intake (resumed, cached, invalid and live items mixed in any order): over a
run with random failures and a rerun, every item ends with exactly one record on disk, the replies and the
summary add up, and only items neither resumed nor cached reach the server."""
import json
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexllm import OpenAIClient, ResponseCacheConfig

BAD = {"not a list": "just text", "empty": [], "no role": [{"content": "x"}]}

item = st.one_of(st.tuples(st.just("ok"), st.sampled_from(["a", "b", "c", "d", "e", "f"])),
                 st.tuples(st.just("bad"), st.sampled_from(sorted(BAD))))


def conversation(kind, value):
    return [{"role": "user", "content": value}] if kind == "ok" else BAD[value]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(item, min_size=1, max_size=24), st.sampled_from([0.0, 0.4]), st.booleans(), st.integers(1, 6))
def test_every_item_once_on_disk_and_the_counts_add_up(server, items, error_rate, cached, concurrency):
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/out.jsonl"
        cache = ResponseCacheConfig.persistent(cache_dir=f"{tmp}/cache") if cached else None
        inputs = [conversation(*it) for it in items]
        valid = [i for i, (kind, _) in enumerate(items) if kind == "ok"]
        c = OpenAIClient(base_url=server.url, model="m", retry_times=0, concurrency_limit=concurrency, cache=cache)
        server.clear()
        server.configure(error_rate=error_rate)
        try:
            first, s1 = c.chat_completions_batch_sync(inputs, output_file=out, show_progress=False,
                                                      return_summary=True)
        finally:
            server.configure(error_rate=0.0)
        done_first = {i for i in valid if first[i] is not None}
        server.clear()
        again, s2 = c.chat_completions_batch_sync(inputs, output_file=out, show_progress=False, return_summary=True)
        c.close()
        asked = len(server.requests)
        with open(out, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]

    assert sorted(r["index"] for r in records) == list(range(len(items)))  # each item exactly once
    for i, (kind, value) in enumerate(items):
        if kind == "ok":
            assert again[i] == f"echo: {value}" and first[i] in (None, f"echo: {value}")
        else:
            assert again[i] is None and first[i] is None
    assert s1["failed"] + s1["success"] + s1["cached"] == len(items) and s1["resumed"] == 0
    assert s2["resumed"] == len(done_first)
    assert s2["failed"] == len(items) - len(valid)  # invalid items only: no errors on the rerun
    assert s2["success"] + s2["cached"] == len(valid) - len(done_first)
    assert asked == s2["success"]  # resumed and cached items never reach the server
    if not cached:
        assert s1["cached"] == s2["cached"] == 0
