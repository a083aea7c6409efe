"""Part 3 of benchmarks.bench_sink: the whole pipeline, from the simulated venue to PostgreSQL.

The simulated venue in this process (its market stepped by the benchmark, its two perpetuals
publishing ticker, book and index notifications) → a real `cryptics worker` with the venue URL
and the database (no credentials: market data only; the source produces to a Tansu broker of
its own, the persistence consumer of the same worker writes to PostgreSQL). After a warm-up,
the market is stepped as fast as the pipeline persists, never more than VENUE_WINDOW
notifications ahead, until --venue-events notifications were sent; timed until the market
tables hold one row per notification the venue ever sent (the venue's own counters), then each
table is checked against its topic read back from Kafka, and nothing may have gone to dead
letters. Skipped with --venue-events 0; it runs inside part 2 (benchmarks/bench_sink/pipeline.py),
whose schema registry it shares.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Callable, Optional, Sequence

from benchmarks.bench_sink.common import ROOT, BenchmarkError, CpuMeter, PipelineResult, get_json, start_spy, stop_spy

#: The simulated venue's perpetuals: each market step publishes a ticker, a book update and an
#: index price for each (its public channels); their rows are what part 3 counts.
VENUE_INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL")
MARKET_TABLES = {"ticker": "tickers", "book": "book_tops", "index": "index_prices"}
MARKET_CHANNELS = {"ticker": "ticker.", "book": "book.", "index": "price_index."}
#: Part 3 keeps at most this many notifications sent but not yet persisted (a bounded backlog:
#: the venue runs as fast as the pipeline takes it, never further ahead).
VENUE_WINDOW = 20_000


def _market_sent(venue) -> dict[str, int]:
    """Notifications the venue wrote, per market-data kind (its own counter, independent of the worker)."""
    sent = dict.fromkeys(MARKET_CHANNELS, 0)
    for (_session, channel), n in venue.notifications_sent.items():
        for kind, prefix in MARKET_CHANNELS.items():
            if channel.startswith(prefix):
                sent[kind] += n
    return sent


async def _market_rows(conn) -> dict[str, int]:
    return {kind: await conn.fetchval(f"SELECT count(*) FROM {table}") for kind, table in MARKET_TABLES.items()}


async def measure_from_venue(env: dict[str, str], dsn: str, bootstrap: str, events: int, root: Path, web_port: int,
                             services: dict[str, int], profile_dir: Optional[Path] = None, *,
                             name: str = "venue → worker → PostgreSQL",
                             also_done: Optional[Callable[[], Awaitable[bool]]] = None,
                             before_stop: Optional[Callable[[], Awaitable[None]]] = None,
                             companions: Sequence[tuple[str, dict[str, str], int]] = (),
                             also_ready: Optional[Callable[[], Awaitable[bool]]] = None) -> PipelineResult:
    """Part 3: the simulated venue (this process) → `cryptics worker` (market-data source → Kafka →
    persistence) → PostgreSQL. The venue's market is stepped as fast as the pipeline persists, never
    more than VENUE_WINDOW notifications ahead, until ``events`` notifications were sent after the
    warm-up; timed until the market tables hold a row for every notification the venue ever sent.

    For benchmarks/bench_analytics.py: ``also_done``, if given, must be true too before the run
    counts as done (the analytics caught up); ``before_stop`` runs after the checks, while the
    worker still serves its web views.

    ``companions`` (name, environment, web port): more `cryptics worker` processes of the same
    app, without the venue URL (as `cryptics up` runs its analytics worker beside the quoting
    one), started once the first worker serves its web views. They share the sink's consumer
    group, so rows persisted, duplicates and dead letters are summed over every worker's /sink/;
    each is CPU-metered under its name. ``also_ready``, if given, must be true too before the
    warm-up ends (e.g. the companions have their partitions and work)."""
    import asyncpg

    from app.pipeline.topics import read_until_quiet
    from app.stack.process import spawn
    from app.venue import Venue, VenueConfig
    from models.registry import record

    venue = Venue(replace(VenueConfig(), port=0, trusted_keys_dir=root / "venue-keys", market_running=False))
    await venue.start()
    worker = spawn("venue-worker", [sys.executable, "-m", "app.cli", "worker"], log_path=root / "logs" / "venue-worker.log",
                   env={**env, "CRYPTICS_VENUE_URL": venue.url, "CRYPTICS_INSTRUMENTS": ",".join(VENUE_INSTRUMENTS)},
                   cwd=ROOT)
    others: list = []  # the companions' Child objects, started below
    conn = await asyncpg.connect(dsn)
    loop = asyncio.get_running_loop()
    ports = [web_port] + [port for _, _, port in companions]
    by_port: dict[int, int] = {}  # market rows each worker reports written (its /sink/ view), read by the poller
    persisted = 0  # their sum

    def alive() -> None:
        for child in [worker, *others]:
            if not child.alive():
                raise BenchmarkError(f"{name}: {child.name} exited with code {child.popen.returncode}:\n"
                                     f"{child.log_tail(40)}")

    def tails() -> str:
        return "\n".join(f"{child.name}:\n{child.log_tail(40)}" for child in [worker, *others])

    async def sink_views() -> list[dict]:
        return [await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{port}/sink/") for port in ports]

    async def poll_sink() -> None:
        nonlocal persisted
        topics = [record(kind).topic for kind in MARKET_TABLES]
        while True:
            for port in ports:
                try:
                    view = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{port}/sink/")
                    by_port[port] = sum(view["topics"].get(t, {}).get("rows_written", 0)
                                        + view["topics"].get(t, {}).get("duplicates", 0) for t in topics)
                except OSError:
                    pass  # not serving yet
            persisted = sum(by_port.values())
            await asyncio.sleep(0.05)

    poller = asyncio.ensure_future(poll_sink())
    try:
        if companions:
            # As `cryptics up`: the quoting worker first, then the others once it serves.
            started_at = time.perf_counter()
            while True:
                alive()
                try:
                    await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{web_port}/sink/")
                    break
                except OSError:
                    if time.perf_counter() - started_at > 90:
                        raise BenchmarkError(f"{name}: the worker never served /sink/:\n{worker.log_tail(40)}")
                    await asyncio.sleep(0.1)
            for companion, companion_env, _port in companions:
                others.append(spawn(companion, [sys.executable, "-m", "app.cli", "worker"],
                                    log_path=root / "logs" / f"{companion}.log", env=companion_env, cwd=ROOT))
        # Warm-up: a slow market until rows arrive (the group join takes ~3 s on Tansu), then caught up.
        launched = time.perf_counter()
        while persisted == 0 or (also_ready is not None and not await also_ready()):
            alive()
            if time.perf_counter() - launched > 180:
                raise BenchmarkError(f"{name}: no row after 180 s (or also_ready never true):\n{tails()}")
            venue.step_market()
            await asyncio.sleep(0.05)
        caught_up_by = time.perf_counter() + 120
        while sum(_market_sent(venue).values()) - persisted > 0:
            alive()
            if time.perf_counter() > caught_up_by:
                raise BenchmarkError(f"{name}: the warm-up's {sum(_market_sent(venue).values()):,} notifications "
                                     f"never all persisted ({persisted:,} rows):\n{tails()}")
            await asyncio.sleep(0.05)
        rows_before = await _market_rows(conn)
        sent_before = sum(_market_sent(venue).values())
        meter = CpuMeter({"worker": worker.pid, **{child.name: child.pid for child in others}, **services},
                         "venue (this benchmark)")
        spies = [] if profile_dir is None else [start_spy(worker.pid, profile_dir / "venue-worker.txt"),
                                                 start_spy(os.getpid(), profile_dir / "venue.txt"),
                                                 *(start_spy(child.pid, profile_dir / f"{child.name}.txt")
                                                   for child in others)]
        first = time.perf_counter()
        steps = 0
        stalled_since = None
        while (sent := sum(_market_sent(venue).values())) - sent_before < events:
            if sent - persisted >= VENUE_WINDOW:
                alive()
                stalled_since = stalled_since or time.perf_counter()
                if time.perf_counter() - stalled_since > 120:
                    raise BenchmarkError(f"{name}: nothing persisted for 120 s ({persisted:,} rows, "
                                         f"{sent:,} notifications sent):\n{tails()}")
                await asyncio.sleep(0.002)
                continue
            stalled_since = None
            venue.step_market()
            steps += 1
            if steps % 8 == 0:
                await asyncio.sleep(0)  # let the venue's writers and the poller run
        expected = _market_sent(venue)
        deadline = time.perf_counter() + 120
        while (rows := await _market_rows(conn)) != expected or (also_done is not None and not await also_done()):
            alive()
            if any(rows[k] > expected[k] for k in expected) or time.perf_counter() > deadline:
                raise BenchmarkError(f"{name}: the venue sent {expected}, the tables hold {rows}"
                                     + ("" if rows != expected else " (and also_done never became true)"))
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        cpu = meter.stop()
        for spy in spies:
            await stop_spy(spy)
        # A moment more, so a late duplicate or an extra row would show; then count every market
        # table against its topic, read back independently of the worker.
        await asyncio.sleep(1.0)
        rows = await _market_rows(conn)
        if rows != expected:
            raise BenchmarkError(f"{name}: the venue sent {expected}, the tables hold {rows}")
        views = await sink_views()
        view = views[0]
        dead_letters = sum(v["totals"]["dead_letters"] for v in views)
        if dead_letters:
            raise BenchmarkError(f"{name}: {dead_letters} dead letters")
        for kind, table in {**MARKET_TABLES, "trade": "public_trades"}.items():
            on_topic = len(await read_until_quiet(bootstrap, record(kind).topic))
            in_table = await conn.fetchval(f"SELECT count(*) FROM {table}")
            # Public trades have no id: two prints alike in all of their natural key are one row
            # (timescale/0002), which the sink counts as a duplicate.
            duplicates = sum(v["topics"].get(record(kind).topic, {}).get("duplicates", 0)
                             for v in views) if kind == "trade" else 0
            if on_topic != in_table + duplicates:
                raise BenchmarkError(f"{name}: {on_topic:,} records on the {kind} topic, {in_table:,} rows in "
                                     f"{table} (+ {duplicates:,} identical prints)")
        if before_stop is not None:
            await before_stop()
        moved = sum(rows.values()) - sum(rows_before.values())
        print(f"  {name}: {moved:,} market-data notifications ({events:,} sent after the warm-up, "
              f"{sent_before - sum(rows_before.values()):,} in flight at the start) in {done - first:.2f} s, "
              f"{steps:,} market steps; per table {rows}", flush=True)
        return PipelineResult(name, sum(rows.values()), done - first, first - launched, sum(rows_before.values()),
                              0.0, view, cpu)
    finally:
        poller.cancel()
        for child in reversed(others):  # as `cryptics up` stops them: the last started first
            code = child.stop(timeout=30)
            if code not in (0, None):
                print(f"  note: {name}: {child.name} exited with code {code} on SIGTERM", flush=True)
        code = worker.stop(timeout=30)
        if code not in (0, None):
            print(f"  note: {name}: the worker exited with code {code} on SIGTERM", flush=True)
        await conn.close()
        await venue.stop()
