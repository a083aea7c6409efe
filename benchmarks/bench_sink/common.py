"""What the parts of benchmarks.bench_sink share: the error that fails the benchmark, the ticker
records they write, CPU metering from /proc, the environment and databases of the child
processes, the pipeline result, and py-spy sampling.

CPU is read from /proc (utime + stime per process, busy time per machine), so a case can show
what its client, its server and every other process on the machine used while it ran.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Optional

ROOT = Path(__file__).resolve().parents[2]
#: Keys of the preloaded events, chosen so that the default (murmur2) partitioner puts two on
#: each of the 3 partitions: ETH-PERPETUAL, ETH-27JUN25 → 0; BTC-PERPETUAL, SOL-PERPETUAL → 1;
#: BTC-26SEP25, BTC-26DEC25 → 2. The benchmark checks the spread it got.
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "SOL-PERPETUAL", "ETH-27JUN25", "BTC-26SEP25", "BTC-26DEC25")


class BenchmarkError(RuntimeError):
    """A case lost or duplicated rows, or a service misbehaved: the numbers would be meaningless."""


# -- rows --------------------------------------------------------------------------------


def ticker_values(n: int, start: int = 0) -> list[dict]:
    """``n`` realistic ticker records (fastavro dictionaries), each with its own natural key."""
    from models.examples import example

    base = example("ticker")
    mark, received = base["mark_timestamp"], base["received_at"]
    out = []
    for i in range(start, start + n):
        v = dict(base)  # every value is immutable (floats, None, str, datetime): a flat copy will do
        v["instrument_name"] = INSTRUMENTS[i % len(INSTRUMENTS)]
        v["mark_timestamp"] = mark + i * 0.001
        v["received_at"] = received + timedelta(microseconds=1000 * i + 137)
        v["mark_price"] = 100_000.0 + (i % 10_000) * 0.5
        v["best_bid_price"] = v["mark_price"] - 3.0
        v["best_ask_price"] = v["mark_price"] + 3.0
        v["best_bid_amount"] = 0.001 * (1 + i % 500)
        out.append(v)
    return out


# -- CPU ---------------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (from /proc; we may read the backend's as root or as its owner)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def cpu_of_tree(pid: int) -> float:
    """CPU seconds of ``pid`` and every process below it (PostgreSQL: the postmaster and its
    backends; Chromium: its driver, the browser, its zygotes and renderers)."""
    total = 0.0
    for current in descendants(pid):
        cpu = process_cpu(current)
        if cpu == cpu or current == pid:  # a descendant that just exited counts nothing, not NaN
            total += cpu
    return total


def _cpu_sample(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_of_tree(pid) for name, pid in pids.items()}


class CpuMeter:
    """CPU seconds used from its creation to ``stop()``: by each process (group) of ``pids``,
    by this process (under the name ``own``) and by every other process on the machine."""

    def __init__(self, pids: dict[str, int], own: str) -> None:
        self.pids, self.own = pids, own
        self.before, self.own_before, self.busy_before = _cpu_sample(pids), time.process_time(), machine_busy()

    def stop(self) -> dict[str, float]:
        after = _cpu_sample(self.pids)
        cpu = {k: after[k] - self.before[k] for k in self.pids}
        cpu[self.own] = time.process_time() - self.own_before
        cpu["other processes"] = max(0.0, machine_busy() - self.busy_before - sum(cpu.values()))
        return cpu


def machine_summary() -> str:
    """Cores and load: other processes on the machine show up here, not in the ratios."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} (1 min), {five:.2f} (5 min)"


@contextlib.contextmanager
def scratch_folder(prefix: str, keep: bool) -> Iterator[Path]:
    """A fresh temporary folder the PostgreSQL service user can read below (mode 0755), removed
    at the end unless ``keep`` (then its place is printed: the logs are in it)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- services and child processes ---------------------------------------------------------------


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def create_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a worker: ours without any CRYPTICS_ variable, then exactly ``extra``
    (so a CRYPTICS_VENUE_URL of the caller's shell cannot make the source connect)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTICS_")}
    env.update(extra)
    return env


@dataclass
class PipelineResult:
    """One worker's run in part 2 or 3: events moved, timed from its first row to its last."""

    name: str
    events: int
    seconds: float
    first_row_after: float
    rows_at_first: int
    stamp_span: float
    sink_view: Optional[dict] = None
    #: CPU seconds used between the first row and the last, per process (group).
    cpu: Optional[dict] = None

    @property
    def rate(self) -> float:
        return (self.events - self.rows_at_first) / self.seconds


# -- py-spy (--profile) ------------------------------------------------------------------------


def start_spy(pid: int, output: Path) -> subprocess.Popen:
    """py-spy sampling process ``pid`` into ``output`` (collapsed stacks) until stop_spy."""
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                             "--output", str(output), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def stop_spy(spy: subprocess.Popen) -> None:
    spy.send_signal(2)  # SIGINT: py-spy writes what it has
    await asyncio.get_running_loop().run_in_executor(None, spy.wait)


def profile_summary(path: Path, top: int = 25) -> list[str]:
    """From a py-spy raw (collapsed) file: the functions with the most samples of their own, and the
    project's functions (app/, agents/) with what they cost including their callees."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return ["  py-spy took no samples"]
    lines = [f"  py-spy: {total:,} samples; top self time:"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * count / total:5.1f}%  {frame}")
    lines.append("  the project's code, including callees:")
    ours = [(f, c) for f, c in inclusive.items() if "(app/" in f or "(agents/" in f]
    for frame, count in sorted(ours, key=lambda kv: -kv[1])[:top]:
        if "app/cli.py" in frame or "app/worker.py" in frame:
            continue
        lines.append(f"    {100 * count / total:5.1f}%  {frame}")
    return lines
