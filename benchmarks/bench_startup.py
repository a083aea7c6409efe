"""Time from `cryptics up` to "healthy", cold (fresh state folder: initdb included) and warm.

    .venv/bin/python -m benchmarks.bench_startup [--runs 3]

Each run starts the whole embedded stack in a child process, reads its output
until it reports healthy, then stops it with SIGTERM and checks it exited 0.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(state_dir: Path) -> tuple[float, float]:
    """(wall seconds until healthy, the seconds `up` itself reported)."""
    from app.stack.process import free_port

    env = dict(os.environ, CRYPTICS_STATE_DIR=str(state_dir), CRYPTICS_WEB_PORT=str(free_port()))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "up"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reported = None
    try:
        for line in proc.stdout:
            match = re.search(r"\] healthy in ([\d.]+) s$", line.rstrip())
            if match:
                reported = float(match.group(1))
                break
            if "start-up failed" in line:
                raise RuntimeError(line)
        wall = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=90)
    if reported is None or proc.returncode != 0:
        raise RuntimeError(f"cryptics up did not become healthy (exit {proc.returncode})")
    return wall, reported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-"))
    os.chmod(root, 0o755)
    try:
        cold = one_run(root / "state")
        warm = [one_run(root / "state") for _ in range(args.runs)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"cold start (initdb): {cold[0]:.2f} s wall, {cold[1]:.2f} s reported")
    print(f"warm start, median of {args.runs}: {statistics.median(w for w, _ in warm):.2f} s wall "
          f"(min {min(w for w, _ in warm):.2f}, max {max(w for w, _ in warm):.2f})")


if __name__ == "__main__":
    main()
