"""The response cache: keys, TTL, modes, corruption, processes — and its use by clients and batches."""
import json
import logging
import os
import threading
import stat
import subprocess
import sys
import textwrap

import pytest

from flexllm import OpenAIClient, ResponseCacheConfig, ServerError
from flexllm.cache import CACHE_FILENAME, ResponseCache, cache_key

from .conftest import user

M = user("hello")


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_config_shortcuts_match_the_reference():
    assert ResponseCacheConfig() == ResponseCacheConfig(enabled=False, ttl=86400,
                                                        cache_dir="~/.cache/flexllm/llm_response", use_ipc=True)
    assert ResponseCacheConfig.with_ttl(3600).ttl == 3600 and ResponseCacheConfig.with_ttl(3600).enabled
    assert ResponseCacheConfig.persistent().ttl == 0 and ResponseCacheConfig.persistent().enabled


@pytest.mark.parametrize("a, b, same", [
    (("openai", "m", M, {}), ("openai", "m", M, {"temperature": None}), True),
    (("openai", "m", M, {"a": 1, "b": 2}), ("openai", "m", M, {"b": 2, "a": 1}), True),
    (("openai", "m", M, {}), ("openai", "m2", M, {}), False),
    (("openai", "m", M, {}), ("gemini", "m", M, {}), False),
    (("openai", "m", M, {"temperature": 0}), ("openai", "m", M, {"temperature": 1}), False),
    (("openai", "m", M, {"thinking": True}), ("openai", "m", M, {"thinking": False}), False),
    (("openai", "m", M, {"tools": [{"a": 1}]}), ("openai", "m", M, {}), False),
    (("openai", "m", M, {}), ("openai", "m", user("hello!"), {}), False),
])
def test_cache_key_sensitivity(a, b, same):
    assert (cache_key(*a) == cache_key(*b)) is same


def test_inline_media_is_hashed_not_stored_in_key_material():
    img = "data:image/png;base64," + "A" * 5000
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": img}}]}]
    other = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": img[:-1] + "B"}}]}]
    assert cache_key("openai", "m", msgs, {}) != cache_key("openai", "m", other, {})


def test_round_trip_ttl_and_persistent(tmp_path):
    clock = Clock()
    cache = ResponseCache(ResponseCacheConfig.with_ttl(60, cache_dir=str(tmp_path)), clock=clock)
    cache.set("k", {"content": "v", "usage": {"total_tokens": 3}})
    assert cache.get("k")["content"] == "v"
    assert cache.get_many(["k", "missing"]) .keys() == {"k"}
    clock.now += 61
    assert cache.get("k") is None and cache.get_many(["k"]) == {}
    forever = ResponseCache(ResponseCacheConfig.persistent(cache_dir=str(tmp_path / "p")), clock=clock)
    forever.set("k", {"content": "v"})
    clock.now += 10 ** 9
    assert forever.get("k")["content"] == "v"


def test_file_and_directory_modes(tmp_path):
    cache = ResponseCache(ResponseCacheConfig.persistent(cache_dir=str(tmp_path / "c")))
    cache.set("k", {"content": "v"})
    assert stat.S_IMODE(os.stat(tmp_path / "c").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "c" / CACHE_FILENAME).st_mode) == 0o600
    cache.close()


def test_unopenable_cache_warns_once_and_returns_none(tmp_path, caplog):
    (tmp_path / "afile").write_text("x")
    with caplog.at_level(logging.WARNING, logger="flexllm"):
        assert ResponseCache.open(ResponseCacheConfig.persistent(cache_dir=str(tmp_path / "afile" / "sub"))) is None
    assert sum("response cache disabled" in r.getMessage() for r in caplog.records) == 1


def test_corrupt_file_warns_and_returns_none(tmp_path, caplog):
    (tmp_path / CACHE_FILENAME).write_bytes(b"this is not a sqlite database" * 100)
    with caplog.at_level(logging.WARNING, logger="flexllm"):
        assert ResponseCache.open(ResponseCacheConfig.persistent(cache_dir=str(tmp_path))) is None
    assert any("response cache disabled" in r.getMessage() for r in caplog.records)


def test_disabled_config_gives_no_cache():
    assert ResponseCache.open(ResponseCacheConfig()) is None
    assert ResponseCache.open(None) is None


# -- through the clients ------------------------------------------------------------------------------

def cached_client(server, tmp_path, **kw):
    return OpenAIClient(base_url=server.url, model="mock-model", api_key="sk-cache-SECRET-1",
                        cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path)), **kw)


def test_second_identical_call_is_a_hit(server, tmp_path):
    c = cached_client(server, tmp_path)
    first = c.chat_completions_sync(user("same"), return_usage=True)
    second = c.chat_completions_sync(user("same"), return_usage=True)
    assert first == second  # same shape, stored usage included
    assert len(server.requests) == 1


