"""Persistence throughput: the sink's write path alone, Kafka → Faust → PostgreSQL, then venue → PostgreSQL.

    .venv/bin/python -m benchmarks.bench_sink [--quick] [--rows 100000] [--repeat 3] [--events 100000]
                                              [--venue-events 100000]

Everything runs in one go on loopback, in a temporary folder removed at the end, so the
ratios between the lines come from one run and machine noise cancels out.

Part 1, the write path alone: an embedded PostgreSQL (app.stack.postgres) with the
project's migrations (app.stack.migrate), rows built by ``spec("ticker").build`` from
``models.examples.example("ticker")`` varied per row (distinct natural keys: instrument,
mark time, received_at). Rows are built before the clock starts. Each case runs
--repeat times (the fastest is kept), each time on an emptied table (TRUNCATE +
CHECKPOINT before it) and followed by a check of the row count and of the distinct
natural keys (a case that lost or duplicated a row fails the benchmark):
- the sink's TableWriter, "copy" mode (binary COPY into the temporary staging table,
  then INSERT … SELECT … ON CONFLICT DO NOTHING, one transaction per batch), at several
  batch sizes;
- raw binary COPY straight into the table (asyncpg copy_records_to_table, no staging,
  no dedup): the ceiling;
- TableWriter, "unnest" mode (INSERT … SELECT FROM unnest($1::…[], …));
- executemany of an INSERT … ON CONFLICT DO NOTHING upsert, one transaction per batch;
- one INSERT per row in autocommit (fewer rows: it is slow);
- a redelivery: the same batches through TableWriter twice; the second pass must insert
  nothing.
Each case also shows the CPU time of this process (the client: asyncpg's encoding) and of
its server backend per row, and how many cores other processes on the machine used
meanwhile: a busy machine shows up there.

Part 2, the pipeline: a Tansu broker (app.stack.broker), the schema registry
(`cryptics registry`) and N ticker records preloaded onto the ticker topic (Avro in the
Confluent wire format through app.pipeline.codec.AvroCodec, key = instrument, several instruments
so that all partitions get traffic) BEFORE the worker starts. Then:
- a real `cryptics worker` (its persistence agents, agents/persistence.py; no venue URL,
  so the market-data source stays idle; heartbeat off);
- the consume-only agent of benchmarks/naive_sink_app.py on the same N events (its own
  app and consumer group): batches taken and acked as the persistence agents do, and
  nothing else: the most a Faust-streamed sink can do here (timed by the worker's clock);
- the naive agent of benchmarks/naive_sink_app.py (its own app and consumer group, its
  own topic and database, fewer events): one event per iteration, one INSERT per event,
  awaited before the next.
Throughput is measured from the first row in the table (not from the worker's start:
Tansu completes a group join only after session_timeout/2, ~3 s) to the moment
``count(*)`` reaches exactly N; then zero loss and zero duplicates are checked
(count == N and N distinct natural keys) and nothing may have gone to dead letters.
The sink's batch settings can be chosen (--sink-batch-size, --sink-batch-age; the
defaults are the product's, CRYPTICS_SINK_BATCH_SIZE / CRYPTICS_SINK_BATCH_AGE).
Part 3, the whole pipeline (skipped with --venue-events 0): the simulated venue in this process
(its market stepped by the benchmark, its two perpetuals publishing ticker, book and index
notifications) → a real `cryptics worker` with the venue URL and the database (no credentials:
market data only; the source produces to a Tansu broker of its own, the persistence consumer of
the same worker writes to PostgreSQL). After a warm-up, the market is stepped as fast as the
pipeline persists, never more than VENUE_WINDOW notifications ahead, until --venue-events
notifications were sent; timed until the market tables hold one row per notification the
venue ever sent (the venue's own counters), then each table is checked against its topic read
back from Kafka.
Each run shows the CPU used meanwhile by the worker, the broker, PostgreSQL and other
processes, and the worker's CPU per event is split into what was timed apart (Avro decode
and row build in this process, the COPY sink's client side from part 1) and the rest.
With --profile and py-spy on the PATH (it is no dependency of the project), py-spy
samples the product worker during its run and the top functions are printed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
UTC = timezone.utc
STAMP = datetime(2026, 1, 1, tzinfo=UTC)  # persisted_at of the write-path rows
#: Keys of the preloaded events, chosen so that the default (murmur2) partitioner puts two on
#: each of the 3 partitions: ETH-PERPETUAL, ETH-27JUN25 → 0; BTC-PERPETUAL, SOL-PERPETUAL → 1;
#: BTC-26SEP25, BTC-26DEC25 → 2. The benchmark checks the spread it got.
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "SOL-PERPETUAL", "ETH-27JUN25", "BTC-26SEP25", "BTC-26DEC25")
NAIVE_TOPIC = "cryptics.bench.naive_ticker.avro"


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


def ticker_rows(n: int) -> list[tuple]:
    from app.pipeline.sink.tables import SourceRecord, spec
    from models.registry import record

    src = SourceRecord(record("ticker").topic, 0, 0, b"BTC-PERPETUAL", b"", 1747578855.5)
    build = spec("ticker").build
    return [build(v, src) for v in ticker_values(n)]


# -- part 1: the write path ------------------------------------------------------------------


@dataclass
class Case:
    name: str
    rows: int
    seconds: float
    note: str = ""
    #: CPU seconds of this process (asyncpg encoding, the event loop) and of the server backend.
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    #: CPU seconds that processes other than ours (this one, PostgreSQL's) used meanwhile.
    others_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def _process_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (from /proc; we may read the backend's as root or as its owner)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def _reset(conn) -> None:
    await conn.execute("TRUNCATE tickers")
    await conn.execute("CHECKPOINT")  # every case starts with no dirty pages of the one before


async def _check_table(conn, expected: int, what: str) -> None:
    count, distinct = await conn.fetchrow(
        "SELECT count(*), count(DISTINCT (instrument_name, time, received_at)) FROM tickers")
    if count != expected or distinct != expected:
        raise BenchmarkError(f"{what}: expected {expected:,} rows with distinct keys, "
                             f"the table holds {count:,} rows, {distinct:,} distinct keys")


async def write_path(dsn: str, postmaster: int, rows: list[tuple], *, copy_batches: Sequence[int], unnest_batches: Sequence[int],
                     executemany_batch: int, per_row: int, raw_batch: int, redelivery: int,
                     redelivery_batch: int, repeat: int) -> list[Case]:
    import asyncpg

    from app.pipeline.sink import TableWriter, spec

    s = spec("ticker")
    n = len(rows)
    columns = s.columns + ("persisted_at",)
    with_stamp = [r + (STAMP,) for r in rows]  # for the paths that send persisted_at per row
    quoted = ", ".join(f'"{c}"' for c in columns)
    upsert = (f"INSERT INTO tickers ({quoted}) VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) "
              "ON CONFLICT DO NOTHING")
    writers = {mode: TableWriter(s, mode) for mode in ("copy", "unnest")}
    cases: list[Case] = []
    conn = await asyncpg.connect(dsn)
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    try:
        # Warm-up: staging table, prepared statements, catalog caches; not measured.
        for writer in writers.values():
            await writer.write(conn, rows[:1000], STAMP)
            await _reset(conn)
        await conn.executemany(upsert, with_stamp[:100])
        await _reset(conn)

        async def run(name: str, count: int, body: Callable[[], Awaitable[None]], note: str = "",
                      reset: bool = True) -> None:
            """Time ``body`` ``repeat`` times, each on an emptied table (unless ``reset`` is false), and keep
            the fastest; after each, the table must hold exactly ``count`` rows with distinct keys."""
            best: Optional[Case] = None
            for _ in range(repeat):
                if reset:
                    await _reset(conn)
                cpu, server, pg_all, busy = (time.process_time(), _process_cpu(backend), _cpu_of_tree(postmaster),
                                             _machine_busy())
                started = time.perf_counter()
                await body()
                seconds = time.perf_counter() - started
                cpu, server = time.process_time() - cpu, _process_cpu(backend) - server
                others = max(0.0, _machine_busy() - busy - cpu - (_cpu_of_tree(postmaster) - pg_all))
                await _check_table(conn, count, name)
                if best is None or seconds < best.seconds:
                    best = Case(name, count, seconds, note, cpu, server, others)
            assert best is not None
            cases.append(best)
            print(f"  {name:<46} {count:>9,} rows {best.seconds:8.2f} s {best.rate:>11,.0f} rows/s "
                  f"(cpu: client {best.client_cpu:.2f} s, server {best.server_cpu:.2f} s; other processes "
                  f"{best.others_cpu / best.seconds:.2f} cores)", flush=True)

        def through_writer(mode: str, batch: int, subset: Sequence[tuple]) -> Callable[[], Awaitable[None]]:
            async def body() -> None:
                inserted = 0
                for i in range(0, len(subset), batch):
                    result = await writers[mode].write(conn, subset[i:i + batch], STAMP)
                    if result.rejected:
                        raise BenchmarkError(f"{mode}: rows rejected: {result.rejected[:3]}")
                    inserted += result.inserted
                if inserted != len(subset):
                    raise BenchmarkError(f"{mode} at {batch:,}: {inserted:,} inserted of {len(subset):,}")
            return body

        for batch in copy_batches:
            await run(f"TableWriter copy, batch {batch:,}", n, through_writer("copy", batch, rows))

        def raw_copy(batch: int) -> Callable[[], Awaitable[None]]:
            async def body() -> None:
                for i in range(0, n, batch):
                    await conn.copy_records_to_table("tickers", records=with_stamp[i:i + batch], columns=columns)
            return body
        await run(f"raw COPY into the table, batch {raw_batch:,}", n, raw_copy(raw_batch),
                  note="no staging, no dedup")
        await run(f"raw COPY into the table, one COPY of {n:,}", n, raw_copy(n), note="no staging, no dedup")

        for batch in unnest_batches:
            await run(f"TableWriter unnest, batch {batch:,}", n, through_writer("unnest", batch, rows))

        async def executemany() -> None:
            for i in range(0, n, executemany_batch):
                async with conn.transaction():
                    await conn.executemany(upsert, with_stamp[i:i + executemany_batch])
        await run(f"executemany upsert, batch {executemany_batch:,}", n, executemany)

        async def one_by_one() -> None:
            for r in with_stamp[:per_row]:
                await conn.execute(upsert, *r)
        await run("per-row INSERT, autocommit", per_row, one_by_one)

        # Redelivery: the same batches twice, the second pass on a full table (no reset between).
        subset = rows[:redelivery]
        await run(f"redelivery: 1st pass, batch {redelivery_batch:,}", redelivery,
                  through_writer("copy", redelivery_batch, subset))

        async def second_pass() -> None:
            duplicates = inserted = 0
            for i in range(0, redelivery, redelivery_batch):
                result = await writers["copy"].write(conn, subset[i:i + redelivery_batch], STAMP)
                inserted += result.inserted
                duplicates += result.duplicates
            if inserted != 0 or duplicates != redelivery:
                raise BenchmarkError(f"redelivery: the second pass inserted {inserted:,} and skipped "
                                     f"{duplicates:,} of {redelivery:,}")
        await run(f"redelivery: 2nd pass, batch {redelivery_batch:,}", redelivery, second_pass,
                  note="0 inserted, all skipped", reset=False)
        await _reset(conn)
    finally:
        await conn.close()
    return cases


def report_write_path(cases: list[Case], sink_batch: int, batch_label: str) -> None:
    by_name = {c.name: c for c in cases}
    print()
    print("| write path (tickers, 25 columns + persisted_at) | rows | s | rows/s | client CPU µs/row "
          "| server CPU µs/row | other processes, cores |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        note = f" ({c.note})" if c.note else ""
        print(f"| {c.name}{note} | {c.rows:,} | {c.seconds:.2f} | {c.rate:,.0f} | {1e6 * c.client_cpu / c.rows:.1f} "
              f"| {1e6 * c.server_cpu / c.rows:.1f} | {c.others_cpu / c.seconds:.2f} |")
    sink = by_name.get(f"TableWriter copy, batch {sink_batch:,}")
    raw = max((c for c in cases if c.name.startswith("raw COPY")), key=lambda c: c.rate)
    per_row = next(c for c in cases if c.name.startswith("per-row"))
    many = next(c for c in cases if c.name.startswith("executemany"))
    best = max((c for c in cases if c.name.startswith("TableWriter copy")), key=lambda c: c.rate)
    print()
    if sink is None:  # a --sink-batch-size that is not among the measured batch sizes
        sink, batch_label = best, "the best measured"
    print(f"COPY sink at batch {sink.name.rsplit(' ', 1)[1]} ({batch_label}): {sink.rate:,.0f} rows/s")
    print(f"  vs per-row INSERT: {sink.rate / per_row.rate:,.1f}×  (target ≥ 10×: "
          f"{'met' if sink.rate >= 10 * per_row.rate else 'NOT met'})")
    print(f"  vs executemany upsert: {sink.rate / many.rate:,.1f}×")
    print(f"  vs raw COPY (the ceiling): {sink.rate / raw.rate:.2f}×")
    print(f"best COPY sink batch: {best.name.rsplit(' ', 1)[1]}, {best.rate:,.0f} rows/s")
    print(f"raw COPY, best of the two: {raw.rate:,.0f} rows/s (target ≥ 100,000: "
          f"{'met' if raw.rate >= 100_000 else 'NOT met'})")


# -- part 2: the pipeline ----------------------------------------------------------------------


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def _create_database(admin_dsn: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a worker: ours without any CRYPTICS_ variable, then exactly ``extra``
    (so a CRYPTICS_VENUE_URL of the caller's shell cannot make the source connect)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTICS_")}
    env.update(extra)
    return env


def encode(registry_url: str, values: list[dict]) -> list[tuple[bytes, bytes]]:
    """(key, value) of each record as the source produces it: key = instrument, value = Avro in the
    Confluent wire format (app.pipeline.codec.AvroCodec, the schema registered under the topic's subject)."""
    from app.pipeline.codec import AvroCodec
    from models.registry import record

    r = record("ticker")
    codec = AvroCodec(r.subject, r.schema, registry_url)
    return [(v["instrument_name"].encode(), codec.dumps(v)) for v in values]


def per_event_costs(registry_url: str, encoded: Sequence[bytes]) -> tuple[float, float]:
    """µs per event of what the sink does before the write, timed in this process: the Avro decode
    (a fresh codec that fetched the writer schema from the registry, as the worker's does) and the
    row builder."""
    from app.pipeline.codec import AvroCodec
    from app.pipeline.sink.tables import SourceRecord, spec
    from models.registry import record

    r = record("ticker")
    reader = AvroCodec(r.subject, r.schema, registry_url)
    reader.loads(encoded[0])  # the writer schema, fetched once
    started = time.perf_counter()
    decoded = [reader.loads(value) for value in encoded]
    decode_us = 1e6 * (time.perf_counter() - started) / len(encoded)
    src = SourceRecord(r.topic, 0, 0, None, None, None)
    build = spec("ticker").build
    started = time.perf_counter()
    for value in decoded:
        build(value, src)
    return decode_us, 1e6 * (time.perf_counter() - started) / len(encoded)


async def preload(bootstrap: str, topic: str, encoded: list[tuple[bytes, bytes]]) -> tuple[float, dict]:
    """Produce ``encoded`` onto ``topic``; returns (events/s produced, events per partition)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                enable_idempotence=False, client_id="bench-sink-preload")
    await producer.start()
    per_partition: dict[int, int] = {}
    try:
        started = time.perf_counter()
        for i in range(0, len(encoded), 5000):
            futures = [await producer.send(topic, value=value, key=key) for key, value in encoded[i:i + 5000]]
            for meta in await asyncio.gather(*futures):
                per_partition[meta.partition] = per_partition.get(meta.partition, 0) + 1
        await producer.flush()
        rate = len(encoded) / (time.perf_counter() - started)
    finally:
        await producer.stop()
    return rate, dict(sorted(per_partition.items()))


@dataclass
class PipelineResult:
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


async def measure_consume_only(env: dict[str, str], events: int, log_path: Path, web_port: int,
                               services: dict[str, int]) -> PipelineResult:
    """The consume-only agent of benchmarks/naive_sink_app.py on the preloaded topic: events/s from its
    first batch to its ``events``-th event, by the worker's own clock (read from its /bench/ view)."""
    from app.stack.process import spawn

    name = "consume-only agent"
    worker = spawn("consume-only", [sys.executable, "-m", "benchmarks.naive_sink_app"], log_path=log_path, env=env,
                   cwd=ROOT)
    loop = asyncio.get_running_loop()
    url = f"http://127.0.0.1:{web_port}/bench/"

    async def view() -> Optional[dict]:
        if not worker.alive():
            raise BenchmarkError(f"{name} exited with code {worker.popen.returncode}:\n{worker.log_tail(40)}")
        try:
            return await loop.run_in_executor(None, _get_json, url)
        except OSError:
            return None  # not serving yet
    try:
        launched = time.perf_counter()
        while not ((v := await view()) and v["events"]):
            if time.perf_counter() - launched > 180:
                raise BenchmarkError(f"{name}: no event after 180 s:\n{worker.log_tail(40)}")
            await asyncio.sleep(0.01)
        first = time.perf_counter()
        meter = CpuMeter({"worker": worker.pid, **services}, "this benchmark (polling)")
        deadline = first + max(120.0, events / 200)
        while v["events"] < events:
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"{name}: {v['events']:,} of {events:,} events after "
                                     f"{deadline - first:.0f} s:\n{worker.log_tail(40)}")
            await asyncio.sleep(0.1)
            v = await view() or v
        elapsed = time.perf_counter() - first
        cpu = meter.stop()
        await asyncio.sleep(1.0)
        v = await view() or v
        if v["events"] != events:
            raise BenchmarkError(f"{name}: {events:,} events on the topic, the agent took {v['events']:,}")
        seconds = v["last_at"] - v["first_batch_at"]
        # CPU was sampled over the polled interval; scale it to the worker-clocked one for the per-core figure.
        cpu = {k: c * seconds / elapsed for k, c in cpu.items()}
        return PipelineResult(name, events, seconds, first - launched, v["first_batch"], 0.0, None, cpu)
    finally:
        code = worker.stop(timeout=30)
        if code not in (0, None):
            print(f"  note: {name} exited with code {code} on SIGTERM (log: {log_path.name})", flush=True)


