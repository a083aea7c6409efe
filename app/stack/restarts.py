"""When ``cryptics up`` restarts a child that exited, and when it gives up (docs/operations.md#supervision).

Pure logic, no processes: the supervisor (app/stack/supervisor.py) tells an ``ExitHistory``
each time a child exits and gets back a ``Verdict``: wait this long and start it again, or
stop the stack because the child is in a crash loop.

- Backoff: the first restart waits ``first_delay``, each further one twice as long, up to
  ``max_delay``. A child that ran ``stable_after`` seconds or more before it exited starts
  over at ``first_delay``: one crash a day should not wait 10 s.
- Crash loop: ``crash_loop_exits`` exits of one child within ``crash_loop_window`` seconds.
  Restarting it again would only hide the fault, so the stack stops, naming the child and
  its last exit codes.
"""
from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 10.0
    stable_after: float = 30.0
    crash_loop_exits: int = 5
    crash_loop_window: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError("need 0 < first_delay <= max_delay")
        if self.crash_loop_exits < 1 or self.crash_loop_window <= 0:
            raise ValueError("need crash_loop_exits >= 1 and crash_loop_window > 0")


@dataclass(frozen=True)
class Exit:
    """One exit of a child: when (monotonic seconds), its return code, how long it had run."""

    at: float
    code: Optional[int]
    uptime: float


@dataclass(frozen=True)
class Verdict:
    crash_loop: bool
    #: Seconds to wait before the restart (0 when ``crash_loop``).
    delay: float
    #: The exits inside the crash-loop window, oldest first, this one last.
    recent: tuple[Exit, ...]


class ExitHistory:
    """The exits of one child, and what to do about the newest."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._recent: deque[Exit] = deque()
        #: Exits in a row, each after less than ``stable_after`` of running: the backoff's exponent.
        self._quick = 0

    def record(self, exit: Exit) -> Verdict:
        policy = self.policy
        self._recent.append(exit)
        while self._recent and exit.at - self._recent[0].at > policy.crash_loop_window:
            self._recent.popleft()
        recent = tuple(self._recent)
        if len(recent) >= policy.crash_loop_exits:
            return Verdict(crash_loop=True, delay=0.0, recent=recent)
        self._quick = 1 if exit.uptime >= policy.stable_after else self._quick + 1
        delay = min(policy.max_delay, policy.first_delay * 2 ** (self._quick - 1))
        return Verdict(crash_loop=False, delay=delay, recent=recent)


def describe_exit(code: Optional[int]) -> str:
    """``code 1``, ``signal 9 (SIGKILL)``: a return code as Popen gives it (negative: the signal)."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
        return f"signal {-code} ({name})"
    return f"code {code}"