@pytest.mark.parametrize("change", [{"temperature": 0.9}, {"model": "other"}, {"thinking": True},
                                    {"tools": [{"type": "function", "function": {"name": "f"}}]}])
def test_output_affecting_changes_miss(server, tmp_path, change):
    c = cached_client(server, tmp_path)
    c.chat_completions_sync(user("q"))
    c.chat_completions_sync(user("q"), **change)
    assert len(server.requests) == 2


def test_skip_cache_neither_reads_nor_writes(server, tmp_path):
    c = cached_client(server, tmp_path)
    c.chat_completions_sync(user("s"), skip_cache=True)
    c.chat_completions_sync(user("s"))
    c.chat_completions_sync(user("s"), skip_cache=True)
    assert len(server.requests) == 3


def test_errors_are_never_cached(server, tmp_path):
    c = cached_client(server, tmp_path, retry_times=0)
    with pytest.raises(ServerError):
        c.chat_completions_sync(user("[[mock:status=500;times=1]] e"))
    assert c.chat_completions_sync(user("[[mock:status=500;times=1]] e")) == "echo: e"
    assert len(server.requests) == 2


def test_stream_uses_and_fills_cache(server, tmp_path):
    c = cached_client(server, tmp_path)
    assert "".join(c.chat_completions_stream_sync(user("a b"))) == "echo: a b"
    assert "".join(c.chat_completions_stream_sync(user("a b"))) == "echo: a b"
    assert c.chat_completions_sync(user("a b")) == "echo: a b"
    assert len(server.requests) == 1


def test_batch_hits_are_cached_status_and_cost_no_request(server, tmp_path):
    c = cached_client(server, tmp_path)
    prompts = [user(f"b{i}") for i in range(20)]
    c.chat_completions_batch_sync(prompts[:10], show_progress=False)
    out = tmp_path / "out.jsonl"
    results, summary = c.chat_completions_batch_sync(prompts, output_file=str(out), return_summary=True,
                                                     show_progress=False)
    assert results == [f"echo: b{i}" for i in range(20)]
    assert (summary["cached"], summary["success"]) == (10, 10)
    assert len(server.requests) == 20
    statuses = {json.loads(line)["index"]: json.loads(line)["status"] for line in out.read_text().splitlines()}
    assert [statuses[i] for i in range(10)] == ["cached"] * 10


def test_cache_file_holds_no_api_key(server, tmp_path):
    c = cached_client(server, tmp_path)
    c.chat_completions_sync(user("secret?"))
    c.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"sk-cache-SECRET-1" not in blob and b"echo: secret?" in blob


def test_unwritable_cache_dir_gives_live_answers(server, tmp_path, caplog):
    (tmp_path / "afile").write_text("x")
    c = OpenAIClient(base_url=server.url, model="m",
                     cache=ResponseCacheConfig.persistent(cache_dir=str(tmp_path / "afile" / "d")))
    with caplog.at_level(logging.WARNING, logger="flexllm"):
        assert c.chat_completions_sync(user("live")) == "echo: live"
        assert c.chat_completions_sync(user("live")) == "echo: live"
    assert len(server.requests) == 2
    assert sum("response cache disabled" in r.getMessage() for r in caplog.records) == 1


WORKER = textwrap.dedent("""
    import sys
    from flexllm import OpenAIClient, ResponseCacheConfig
    url, cache_dir, me = sys.argv[1], sys.argv[2], sys.argv[3]
    client = OpenAIClient(base_url=url, model="m", concurrency_limit=8,
                          cache=ResponseCacheConfig.persistent(cache_dir=cache_dir))
    # half the prompts are shared by every process, half are this process's own
    prompts = [f"shared {i}" if i % 2 else f"{me} own {i}" for i in range(500)]
    results = client.chat_completions_batch_sync([[{"role": "user", "content": p}] for p in prompts],
                                                 show_progress=False)
    bad = [(p, r) for p, r in zip(prompts, results) if r != "echo: " + p]
    assert not bad, bad[:3]
    again = client.chat_completions_batch_sync([[{"role": "user", "content": p}] for p in prompts],
                                               show_progress=False, return_summary=True)[1]
    assert again["cached"] == 500, again
    client.close()
    print("ok")
""")


