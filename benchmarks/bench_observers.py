"""Tick → order while an operator watches: Prometheus scraping and the HTML inspector open, against nobody watching.

    .venv/bin/python -m benchmarks.bench_observers [--runs 2] [--seconds 120] [--segment 5] [--quick]

benchmarks/bench_quoting.py's in-process case with the database, in `cryptics up`'s topology:
the quoting worker (analytics off) and the analytics worker beside it (bench_quoting's
``run_case`` companion), 20 market steps a second, BTC-PERPETUAL. The observers:

- Debian's Prometheus on loopback scraping ``GET /metrics`` of both workers every second;
- Debian's headless Chromium (the tests' driver, tests/integration/observers.py) with the
  inspector's home page of the quoting worker open: every second it reads ``/quoting/`` and
  ``/analytics/``, every fifth ``/tables/``, which the quoting worker answers by asking the
  analytics worker too (agents/table_views.py).

Watched and unwatched are compared inside one run, on the same processes: the measured window
is cut into segments of --segment seconds, watched and unwatched in turn (the first one
alternating from run to run), the observers stopped with SIGSTOP for the unwatched ones and
resumed with SIGCONT for the watched ones. The venue's probe is read and reset at each segment's
end and pooled per kind. Separate runs differ from each other by more than the 5% looked for
(a fresh broker and group every run), which this removes. The observers' CPU counts in the
window (they share the machine's two cores with the venue, both workers, Tansu and PostgreSQL).
The benchmark checks that they watched: Prometheus scraped each worker about once a second of
watched time, and the page refreshed about as often.

Printed: per run and pooled over the runs, the probe's p50, p90, p99 and max watched and
unwatched, the ratio; the CPU of every process. Aim (issue 14): p50 and p99 watched within 5%
of unwatched.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import uvloop

from app.venue.latency import summarise
from benchmarks import bench_quoting
from benchmarks.bench_sink.common import descendants, get_json, machine_summary, scratch_folder
from tests.integration.observers import Prometheus, chromium, quit_chromium


class Watchers:
    """Prometheus and a Chromium page on the workers for one run, paused and resumed between
    segments; the probe's samples pooled per kind of segment."""

    def __init__(self, folder: Path, segment: float, watched_first: bool, kinds: set[str]) -> None:
        self.folder, self.segment, self.watched_first, self.kinds = folder, segment, watched_first, kinds
        self.pids: dict[str, int] = {}
        self.samples: dict[str, list[float]] = {"watched": [], "unwatched": []}
        self.seconds = {"watched": 0.0, "unwatched": 0.0}
        self.scrapes: dict[str, int] = {}
        self.refreshes = self.first_refreshes = 0
        self.window_started = 0.0
        self.driver: Any = None
        self.requester: Optional[subprocess.Popen] = None
        self.methods: dict[str, int] = {}  # probe samples per order method, over every segment

    @contextlib.asynccontextmanager
    async def watching(self, ports: dict[str, int]) -> AsyncIterator[dict[str, int]]:
        loop = asyncio.get_running_loop()
        targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        prometheus = Prometheus(self.folder / "prometheus", *targets.values())
        driver = None
        try:
            if "prometheus" in self.kinds:
                prometheus.start()
                assert prometheus.child is not None
                self.pids["prometheus"] = prometheus.child.pid
            if "requests" in self.kinds:  # what the page asks of the worker, from a browser elsewhere
                self.requester = subprocess.Popen([sys.executable, "-c", PAGE_REQUESTS, str(ports["worker"])],
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.pids["requests"] = self.requester.pid
            if "chromium" in self.kinds:
                driver = self.driver = await loop.run_in_executor(None, chromium, self.folder / "chromium")
                await loop.run_in_executor(None, driver.get, f"http://{targets['worker']}/")
                self.pids["chromium"] = driver.service.process.pid
            yield dict(self.pids)
            self._signal(signal.SIGCONT)
            if driver is not None:
                self.refreshes = await loop.run_in_executor(None, _refreshes, driver) - self.first_refreshes
            for target in (await loop.run_in_executor(None, prometheus.targets) if prometheus.child else []):
                instance = target["labels"]["instance"]
                span = max(1, int(time.time() - self.window_started))  # the window and the moments since
                scraped = await loop.run_in_executor(None, prometheus.query,
                                                     f'count_over_time(up{{instance="{instance}"}}[{span}s])')
                name = next(n for n, t in targets.items() if t == instance)
                self.scrapes[name] = int(sum(scraped.values()))
        finally:
            self._signal(signal.SIGCONT)
            if self.requester is not None:
                self.requester.terminate()
                self.requester.wait(10)
            if driver is not None:
                await loop.run_in_executor(None, quit_chromium, driver, self.folder / "chromium")
            prometheus.stop()

    def _signal(self, sig: int) -> None:
        for pid in self.pids.values():
            for process in descendants(pid):
                try:
                    os.kill(process, sig)
                except ProcessLookupError:
                    pass

    async def window(self, venue: Any, seconds: float, rate: float) -> int:
        """The measured window in segments, watched and unwatched in turn."""
        if self.driver is not None:
            self.first_refreshes = await asyncio.get_running_loop().run_in_executor(None, _refreshes, self.driver)
        self.window_started = time.time()
        steps = 0
        count = max(2, 2 * round(seconds / (2 * self.segment)))
        for n in range(count):
            kind = "watched" if (n % 2 == 0) == self.watched_first else "unwatched"
            self._signal(signal.SIGCONT if kind == "watched" else signal.SIGSTOP)
            venue.latency.reset()
            started = time.perf_counter()
            steps += await bench_quoting._step(venue, self.segment, rate)
            self.seconds[kind] += time.perf_counter() - started
            for method, bucket in venue.latency.samples.items():
                self.samples[kind] += bucket
                self.methods[method] = self.methods.get(method, 0) + len(bucket)
        return steps


#: The inspector home page's requests (app/web/static/inspector.js, ``homePage().refresh``), once
#: a second, the three at once as the page sends them, without a browser: what the worker serves
#: when the operator's browser runs on another machine.
PAGE_REQUESTS = """
import concurrent.futures, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
def get(path):
    request = urllib.request.Request(base + path, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
with concurrent.futures.ThreadPoolExecutor(3) as pool:
    while True:
        started = time.monotonic()
        list(pool.map(get, ("/quoting/", "/analytics/", "/tables/")))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
"""


def _refreshes(driver: Any) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.refreshes || 0)"))


