"""`cryptics up`: the whole embedded stack starts, works, and stops leaving no process behind."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg
import psutil

from app.stack import migrate
from app.stack.process import free_port, pid_alive

from .conftest import ROOT, cryptics, database_url_of


class Up:
    """`cryptics up` as a child process, with its output read line by line."""

    def __init__(self, state_dir: Path) -> None:
        env = dict(os.environ, CRYPTICS_STATE_DIR=str(state_dir), CRYPTICS_WEB_PORT=str(free_port()))
        for name in ("BROKER_URL", "DATABASE_URL", "SCHEMA_REGISTRY_URL", "VENUE_URL", "THALEX_KEY_ID"):
            env.pop(f"CRYPTICS_{name}", None)
        self.state_dir = state_dir
        self.proc = subprocess.Popen(cryptics("up"), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []

    def read_until(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip())
            if marker in line:
                return
        raise AssertionError(f"no {marker!r} in the output of cryptics up:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 90) -> int:
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines.extend(out.splitlines())
        return self.proc.returncode

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _http_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def _migrations(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["version"] for r in await conn.fetch("SELECT version FROM cryptics_migrations ORDER BY 1")]
    finally:
        await conn.close()


def test_up_runs_the_stack_and_stops_it_in_order(service_root):
    up = Up(service_root / "state-up")
    try:
        up.read_until("Ctrl-C stops everything", timeout=120)
        healthy = next(line for line in up.lines if re.search(r"healthy in [\d.]+ s$", line))
        print(healthy)  # start-up time, shown with pytest -s
        state = json.loads((up.state_dir / "up.json").read_text())
        assert set(state["children"]) == {"broker", "postgres", "registry", "venue", "worker", "analytics"}
        assert all(pid_alive(pid) for pid in state["children"].values())
        descendants = up.descendants()
        assert {p.pid for p in descendants} >= set(state["children"].values())

        # Each part answers: the worker's heartbeat went round the broker,
        # the registry serves, PostgreSQL holds the applied migrations.
        urls = state["urls"]
        beat = _http_json(f"{urls['web']}/heartbeat/")
        assert beat["own_round_trip_ms"] is not None and beat["counts"][beat["worker"]] >= 1
        assert isinstance(_http_json(f"{urls['registry']}/subjects"), list)
        assert "cryptics.system.heartbeat.avro-value" in _http_json(f"{urls['registry']}/subjects")
        plain = [m.version for m in migrate.discover() if not m.timescaledb_only]
        assert asyncio.run(_migrations(database_url_of(urls))) == plain
        # The database password is in its 0600 file only: not printed, not in up.json.
        password = Path(urls["database_password_file"]).read_text().strip()
        assert len(password) >= 20 and ":***@" in urls["database"]
        assert password not in (up.state_dir / "up.json").read_text()
        assert not [line for line in up.lines if password in line]
        assert Path(urls["database_password_file"]).stat().st_mode & 0o077 == 0
        assert urls["venue"].startswith("ws://127.0.0.1:") and urls["venue"].endswith("/ws/api/v2")
        assert (up.state_dir / "venue" / "cryptics-simulated.private.pem").exists()
        # The worker took the quoting lease and streams the simulated venue's market data.
        deadline = time.monotonic() + 30
        while True:
            md = _http_json(f"{urls['web']}/market-data/")
            if md["received"].get("ticker.BTC-PERPETUAL.raw", 0) > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert md["session_open"] and md["lease"]["held"] and md["account"]
        assert md["received"]["ticker.BTC-PERPETUAL.raw"] > 0 and md["books"]["BTC-PERPETUAL"]["synced"]
        # The analytics run in a worker of their own, which holds no venue session; the
        # quoting worker runs none.
        assert not _http_json(f"{urls['web']}/analytics/")["enabled"]
        deadline = time.monotonic() + 30
        while True:
            analytics = _http_json(f"{urls['analytics']}/analytics/")
            if analytics["counters"]["applied"].get("ticker", 0) > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert analytics["enabled"] and analytics["counters"]["applied"]["ticker"] > 0
        assert analytics["tables"]["mark_candles_1m"] > 0
        assert not _http_json(f"{urls['analytics']}/market-data/")["session_open"]
        # The quoting worker's table views answer for the analytics worker's tables too.
        listed = {t["name"]: t for t in _http_json(f"{urls['web']}/tables/")["tables"]}
        assert listed["mark_candles_1m"]["via"] == urls["analytics"] and listed["mark_candles_1m"]["keys"] > 0
        page = _http_json(f"{urls['web']}/tables/mark_candles_1m/")
        assert page["via"] == urls["analytics"] and page["items"]
        own = _http_json(f"{urls['analytics']}/tables/mark_candles_1m/")["items"]
        # (the market moves between the two requests: the oldest window is the same in both)
        assert (page["items"][0]["key"], page["items"][0]["window"]) == (own[0]["key"], own[0]["window"])
    finally:
        up.proc.send_signal(signal.SIGTERM)
        code = up.finish()
    assert code == 0, "\n".join(up.lines)
    stops = [line.split("stopping ")[1] for line in up.lines if "] stopping " in line]
    assert stops == ["analytics", "worker", "venue", "registry", "postgres", "broker"]
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in descendants) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p.pid for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes left behind: {left}"
    assert not (up.state_dir / "up.json").exists()


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie; a process that exits while it is looked at is not alive."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_kill_9_of_up_takes_its_children_along(service_root):
    up = Up(service_root / "state-kill")
    try:
        up.read_until("Ctrl-C stops everything", timeout=120)
        descendants = up.descendants()
        assert len(descendants) >= 4
    finally:
        up.proc.kill()
        up.finish()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = [p for p in descendants if _alive(p)]
        if not left:
            break
        time.sleep(0.2)
    assert left == [], f"orphans after kill -9: {[(p.pid, p.name()) for p in left]}"


# A service whose stop never ends: it ignores the parent-death signal (SIGTERM), as a Faust
# worker waiting for a broker that died with `up` in effect does. Prints whether the parent pid
# was left in its environment for its own children.
_STUCK_CHILD = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from app.stack.process import PARENT_PID_VARIABLE, exit_when_orphaned
watching = exit_when_orphaned(grace=1.0) if sys.argv[1] == "watch" else False
print(watching, PARENT_PID_VARIABLE in os.environ, flush=True)
time.sleep(120)
"""

