"""Hot-path shortcuts keep their results: cache keys never change (users' caches stay valid) and the
bulk cache read decodes exactly what json.loads would."""
import json
import sqlite3

from flexllm import OpenAIClient, ResponseCacheConfig
from flexllm.cache import CACHE_FILENAME, cache_key, cache_keys

from .conftest import user


def test_cache_key_value_is_pinned():
    # the SHA-256 of canonical JSON written by json.dumps(sort_keys, compact, ensure_ascii=False)
    key = cache_key("openai", "m", [{"role": "user", "content": "héllo"}], {"temperature": 0.5, "top_p": None})
    assert key == "ef6233ad43e9a056442d70a2573ba3517ada760627d3cfdfcd117c5b733ef948"


def test_bulk_keys_equal_single_keys_for_shared_and_own_params_and_media():
    img = "data:image/png;base64," + "A" * 400
    shared = {"temperature": 0.2, "seed": None}
    requests = [("m", user(f"q{i}"), shared) for i in range(3)] + [
        ("m2", [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": img}}]}], {"top_p": 1}),
        ("m", user("q0"), {"temperature": 0.3})]
    keys = cache_keys("openai", requests)
    assert keys == [cache_key("openai", model, m, p) for model, m, p in requests]
    assert len(set(keys)) == len(keys)


def test_bulk_cache_read_takes_padded_bytes_and_garbage_values_like_json_loads(server, tmp_path):
    c = OpenAIClient(base_url=server.url, model="m", cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    items = [user(f"q{i}") for i in range(4)]
    assert c.chat_completions_batch_sync(items, show_progress=False) == [f"echo: q{i}" for i in range(4)]
    c.close()
    keys = [cache_key("openai", "m", m, {}) for m in items]
    db = sqlite3.connect(str(tmp_path / CACHE_FILENAME))
    row = json.dumps({"content": "padded", "usage": None})
    db.execute("UPDATE responses SET value = ? WHERE key = ?", ("  " + row + "\n", keys[0]))  # padded text
    db.execute("UPDATE responses SET value = ? WHERE key = ?", (row.replace("padded", "bytes").encode(), keys[1]))
    db.execute("UPDATE responses SET value = ? WHERE key = ?", ('{"content": "x"} trailing', keys[2]))  # garbage
    db.commit()
    db.close()
    c = OpenAIClient(base_url=server.url, model="m", cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    server.clear()
    out = c.chat_completions_batch_sync(items, show_progress=False)
    assert out[:2] == ["padded", "bytes"] and out[3] == "echo: q3"
    assert out[2] == "echo: q2"  # an unreadable entry is a miss: asked again, never a crash
    c.close()


def test_canonical_json_is_json_dumps_with_sorted_keys_for_every_kind_of_value():
    import datetime

    from flexllm._hashing import canonical_json

    values = [{"b": [1, 2.5, None, True, "é\u2028x", float("inf"), -0.0, 1e300, 2 ** 70], "a": {"z": (1, 2)},
               "d": datetime.date(2020, 1, 1), "e": {"x\"y": "\ud800 lone surrogate"}}, [], "x", 3, None]
    for value in values:
        assert canonical_json(value) == json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                                                   default=str)
    loop: list = []
    loop.append(loop)
    try:
        canonical_json(loop)
    except ValueError as exc:
        assert "Circular" in str(exc)
    else:
        raise AssertionError("a circular structure must be refused")


def test_a_cached_batch_item_is_the_live_item_field_by_field(server, tmp_path):
    # cached items are built straight from the cache entry (no result object in between): every field a live
    # item had comes back, for plain text, reasoning, a tool-call-only reply, own params and metadata
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    items = [user("plain"), user("[[mock:think=1]] reasoned"), user('[[mock:tool=lookup;tool_args={"q": 1}]] call'),
             user("own params")]
    kw = dict(show_progress=False, metadata_list=[{"i": i} for i in range(4)],
              params_list=[None, None, {"tools": tools}, {"temperature": 0.3}])
    c = OpenAIClient(base_url=server.url, model="m", cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    live = sorted(c.iter_chat_completions_batch(items, **kw), key=lambda it: it.index)
    server.clear()
    again = sorted(c.iter_chat_completions_batch(items, **kw), key=lambda it: it.index)
    assert not server.requests and [it.status for it in again] == ["cached"] * 4
    fields = ("index", "content", "usage", "error", "metadata", "reasoning_content", "resumed", "finish_reason",
              "tool_calls", "parsed", "params")
    for a, b in zip(live, again):
        assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
    assert again[1].reasoning_content and json.loads(again[2].content)[0]["function"]["name"] == "lookup"
    assert again[3].params == {"temperature": 0.3}
    replies = c.chat_completions_batch_sync(items, show_progress=False, return_usage=True,
                                            params_list=kw["params_list"])
    assert [r.content for r in replies] == [it.content for it in live]
    assert replies[2].tool_calls == live[2].tool_calls
    c.close()


def test_progress_counts_items_finished_without_a_request(server, tmp_path, caplog):
    # resumed, cached and invalid items are counted in bulk per chunk: the final progress line must still
    # add up (done = all items, cached and failed each counted once)
    import logging

    out = tmp_path / "out.jsonl"
    cache = ResponseCacheConfig.persistent(cache_dir=str(tmp_path / "c"))
    c = OpenAIClient(base_url=server.url, model="m", cache=cache)
    c.chat_completions_batch_sync([user(f"q{i}") for i in range(6)], show_progress=False)  # fills the cache
    c.chat_completions_batch_sync([user(f"q{i}") for i in range(2)], output_file=str(out), show_progress=False)
    items = [user(f"q{i}") for i in range(6)] + ["not a conversation", user("new")]
    caplog.set_level(logging.INFO, logger="flexllm")
    with caplog.at_level(logging.INFO, logger="flexllm"):
        result, summary = c.chat_completions_batch_sync(items, output_file=str(out), return_summary=True)
    c.close()
    assert (summary["resumed"], summary["cached"], summary["failed"], summary["success"]) == (2, 4, 1, 1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch progress")]
    assert lines and lines[-1].startswith("batch progress: 8/8 done") and "cached 6, failed 1" in lines[-1]  # resumed cached records included, as before
    assert result[:6] == [f"echo: q{i}" for i in range(6)] and result[6] is None and result[7] == "echo: new"
