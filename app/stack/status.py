"""``cryptics status``: the running stack as ``up.json`` describes it, as a table (docs/operations.md#cryptics-status).

Pure: a parsed ``up.json`` (or None when there is none) and whether its supervisor lives in,
the text and the exit code out. The exit code is 0 when the stack is up (every child
running), 1 while a child is being restarted, 3 when no stack runs (no ``up.json``, or one
left behind by a supervisor that is gone).
"""
from __future__ import annotations

import time
from typing import Optional

UP, RECOVERING, NOT_RUNNING = 0, 1, 3


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe(state: Optional[dict], supervisor_alive: bool, now: Optional[float] = None) -> tuple[str, int]:
    """The status text and exit code for the parsed ``up.json`` ``state``."""
    if state is None:
        return "no stack running (no up.json in the state folder)", NOT_RUNNING
    if not supervisor_alive:
        return (f"no stack running: up.json names supervisor pid {state.get('pid')}, which is gone "
                "(it was killed without cleaning up)"), NOT_RUNNING
    now = time.time() if now is None else now
    services = state.get("services", {})
    header = ("SERVICE", "STATE", "PID", "RESTARTS", "LAST EXIT", "UP FOR")
    rows = []
    for name, s in services.items():
        up_for = _duration(now - s["up_since"]) if s.get("state") == "running" and s.get("up_since") else "-"
        rows.append((name, s.get("state", "?"), str(s.get("pid") or "-"), str(s.get("restarts", 0)),
                     s.get("last_exit_text") or "-", up_for))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    up = bool(services) and all(s.get("state") == "running" for s in services.values())
    started = state.get("started_at")
    lines.append("")
    lines.append(f"stack {'up' if up else 'recovering'}: supervisor pid {state.get('pid')}"
                 + (f", started {_duration(now - started)} ago" if started else ""))
    unpersisted = state.get("unpersisted")
    if unpersisted and unpersisted.get("records") is not None:
        lines.append(f"not yet persisted on the memory broker: {unpersisted['records']} records, the oldest "
                     f"{unpersisted['oldest_seconds']:.1f} s old (most seen {unpersisted['most_records']}, "
                     f"longest {unpersisted['longest_seconds']:.1f} s)")
    for loss in state.get("broker_losses", []):
        lines.append(f"a broker death lost {loss['unpersisted']} unpersisted records, {loss['dead_letters']} dead "
                     f"letters and {loss['changelog_records']} changelog records")
    return "\n".join(lines), UP if up else RECOVERING
