"""Tick → order while an operator watches: Prometheus scraping and the HTML inspector open, against nobody watching.

    .venv/bin/python -m benchmarks.bench_observers [--rounds 2] [--seconds 20] [--quick]

benchmarks/bench_quoting.py's in-process case with the database, in `cryptics up`'s topology
in every run: the quoting worker (analytics off) and the analytics worker beside it
(bench_quoting's ``run_case`` companion), 20 market steps a second, BTC-PERPETUAL. Runs
alternate, nobody watching then watched, watched then nobody (--rounds pairs). Watched:

- Debian's Prometheus on loopback scraping ``GET /metrics`` of both workers every second;
- Debian's headless Chromium (the tests' driver, tests/integration/observers.py) with the
  inspector's home page of the quoting worker open: every second it reads ``/quoting/`` and
  ``/analytics/``, every fifth ``/tables/``, which the quoting worker answers by asking the
  analytics worker too (agents/table_views.py).

Both start before the warm-up and run through the measured window; the window's figures
include what they cost the machine (its two cores are shared by the venue, both workers,
Tansu, PostgreSQL and the observers). The benchmark checks that they watched: Prometheus
scraped each worker in the window, and the page refreshed about once a second.

Printed: per run the venue's probe (p50, p90, p99, max), the quoting worker's own stages,
the CPU of every process; then the means of the watched and the unwatched runs and their
ratios. Aim (issue 14): p50 and p99 watched within 5% of unwatched.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

import uvloop

from app.venue.latency import percentile
from benchmarks import bench_quoting
from benchmarks.bench_sink.common import get_json, machine_summary
from tests.integration.observers import Prometheus, chromium, quit_chromium


class Watchers:
    """Prometheus and a Chromium page on the workers for one run; what they did, for the checks."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scrapes: dict[str, int] = {}
        self.refreshes = 0
        self.seconds = 0.0

    @contextlib.asynccontextmanager
    async def watching(self, ports: dict[str, int]) -> AsyncIterator[dict[str, int]]:
        loop = asyncio.get_running_loop()
        targets = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
        prometheus = Prometheus(self.folder / "prometheus", *targets.values())
        prometheus.start()
        driver = await loop.run_in_executor(None, chromium, self.folder / "chromium")
        try:
            await loop.run_in_executor(None, driver.get, f"http://{targets['worker']}/")
            started = time.monotonic()
            first = await loop.run_in_executor(None, _refreshes, driver)
            assert prometheus.child is not None
            yield {"prometheus": prometheus.child.pid, "chromium": driver.service.process.pid}
            self.seconds = time.monotonic() - started
            self.refreshes = await loop.run_in_executor(None, _refreshes, driver) - first
            for target in await loop.run_in_executor(None, prometheus.targets):
                scraped = await loop.run_in_executor(None, prometheus.query,
                                                     f'count_over_time(up{{instance="{target["labels"]["instance"]}"}}'
                                                     f'[{max(1, int(self.seconds))}s])')
                name = next(n for n, t in targets.items() if t == target["labels"]["instance"])
                self.scrapes[name] = int(sum(scraped.values()))
        finally:
            await loop.run_in_executor(None, quit_chromium, driver, self.folder / "chromium")
            prometheus.stop()


def _refreshes(driver: Any) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.refreshes || 0)"))