async def run(root: Path, args) -> dict:
    from app.venue import create_keypair

    stack = bench_quoting.Stack(root)
    quoting_args = argparse.Namespace(seconds=args.seconds, warmup=args.warmup, rate=20.0, amend_threshold=0.0,
                                      persist=True)
    runs: list[dict] = []
    problems: list[str] = []
    loop = asyncio.get_running_loop()

    async def analytics_view(port: int) -> dict:
        analytics = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{port}/analytics/")
        sink = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{port}/sink/")
        return {"counters": analytics["counters"], "sink": sink["totals"]}

    async def analytics_ready(port: int) -> bool:
        try:  # both of its groups settled: it applies events and its sink reads records
            view = await analytics_view(port)
        except OSError:
            return False
        return view["counters"]["events"] > 0 and view["sink"]["records"] > 0

    try:
        private, _ = create_keypair(root / "keys", bench_quoting.KID, root / "keys" / "trusted")
        await stack.start()
        by_key = {}
        for n in range(args.runs):
            key = f"run-{n + 1}"
            watchers = Watchers(root / key, args.segment, watched_first=n % 2 == 1, kinds=args.observers)
            r = await bench_quoting.run_case(
                key, [sys.executable, "-m", "app.cli", "worker"], {"CRYPTICS_ANALYTICS_ENABLED": "false"}, stack,
                quoting_args, private, root / "keys" / "trusted", None,
                companion_env={"CRYPTICS_ANALYTICS_ENABLED": "true", "CRYPTICS_VENUE": "simulated"},
                companion_ready=analytics_ready, companion_view=analytics_view,
                observers=watchers.watching, window=watchers.window)
            # The whole window's probe counts, for bench_quoting's check that every order was probed.
            r["probe"]["by_method"] = {method: {"count": n} for method, n in watchers.methods.items()}
            by_key[key] = r
            summary = {kind: summarise(samples) for kind, samples in watchers.samples.items()}
            runs.append({"key": key, "result": r, "summary": summary, "samples": watchers.samples,
                         "seconds": watchers.seconds, "scrapes": watchers.scrapes, "refreshes": watchers.refreshes})
            cpu = ", ".join(f"{k} {v / r['elapsed']:.2f}" for k, v in r["cpu"].items())
            print(f"  {key}: " + "; ".join(
                f"{kind} {s['count']} orders over {watchers.seconds[kind]:.0f} s, p50 {1e3 * s['p50_ms']:,.0f} µs, "
                f"p99 {1e3 * s['p99_ms']:,.0f}" for kind, s in summary.items()) + f"; CPU (cores) {cpu}", flush=True)
            print(f"    Prometheus scrapes {watchers.scrapes}, page refreshes {watchers.refreshes} in "
                  f"{watchers.seconds['watched']:.0f} s watched", flush=True)
            least = 0.8 * watchers.seconds["watched"]  # once a second of watched time, give or take
            if "prometheus" in args.observers and (set(watchers.scrapes) != {"worker", "companion"}
                                                   or min(watchers.scrapes.values()) < least):
                problems.append(f"{key}: Prometheus scraped {watchers.scrapes} in {watchers.seconds['watched']:.0f} s")
            if "chromium" in args.observers and watchers.refreshes < least:
                problems.append(f"{key}: the page refreshed {watchers.refreshes} times in "
                                f"{watchers.seconds['watched']:.0f} s watched")
            if min(s["count"] for s in summary.values()) == 0:
                problems.append(f"{key}: a kind of segment has no orders: {summary}")
        problems += bench_quoting._checks(by_key)
        for problem in problems:
            print(f"  CHECK FAILED: {problem}", flush=True)
        return {"runs": runs, "problems": problems}
    finally:
        stack.stop()


