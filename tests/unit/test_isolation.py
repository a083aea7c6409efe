"""The unit tier's rule holds: a test here cannot reach the network or start a process."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest


def test_a_network_connection_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(RuntimeError, match="belongs in tests/integration/"):
            sock.connect(("127.0.0.1", 9))


def test_listening_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(RuntimeError, match="belongs in tests/integration/"):
            sock.bind(("127.0.0.1", 0))


def test_a_child_process_is_refused():
    with pytest.raises(RuntimeError, match="belongs in tests/integration/"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


async def test_an_event_loop_still_runs_but_cannot_connect():
    await asyncio.sleep(0)  # the loop's own self-pipe is a socketpair: allowed
    with pytest.raises(RuntimeError, match="belongs in tests/integration/"):
        await asyncio.open_connection("127.0.0.1", 9)
