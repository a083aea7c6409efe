"""Persistence throughput: the sink's write path alone, Kafka → Faust → PostgreSQL, then venue → PostgreSQL.

    .venv/bin/python -m benchmarks.bench_sink [--quick] [--rows 100000] [--repeat 3] [--events 100000]
                                              [--venue-events 100000]

Everything runs in one go on loopback, in a temporary folder removed at the end, so the
ratios between the lines come from one run and machine noise cancels out.

- Part 1, the write path alone (write_path.py): the sink's TableWriter on an embedded
  PostgreSQL against raw COPY (the ceiling), executemany, per-row INSERT and a redelivery.
- Part 2, the pipeline (pipeline.py): ticker records preloaded onto a Tansu broker, then a
  real `cryptics worker` (its persistence agents), the consume-only agent and the naive agent
  of benchmarks/naive_sink_app.py, each timed until PostgreSQL holds every event.
- Part 3, the whole pipeline (from_venue.py; skipped with --venue-events 0): the simulated
  venue → a real `cryptics worker` with the venue URL → Kafka → PostgreSQL, each table then
  counted against its topic.
Every part fails the benchmark (BenchmarkError) on a lost or duplicated row. What the parts
share (rows, CPU metering, child processes, py-spy) is in common.py; the command line and the
summaries in __main__.py.
"""
