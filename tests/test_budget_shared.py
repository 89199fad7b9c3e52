"""The shared rate budget with real parts: several real processes on one SQLite file, a real
redis-server started here, SIGKILL mid-transaction, a corrupt file, Redis going away mid-batch."""
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from flexllm import LLMClient, RateLimit, RateLimitStoreError
from flexllm._limiter import Limiter
from flexllm._stores import SQLiteStore, open_store
from flexllm.mock import MockServer

from .conftest import closed_port, read_records, user, wait_for

CHILD = textwrap.dedent("""
    import sys
    from flexllm import LLMClient, RateLimit
    url, store, name, n, tag, qps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
    first = sys.argv[7] if len(sys.argv) > 7 else None
    client = LLMClient(model="m", base_url=url, concurrency_limit=4, retry_delay=0.05,
                       rate_limit=RateLimit(max_qps=qps, shared=store, name=name))
    prompts = [[{"role": "user", "content": f"{tag}{i}"}] for i in range(n)]
    if first:
        prompts.insert(3, [{"role": "user", "content": first}])
    results = client.chat_completions_batch_sync(prompts, show_progress=False)
    assert all(r is not None for r in results), results
""")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def redis_pid(port):
    """The process id of the redis-server answering on `port` (None if none answers yet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
            c.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                more = c.recv(65536)
                if not more:
                    break
                data += more
    except OSError:
        return None
    for line in data.split(b"\r\n"):
        if line.startswith(b"process_id:"):
            return int(line.split(b":")[1])
    return None


def start_redis(port=None):
    """Start a redis-server of our own on `port`, or on a free port (another one if another process on this
    busy machine takes it between our check and redis' bind); waits until *our* process answers, so a test
    never talks to someone else's Redis. Returns (process, port)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install -y redis-server)")
    for _ in range(5):
        use = port or free_port()
        proc = subprocess.Popen([exe, "--port", str(use), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda proc=proc, use=use: proc.poll() is not None or redis_pid(use) == proc.pid, timeout=20,
                 what="redis-server to answer")
        if proc.poll() is None:
            return proc, use
        if port is not None:
            pytest.fail(f"redis-server could not listen on port {port} again (taken by another process)")
    pytest.fail("redis-server could not start on 5 free ports")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Redis:
    """A real redis-server on a free 127.0.0.1 port, no persistence; a test may stop and restart it."""

    def __init__(self):
        self.proc, self.port = start_redis()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def restart(self):
        self.proc, _ = start_redis(self.port)


@pytest.fixture
def redis():
    server = Redis()
    try:
        yield server
    finally:
        stop(server.proc)


def run_children(args_list):
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)]) for args in args_list]
    for p in procs:
        assert p.wait(120) == 0


def max_in_window(times, width=1.0):
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + width) for i, t in enumerate(times))


@pytest.fixture(scope="module")
def mock():
    with MockServer() as server:
        yield server


@pytest.fixture
def server(mock):
    mock.clear()
    yield mock


# -- several processes share one budget ------------------------------------------------------------

def test_four_processes_share_one_sqlite_budget(server, tmp_path):
    store = f"sqlite:///{tmp_path}/limits.db"
    run_children([(server.url, store, "k", 15, f"p{p}-", 10) for p in range(4)])
    starts = [r.time for r in server.requests]
    assert len(starts) == 60
    # 10/s for the four together (+1 for arrival jitter); at 10/s a start must arrive >100 ms late to be
    # counted in the next second, which a loaded 2-core test box still does now and then at 20/s
    assert max_in_window(starts) <= 11


def test_two_processes_share_one_redis_budget(server, redis):
    run_children([(server.url, redis.url, "k", 25, f"p{p}-", 10) for p in range(2)])
    starts = [r.time for r in server.requests]
    assert len(starts) == 50
    assert max_in_window(starts) <= 11