async def run(root: Path, args) -> dict:
    from app.venue import create_keypair

    stack = bench_quoting.Stack(root)
    quoting_args = argparse.Namespace(seconds=args.seconds, warmup=args.warmup, rate=20.0, amend_threshold=0.0,
                                      persist=True)
    results: dict[str, list[dict]] = {"unwatched": [], "watched": []}
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
        order: list[str] = []
        for i in range(args.rounds):
            order += ["unwatched", "watched"] if i % 2 == 0 else ["watched", "unwatched"]
        by_key = {}
        for n, mode in enumerate(order):
            key = f"{mode}-{n + 1}"
            watchers = Watchers(root / key) if mode == "watched" else None
            r = await bench_quoting.run_case(
                key, [sys.executable, "-m", "app.cli", "worker"], {"CRYPTICS_ANALYTICS_ENABLED": "false"}, stack,
                quoting_args, private, root / "keys" / "trusted", None,
                companion_env={"CRYPTICS_ANALYTICS_ENABLED": "true", "CRYPTICS_VENUE": "simulated"},
                companion_ready=analytics_ready, companion_view=analytics_view,
                observers=watchers.watching if watchers else None)
            results[mode].append(r)
            by_key[key] = r
            a = r["probe"]["all"]
            cpu = ", ".join(f"{k} {v / r['elapsed']:.2f}" for k, v in r["cpu"].items())
            print(f"  {key}: {a['count']} orders, probe p50 {1e3 * a['p50_ms']:,.0f} µs, p90 {1e3 * a['p90_ms']:,.0f}, "
                  f"p99 {1e3 * a['p99_ms']:,.0f}, max {1e3 * a['max_ms']:,.0f}; {r['steps']} steps; CPU (cores) {cpu}",
                  flush=True)
            if watchers is not None:
                r["watchers"] = {"scrapes": watchers.scrapes, "refreshes": watchers.refreshes,
                                 "seconds": watchers.seconds}
                print(f"    watched for {watchers.seconds:.1f} s: Prometheus scrapes {watchers.scrapes}, "
                      f"page refreshes {watchers.refreshes}", flush=True)
                least = 0.8 * watchers.seconds  # once a second, give or take a late one
                if set(watchers.scrapes) != {"worker", "companion"} or min(watchers.scrapes.values()) < least:
                    problems.append(f"{key}: Prometheus scraped {watchers.scrapes} in {watchers.seconds:.0f} s")
                if watchers.refreshes < least:
                    problems.append(f"{key}: the page refreshed {watchers.refreshes} times in {watchers.seconds:.0f} s")
        problems += bench_quoting._checks(by_key)
        for problem in problems:
            print(f"  CHECK FAILED: {problem}", flush=True)
        return {"results": results, "order": order, "problems": problems}
    finally:
        stack.stop()


def _mean(runs: list[dict], field: str) -> float:
    return sum(1e3 * r["probe"]["all"][field] for r in runs) / len(runs)


def report(result: dict) -> None:
    results = result["results"]
    print("\n| run | watched | orders | p50 | p90 | p99 | max | received → quoted p50 / p99 | "
          "quoted → order sent p50 / p99 | quoting worker cores | Chromium | Prometheus |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, mode in enumerate(result["order"]):
        r = results[mode][sum(1 for m in result["order"][:n] if m == mode)]
        a = r["probe"]["all"]
        stages = r["stages"]

        def stage(name: str) -> str:
            values = stages.get(name, [])  # sorted µs
            return f"{percentile(values, .5):,.0f} / {percentile(values, .99):,.0f}" if values else "—"
        cores = {k: v / r["elapsed"] for k, v in r["cpu"].items()}
        print(f"| {n + 1} | {'yes' if mode == 'watched' else 'no'} | {a['count']} | {1e3 * a['p50_ms']:,.0f} "
              f"| {1e3 * a['p90_ms']:,.0f} | {1e3 * a['p99_ms']:,.0f} | {1e3 * a['max_ms']:,.0f} "
              f"| {stage('received_to_quoted')} | {stage('quoted_to_order_sent')} | {cores['worker']:.2f} "
              f"| {cores.get('chromium', 0):.2f} | {cores.get('prometheus', 0):.2f} |")
    on, off = results["watched"], results["unwatched"]
    for field, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        w, u = _mean(on, field), _mean(off, field)
        print(f"{label}: watched {w:,.0f} µs, unwatched {u:,.0f} µs: {w / u:.2f}× (aim within 5%: "
              f"{'met' if w <= 1.05 * u else 'NOT met'})")
    if len(off) >= 2:
        print(f"unwatched against unwatched (the noise): p50 {1e3 * off[0]['probe']['all']['p50_ms']:,.0f} / "
              f"{1e3 * off[1]['probe']['all']['p50_ms']:,.0f} µs, p99 {1e3 * off[0]['probe']['all']['p99_ms']:,.0f} / "
              f"{1e3 * off[1]['probe']['all']['p99_ms']:,.0f} µs")


async def main_async(args) -> int:
    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-observers-"))
    os.chmod(root, 0o755)  # the PostgreSQL service user reads below it
    try:
        print(f"machine at the start: {machine_summary()}; {args.rounds} rounds of {args.seconds:g} s", flush=True)
        result = await run(root, args)
        report(result)
        print(f"\nmachine at the end: {machine_summary()}")
        return 1 if result["problems"] else 0
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_observers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="pairs of runs, unwatched and watched (default 2; quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per run (default 20; quick 6)")
    parser.add_argument("--warmup", type=float, help="seconds stepped before the probe is reset, with the "
                                                     "observers on in watched runs (default 5; quick 3)")
    parser.add_argument("--quick", action="store_true", help="a short check that it runs; not the figures")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) at the end")
    args = parser.parse_args()
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    args.seconds = args.seconds or (6.0 if args.quick else 20.0)
    args.warmup = args.warmup or (3.0 if args.quick else 5.0)
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    try:
        sys.exit(uvloop.run(main_async(args)))  # the venue runs here: on uvloop, as bench_quoting runs it
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
