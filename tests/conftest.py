"""Shared fixtures: a real mock server on 127.0.0.1 per test module, fresh state per test."""
import logging

import pytest

from flexllm.mock import MockServer


@pytest.fixture(scope="module")
def _server():
    with MockServer() as server:
        yield server


@pytest.fixture
def server(_server):
    """The module's mock server, with its recordings, rules and settings reset for this test."""
    _server.clear()
    _server.configure(latency=0.0, jitter=0.0, error_rate=0.0)
    yield _server
    _server.clear()


@pytest.fixture
def caplog_flexllm(caplog):
    caplog.set_level(logging.DEBUG, logger="flexllm")
    return caplog


def user(text):
    return [{"role": "user", "content": text}]