def test_four_processes_times_500_requests_share_one_cache(server, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, server.url, str(tmp_path), f"p{n}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == b"ok", err.decode()[-2000:]
        assert b"locked" not in err and b"Traceback" not in err
    own = [f"p{n} own {i}" for n in range(4) for i in range(0, 500, 2)]
    shared = [f"shared {i}" for i in range(1, 500, 2)]
    cache = ResponseCache(ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    keys = {cache_key("openai", "m", user(p), {}): p for p in own + shared}
    hits = cache.get_many(list(keys))
    assert len(hits) == len(own) + len(shared) == 1250
    assert all(hits[k]["content"] == "echo: " + p for k, p in keys.items())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_cache_works_in_forked_child(tmp_path):
    cache = ResponseCache(ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    cache.set("parent", {"content": "p"})
    assert cache.get("parent")["content"] == "p"
    pid = os.fork()
    if pid == 0:
        ok = cache.get("parent") == {"content": "p", "created": cache.get("parent")["created"]}
        cache.set("child", {"content": "c"})
        cache.close()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get("child")["content"] == "c"


def test_two_clients_in_one_process_share_a_single_process_cache(server, tmp_path):
    config = ResponseCacheConfig(enabled=True, ttl=0, cache_dir=str(tmp_path), use_ipc=False)
    a = OpenAIClient(base_url=server.url, model="m", cache=config)
    b = OpenAIClient(base_url=server.url, model="m", cache=config)
    assert a.chat_completions_sync(user("one")) == "echo: one"
    assert b.chat_completions_sync(user("one")) == "echo: one"
    assert b.chat_completions_sync(user("two")) == "echo: two"
    assert a.chat_completions_sync(user("two")) == "echo: two"
    assert len(server.requests) == 2


def test_entries_written_just_before_exit_are_kept(server, tmp_path):
    script = textwrap.dedent("""
        import sys
        from flexllm import OpenAIClient, ResponseCacheConfig
        c = OpenAIClient(base_url=sys.argv[1], model="m", cache=ResponseCacheConfig.persistent(cache_dir=sys.argv[2]))
        c.chat_completions_batch_sync([[{"role": "user", "content": f"x{i}"}] for i in range(300)],
                                      show_progress=False)
    """)  # no close(): the process just ends
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    subprocess.run([sys.executable, "-c", script, server.url, str(tmp_path)], env=env, check=True, timeout=60)
    cache = ResponseCache(ResponseCacheConfig.persistent(cache_dir=str(tmp_path)))
    assert len(cache.get_many([cache_key("openai", "m", user(f"x{i}"), {}) for i in range(300)])) == 300


def test_file_corrupted_while_running_warns_once_then_runs_uncached(server, tmp_path, caplog):
    # issue 11 item 22: sqlitedict used to log ~18 ERROR lines per request from its worker thread
    caplog.set_level(logging.DEBUG)
    c = cached_client(server, tmp_path)
    assert c.chat_completions_sync(user("before")) == "echo: before"
    for name in os.listdir(tmp_path):
        with open(tmp_path / name, "r+b") as f:
            f.write(b"garbage!" * 4096)
    caplog.clear()
    for i in range(5):
        assert c.chat_completions_sync(user(f"after {i}")) == f"echo: after {i}"
    assert c.chat_completions_batch_sync([user("b1"), user("b2")], show_progress=False) == ["echo: b1", "echo: b2"]
    above_info = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(above_info) == 1, [r.getMessage() for r in above_info]
    assert "cache" in above_info[0].getMessage()
    c.close()


def test_many_connections_opening_a_new_cache_at_once_all_get_it(tmp_path):
    # switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is locked" at once
    # (no busy wait) to some of several openers racing for it: each must still open the cache
    errors = []

    def open_one(directory, barrier):
        barrier.wait()
        try:
            ResponseCache(ResponseCacheConfig.persistent(cache_dir=directory)).close()
        except Exception as exc:  # pragma: no cover - the failure this test exists for
            errors.append(exc)

    for round_ in range(300):
        barrier = threading.Barrier(8)
        threads = [threading.Thread(target=open_one, args=(str(tmp_path / str(round_)), barrier)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[:3]


def test_a_fractional_ttl_expires_instead_of_becoming_never(tmp_path):
    """ttl=0.5 (or with_ttl(0.5)) was truncated to 0, which means "never expires"."""
    clock = Clock()
    for i, config in enumerate((ResponseCacheConfig.with_ttl(0.5, cache_dir=str(tmp_path / "a")),
                                ResponseCacheConfig(enabled=True, ttl=0.5, cache_dir=str(tmp_path / "b")))):
        cache = ResponseCache(config, clock=clock)
        cache.set("k", {"content": "v"})
        assert cache.get("k")["content"] == "v"
        clock.now += 1
        assert cache.get("k") is None, i


def test_no_home_directory_means_uncached_with_one_warning_never_a_literal_tilde_dir(server, tmp_path, monkeypatch,
                                                                                    caplog):
    # HOME unset and a uid without a passwd entry (containers): expanduser leaves "~" as it is
    import logging
    import os

    from flexllm import OpenAIClient, ResponseCacheConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os.path, "expanduser", lambda p: p)
    c = OpenAIClient(base_url=server.url, model="m", cache=ResponseCacheConfig.persistent())
    with caplog.at_level(logging.WARNING, logger="flexllm"):
        assert c.chat_completions_sync([{"role": "user", "content": "hi"}]) == "echo: hi"
    c.close()
    assert not (tmp_path / "~").exists()
    warnings = [r.getMessage() for r in caplog.records if "response cache disabled" in r.getMessage()]
    assert len(warnings) == 1 and "HOME" in warnings[0]
