"""Analytics: positions and PnL, candles, stage latency, markouts and quote quality, in Faust tables.

Contract
- consumes: the raw key and value bytes of the ``ticker``, ``book``, ``index``, ``trade``,
  ``quote``, ``ack``, ``fill``, ``position`` and ``latency`` topics, as one Faust stream
  (agent ``analytics``, the app's consumer group), in batches of CRYPTICS_ANALYTICS_BATCH_SIZE
  events or CRYPTICS_ANALYTICS_BATCH_AGE seconds; each value decoded here with its topic's
  Avro codec, then applied by the analytics engine (app/analytics/engine.py: what feeds what,
  and how a redelivery is skipped).
- produces, with ``produce_later`` (app/faust_app.py):
  - ``markout``: one per fill and horizon (1, 5, 30, 60 s), once the horizon has passed;
  - ``pnl_snapshot``: one per instrument and minute, when the instrument's first event of a
    later minute arrives (the state as it stood at the end of the minute);
  - ``quote_quality``: one per instrument and minute, CRYPTICS_ANALYTICS_SNAPSHOT_GRACE seconds
    of event time after the minute ended;
  - ``dead_letter``: input the analytics cannot use, with its topic, partition, offset, bytes
    and reason, target ``analytics``: bytes that do not decode (stage ``decode``); an unknown
    instrument, a non-finite number, a price not above zero (engine.py ``POSITIVE_PRICES``), a
    value a computation refuses (stage ``row``). Logged once per reason, counted in
    GET /analytics/.
- tables (Faust, ``memory://`` store, changelog ``<app id>-<table>-changelog`` with Avro values
  of schemas/<state>/v1.avsc; each key on the changelog partition of the events that wrote
  it, app/pipeline/copartitioned.py), as app/analytics/engine.py ``TABLES`` lists them:
  position_pnl, trade_candles_1s, trade_candles_1m, mark_candles_1s, mark_candles_1m (windowed),
  stage_latency_1m (windowed, key ``<instrument>|<stage>``), markouts, resting_quotes,
  quote_quality_1m (windowed), analytics_progress.
- web view: ``GET /analytics/`` → this worker's positions with account totals, markout
  aggregates, key counts per table, counters (events, redeliveries skipped, fills skipped as
  duplicates of a trade booked already, events left out of an expired window, dead letters by
  reason, records published, and input partitions that jumped ahead (sought back, resynced,
  events held, offsets given up) or back: app/analytics/continuity.py).
- off when CRYPTICS_ANALYTICS_ENABLED is false: no agent and no table; GET /analytics/ says
  ``enabled: false``.

Exact under at-least-once (docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once):
Faust flushes its producer, changelogs included, before it commits offsets, so after a crash
the tables are at or ahead of the committed offsets; the states skip what they had applied.
Every event first passes the continuity guard (app/analytics/continuity.py): a partition whose
offsets jump ahead, at the head of an assignment too (where the group committed, or the log's
first offset), is sought back and its later events held until the missing ones come again.

Why one stream for every table: each Faust stream costs tens of µs per event before any
table work, and a ticker feeds five of these tables; one stream decodes each event once and
hands it to every computation that needs it (benchmarks/bench_analytics.py).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Optional

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from app.analytics.continuity import APPLY, GaveUp, OffsetContinuity, Seek
from app.analytics.engine import INPUTS, TABLES, AnalyticsEngine, Event, kept_seconds
from app.analytics.markouts import MarkoutBook
from app.analytics.positions import PositionState, account_totals
from app.clock import utc_now
from app.faust_app import app, avro_value_codec, produce_later, settings
from app.pipeline.codec import WireFormatError
from app.pipeline.copartitioned import CoPartitionedTable, copartitioned_table
from app.pipeline.topics import partition_starts
from models import schemas
from models.dead_letter import DeadLetter
from models.registry import record

log = logging.getLogger(__name__)

config = settings.analytics

RECORD_OF_TOPIC = {record(name).topic: name for name in INPUTS}
#: Errors that mean "these bytes are no record of this topic" (the sink's list, app/pipeline/sink/sink.py).
DECODE_ERRORS = (WireFormatError, ValueError, TypeError, EOFError, IndexError, KeyError, OverflowError)


def _table(name: str, state: str, window: Optional[float], help: str) -> CoPartitionedTable:
    codec = avro_value_codec(f"{settings.app_id}-{name}-changelog", schemas.load(state))
    if window is None:
        schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer=codec)
        return copartitioned_table(app, name, help=help, schema=schema, partitions=settings.topic_partitions)
    kept = kept_seconds(window, config)
    # A windowed key is (key, (start, end)): JSON, which Faust's windowed tables recover.
    schema = faust.Schema(key_serializer="json", value_serializer=codec)
    return copartitioned_table(app, name, help=help, schema=schema, partitions=settings.topic_partitions,
                               window_seconds=window, expires_seconds=kept)


#: The analytics tables by name; none on a worker whose analytics are off, so that it holds no
#: partition of them (under `cryptics up` the quoting worker: the table views forward to the
#: worker that has them, agents/table_views.py).
TABLE_OF: Mapping[str, CoPartitionedTable] = {spec.name: _table(spec.name, spec.state, spec.window, spec.help)
                                              for spec in TABLES} if config.enabled else {}

_reported: set[str] = set()


def _dead_letter(event: Event, reason: str, error: str) -> None:
    topic, key, raw = event.context
    if reason not in _reported:  # once per reason: a stream of bad records must not flood the log
        _reported.add(reason)
        log.warning("analytics: dead letter %s[%d]@%d (%s): %s; further ones are counted in GET /analytics/",
                    topic, event.partition, event.offset, reason, error)
    stage = "decode" if reason == "undecodable" else "row"
    letter = DeadLetter(source_topic=topic, source_partition=event.partition, source_offset=event.offset,
                        stage=stage, error=error, failed_at=utc_now(), key=key, value=raw, target_table="analytics")
    produce_later("dead_letter", topic, letter)


engine = AnalyticsEngine(settings.instrument_names, config, TABLE_OF,
                         publish=lambda name, key, value: produce_later(name, key, value), refuse=_dead_letter)
_codecs = {name: avro_value_codec(record(name).topic, record(name).schema) for name in INPUTS}
continuity = OffsetContinuity()
#: Gaps logged one by one up to this many; further ones are counted in GET /analytics/.
GAPS_LOGGED = 20
DEFAULT_KAFKA_PORT = 9092


def _admitted(events: list) -> tuple[list, list[Seek]]:
    """The batch's events that may be applied, and the seeks back that holes in it ask for
    (app/analytics/continuity.py)."""
    now = time.monotonic()
    admitted, seeks = [], []
    for event in events:
        m = event.message
        verdict = continuity.admit(m.topic, m.partition, m.offset, now)
        if verdict is APPLY:
            admitted.append(event)
        elif isinstance(verdict, GaveUp):
            _log_given_up(verdict)
            if verdict.resume == m.offset:
                admitted.append(event)
            else:  # the partition goes on from an offset it held back: fetched again
                seeks.append(Seek(m.topic, m.partition, verdict.resume))
        elif isinstance(verdict, Seek):
            seeks.append(verdict)
            if sum(continuity.gaps.values()) <= GAPS_LOGGED:
                log.warning("analytics: %s[%d] jumped from offset %d to %d: the consumer skipped %d records; "
                            "seeking back to %d and holding the partition's later events until it arrives "
                            "(GET /analytics/ counts offset_gaps)", m.topic, m.partition, verdict.offset, m.offset,
                            m.offset - verdict.offset, verdict.offset)
    return admitted, seeks


def _log_given_up(verdict: GaveUp) -> None:
    log.error("analytics: %s[%d] offsets %d to %d did not come again within %.0f s of the seek back: the tables go "
              "on without them, from offset %d (GET /analytics/ counts offsets_skipped)", verdict.topic,
              verdict.partition, verdict.missing, verdict.resume - 1, continuity.resync_timeout, verdict.resume)


async def _seek_back(seek: Seek) -> None:
    tp = TP(seek.topic, seek.partition)
    if tp not in app.consumer.assignment():
        continuity.forget([(seek.topic, seek.partition)])  # given up in a rebalance meanwhile
        return
    await app.consumer.seek(tp, seek.offset)


def _decoded(events: list) -> list[Event]:
    """The batch's events decoded; what does not decode is dead-lettered here."""
    decoded = []
    for event in events:
        m = event.message
        name = RECORD_OF_TOPIC[m.topic]
        try:
            if m.value is None:
                raise WireFormatError("no value")
            value = _codecs[name].loads(m.value)
        except DECODE_ERRORS as exc:
            failed = Event(name, m.partition, m.offset, {}, (m.topic, m.key, m.value))
            engine.stats.events += 1
            engine.stats.refused["undecodable"] += 1
            _dead_letter(failed, "undecodable", f"{type(exc).__name__}: {exc}")
            continue
        decoded.append(Event(name, m.partition, m.offset, value, (m.topic, m.key, m.value), m.timestamp))
    return decoded