def test_a_429_retry_after_pauses_every_process_sharing_the_budget(server, tmp_path):
    store = f"sqlite:///{tmp_path}/limits.db"
    hint = "[[mock:status=429;retry_after=2;times=1]] slow down"
    run_children([(server.url, store, "pause", 12, "a", 8, hint), (server.url, store, "pause", 12, "b", 8),
                  (server.url, store, "pause", 12, "c", 8)])
    [limited] = [r for r in server.requests if r.status == 429]
    others = sorted(r.time for r in server.requests if r is not limited)
    # requests already on their way when the 429 came back may still arrive just after it
    assert not [t for t in others if limited.time + 0.5 < t < limited.time + 1.9]
    assert [t for t in others if t > limited.time + 2.0]  # and the work resumes afterwards
    assert len(server.requests) == 38  # 37 requests + the one retry


# -- the stores agree (memory, SQLite, Redis run the same GCRA) --------------------------------------

@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_every_store_reserves_spaces_settles_and_pauses_alike(kind, tmp_path, request):
    url = {"memory": "memory", "sqlite": f"sqlite:///{tmp_path}/l.db"}.get(kind)
    if kind == "redis":
        url = request.getfixturevalue("redis").url
    store = open_store(url)
    name = f"conformance-{kind}-{os.getpid()}-{tmp_path.name}"
    dims = (("rpm", 0.5, 0.0), ("tpm", 0.1, 0.0))
    waits = [store.reserve(name, dims) for _ in range(4)]  # four at once: each waits one more cost (0.5 s)
    for k, w in enumerate(waits):
        assert w == pytest.approx(0.5 * k, abs=0.1)
    assert store.reserve(name, dims, only_if_free=True) is None
    assert store.delay(name, dims) == pytest.approx(2.0, abs=0.1)
    store.settle(name, {"rpm": -1.0, "tpm": -1.0}, {}, 0.0)  # refunds: two starts, ten tokens
    assert store.delay(name, dims) == pytest.approx(1.0, abs=0.1)
    store.settle(name, {}, {"tpm": 5.0}, 0.0)  # a provider header: nothing for 5 s
    assert store.delay(name, dims) == pytest.approx(5.0, abs=0.1)
    store.settle(name, {}, {}, 8.0)  # a 429 with Retry-After: 8
    assert store.delay(name, (("qps", 0.01, 0.0),)) == pytest.approx(8.0, abs=0.1)


# -- faults ------------------------------------------------------------------------------------------

def test_sqlite_survives_a_process_killed_inside_its_transaction(tmp_path):
    path = tmp_path / "limits.db"
    limit = RateLimit(max_qps=50, shared=f"sqlite:///{path}", name="kill")
    Limiter(limit, store=open_store(limit.store_url)).acquire()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        c = sqlite3.connect({str(path)!r}, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE flexllm_rate_budget SET tat = tat + 3600")
        print("holding", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    limiter = Limiter(limit, store=open_store(limit.store_url))
    assert limiter.delay() < 1.0  # the killed transaction was rolled back: no hour-long pause, no lock
    limiter.acquire()


def test_a_damaged_limits_file_is_recreated_with_one_warning(tmp_path, caplog):
    path = tmp_path / "limits.db"
    ours = sqlite3.connect(str(path))  # a budget file (this process's store registry never saw it)...
    ours.execute("CREATE TABLE flexllm_rate_budget (name TEXT NOT NULL, dim TEXT NOT NULL, tat REAL NOT NULL, "
                 "PRIMARY KEY (name, dim)) WITHOUT ROWID")
    ours.executemany("INSERT INTO flexllm_rate_budget VALUES (?, 'qps', 0.0)", [(f"n{i}",) for i in range(300)])
    ours.commit()
    ours.close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # ...damaged after its SQLite header
    path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="flexllm")
    limiter = Limiter(RateLimit(max_qps=10, shared=f"sqlite:///{path}", name="c"))
    for _ in range(3):
        limiter.reserve()
    warnings = [r for r in caplog.records if "not a valid budget file" in r.getMessage()]
    assert len(warnings) == 1
    assert sqlite3.connect(str(path)).execute("SELECT count(*) FROM flexllm_rate_budget").fetchone()[0] == 1
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]  # the damaged bytes were kept aside


