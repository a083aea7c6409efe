"""The naive persistence agent that benchmarks/bench_sink (part 2) compares the product's against,
and a consume-only agent: the ceiling that Faust itself sets.

    NAIVE_SINK_TOPIC=<topic> CRYPTICS_BROKER_URL=... CRYPTICS_SCHEMA_REGISTRY_URL=... \
    CRYPTICS_DATABASE_URL=... .venv/bin/python -m benchmarks.naive_sink_app

``NAIVE_SINK_MODE=insert`` (the default): the naive agent.

One event per iteration, one ``INSERT … ON CONFLICT DO NOTHING`` per event, awaited
before the next event is taken (autocommit: one transaction per row). Everything else
is what the real persistence agent (agents/persistence.py) does per event: the same Faust
app settings (app.faust_app.create_app, so the same broker transport, at-least-once
guarantee and session timeout), raw bytes off the topic, the same Avro decode through
the schema registry (app.pipeline.codec.AvroCodec) and the same row builder
(app.pipeline.sink.tables.spec("ticker").build). Only the batching is missing.

It is its own Faust app (app id ``bench-naive-sink``, hence its own consumer group), so
it can run beside a product worker, and it lives here so that the product code gets no
option for it. The topic it reads comes from ``NAIVE_SINK_TOPIC`` (a benchmark knob,
not a product setting); the rows go to the ``tickers`` table of CRYPTICS_DATABASE_URL,
which must be migrated already.

``NAIVE_SINK_MODE=consume``: app id ``bench-consume-only``; the agent takes the topic's
raw records in batches as the earlier per-topic persistence agents did (``stream.noack_take``
with CRYPTICS_SINK_BATCH_SIZE / CRYPTICS_SINK_BATCH_AGE, then ``stream.ack`` per event) and
does nothing else: no decode, no row, no database. What it reaches is the most any
Faust-streamed sink can reach on the machine. ``GET /bench/`` → events taken, and the
worker's monotonic clock at its first batch (with that batch's size) and at its last.
"""
from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime, timezone

import asyncpg
import faust

from app import settings as settings_module
from app.pipeline.codec import AvroCodec
from app.pipeline.sink.tables import SourceRecord, spec
from models.registry import record

MODE = os.environ.get("NAIVE_SINK_MODE", "insert")
if MODE not in ("insert", "consume"):
    raise SystemExit(f"NAIVE_SINK_MODE must be insert or consume, got {MODE!r}")
APP_ID = "bench-naive-sink" if MODE == "insert" else "bench-consume-only"

settings = dataclasses.replace(settings_module.load(), app_id=APP_ID)

# Imported after the settings are read: app.faust_app builds the product's app object at
# import (unused here), and create_app gives ours the same configuration.
from app.faust_app import create_app  # noqa: E402

app = create_app(settings)

SPEC = spec("ticker")
RECORD = record("ticker")
codec = AvroCodec(RECORD.subject, RECORD.schema, settings.schema_registry_url)

_columns = ", ".join(f'"{c}"' for c in SPEC.columns)
_values = ", ".join(f"${i}" for i in range(1, len(SPEC.columns) + 2))
INSERT = f'INSERT INTO "{SPEC.table}" ({_columns}, persisted_at) VALUES ({_values}) ON CONFLICT DO NOTHING'

topic = app.topic(os.environ.get("NAIVE_SINK_TOPIC", RECORD.topic), key_serializer="raw",
                  value_serializer="raw", partitions=settings.topic_partitions)


async def naive_persist(stream: faust.StreamT) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        async for value in stream:
            message = stream.current_event.message
            src = SourceRecord(message.topic, message.partition, message.offset, message.key, value,
                               message.timestamp)
            row = SPEC.build(codec.loads(value), src)
            await conn.execute(INSERT, *row, datetime.now(timezone.utc))
    finally:
        await conn.close()


STATS: dict = {"events": 0, "first_batch": 0, "first_batch_at": None, "last_at": None}


async def consume_only(stream: faust.StreamT) -> None:
    config = settings.sink
    async for events in stream.noack_take(config.batch_size, within=config.batch_age):
        for event in events:
            await stream.ack(event)
        now = time.monotonic()
        if STATS["first_batch_at"] is None:
            STATS["first_batch_at"], STATS["first_batch"] = now, len(events)
        STATS["events"] += len(events)
        STATS["last_at"] = now


@app.page("/bench/")
async def bench_view(web, request):
    return web.json(STATS)


if MODE == "insert":
    app.agent(topic, name="naive_persist")(naive_persist)
else:
    app.agent(topic, name="consume_only")(consume_only)


def main() -> None:
    if not settings.broker_url or not settings.schema_registry_url or (MODE == "insert" and not settings.database_url):
        raise SystemExit("set CRYPTICS_BROKER_URL, CRYPTICS_SCHEMA_REGISTRY_URL and CRYPTICS_DATABASE_URL")
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    faust.Worker(app, loglevel=settings.log_level, override_logging=True).execute_from_commandline()


if __name__ == "__main__":
    main()
