"""No process, no socket: the rule of the unit and property tiers, enforced.

Their conftests import the two hooks below, so each of their tests runs with network
connections, listening sockets and child processes refused: a test that needs a real
service fails loudly there instead of quietly making the tier slow. It belongs in
tests/integration/.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
from typing import Iterator

import pytest

_WHY = "a unit or property test opened a socket or started a process: it belongs in tests/integration/"


def _refuse(*_args, **_kwargs):
    raise RuntimeError(_WHY)


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("connect", "connect_ex", "bind"):
            patch.setattr(socket.socket, name, _refuse)
        patch.setattr(subprocess.Popen, "__init__", _refuse)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _isolated():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _isolated():
        return (yield)