@pytest.mark.parametrize("kind", ["text", "database"])
def test_a_file_that_is_not_a_budget_file_is_refused_and_left_untouched(tmp_path, kind):
    # a typo onto the batch's own output, or another program's database: never moved aside nor written into
    path = tmp_path / ("out.jsonl" if kind == "text" else "app.db")
    if kind == "text":
        path.write_bytes(b'{"index": 0, "status": "success", "output": "keep me"}\n' * 50)
    else:
        other = sqlite3.connect(str(path))
        other.execute("CREATE TABLE users (name TEXT)")
        other.execute("INSERT INTO users VALUES ('ada')")
        other.commit()
        other.close()
    before = path.read_bytes()
    limiter = Limiter(RateLimit(max_qps=10, shared=f"sqlite:///{path}", name="c"))
    with pytest.raises(RateLimitStoreError) as info:
        limiter.reserve()
    assert str(path) in str(info.value) and "left as it is" in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing moved aside, no -wal/-shm


def test_unreachable_redis_is_a_clear_error_without_the_password_or_a_local_fallback(server, caplog):
    url = f"redis://app:s3cret-pw@127.0.0.1:{closed_port()}/0"
    client = LLMClient(model="m", base_url=server.url, rate_limit=RateLimit(max_qps=5, shared=url, name="r"))
    with pytest.raises(RateLimitStoreError) as info:  # the store is reached lazily, on the first request
        client.chat_completions_sync(user("x"))
    assert "127.0.0.1" in str(info.value) and "s3cret-pw" not in str(info.value)
    assert "s3cret-pw" not in repr(info.value.__dict__) and server.requests == []
    _, summary = client.chat_completions_batch_sync([user(f"b{i}") for i in range(50)], show_progress=False,
                                                    return_summary=True)
    assert "rate-limit store" in summary["stopped_reason"] and summary["failed"] < 50  # stops, no 50 errors
    assert server.requests == []
    caplog.set_level(logging.WARNING, logger="flexllm")
    client = LLMClient(model="m", base_url=server.url,
                       rate_limit=RateLimit(max_qps=50, shared=url, name="r", on_store_error="local"))
    assert client.chat_completions_batch_sync([user(f"x{i}") for i in range(5)], show_progress=False) == \
        [f"echo: x{i}" for i in range(5)]
    warned = [r.getMessage() for r in caplog.records if "per-process budget" in r.getMessage()]
    assert len(warned) == 1 and "s3cret-pw" not in warned[0]


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:{port}/0?password=s3cret-pw",           # redis-py reads a password from the query too
    "unix:///tmp/flexllm-no-such.sock?password=s3cret-pw",
    "redis://app:s3cret-pw@127.0.0.1:notaport/0",               # a bad port: the error names shared=, not urllib
])
def test_a_password_anywhere_in_the_store_url_never_reaches_a_repr_error_or_log(server, url, caplog):
    caplog.set_level(logging.DEBUG, logger="flexllm")
    url = url.format(port=free_port())
    try:
        limit = RateLimit(max_qps=5, shared=url, name="q")
    except ValueError as exc:
        assert "shared=" in str(exc) and "s3cret-pw" not in str(exc)
        return
    assert "s3cret-pw" not in repr(limit)
    client = LLMClient(model="m", base_url=server.url, rate_limit=limit, retry_times=0)
    with pytest.raises(RateLimitStoreError) as info:
        client.chat_completions_sync(user("x"))
    assert "s3cret-pw" not in str(info.value) and "s3cret-pw" not in repr(info.value.__dict__)
    assert "s3cret-pw" not in caplog.text and server.requests == []