def _cpu_of_tree(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (PostgreSQL: the postmaster and its backends)."""
    total = _process_cpu(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            total += _process_cpu(int(entry))
    return total


def _cpu_sample(pids: dict[str, int]) -> dict[str, float]:
    return {name: _cpu_of_tree(pid) for name, pid in pids.items()}


class CpuMeter:
    """CPU seconds used from its creation to ``stop()``: by each process (group) of ``pids``,
    by this process (under the name ``own``) and by every other process on the machine."""

    def __init__(self, pids: dict[str, int], own: str) -> None:
        self.pids, self.own = pids, own
        self.before, self.own_before, self.busy_before = _cpu_sample(pids), time.process_time(), _machine_busy()

    def stop(self) -> dict[str, float]:
        after = _cpu_sample(self.pids)
        cpu = {k: after[k] - self.before[k] for k in self.pids}
        cpu[self.own] = time.process_time() - self.own_before
        cpu["other processes"] = max(0.0, _machine_busy() - self.busy_before - sum(cpu.values()))
        return cpu


async def measure_worker(name: str, argv: list[str], env: dict[str, str], dsn: str, events: int, log_path: Path,
                         web_port: int, services: dict[str, int],
                         profile_dir: Optional[Path] = None) -> PipelineResult:
    """Start the worker, wait for its first row, then time until the table holds exactly ``events`` rows."""
    import asyncpg

    from app.stack.process import spawn

    conn = await asyncpg.connect(dsn)
    worker = spawn(name, argv, log_path=log_path, env=env, cwd=ROOT)
    spy: Optional[subprocess.Popen] = None
    loop = asyncio.get_running_loop()
    try:
        def alive() -> None:
            if not worker.alive():
                raise BenchmarkError(f"{name} exited with code {worker.popen.returncode}:\n{worker.log_tail(40)}")

        launched = time.perf_counter()
        while not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tickers)"):
            alive()
            if time.perf_counter() - launched > 180:
                raise BenchmarkError(f"{name}: no row after 180 s:\n{worker.log_tail(40)}")
            await asyncio.sleep(0.01)
        first = time.perf_counter()
        meter = CpuMeter({"worker": worker.pid, **services}, "this benchmark (polling)")
        at_first = await conn.fetchval("SELECT count(*) FROM tickers")
        if profile_dir is not None:
            spy = _start_spy(worker.pid, profile_dir / f"{name}.txt")
        # Slow agents get more time, never less than 2 minutes.
        deadline = first + max(120.0, events / 200)
        count = at_first
        while count < events:
            alive()
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"{name}: {count:,} of {events:,} rows after {deadline - first:.0f} s "
                                     f"(lost events?):\n{worker.log_tail(40)}")
            await asyncio.sleep(0.1)
            count = await conn.fetchval("SELECT count(*) FROM tickers")
        done = time.perf_counter()
        cpu = meter.stop()
        if spy is not None:
            await _stop_spy(spy)
            spy = None
        # A moment more, so a late duplicate or an extra row would show.
        await asyncio.sleep(1.0)
        count, distinct, first_stamp, last_stamp = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (instrument_name, time, received_at)), min(persisted_at), "
            "max(persisted_at) FROM tickers")
        if count != events or distinct != events:
            raise BenchmarkError(f"{name}: {events:,} events produced, the table holds {count:,} rows with "
                                 f"{distinct:,} distinct keys")
        view = None
        try:
            view = await loop.run_in_executor(None, _get_json, f"http://127.0.0.1:{web_port}/sink/")
        except OSError:
            pass  # the naive app has no /sink/ view
        return PipelineResult(name, events, done - first, first - launched, at_first,
                              (last_stamp - first_stamp).total_seconds(), view, cpu)
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        code = worker.stop(timeout=30)
        if code not in (0, None):
            print(f"  note: {name} exited with code {code} on SIGTERM (log: {log_path.name})", flush=True)
        await conn.close()


def _start_spy(pid: int, output: Path) -> subprocess.Popen:
    """py-spy sampling process ``pid`` into ``output`` (collapsed stacks) until _stop_spy."""
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                             "--output", str(output), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _stop_spy(spy: subprocess.Popen) -> None:
    spy.send_signal(2)  # SIGINT: py-spy writes what it has
    await asyncio.get_running_loop().run_in_executor(None, spy.wait)


def _profile_summary(path: Path, top: int = 25) -> list[str]:
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


async def pipeline(root: Path, pg, costs: list[float], *, events: int, naive_events: int, venue_events: int,
                   batch_size: Optional[int], batch_age: Optional[float], profile: bool) -> list[PipelineResult]:
    """The pipeline measurements (parts 2 and 3); ``costs`` receives the in-process decode and build µs per event."""
    from app.pipeline import topics
    from app.stack import migrate
    from app.stack.broker import EmbeddedBroker
    from app.stack.process import free_port, spawn, wait_until
    from models.registry import record

    results: list[PipelineResult] = []
    async with AsyncExitStack() as stack:
        broker = EmbeddedBroker(root / "logs")
        await broker.start()
        stack.callback(broker.stop)
        registry_port = free_port()
        registry_url = f"http://127.0.0.1:{registry_port}"
        registry = spawn("registry", [sys.executable, "-m", "app.cli", "registry", "--port", str(registry_port)],
                         log_path=root / "logs" / "registry.log", cwd=ROOT,
                         env=_child_env({"CRYPTICS_DATABASE_URL": pg.dsn()}))
        stack.callback(registry.stop)
        loop = asyncio.get_running_loop()

        async def registry_ready() -> bool:
            await loop.run_in_executor(None, _get_json, f"{registry_url}/subjects")
            return True
        await wait_until(registry_ready, what="registry", timeout=60, child=registry, interval=0.1)

        for db in ("bench_pipeline", "bench_naive"):
            await _create_database(pg.dsn("postgres"), db)
            await migrate.migrate(pg.dsn(db))
        await topics.ensure_topics(broker.url, [*topics.PIPELINE_TOPICS, NAIVE_TOPIC], 3)

        ticker_topic = record("ticker").topic
        encoded = encode(registry_url, ticker_values(events))
        costs.extend(per_event_costs(registry_url, [value for _, value in encoded[:20_000]]))
        rate, partitions = await preload(broker.bootstrap, ticker_topic, encoded)
        del encoded
        print(f"  preloaded {events:,} ticker events onto {ticker_topic} at {rate:,.0f}/s; "
              f"per partition {partitions}", flush=True)
        if len(partitions) < 3:
            raise BenchmarkError(f"the keys reached only partitions {sorted(partitions)}")
        # The naive agent's events: other natural keys, its own topic and database.
        rate, partitions = await preload(broker.bootstrap, NAIVE_TOPIC,
                                         encode(registry_url, ticker_values(naive_events, start=10_000_000)))
        print(f"  preloaded {naive_events:,} ticker events onto {NAIVE_TOPIC} at {rate:,.0f}/s; "
              f"per partition {partitions}", flush=True)

        common = {
            "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
            "CRYPTICS_HEARTBEAT_INTERVAL": "0",
        }
        sink_env = {}
        if batch_size is not None:
            sink_env["CRYPTICS_SINK_BATCH_SIZE"] = str(batch_size)
        if batch_age is not None:
            sink_env["CRYPTICS_SINK_BATCH_AGE"] = str(batch_age)
        profile_dir = None
        if profile:
            if shutil.which("py-spy"):
                profile_dir = root / "profile"
                profile_dir.mkdir()
            else:
                print("  --profile: py-spy is not on the PATH; running without it", flush=True)

        services = {"broker": broker.child.pid, "postgres": pg.child.pid}
        web = free_port()
        result = await measure_worker(
            "cryptics-worker", [sys.executable, "-m", "app.cli", "worker"],
            _child_env({**common, **sink_env, "CRYPTICS_DATABASE_URL": pg.dsn("bench_pipeline"),
                        "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state-worker")}),
            pg.dsn("bench_pipeline"), events, root / "logs" / "worker.log", web, services, profile_dir)
        results.append(result)
        _print_pipeline(result)
        if profile_dir is not None and (profile_dir / "cryptics-worker.txt").exists():
            print("\n".join(_profile_summary(profile_dir / "cryptics-worker.txt")), flush=True)

        web = free_port()
        result = await measure_consume_only(
            _child_env({**common, **sink_env, "CRYPTICS_WEB_PORT": str(web),
                        "CRYPTICS_STATE_DIR": str(root / "state-consume"), "NAIVE_SINK_TOPIC": ticker_topic,
                        "NAIVE_SINK_MODE": "consume"}),
            events, root / "logs" / "consume-only.log", web, services)
        results.append(result)
        _print_pipeline(result)

        web = free_port()
        result = await measure_worker(
            "naive-agent", [sys.executable, "-m", "benchmarks.naive_sink_app"],
            _child_env({**common, "CRYPTICS_DATABASE_URL": pg.dsn("bench_naive"), "CRYPTICS_WEB_PORT": str(web),
                        "CRYPTICS_STATE_DIR": str(root / "state-naive"), "NAIVE_SINK_TOPIC": NAIVE_TOPIC}),
            pg.dsn("bench_naive"), naive_events, root / "logs" / "naive.log", web, services)
        results.append(result)
        _print_pipeline(result)

        if venue_events:
            # Part 3 on a broker of its own: its topics then hold exactly what the source produced.
            venue_broker = EmbeddedBroker(root / "logs" / "venue")
            await venue_broker.start()
            stack.callback(venue_broker.stop)
            await topics.ensure_topics(venue_broker.url, topics.PIPELINE_TOPICS, 3)
            await _create_database(pg.dsn("postgres"), "bench_venue")
            await migrate.migrate(pg.dsn("bench_venue"))
            web = free_port()
            result = await measure_from_venue(
                _child_env({**common, **sink_env, "CRYPTICS_BROKER_URL": venue_broker.url,
                            "CRYPTICS_DATABASE_URL": pg.dsn("bench_venue"), "CRYPTICS_WEB_PORT": str(web),
                            "CRYPTICS_STATE_DIR": str(root / "state-venue")}),
                pg.dsn("bench_venue"), venue_broker.bootstrap, venue_events, root, web,
                {"broker": venue_broker.child.pid, "postgres": pg.child.pid}, profile_dir)
            results.append(result)
            _print_pipeline(result)
            for sampled in ("venue-worker", "venue"):
                if profile_dir is not None and (profile_dir / f"{sampled}.txt").exists():
                    print(f"  {sampled}:\n" + "\n".join(_profile_summary(profile_dir / f"{sampled}.txt")), flush=True)
    return results


def _print_pipeline(r: PipelineResult) -> None:
    if r.name.startswith("consume-only"):
        print(f"  {r.name}: first batch {r.first_row_after:.1f} s after start ({r.rows_at_first:,} events); "
              f"then {r.events - r.rows_at_first:,} events in {r.seconds:.2f} s = {r.rate:,.0f} events/s "
              "(the worker's clock)", flush=True)
    elif r.name.startswith("venue"):
        print(f"  {r.name}: {r.events - r.rows_at_first:,} rows in {r.seconds:.2f} s = {r.rate:,.0f} events/s "
              f"(from the first step after the warm-up to the last row)", flush=True)
    else:
        print(f"  {r.name}: first row {r.first_row_after:.1f} s after start ({r.rows_at_first:,} rows by then); "
              f"then {r.events - r.rows_at_first:,} rows in {r.seconds:.2f} s = {r.rate:,.0f} events/s; "
              f"persisted_at first → last flush {r.stamp_span:.2f} s", flush=True)
    if r.cpu:
        moved = r.events - r.rows_at_first
        print("    CPU meanwhile: " + ", ".join(
            f"{k} {v / r.seconds:.2f} cores" + ("" if k == "other processes" else f" ({1e6 * v / moved:.0f} µs/event)")
            for k, v in r.cpu.items()), flush=True)
    if r.sink_view:
        t = r.sink_view["topics"].get("cryptics.thalex.ticker.avro", {})
        print(f"    /sink/ ticker: records {t.get('records'):,}, rows_written {t.get('rows_written'):,}, "
              f"duplicates {t.get('duplicates'):,}, batches {t.get('batches'):,}, "
              f"dead_letters {t.get('dead_letters')}, retries {t.get('retries')}, "
              f"write_seconds {t.get('write_seconds', 0):.2f}; config {r.sink_view['config']}", flush=True)
        if t.get("dead_letters"):
            raise BenchmarkError(f"{r.name}: {t['dead_letters']} dead letters: {t.get('last_error')}")


# -- part 3: the whole pipeline, from the venue ---------------------------------------------------

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
                             services: dict[str, int], profile_dir: Optional[Path] = None) -> PipelineResult:
    """Part 3: the simulated venue (this process) → `cryptics worker` (market-data source → Kafka →
    persistence) → PostgreSQL. The venue's market is stepped as fast as the pipeline persists, never
    more than VENUE_WINDOW notifications ahead, until ``events`` notifications were sent after the
    warm-up; timed until the market tables hold a row for every notification the venue ever sent."""
    import asyncpg

    from app.pipeline.topics import read_until_quiet
    from app.stack.process import spawn
    from app.venue import Venue, VenueConfig
    from models.registry import record

    name = "venue → worker → PostgreSQL"
    venue = Venue(replace(VenueConfig(), port=0, trusted_keys_dir=root / "venue-keys", market_running=False))
    await venue.start()
    worker = spawn("venue-worker", [sys.executable, "-m", "app.cli", "worker"], log_path=root / "logs" / "venue-worker.log",
                   env={**env, "CRYPTICS_VENUE_URL": venue.url, "CRYPTICS_INSTRUMENTS": ",".join(VENUE_INSTRUMENTS)},
                   cwd=ROOT)
    conn = await asyncpg.connect(dsn)
    loop = asyncio.get_running_loop()
    persisted = 0  # market rows the worker reports written (its /sink/ view), read by the poller below

    def alive() -> None:
        if not worker.alive():
            raise BenchmarkError(f"{name}: the worker exited with code {worker.popen.returncode}:\n"
                                 f"{worker.log_tail(40)}")

    async def poll_sink() -> None:
        nonlocal persisted
        topics = [record(kind).topic for kind in MARKET_TABLES]
        while True:
            try:
                view = await loop.run_in_executor(None, _get_json, f"http://127.0.0.1:{web_port}/sink/")
                persisted = sum(view["topics"].get(t, {}).get("rows_written", 0)
                                + view["topics"].get(t, {}).get("duplicates", 0) for t in topics)
            except OSError:
                pass  # not serving yet
            await asyncio.sleep(0.05)

    poller = asyncio.ensure_future(poll_sink())
    try:
        # Warm-up: a slow market until rows arrive (the group join takes ~3 s on Tansu), then caught up.
        launched = time.perf_counter()
        while persisted == 0:
            alive()
            if time.perf_counter() - launched > 180:
                raise BenchmarkError(f"{name}: no row after 180 s:\n{worker.log_tail(40)}")
            venue.step_market()
            await asyncio.sleep(0.05)
        caught_up_by = time.perf_counter() + 120
        while sum(_market_sent(venue).values()) - persisted > 0:
            alive()
            if time.perf_counter() > caught_up_by:
                raise BenchmarkError(f"{name}: the warm-up's {sum(_market_sent(venue).values()):,} notifications "
                                     f"never all persisted ({persisted:,} rows):\n{worker.log_tail(40)}")
            await asyncio.sleep(0.05)
        rows_before = await _market_rows(conn)
        sent_before = sum(_market_sent(venue).values())
        meter = CpuMeter({"worker": worker.pid, **services}, "venue (this benchmark)")
        spies = [] if profile_dir is None else [_start_spy(worker.pid, profile_dir / "venue-worker.txt"),
                                                 _start_spy(os.getpid(), profile_dir / "venue.txt")]
        first = time.perf_counter()
        steps = 0
        stalled_since = None
        while (sent := sum(_market_sent(venue).values())) - sent_before < events:
            if sent - persisted >= VENUE_WINDOW:
                alive()
                stalled_since = stalled_since or time.perf_counter()
                if time.perf_counter() - stalled_since > 120:
                    raise BenchmarkError(f"{name}: nothing persisted for 120 s ({persisted:,} rows, "
                                         f"{sent:,} notifications sent):\n{worker.log_tail(40)}")
                await asyncio.sleep(0.002)
                continue
            stalled_since = None
            venue.step_market()
            steps += 1
            if steps % 8 == 0:
                await asyncio.sleep(0)  # let the venue's writers and the poller run
        expected = _market_sent(venue)
        deadline = time.perf_counter() + 120
        while (rows := await _market_rows(conn)) != expected:
            alive()
            if any(rows[k] > expected[k] for k in expected) or time.perf_counter() > deadline:
                raise BenchmarkError(f"{name}: the venue sent {expected}, the tables hold {rows}")
            await asyncio.sleep(0.05)
        done = time.perf_counter()
        cpu = meter.stop()
        for spy in spies:
            await _stop_spy(spy)
        # A moment more, so a late duplicate or an extra row would show; then count every market
        # table against its topic, read back independently of the worker.
        await asyncio.sleep(1.0)
        rows = await _market_rows(conn)
        if rows != expected:
            raise BenchmarkError(f"{name}: the venue sent {expected}, the tables hold {rows}")
        view = await loop.run_in_executor(None, _get_json, f"http://127.0.0.1:{web_port}/sink/")
        if view["totals"]["dead_letters"]:
            raise BenchmarkError(f"{name}: {view['totals']['dead_letters']} dead letters")
        for kind, table in {**MARKET_TABLES, "trade": "public_trades"}.items():
            on_topic = len(await read_until_quiet(bootstrap, record(kind).topic))
            in_table = await conn.fetchval(f"SELECT count(*) FROM {table}")
            # Public trades have no id: two prints alike in all of their natural key are one row
            # (timescale/0002), which the sink counts as a duplicate.
            duplicates = view["topics"].get(record(kind).topic, {}).get("duplicates", 0) if kind == "trade" else 0
            if on_topic != in_table + duplicates:
                raise BenchmarkError(f"{name}: {on_topic:,} records on the {kind} topic, {in_table:,} rows in "
                                     f"{table} (+ {duplicates:,} identical prints)")
        moved = sum(rows.values()) - sum(rows_before.values())
        print(f"  {name}: {moved:,} market-data notifications ({events:,} sent after the warm-up, "
              f"{sent_before - sum(rows_before.values()):,} in flight at the start) in {done - first:.2f} s, "
              f"{steps:,} market steps; per table {rows}", flush=True)
        return PipelineResult(name, sum(rows.values()), done - first, first - launched, sum(rows_before.values()),
                              0.0, view, cpu)
    finally:
        poller.cancel()
        code = worker.stop(timeout=30)
        if code not in (0, None):
            print(f"  note: {name}: the worker exited with code {code} on SIGTERM", flush=True)
        await conn.close()
        await venue.stop()


# -- main ----------------------------------------------------------------------------------------


def _machine() -> str:
    """Cores and load: other processes on the machine show up here, not in the ratios."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} (1 min), {five:.2f} (5 min)"


async def main_async(args: argparse.Namespace) -> None:
    from app.pipeline.sink import SinkConfig
    from app.stack import migrate
    from app.stack.postgres import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-sink-"))
    os.chmod(root, 0o755)  # the PostgreSQL service user must be able to traverse it
    pg = EmbeddedPostgres(root / "pg", root / "logs")
    try:
        await pg.start()
        print(f"machine: {_machine()}", flush=True)
        sink_batch = args.sink_batch_size or SinkConfig().batch_size
        copy_client_us: Optional[float] = None
        if not args.skip_write_path:
            print(f"Part 1: write path, embedded PostgreSQL, {args.rows:,} ticker rows (built in advance); "
                  f"each case the fastest of {args.repeat}", flush=True)
            await _create_database(pg.dsn("postgres"), "bench_write")
            await migrate.migrate(pg.dsn("bench_write"))
            started = time.perf_counter()
            rows = ticker_rows(args.rows)
            print(f"  built {len(rows):,} rows in {time.perf_counter() - started:.2f} s "
                  f"({len(rows) / (time.perf_counter() - started):,.0f} rows/s, not part of any case)", flush=True)
            cases = await write_path(
                pg.dsn("bench_write"), pg.child.pid, rows, copy_batches=args.copy_batches, unnest_batches=args.unnest_batches,
                executemany_batch=5000, per_row=args.per_row_rows, raw_batch=10_000,
                redelivery=min(args.rows, args.redelivery_rows), redelivery_batch=sink_batch, repeat=args.repeat)
            report_write_path(cases, sink_batch, "the sink's default batch size" if args.sink_batch_size is None
                              else "--sink-batch-size")
            at_sink = [c for c in cases if c.name == f"TableWriter copy, batch {sink_batch:,}"]
            if at_sink:
                copy_client_us = 1e6 * at_sink[0].client_cpu / at_sink[0].rows
            print(f"machine after part 1: {_machine()}", flush=True)
            del rows
        if not args.skip_pipeline:
            print(f"\nPart 2: Kafka (Tansu) → Faust → PostgreSQL, {args.events:,} events through the persistence "
                  f"agents, {args.naive_events:,} through the naive agent; sink batch size "
                  f"{sink_batch:,}, batch age {args.sink_batch_age or SinkConfig().batch_age} s", flush=True)
            costs: list[float] = []
            results = await pipeline(root, pg, costs, events=args.events, naive_events=args.naive_events,
                                     venue_events=args.venue_events, batch_size=args.sink_batch_size, batch_age=args.sink_batch_age,
                                     profile=args.profile)
            product, ceiling, naive = results[:3]
            from_venue = results[3] if len(results) > 3 else None
            print()
            print("| pipeline | events | s (first row → all rows) | events/s | worker CPU µs/event |")
            print("|---|---:|---:|---:|---:|")
            for r in results:
                moved = r.events - r.rows_at_first
                print(f"| {r.name} | {moved:,} | {r.seconds:.2f} | {r.rate:,.0f} "
                      f"| {1e6 * r.cpu['worker'] / moved:.0f} |")
            print()
            print(f"persistence agents vs naive agent: {product.rate / naive.rate:,.1f}×")
            print(f"persistence agents vs consume-only agent (Faust's ceiling here, nothing persisted): "
                  f"{product.rate / ceiling.rate:.2f}×")
            print(f"persistence agents: {product.rate:,.0f} events/s (target ≥ 10,000 on 2 cores: "
                  f"{'met' if product.rate >= 10_000 else 'NOT met'}); no loss, no duplicates "
                  f"({product.events:,} rows, {product.events:,} distinct keys)")
            if from_venue is not None:
                print(f"whole pipeline, venue → Kafka → Faust worker → PostgreSQL: {from_venue.rate:,.0f} events/s "
                      f"(target ≥ 10,000 on 2 cores: {'met' if from_venue.rate >= 10_000 else 'NOT met'}), "
                      f"{from_venue.rate / naive.rate:,.1f}× the naive agent's Kafka → PostgreSQL alone; "
                      "every notification the venue sent is one row, every topic record one row")
            print("(rates count from the first row in the table: Tansu completes the group join only "
                  "after session_timeout/2)")
            if product.cpu:
                moved = product.events - product.rows_at_first
                worker_us = 1e6 * product.cpu["worker"] / moved
                decode_us, build_us = costs
                parts = [f"Avro decode {decode_us:.1f}", f"row build {build_us:.1f}"]
                rest = worker_us - decode_us - build_us
                if copy_client_us is not None:
                    parts.append(f"COPY sink client side {copy_client_us:.1f} (part 1, batch {sink_batch:,})")
                    rest -= copy_client_us
                print(f"where the worker's time goes: {worker_us:.0f} CPU µs per event "
                      f"({product.cpu['worker'] / product.seconds:.2f} cores busy); of it, measured apart: "
                      f"{', '.join(parts)}; the remaining ~{rest:.0f} µs per event is Faust, aiokafka and asyncio "
                      "(fetch, per-event stream and take buffer, acks)")
                ceiling_us = 1e6 * ceiling.cpu["worker"] / (ceiling.events - ceiling.rows_at_first)
                print(f"  the consume-only agent (take + ack, nothing else) costs {ceiling_us:.0f} CPU µs per event "
                      f"by itself: at one busy core that alone caps a Faust-streamed sink near "
                      f"{1e6 / ceiling_us:,.0f} events/s")
            print(f"machine after part 2: {_machine()}", flush=True)
    finally:
        pg.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that it runs (under a minute); "
                        "its rates are not the figures: a second-long run is mostly the last batch's age")
    parser.add_argument("--rows", type=int, help="rows per write-path case (default 100,000; quick 20,000)")
    parser.add_argument("--per-row-rows", type=int, help="rows of the per-row INSERT case (default 5,000; quick 1,000)")
    parser.add_argument("--redelivery-rows", type=int, help="rows written twice (default 50,000; quick 10,000)")
    parser.add_argument("--events", type=int, help="events through the persistence agents (default 100,000; "
                                                   "quick 10,000)")
    parser.add_argument("--naive-events", type=int, help="events through the naive agent (default 10,000; "
                                                         "quick 1,000)")
    parser.add_argument("--venue-events", type=int, help="market-data notifications from the venue through the "
                                                         "whole pipeline (part 3; default 100,000; quick 10,000; "
                                                         "0 skips part 3)")
    parser.add_argument("--sink-batch-size", type=int, help="CRYPTICS_SINK_BATCH_SIZE for the worker "
                                                            "(default: the product's)")
    parser.add_argument("--sink-batch-age", type=float, help="CRYPTICS_SINK_BATCH_AGE for the worker "
                                                             "(default: the product's)")
    parser.add_argument("--repeat", type=int, help="write-path runs per case, the fastest kept (default 3; quick 1)")
    parser.add_argument("--skip-write-path", action="store_true", help="run part 2 only")
    parser.add_argument("--skip-pipeline", action="store_true", help="run part 1 only")
    parser.add_argument("--profile", action="store_true", help="sample the product worker with py-spy, if installed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) at the end")
    args = parser.parse_args()
    quick = args.quick
    args.rows = args.rows or (20_000 if quick else 100_000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.per_row_rows = args.per_row_rows or (1_000 if quick else 5_000)
    args.redelivery_rows = args.redelivery_rows or (10_000 if quick else 50_000)
    args.events = args.events or (10_000 if quick else 100_000)
    args.naive_events = args.naive_events or (1_000 if quick else 10_000)
    if args.venue_events is None:
        args.venue_events = 10_000 if quick else 100_000
    args.copy_batches = (100, 1_000, 5_000, 10_000) if quick else (100, 1_000, 5_000, 10_000, 50_000)
    args.unnest_batches = (5_000,) if quick else (5_000, 10_000)
    for name in ("rows", "repeat", "per_row_rows", "redelivery_rows", "events", "naive_events", "sink_batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.sink_batch_size is not None and args.sink_batch_size not in args.copy_batches:
        args.copy_batches = tuple(sorted((*args.copy_batches, args.sink_batch_size)))
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:  # everything started was stopped and removed on the way out
        sys.exit(130)


if __name__ == "__main__":
    main()
