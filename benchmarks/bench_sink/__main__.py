"""The command line of benchmarks.bench_sink: its options, then parts 1, 2 and 3 in one run.

    .venv/bin/python -m benchmarks.bench_sink [--quick] [--rows 100000] [--repeat 3] [--events 100000]
                                              [--venue-events 100000]

One embedded PostgreSQL in a temporary folder serves every part; the folder is removed at the
end (unless --keep). --help shows what each part measures.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from benchmarks import bench_sink
from benchmarks.bench_sink import from_venue, pipeline, write_path
from benchmarks.bench_sink.common import create_database, machine_summary

#: --help: the overview, then what each part measures.
DESCRIPTION = "\n".join(module.__doc__ for module in (bench_sink, write_path, pipeline, from_venue))


async def main_async(args: argparse.Namespace) -> None:
    from app.pipeline.sink import SinkConfig
    from app.stack import migrate
    from app.stack.postgres import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-sink-"))
    os.chmod(root, 0o755)  # the PostgreSQL service user must be able to traverse it
    pg = EmbeddedPostgres(root / "pg", root / "logs")
    try:
        await pg.start()
        print(f"machine: {machine_summary()}", flush=True)
        sink_batch = args.sink_batch_size or SinkConfig().batch_size
        copy_client_us: Optional[float] = None
        if not args.skip_write_path:
            print(f"Part 1: write path, embedded PostgreSQL, {args.rows:,} ticker rows (built in advance); "
                  f"each case the fastest of {args.repeat}", flush=True)
            await create_database(pg.dsn("postgres"), "bench_write")
            await migrate.migrate(pg.dsn("bench_write"))
            started = time.perf_counter()
            rows = write_path.ticker_rows(args.rows)
            print(f"  built {len(rows):,} rows in {time.perf_counter() - started:.2f} s "
                  f"({len(rows) / (time.perf_counter() - started):,.0f} rows/s, not part of any case)", flush=True)
            cases = await write_path.measure_write_path(
                pg.dsn("bench_write"), pg.child.pid, rows, copy_batches=args.copy_batches,
                unnest_batches=args.unnest_batches, executemany_batch=5000, per_row=args.per_row_rows,
                raw_batch=10_000, redelivery=min(args.rows, args.redelivery_rows), redelivery_batch=sink_batch,
                repeat=args.repeat)
            write_path.report_write_path(cases, sink_batch, "the sink's default batch size"
                                         if args.sink_batch_size is None else "--sink-batch-size")
            at_sink = [c for c in cases if c.name == f"TableWriter copy, batch {sink_batch:,}"]
            if at_sink:
                copy_client_us = 1e6 * at_sink[0].client_cpu / at_sink[0].rows
            print(f"machine after part 1: {machine_summary()}", flush=True)
            del rows
        if not args.skip_pipeline:
            print(f"\nPart 2: Kafka (Tansu) → Faust → PostgreSQL, {args.events:,} events through the persistence "
                  f"agents, {args.naive_events:,} through the naive agent; sink batch size "
                  f"{sink_batch:,}, batch age {args.sink_batch_age or SinkConfig().batch_age} s", flush=True)
            costs: list[float] = []
            results = await pipeline.measure_pipeline(
                root, pg, costs, events=args.events, naive_events=args.naive_events, venue_events=args.venue_events,
                batch_size=args.sink_batch_size, batch_age=args.sink_batch_age, profile=args.profile)
            pipeline.report_pipeline(results, costs, copy_client_us, sink_batch)
            print(f"machine after part 2: {machine_summary()}", flush=True)
    finally:
        pg.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sink", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