# The parent: spawns the two children the way `up` does, prints their pids, waits to be killed.
_PARENT = """
import sys, time
from pathlib import Path
from app.stack.process import spawn
logs = Path(sys.argv[1])
children = [spawn(mode, [sys.executable, "-c", sys.argv[2], mode], log_path=logs / f"{mode}.log")
            for mode in ("watch", "no-watch")]
print(*[c.pid for c in children], flush=True)
time.sleep(120)
"""


def test_a_child_whose_stop_hangs_still_goes_when_its_parent_is_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path), _STUCK_CHILD], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    watched = unwatched = None
    try:
        watched, unwatched = (psutil.Process(int(pid)) for pid in parent.stdout.readline().split())
        for mode in ("watch", "no-watch"):
            deadline = time.monotonic() + 30
            while not (tmp_path / f"{mode}.log").read_text().strip().endswith(("True False", "False True")):
                assert time.monotonic() < deadline, (tmp_path / f"{mode}.log").read_text()
                time.sleep(0.1)
        # The watching child took the variable out of its environment; the other still has it.
        assert (tmp_path / "watch.log").read_text().strip().endswith("True False")
        assert (tmp_path / "no-watch.log").read_text().strip().endswith("False True")
        parent.kill()
        parent.wait(10)
        killed_at = time.monotonic()
        while _alive(watched) and time.monotonic() - killed_at < 20:
            time.sleep(0.1)
        assert not _alive(watched), "the watching child outlived its parent by 20 s"
        # Without the watch, the parent-death signal alone leaves the stuck child running.
        assert _alive(unwatched)
        # It went by its hard exit (the SIGTERM was ignored), saying why.
        assert "is gone and the stop took more than 1 s: exiting" in (tmp_path / "watch.log").read_text()
    finally:
        parent.kill()
        for child in (watched, unwatched):
            if child is not None and _alive(child):
                child.kill()