def report(result: dict) -> None:
    print("\n| run | watched | orders | seconds | p50 | p90 | p99 | max |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    pooled: dict[str, list[float]] = {"watched": [], "unwatched": []}
    rows = [(run["key"], run["summary"], run["seconds"]) for run in result["runs"]]
    for run in result["runs"]:
        for kind in pooled:
            pooled[kind] += run["samples"][kind]
    rows.append(("all", {kind: summarise(samples) for kind, samples in pooled.items()},
                 {kind: sum(run["seconds"][kind] for run in result["runs"]) for kind in pooled}))
    for key, summary, seconds in rows:
        for kind in ("unwatched", "watched"):
            s = summary[kind]
            print(f"| {key} | {'yes' if kind == 'watched' else 'no'} | {s['count']:,} | {seconds[kind]:.0f} "
                  f"| {1e3 * s['p50_ms']:,.0f} | {1e3 * s['p90_ms']:,.0f} | {1e3 * s['p99_ms']:,.0f} "
                  f"| {1e3 * s['max_ms']:,.0f} |")
    for key, summary, _ in rows:
        w, u = summary["watched"], summary["unwatched"]
        verdict = ", ".join(f"{q} {w[f'{q}_ms'] / u[f'{q}_ms']:.2f}×" for q in ("p50", "p90", "p99"))
        met = all(w[f"{q}_ms"] <= 1.05 * u[f"{q}_ms"] for q in ("p50", "p99"))
        print(f"{key}: watched / unwatched {verdict} (aim p50 and p99 within 5%: {'met' if met else 'NOT met'})")
    print("\nCPU (cores) over each run's window:")
    for run in result["runs"]:
        r = run["result"]
        print(f"  {run['key']}: " + ", ".join(f"{k} {v / r['elapsed']:.2f}" for k, v in r["cpu"].items()))


async def main_async(args) -> int:
    with scratch_folder("cryptics-bench-observers-", args.keep) as root:
        print(f"machine at the start: {machine_summary()}; {args.runs} runs of {args.seconds:g} s in segments of "
              f"{args.segment:g} s", flush=True)
        result = await run(root, args)
        report(result)
        print(f"\nmachine at the end: {machine_summary()}")
        return 1 if result["problems"] else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_observers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, help="runs, each with its own broker and workers (default 2; quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 120; quick 20)")
    parser.add_argument("--segment", type=float, default=5.0, help="seconds per segment, watched and unwatched in "
                                                                    "turn (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds stepped before the probe is reset, with the "
                                                     "observers on in watched runs (default 5; quick 3)")
    parser.add_argument("--observers", default="prometheus,chromium",
                        help="who watches (default prometheus,chromium); requests: the page's requests without a "
                             "browser, as from a browser on another machine; to tell the costs apart")
    parser.add_argument("--quick", action="store_true", help="a short check that it runs; not the figures")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) at the end")
    args = parser.parse_args()
    args.runs = args.runs if args.runs is not None else (1 if args.quick else 2)
    args.seconds = args.seconds or (20.0 if args.quick else 120.0)
    args.warmup = args.warmup or (3.0 if args.quick else 5.0)
    args.observers = {name.strip() for name in args.observers.split(",") if name.strip()}
    if not args.observers or not args.observers <= {"prometheus", "chromium", "requests"}:
        parser.error("--observers: a list of prometheus, chromium and requests")
    if args.runs < 1:
        parser.error("--runs: at least 1")
    if not 1.0 <= args.segment <= args.seconds / 2:
        parser.error("--segment: at least 1 s, and at most half of --seconds")
    try:
        sys.exit(uvloop.run(main_async(args)))  # the venue runs here: on uvloop, as bench_quoting runs it
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