def test_redis_going_away_mid_batch_pauses_and_resumes_without_losing_items(server, redis, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="flexllm")
    client = LLMClient(model="m", base_url=server.url, concurrency_limit=4,
                       rate_limit=RateLimit(max_qps=20, shared=redis.url, name="away"))
    out = tmp_path / "out.jsonl"
    done = {}
    batch = threading.Thread(target=lambda: done.setdefault("r", client.chat_completions_batch_sync(
        [user(f"q{i}") for i in range(60)], output_file=str(out), show_progress=False)))
    batch.start()
    wait_for(lambda: len(server.requests) >= 10, what="the batch to get going")
    stop(redis.proc)
    wait_for(lambda: any("unreachable" in r.getMessage() for r in caplog.records), what="the pause to be logged")
    paused_at = len(server.requests)
    redis.restart()
    batch.join(120)
    assert not batch.is_alive()
    assert done["r"] == [f"echo: q{i}" for i in range(60)]
    assert sorted(r["index"] for r in read_records(out)) == list(range(60))  # each item exactly once
    assert paused_at < 60 and len(server.requests) == 60
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_cli_runs_share_a_budget_through_the_store_flags(server, tmp_path):
    def cli(tag, *extra):
        inp, out = tmp_path / f"{tag}.jsonl", tmp_path / f"{tag}-out.jsonl"
        inp.write_text("".join(json.dumps({"prompt": f"{tag}{i}"}) + "\n" for i in range(15)))
        return subprocess.Popen([sys.executable, "-m", "flexllm", "batch", str(inp), "-o", str(out), "--model", "m",
                                 "--base-url", server.url, "--rate-limit-store", f"sqlite:///{tmp_path}/cli.db",
                                 "--rate-limit-name", "cron", "--rpm", "600", "--tpm", "100000", *extra],
                                stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))

    runs = [cli("a"), cli("b")]
    errs = [p.communicate(timeout=120)[1] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], errs
    assert all("rate budget: waited" in e for e in errs)
    starts = [r.time for r in server.requests]
    assert len(starts) == 30 and max_in_window(starts) <= 11  # 600/min = 10/s for both runs together
    bad = subprocess.run([sys.executable, "-m", "flexllm", "batch", str(tmp_path / "a.jsonl"), "-o",
                          str(tmp_path / "x.jsonl"), "--model", "m", "--base-url", server.url,
                          "--rate-limit-store", "ftp://nowhere"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert bad.returncode == 2 and "shared" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_qps_joins_the_budget_named_by_the_environment(server, tmp_path):
    """`--help`: the store comes from --rate-limit-store or FLEXLLM_RATE_LIMIT_STORE, and "--qps then counts
    against the shared budget too". With only the variable set (the README's crontab) --qps stayed private to
    each run: N cron jobs at --qps 20 sent N x 20/s; a bad URL in the variable was silently ignored."""
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    db = tmp_path / "env.db"

    def cli(store, out):
        return subprocess.run([sys.executable, "-m", "flexllm", "batch", str(inp), "-o", str(tmp_path / out),
                               "--model", "m", "--base-url", server.url, "--qps", "50", "--no-progress"],
                              capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=os.getcwd(), FLEXLLM_RATE_LIMIT_STORE=store))

    bad = cli("ftp://nowhere", "bad.jsonl")
    assert bad.returncode == 2 and "FLEXLLM_RATE_LIMIT_STORE" in bad.stderr and "Traceback" not in bad.stderr
    assert server.requests == []
    good = cli(f"sqlite:///{db}", "good.jsonl")
    assert good.returncode == 0, good.stderr
    rows = sqlite3.connect(str(db)).execute("SELECT name, dim FROM flexllm_rate_budget").fetchall()
    assert ("default", "qps") in rows, rows  # the run reserved its starts in the shared budget


def test_many_connections_opening_a_new_budget_file_at_once_all_get_it(tmp_path):
    # the WAL switch of a fresh file races: SQLite answers "locked" at once to some openers; each must open
    errors = []

    def open_one(url, barrier):
        barrier.wait()
        try:
            SQLiteStore(url).check()
        except Exception as exc:  # pragma: no cover - the failure this test exists for
            errors.append(exc)

    for round_ in range(300):
        barrier = threading.Barrier(8)
        url = f"sqlite:///{tmp_path}/{round_}.db"
        threads = [threading.Thread(target=open_one, args=(url, barrier)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[:3]
