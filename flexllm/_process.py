"""This process's id, kept without a syscall: per-request fork checks (a client made before gunicorn or
celery forks must not reuse the parent's sockets, threads or locks) compare against it millions of times,
and os.getpid() is a system call each time. Updated in a forked child by os.register_at_fork."""
from __future__ import annotations

import os

__all__ = ["current"]

_pid = os.getpid()


def current() -> int:
    """os.getpid(), as of the last fork this interpreter made."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
else:  # no fork on this platform (Windows): ids never change under us, but stay exact anyway
    current = os.getpid  # type: ignore[assignment]  # noqa: F811
