"""`flexllm ask` stopped by SIGTERM (systemd, `timeout`, a supervisor) while its request is at a slow server:
it died by the signal's default (exit -15, sometimes a traceback); now it exits 143 with one short line."""
import os
import signal
import subprocess
import sys

from .conftest import wait_for


def test_sigterm_during_ask_exits_143_with_one_line(server):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    for name in ("FLEXLLM_BASE_URL", "OPENAI_BASE_URL", "FLEXLLM_API_KEY", "OPENAI_API_KEY", "FLEXLLM_MODEL"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "flexllm", "ask", "[[mock:latency=60]] slow", "--model", "m",
                             "--base-url", server.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        wait_for(lambda: proc.poll() is not None or len(server.requests) >= 1, timeout=60,
                 what="the question to reach the server")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "SIGTERM" in err, err
    assert len(server.requests) == 1  # not retried on the way out
