"""The naive analytics agent that benchmarks/bench_analytics.py (part 1) compares the product's
against, and two consume-only agents: the ceiling that Faust itself sets.

    NAIVE_ANALYTICS_MODE=naive CRYPTICS_BROKER_URL=... CRYPTICS_SCHEMA_REGISTRY_URL=... \
    CRYPTICS_INSTRUMENTS=... .venv/bin/python -m benchmarks.naive_analytics_app

``NAIVE_ANALYTICS_MODE=naive`` (the default; app id ``bench-naive-analytics``): the naive agent.
One event per stream iteration, and ``engine.apply([event])`` per event, so every table key an
event touches is read from its table and written back (one changelog record each) per event.
Everything else is what the product's analytics agent (agents/analytics.py) does: the same
Faust app settings (app.faust_app.create_app: broker transport, at-least-once, session
timeout), the same nine input topics as one stream of raw bytes, the same Avro decode through
the schema registry, the same ten co-partitioned tables with Avro changelogs (changelog topics
``bench-naive-analytics-<table>-changelog``), the same engine (app/analytics/engine.py) and
its records (markouts, PnL and quote-quality snapshots, dead letters) produced through a
``DeferredProducer`` of this app. Only the batching is missing.

``NAIVE_ANALYTICS_MODE=consume-events`` (app id ``bench-consume-events``): an agent that
iterates the same topics one event at a time (``async for event in stream.events()``) and
does nothing else: no decode, no table, no record. ``consume-batched`` (app id
``bench-consume-batched``): the same with ``stream.take_events`` in batches of
CRYPTICS_ANALYTICS_BATCH_SIZE / CRYPTICS_ANALYTICS_BATCH_AGE, as the product takes them. What
these reach is the most any Faust-streamed analytics agent can reach on the machine.

Each mode is its own Faust app (hence its own consumer group and changelog topics), so every
run reads the same preloaded topics from their start, and the module lives here so that the
product code gets no option for it. ``GET /bench/`` → events taken, the worker's monotonic
clock at the first and the last, and (naive mode) the engine's counters as GET /analytics/
shows them.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import faust

from app import settings as settings_module

MODES = {"naive": "bench-naive-analytics", "consume-events": "bench-consume-events",
         "consume-batched": "bench-consume-batched"}
MODE = os.environ.get("NAIVE_ANALYTICS_MODE", "naive")
if MODE not in MODES:
    raise SystemExit(f"NAIVE_ANALYTICS_MODE must be one of {', '.join(MODES)}, got {MODE!r}")
APP_ID = MODES[MODE]

settings = dataclasses.replace(settings_module.load(), app_id=APP_ID)

# Imported after the settings are read: app.faust_app builds the product's app object at
# import (unused here, but its record topics name and encode what the engine publishes), and
# create_app gives ours the same configuration.
from app.analytics.engine import INPUTS, TABLES, AnalyticsEngine, Event  # noqa: E402
from app.clock import utc_now  # noqa: E402
from app.faust_app import _encode_record, create_app  # noqa: E402
from app.pipeline.codec import AvroCodec, WireFormatError  # noqa: E402
from app.pipeline.copartitioned import CoPartitionedTable, copartitioned_table  # noqa: E402
from app.pipeline.producer import DeferredProducer  # noqa: E402
from models import schemas  # noqa: E402
from models.dead_letter import DeadLetter  # noqa: E402
from models.registry import record  # noqa: E402

app = create_app(settings)
config = settings.analytics

RECORD_OF_TOPIC = {record(name).topic: name for name in INPUTS}
DECODE_ERRORS = (WireFormatError, ValueError, TypeError, EOFError, IndexError, KeyError, OverflowError)

inputs = app.topic(*RECORD_OF_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw",
                   value_serializer="raw", partitions=settings.topic_partitions)

STATS: dict[str, Any] = {"mode": MODE, "app_id": APP_ID, "events": 0, "first_at": None, "last_at": None}


def _count(n: int) -> None:
    now = time.monotonic()
    if STATS["first_at"] is None:
        STATS["first_at"] = now
    STATS["events"] += n
    STATS["last_at"] = now


engine: Optional[AnalyticsEngine] = None

if MODE == "naive":
    def _table(name: str, state: str, window: Optional[float], help: str) -> CoPartitionedTable:
        """agents/analytics.py ``_table``, on this app (its own changelog topics and subjects)."""
        codec = AvroCodec(f"{APP_ID}-{name}-changelog-value", schemas.load(state), settings.schema_registry_url)
        if window is None:
            schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer=codec)
            return copartitioned_table(app, name, help=help, schema=schema, partitions=settings.topic_partitions)
        kept = config.second_windows_kept if window < 60 else config.minute_windows_kept
        schema = faust.Schema(key_serializer="json", value_serializer=codec)
        return copartitioned_table(app, name, help=help, schema=schema, partitions=settings.topic_partitions,
                                   window_seconds=window, expires_seconds=kept)

    TABLE_OF = {spec.name: _table(spec.name, spec.state, spec.window, spec.help) for spec in TABLES}

    async def _kafka_producer() -> Any:
        await app.producer.maybe_start()
        return app.producer._producer

    producer = DeferredProducer(_encode_record, _kafka_producer)

    def _dead_letter(event: Event, reason: str, error: str) -> None:
        topic, key, raw = event.context
        stage = "decode" if reason == "undecodable" else "row"
        producer.produce("dead_letter", topic, DeadLetter(
            source_topic=topic, source_partition=event.partition, source_offset=event.offset, stage=stage,
            error=error, failed_at=utc_now(), key=key, value=raw, target_table="analytics"))

    engine = AnalyticsEngine(settings.instrument_names, config, TABLE_OF,
                             publish=lambda name, key, value: producer.produce(name, key, value),
                             refuse=_dead_letter)
    codecs = {name: AvroCodec(record(name).subject, record(name).schema, settings.schema_registry_url)
              for name in INPUTS}

    @app.agent(inputs, name="naive_analytics")
    async def naive_analytics(stream: faust.StreamT) -> None:
        async for event in stream.events():
            m = event.message
            name = RECORD_OF_TOPIC[m.topic]
            try:
                if m.value is None:
                    raise WireFormatError("no value")
                value = codecs[name].loads(m.value)
            except DECODE_ERRORS as exc:
                engine.stats.events += 1
                engine.stats.refused["undecodable"] += 1
                _dead_letter(Event(name, m.partition, m.offset, {}, (m.topic, m.key, m.value)), "undecodable",
                             f"{type(exc).__name__}: {exc}")
            else:
                engine.apply([Event(name, m.partition, m.offset, value, (m.topic, m.key, m.value))])
            _count(1)

    @app.on_before_shutdown.connect
    async def _flush(sender: Any, **kwargs: Any) -> None:
        await producer.flush()

elif MODE == "consume-events":
    @app.agent(inputs, name="consume_events")
    async def consume_events(stream: faust.StreamT) -> None:
        async for _event in stream.events():
            _count(1)

else:
    @app.agent(inputs, name="consume_batched")
    async def consume_batched(stream: faust.StreamT) -> None:
        async for events in stream.take_events(config.batch_size, within=config.batch_age):
            _count(len(events))


@app.page("/bench/")
async def bench_view(web, request):
    view = dict(STATS)
    if engine is not None:
        s = engine.stats
        view["counters"] = {"batches": s.batches, "events": s.events, "applied": dict(s.applied),
                            "redelivered": dict(s.redelivered), "dead_letters": dict(s.refused),
                            "published": dict(s.published), "keys_written": s.keys_written}
    return web.json(view)


def main() -> None:
    if not settings.broker_url or not settings.schema_registry_url:
        raise SystemExit("set CRYPTICS_BROKER_URL and CRYPTICS_SCHEMA_REGISTRY_URL")
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    import asyncio

    import uvloop

    # On uvloop, as `cryptics worker` runs (app/worker.py).
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    faust.Worker(app, loglevel=settings.log_level, override_logging=True, loop=loop).execute_from_commandline()


if __name__ == "__main__":
    main()
