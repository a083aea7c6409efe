"""Wiring heartbeat: proves the worker consumes from and produces to the broker.

Contract
- consumes: ``cryptics.system.heartbeat.avro`` (models.heartbeat.Heartbeat), key = source.
- produces: one Heartbeat per ``CRYPTICS_HEARTBEAT_INTERVAL`` seconds from this
  worker (source = its worker id) to the same topic, with ``produce_later`` like every
  record the worker publishes (app/faust_app.py); off when the interval is 0.
- tables: ``heartbeat_counts`` (source -> heartbeats seen), changelog
  ``cryptics-heartbeat_counts-changelog`` with Avro ``long`` values.
- web view: ``GET /heartbeat/`` -> ``{"counts": {source: n}, "total": n,
  "own_round_trip_ms": x | null}``. ``cryptics up`` polls it to call the worker
  healthy once one of its own heartbeats has come back through the broker.
  ``GET /metrics`` (agents/metrics.py) gives the age of the last own heartbeat that came back.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Optional

import faust

from app.clock import utc_now
from app.faust_app import app, avro_value_codec, produce_later, record_topic, settings
from app.pipeline.copartitioned import use_schema_serializers
from models.heartbeat import Heartbeat

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

heartbeat_topic = record_topic("heartbeat")

heartbeat_counts = app.Table(
    "heartbeat_counts",
    default=int,
    help="Per worker id (<host>:<pid>): the heartbeats of that worker this app has consumed.",
    schema=faust.Schema(
        key_type=str,
        value_type=int,
        key_serializer="raw",
        value_serializer=avro_value_codec(f"{settings.app_id}-heartbeat_counts-changelog", "long"),
    ),
    partitions=settings.topic_partitions,
)
use_schema_serializers(heartbeat_counts)  # Avro on the changelog too, as the schema says


class _RoundTrip:
    """Latency of this worker's own last heartbeat, produce to consume (local, not a table)."""

    last_ms: Optional[float] = None
    #: time.monotonic() when it came back.
    last_at: Optional[float] = None


@app.agent(heartbeat_topic)
async def count_heartbeats(stream):
    async for beat in stream:
        heartbeat_counts[beat.source] += 1
        if beat.source == WORKER_ID:
            _RoundTrip.last_ms = (utc_now() - beat.sent_at).total_seconds() * 1000.0
            _RoundTrip.last_at = time.monotonic()


if settings.heartbeat_interval > 0:
    _sequence = 0

    @app.timer(interval=settings.heartbeat_interval)
    async def send_heartbeat() -> None:
        global _sequence
        _sequence += 1
        produce_later("heartbeat", WORKER_ID, Heartbeat(source=WORKER_ID, sequence=_sequence, sent_at=utc_now()))


@app.page("/heartbeat/")
async def heartbeat_view(web, request):
    counts = {source: count for source, count in heartbeat_counts.items()}
    return web.json({
        "worker": WORKER_ID,
        "counts": counts,
        "total": sum(counts.values()),
        "own_round_trip_ms": _RoundTrip.last_ms,
    })
