"""Transport options on every client and pool endpoint: proxy= (HTTP, CONNECT, SOCKS5), verify=, http2=."""
import base64
import logging
import ssl
import sys

import pytest

from flexllm import (
    APIConnectionError,
    APIStatusError,
    ClaudeClient,
    GeminiClient,
    LLMClient,
    LLMClientPool,
    OpenAIClient,
)
from flexllm._netconfig import TransportOptions
from flexllm.mock import MockServer

from ._proxies import HTTPProxy, SocksProxy
from .conftest import closed_port, user

trustme = pytest.importorskip("trustme")

PASSWORD = "s3cret-Proxy-pw!"
B64 = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server(ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    with MockServer(ssl_context=ctx) as server:
        yield server


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def clients(url, root, **kw):
    """One client of each provider, all with the same transport options."""
    return [OpenAIClient(base_url=url, model="m", retry_times=0, **kw),
            GeminiClient(api_key="AIza-k", base_url=root, retry_times=0, **kw),
            ClaudeClient(api_key="sk-ant-k", base_url=root, retry_times=0, **kw)]


def test_http_proxy_with_password_for_every_client(server, caplog):
    caplog.set_level(logging.DEBUG)
    with HTTPProxy() as proxy_server:
        proxy = f"http://alice:{PASSWORD}@127.0.0.1:{proxy_server.server_address[1]}"
        for c in clients(server.url, server.root_url, proxy=proxy):
            assert c.chat_completions_sync(user("via proxy")) == "echo: via proxy"
            assert PASSWORD not in repr(c) and B64 not in repr(c)
        assert len(proxy_server.forwarded) == 3
        assert proxy_server.auths == ["Basic " + B64] * 3
        assert [r.path for r in server.requests] == ["/v1/chat/completions",
                                                     "/v1beta/models/gemini-2.5-flash:generateContent",
                                                     "/v1/messages"]
        # streams go through the proxy as well
        assert "".join(LLMClient(model="m", base_url=server.url, proxy=proxy).chat_completions_stream_sync(
            user("s t"))) == "echo: s t"
    assert PASSWORD not in caplog.text


def test_proxy_password_never_in_errors_logs_or_repr(caplog):
    caplog.set_level(logging.DEBUG)
    with HTTPProxy(echo_407=True) as proxy_server:
        proxy = f"http://alice:{PASSWORD}@127.0.0.1:{proxy_server.server_address[1]}"
        c = OpenAIClient(base_url="http://127.0.0.1:9/v1", model="m", retry_times=1, retry_delay=0.01, proxy=proxy)
        with pytest.raises(APIStatusError) as info:
            c.chat_completions_sync(user("x"))
        assert info.value.status_code == 407 and proxy_server.auths  # the proxy did quote our credentials
        shown = str(info.value) + repr(info.value) + repr(info.value.body) + repr(c) + caplog.text
        assert PASSWORD not in shown and B64 not in shown
    # a proxy that is gone: a connection error, still without the password
    c = OpenAIClient(base_url="http://127.0.0.1:9/v1", model="m", retry_times=0, proxy=proxy)
    with pytest.raises(APIConnectionError) as info:
        c.chat_completions_sync(user("x"))
    assert PASSWORD not in str(info.value) + repr(info.value) + caplog.text
    assert PASSWORD not in repr(TransportOptions(proxy=proxy)) and "alice:***@" in repr(TransportOptions(proxy=proxy))
    with pytest.raises(ValueError) as bad:
        TransportOptions(proxy=f"ftp://alice:{PASSWORD}@host:21")
    assert PASSWORD not in str(bad.value) and "ftp" in str(bad.value)


def test_socks5_proxy_with_credentials(server):
    pytest.importorskip("socksio")
    with SocksProxy(credentials=("bob", PASSWORD)) as socks:
        proxy = f"socks5://bob:{PASSWORD}@127.0.0.1:{socks.server_address[1]}"
        for c in clients(server.url, server.root_url, proxy=proxy):
            assert c.chat_completions_sync(user("socks")) == "echo: socks"
        assert socks.auths and set(socks.auths) == {("bob", PASSWORD)}
        assert {port for _, port in socks.connects} == {server.port}


def test_socks_without_the_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "socksio", None)
    with pytest.raises(ValueError, match=r"flexllm\[socks\]"):
        OpenAIClient(base_url="http://h/v1", proxy="socks5://127.0.0.1:1080")


def test_verify_default_rejects_a_self_signed_server(tls_server):
    with pytest.raises(APIConnectionError, match="(?i)certificate"):
        OpenAIClient(base_url=tls_server.url, model="m", retry_times=0).chat_completions_sync(user("x"))


def test_verify_with_a_ca_bundle_path_context_or_false(tls_server, ca, ca_file):
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for verify in (ca_file, ctx, False):
        for c in clients(tls_server.url, tls_server.root_url, verify=verify):
            assert c.chat_completions_sync(user("tls")) == "echo: tls"
        assert "".join(ClaudeClient(api_key="k", base_url=tls_server.root_url, verify=verify)
                       .chat_completions_stream_sync(user("a b"))) == "echo: a b"
    assert tls_server.root_url.startswith("https://")