if config.enabled:
    _inputs = app.topic(*RECORD_OF_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw", partitions=settings.topic_partitions)

    @app.agent(_inputs, name="analytics")
    async def analytics(stream):
        async for events in stream.take_events(config.batch_size, within=config.batch_age):
            admitted, seeks = _admitted(events)
            engine.apply(_decoded(admitted))
            for seek in seeks:
                await _seek_back(seek)

    @app.timer(1.0)
    async def _resync_timeouts() -> None:
        # A partition whose every event is held while it waits for a hole notices the timeout
        # only with its next event; a quiet one has none: it is given up on here.
        for verdict in continuity.overdue(time.monotonic()):
            _log_given_up(verdict)
            await _seek_back(Seek(verdict.topic, verdict.partition, verdict.resume))

    @app.on_partitions_assigned.connect
    async def _track_assigned(sender, assigned, **kwargs) -> None:
        # Faust revokes every partition at a rebalance; one kept across it must go on where it
        # stopped, one it gave up may come back later, after another worker had it. A partition
        # new here starts where the group committed, or at the log's first offset.
        kept = {(tp.topic, tp.partition) for tp in assigned if tp.topic in RECORD_OF_TOPIC}
        continuity.forget([tp for tp in continuity.expected if tp not in kept])
        continuity.seek_again(kept)
        new = [tp for tp in kept if tp not in continuity.expected]
        try:
            servers = ",".join(faust_aiokafka.server_list(app.conf.broker, DEFAULT_KAFKA_PORT))
            continuity.start_at(await partition_starts(servers, app.conf.id, new))
        except Exception as exc:  # the broker did not answer in time: such partitions start unchecked
            log.warning("analytics: could not read where %d newly assigned partitions start (%s: %s); a hole at "
                        "their head would go unnoticed", len(new), type(exc).__name__, exc)


@app.page("/analytics/")
async def analytics_view(web, request):
    positions_table, markouts_table = TABLE_OF.get("position_pnl", {}), TABLE_OF.get("markouts", {})
    states = [PositionState.from_record(value) for value in positions_table.values()]
    positions: dict[str, Any] = {}
    for state in states:
        row = {**state.to_record(), "unrealized_pnl": state.unrealized_pnl, "net_pnl": state.net_pnl, "fees": state.fees}
        row.pop("offsets")
        row.pop("fill_offsets")
        positions[state.instrument_name] = row
    books = {key: MarkoutBook.from_record(value) for key, value in markouts_table.items()}
    stats = engine.stats
    return web.json({
        "enabled": config.enabled,
        "positions": positions,
        "account": account_totals(states),
        "markouts": {key: {"pending": book.pending_count, "aggregates": book.aggregates()} for key, book in books.items()},
        "tables": {name: len(table) for name, table in TABLE_OF.items()},
        "counters": {
            "batches": stats.batches, "events": stats.events, "applied": dict(stats.applied),
            "redelivered": dict(stats.redelivered), "duplicate_fills": stats.duplicate_fills,
            "late_for_window": dict(stats.late),
            "dead_letters": dict(stats.refused),
            "published": dict(stats.published), "keys_written": stats.keys_written,
            **continuity.counters(),
        },
    })
