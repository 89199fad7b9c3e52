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