def test_https_through_a_connect_proxy(tls_server, ca_file):
    with HTTPProxy() as proxy_server:
        proxy = f"http://alice:{PASSWORD}@127.0.0.1:{proxy_server.server_address[1]}"
        c = ClaudeClient(api_key="k", base_url=tls_server.root_url, verify=ca_file, proxy=proxy)
        assert c.chat_completions_sync(user("tunnel")) == "echo: tunnel"
        assert proxy_server.connects == [f"127.0.0.1:{tls_server.port}"]
        assert proxy_server.auths == ["Basic " + B64]


def test_bad_verify_values_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no such CA bundle"):
        OpenAIClient(base_url="https://h/v1", verify=str(tmp_path / "missing.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ValueError, match="not a usable CA bundle"):
        OpenAIClient(base_url="https://h/v1", verify=str(junk))
    with pytest.raises(TypeError, match="verify"):
        OpenAIClient(base_url="https://h/v1", verify=3)


def test_http2_over_tls_and_without_the_extra(tls_server, ca_file, monkeypatch):
    pytest.importorskip("h2")
    c = OpenAIClient(base_url=tls_server.url, model="m", verify=ca_file, http2=True)
    assert c.chat_completions_sync(user("h2")) == "echo: h2"  # the mock speaks HTTP/1.1: ALPN falls back
    assert c._pipeline.transport._get_client()._transport._pool._http2 is True
    monkeypatch.setitem(sys.modules, "h2", None)
    with pytest.raises(ValueError, match=r"flexllm\[http2\]"):
        OpenAIClient(base_url="http://h/v1", http2=True)


def test_pool_endpoints_take_transport_options(server):
    with HTTPProxy() as first, HTTPProxy() as second:
        p1 = f"http://127.0.0.1:{first.server_address[1]}"
        p2 = f"http://127.0.0.1:{second.server_address[1]}"
        pool = LLMClientPool(endpoints=[{"base_url": server.url, "model": "m"},
                                        {"base_url": server.url, "model": "m", "proxy": p2}], proxy=p1)
        assert pool.chat_completions_batch_sync([user(f"q{i}") for i in range(4)], show_progress=False) == \
            [f"echo: q{i}" for i in range(4)]
        assert len(first.forwarded) + len(second.forwarded) == 4
        assert first.forwarded and second.forwarded  # the endpoint's own proxy wins over the pool's


def test_a_dead_proxy_is_named_as_the_proxy_without_its_password(server, caplog):
    """Nothing listens at the proxy address: the error says the proxy could not be reached (host:port),
    for single calls, streams and HTTPS targets alike, and never holds the proxy's password."""
    import traceback

    caplog.set_level(logging.DEBUG)
    port = closed_port()  # nothing listens there
    proxy = f"http://alice:{PASSWORD}@127.0.0.1:{port}"
    c = OpenAIClient(base_url=server.url, model="m", retry_times=0, proxy=proxy)
    calls = (lambda: c.chat_completions_sync(user("x")), lambda: list(c.chat_completions_stream_sync(user("x"))),
             lambda: OpenAIClient(base_url="https://127.0.0.1:9/v1", model="m", retry_times=0,
                                  proxy=proxy).chat_completions_sync(user("x")))
    for call in calls:
        with pytest.raises(APIConnectionError) as info:
            call()
        exc = info.value
        assert "proxy" in exc.message and f"127.0.0.1:{port}" in exc.message, exc.message
        shown = str(exc) + repr(exc) + exc.message + "".join(traceback.format_exception(exc)) + caplog.text
        assert PASSWORD not in shown and B64 not in shown
    assert len(server.requests) == 0
    # without a proxy the wording stays about the server
    with pytest.raises(APIConnectionError) as info:
        OpenAIClient(base_url=f"http://127.0.0.1:{port}/v1", model="m", retry_times=0).chat_completions_sync(user("x"))
    assert "proxy" not in info.value.message


def test_a_dead_proxy_from_the_environment_is_named_too(server, monkeypatch):
    """HTTP_PROXY pointing nowhere: the error names that proxy (never its password); NO_PROXY still
    sends the same request straight to the server."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://alice:{PASSWORD}@127.0.0.1:{port}")
    with pytest.raises(APIConnectionError) as info:
        OpenAIClient(base_url=server.url, model="m", retry_times=0).chat_completions_sync(user("x"))
    assert f"proxy 127.0.0.1:{port}" in info.value.message and "HTTP_PROXY" in info.value.message
    assert PASSWORD not in str(info.value) + repr(info.value) and B64 not in str(info.value)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert OpenAIClient(base_url=server.url, model="m", retry_times=0).chat_completions_sync(user("y")) == "echo: y"
