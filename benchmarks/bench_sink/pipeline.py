"""Part 2 of benchmarks.bench_sink: Kafka (Tansu) → Faust worker → PostgreSQL, and the runs of part 3.

A Tansu broker (app.stack.broker), the schema registry (`cryptics registry`) and N ticker
records preloaded onto the ticker topic (Avro in the Confluent wire format through
app.pipeline.codec.AvroCodec, key = instrument, several instruments so that all partitions get
traffic) BEFORE the worker starts. Then:
- a real `cryptics worker` (its persistence agents, agents/persistence.py; no venue URL,
  so the market-data source stays idle; heartbeat off);
- the consume-only agent of benchmarks/naive_sink_app.py on the same N events (its own
  app and consumer group): batches taken and acked as the persistence agents do, and
  nothing else: the most a Faust-streamed sink can do here (timed by the worker's clock);
- the naive agent of benchmarks/naive_sink_app.py (its own app and consumer group, its
  own topic and database, fewer events): one event per iteration, one INSERT per event,
  awaited before the next;
- then part 3 (benchmarks/bench_sink/from_venue.py), with the same registry.
Throughput is measured from the first row in the table (not from the worker's start:
Tansu completes a group join only after session_timeout/2, ~3 s) to the moment
``count(*)`` reaches exactly N; then zero loss and zero duplicates are checked
(count == N and N distinct natural keys) and nothing may have gone to dead letters.
The sink's batch settings can be chosen (--sink-batch-size, --sink-batch-age; the
defaults are the product's, CRYPTICS_SINK_BATCH_SIZE / CRYPTICS_SINK_BATCH_AGE).

Each run shows the CPU used meanwhile by the worker, the broker, PostgreSQL and other
processes, and the worker's CPU per event is split into what was timed apart (Avro decode
and row build in this process, the COPY sink's client side from part 1) and the rest.
With --profile and py-spy on the PATH (it is no dependency of the project), py-spy
samples the product worker during its run (and the worker and this process in part 3)
and the top functions are printed.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.bench_sink.common import (
    ROOT,
    BenchmarkError,
    CpuMeter,
    PipelineResult,
    child_env,
    create_database,
    get_json,
    profile_summary,
    start_spy,
    stop_spy,
    ticker_values,
)
from benchmarks.bench_sink.from_venue import measure_from_venue

NAIVE_TOPIC = "cryptics.bench.naive_ticker.avro"


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
            return await loop.run_in_executor(None, get_json, url)
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
            spy = start_spy(worker.pid, profile_dir / f"{name}.txt")
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
            await stop_spy(spy)
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
            view = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{web_port}/sink/")
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


async def measure_pipeline(root: Path, pg, costs: list[float], *, events: int, naive_events: int,
                           venue_events: int, batch_size: Optional[int], batch_age: Optional[float],
                           profile: bool) -> list[PipelineResult]:
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
                         env=child_env({"CRYPTICS_DATABASE_URL": pg.dsn()}))
        stack.callback(registry.stop)
        loop = asyncio.get_running_loop()

        async def registry_ready() -> bool:
            await loop.run_in_executor(None, get_json, f"{registry_url}/subjects")
            return True
        await wait_until(registry_ready, what="registry", timeout=60, child=registry, interval=0.1)

        for db in ("bench_pipeline", "bench_naive"):
            await create_database(pg.dsn("postgres"), db)
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
            child_env({**common, **sink_env, "CRYPTICS_DATABASE_URL": pg.dsn("bench_pipeline"),
                        "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state-worker")}),
            pg.dsn("bench_pipeline"), events, root / "logs" / "worker.log", web, services, profile_dir)
        results.append(result)
        _print_pipeline(result)
        if profile_dir is not None and (profile_dir / "cryptics-worker.txt").exists():
            print("\n".join(profile_summary(profile_dir / "cryptics-worker.txt")), flush=True)

        web = free_port()
        result = await measure_consume_only(
            child_env({**common, **sink_env, "CRYPTICS_WEB_PORT": str(web),
                        "CRYPTICS_STATE_DIR": str(root / "state-consume"), "NAIVE_SINK_TOPIC": ticker_topic,
                        "NAIVE_SINK_MODE": "consume"}),
            events, root / "logs" / "consume-only.log", web, services)
        results.append(result)
        _print_pipeline(result)

        web = free_port()
        result = await measure_worker(
            "naive-agent", [sys.executable, "-m", "benchmarks.naive_sink_app"],
            child_env({**common, "CRYPTICS_DATABASE_URL": pg.dsn("bench_naive"), "CRYPTICS_WEB_PORT": str(web),
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
            await create_database(pg.dsn("postgres"), "bench_venue")
            await migrate.migrate(pg.dsn("bench_venue"))
            web = free_port()
            result = await measure_from_venue(
                child_env({**common, **sink_env, "CRYPTICS_BROKER_URL": venue_broker.url,
                            "CRYPTICS_DATABASE_URL": pg.dsn("bench_venue"), "CRYPTICS_WEB_PORT": str(web),
                            "CRYPTICS_STATE_DIR": str(root / "state-venue")}),
                pg.dsn("bench_venue"), venue_broker.bootstrap, venue_events, root, web,
                {"broker": venue_broker.child.pid, "postgres": pg.child.pid}, profile_dir)
            results.append(result)
            _print_pipeline(result)
            for sampled in ("venue-worker", "venue"):
                if profile_dir is not None and (profile_dir / f"{sampled}.txt").exists():
                    print(f"  {sampled}:\n" + "\n".join(profile_summary(profile_dir / f"{sampled}.txt")), flush=True)
    return results


def _print_pipeline(r: PipelineResult) -> None:
    """One run's lines, as it ends; a /sink/ view that reports dead letters fails the benchmark."""
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


def report_pipeline(results: list[PipelineResult], costs: Sequence[float], copy_client_us: Optional[float],
                    sink_batch: int) -> None:
    """The table of part 2 (and 3), the ratios and targets, then where the product worker's CPU goes:
    ``costs`` from measure_pipeline, ``copy_client_us`` the COPY sink's client CPU per row in part 1
    (None when part 1 did not run)."""
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
