"""Child processes that cannot outlive the process that started them.

Every service of the embedded stack runs as a child process that:
- gets a parent-death signal (Linux ``PR_SET_PDEATHSIG``), so a supervisor killed
  with -9 still takes its children with it; a Python child also exits hard
  ``ORPHAN_GRACE`` seconds after that signal (``exit_when_orphaned``), because a Faust
  worker's graceful stop can wait for the broker that died with the supervisor;
- runs in its own session, so a Ctrl-C in the terminal reaches only the
  supervisor, which then stops the children in the right order;
- writes its output to a log file, so ``cryptics up`` can show clean progress.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

#: Put into every child's environment by ``spawn``: the pid of the process that started it.
#: Outside the CRYPTICS_ namespace, which the settings refuse unknown names in.
PARENT_PID_VARIABLE = "CRYPTICSLAB_PARENT_PID"
#: Seconds an orphaned Python child gives its graceful stop (begun by the parent-death signal)
#: before it exits hard. Its broker was a sibling and went with the parent, so there is nothing
#: left to flush; the venue's cancel-on-disconnect covers the orders of a killed session.
ORPHAN_GRACE = 5.0
#: The exit code of such a hard exit.
ORPHAN_EXIT_CODE = 70


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run_as(user: Optional[str]) -> dict:
    """subprocess arguments that drop to ``user`` completely: uid, gid and no extra groups.

    Switching only the uid would keep root's gid 0, and a root-group folder such
    as a 0700 mktemp folder would then deny traversal even with o+x set, because
    the group bits, not the 'others' bits, apply to a process in that group.
    """
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after fork and after the uid switch (CPython applies
        # user= before preexec_fn), so the signal survives the credential change.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    return preexec


def exit_when_orphaned(grace: float = ORPHAN_GRACE, interval: float = 0.2) -> bool:
    """In a child started by ``spawn``: exit hard ``grace`` seconds after the parent is gone.

    Reads (and removes, so that this process's own children do not inherit it) the parent pid
    ``spawn`` left in the environment; returns False, watching nothing, when there is none.
    The watch is a daemon thread, so it works while the event loop is stuck in a stop that
    waits for a dead broker.
    """
    value = os.environ.pop(PARENT_PID_VARIABLE, None)
    if not value:
        return False
    try:
        parent = int(value)
    except ValueError:
        log.warning("%s=%r is no pid; not watching for the parent's death", PARENT_PID_VARIABLE, value)
        return False

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        time.sleep(grace)
        sys.stderr.write(f"the process that started this one ({parent}) is gone and the stop took more than "
                         f"{grace:.0f} s: exiting\n")
        sys.stderr.flush()
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
    return True


@dataclass
class Child:
    """A started child process, and how to stop it."""

    name: str
    popen: subprocess.Popen
    stop_signal: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int:
        """Send the stop signal, wait up to ``timeout``, then kill. Returns the exit code."""
        if self.alive():
            try:
                self.popen.send_signal(self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def stop_together(children: Sequence[Child], timeout: float) -> None:
    """Stop several children at once: the stop signal to all, then ``timeout`` for all of them
    together, then kill whichever is left."""
    for child in children:
        if child.alive():
            try:
                child.popen.send_signal(child.stop_signal)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", child.name, timeout)
            child.popen.kill()
            child.popen.wait(5)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Optional[Mapping[str, str]] = None,
    user: Optional[str] = None,
    stop_signal: int = signal.SIGTERM,
    cwd: Optional[Path] = None,
) -> Child:
    """Start ``argv`` as a child that dies with us; output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**(os.environ if env is None else env), PARENT_PID_VARIABLE: str(os.getpid())},
            cwd=str(cwd) if cwd else None,
            **run_as(user),
            start_new_session=True,
            preexec_fn=_die_with_parent(stop_signal),
        )
    log.debug("started %s (pid %d)", name, popen.pid)
    return Child(name=name, popen=popen, stop_signal=stop_signal, log_path=log_path)


class StartupError(RuntimeError):
    """A service did not become healthy; the message says which and why."""


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    what: str,
    timeout: float,
    child: Optional[Child] = None,
    interval: float = 0.05,
) -> float:
    """Poll ``check`` until it returns True; return the seconds it took.

    Fails fast with the child's log tail if the child exits meanwhile.
    """
    started = time.monotonic()
    last_error: Optional[BaseException] = None
    while True:
        if child is not None and not child.alive():
            raise StartupError(
                f"{what}: process exited with code {child.popen.returncode}. "
                f"Last lines of {child.log_path}:\n{child.log_tail()}"
            )
        try:
            if await check():
                return time.monotonic() - started
        except Exception as exc:  # the service is not up yet: keep polling
            last_error = exc
        if time.monotonic() - started > timeout:
            detail = f" (last error: {last_error!r})" if last_error else ""
            tail = f"\nLast lines of {child.log_path}:\n{child.log_tail()}" if child else ""
            raise StartupError(f"{what}: not healthy after {timeout:.0f} s{detail}{tail}")
        await asyncio.sleep(interval)


async def port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def pid_alive(pid: int) -> bool:
    """True if ``pid`` names a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def environ_for_child(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
