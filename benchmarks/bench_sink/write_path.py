"""Part 1 of benchmarks.bench_sink: the sink's write path alone, on an embedded PostgreSQL.

An embedded PostgreSQL (app.stack.postgres) with the project's migrations (app.stack.migrate),
rows built by ``spec("ticker").build`` from ``models.examples.example("ticker")`` varied per row
(distinct natural keys: instrument, mark time, received_at). Rows are built before the clock
starts. Each case runs --repeat times (the fastest is kept), each time on an emptied table
(TRUNCATE + CHECKPOINT before it) and followed by a check of the row count and of the distinct
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
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable, Optional, Sequence

from benchmarks.bench_sink.common import BenchmarkError, cpu_of_tree, machine_busy, process_cpu, ticker_values

STAMP = datetime(2026, 1, 1, tzinfo=timezone.utc)  # persisted_at of the write-path rows


def ticker_rows(n: int) -> list[tuple]:
    """``n`` rows of the tickers table, as the sink builds them from ticker_values."""
    from app.pipeline.sink.tables import SourceRecord, spec
    from models.registry import record

    src = SourceRecord(record("ticker").topic, 0, 0, b"BTC-PERPETUAL", b"", 1747578855.5)
    build = spec("ticker").build
    return [build(v, src) for v in ticker_values(n)]


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


async def _reset(conn) -> None:
    await conn.execute("TRUNCATE tickers")
    await conn.execute("CHECKPOINT")  # every case starts with no dirty pages of the one before


async def _check_table(conn, expected: int, what: str) -> None:
    count, distinct = await conn.fetchrow(
        "SELECT count(*), count(DISTINCT (instrument_name, time, received_at)) FROM tickers")
    if count != expected or distinct != expected:
        raise BenchmarkError(f"{what}: expected {expected:,} rows with distinct keys, "
                             f"the table holds {count:,} rows, {distinct:,} distinct keys")


async def measure_write_path(dsn: str, postmaster: int, rows: list[tuple], *, copy_batches: Sequence[int],
                             unnest_batches: Sequence[int], executemany_batch: int, per_row: int, raw_batch: int,
                             redelivery: int, redelivery_batch: int, repeat: int) -> list[Case]:
    """Every case of part 1 on the database ``dsn`` (``postmaster``: the pid of its server), printed as it ends."""
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
                cpu, server, pg_all, busy = (time.process_time(), process_cpu(backend), cpu_of_tree(postmaster),
                                             machine_busy())
                started = time.perf_counter()
                await body()
                seconds = time.perf_counter() - started
                cpu, server = time.process_time() - cpu, process_cpu(backend) - server
                others = max(0.0, machine_busy() - busy - cpu - (cpu_of_tree(postmaster) - pg_all))
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
    """The table of part 1, then the COPY sink at ``sink_batch`` against the other cases and the targets."""
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
