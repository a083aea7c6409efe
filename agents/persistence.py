"""Persistence: every pipeline record into its TimescaleDB/PostgreSQL table
(docs/architecture.md#d8-persistence-semantics).

Contract
- consumes: the raw key and value bytes of the ``ticker``, ``book``, ``index``, ``trade``,
  ``quote``, ``ack``, ``fill``, ``position``, ``latency``, ``markout``, ``pnl_snapshot`` and
  ``quote_quality`` topics, through one Kafka
  consumer of its own (consumer group ``<app id>-persistence``), in batches of up to
  CRYPTICS_SINK_BATCH_SIZE records or CRYPTICS_SINK_BATCH_AGE seconds. Bytes, not
  records: each topic's sink decodes them itself, so a record that does not decode is
  dead-lettered with its bytes instead of being lost in a decoder, and no record object
  is built per event.
- produces: ``cryptics.thalex.dead_letter.avro`` (models.dead_letter.DeadLetter, key =
  source topic): records that cannot be decoded, turned into a row, or written because
  the table refuses them, with their topic, partition, offset, key, raw value and error.
  With ``produce_confirmed`` (app/faust_app.py): the worker's one producer, and a delivery
  to wait for. And ``cryptics.thalex.latency.avro`` (models.latency.LatencySample, key =
  instrument): one ``ack_received_to_persisted`` sample per order_acks row a batch newly
  inserted, from the ack's arrival to the row's ``persisted_at``, produced with
  ``produce_later`` once the row has committed (a redelivered ack is not measured again).
- tables (PostgreSQL, timescale/0002–0010): tickers, book_tops and book_updates (both from
  the book topic: one consume, one write per table), index_prices, public_trades, quote_decisions, order_acks (and, through its trigger, orders), fills,
  positions, latency_samples, markouts, pnl_snapshots, quote_quality_1m. No Faust tables.
- web view: ``GET /sink/`` → per table (and per topic, its tables added up): records,
  rows_written, duplicates, batches, transactions, retries, dead_letters (by stage), last
  error; and the totals. A topic of two tables counts each record once per table. ``GET /metrics``
  (agents/metrics.py) reads the same counters, and the group's lag from ``service``.
- off when CRYPTICS_DATABASE_URL is unset (a worker without a database persists nothing).

Why a consumer of its own rather than a Faust agent per topic: the agents spent ~240 µs
of Faust and aiokafka work per event before the sink saw it, which capped persistence near
2,600 events/s on 2 cores (benchmarks/bench_sink/), while aiokafka's ``getmany`` alone
hands over batches at >100,000 records/s here. The sink needs none of what a Faust stream
adds per event (records, acks, tables), only batches and commits, so it takes them straight
from aiokafka, inside the Faust worker as a service like the market-data source.

Commits. A batch's offsets are committed only after every topic's part of it has been
written (and its dead letters delivered): an event counts as processed only once its rows
are in (docs/architecture.md#d8-persistence-semantics). A worker that dies mid-batch (even
kill -9) resumes at the first uncommitted record; the rows written twice are skipped by the
tables' natural keys. A commit refused because a rebalance took the partition away is
harmless for the same reason.

Backpressure. While the database is away, the sinks retry with backoff and this service
asks Kafka for nothing new; aiokafka stops fetching once its buffer is full. Its group
heartbeats go on; only a wait longer than CRYPTICS_SINK_MAX_WAIT (10 minutes) makes it leave
the group, to rejoin when its batch is through.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from typing import Any, Mapping, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from app.faust_app import app, produce_confirmed, produce_later, settings
from app.pipeline.order_records import persistence_group
from app.pipeline.sink import SPECS, SourceRecord, TopicSink, for_record
from app.pipeline.sink.tables import ack_persisted_sample
from app.pipeline.topics import bootstrap_servers
from app.security import kafka_client_kwargs
from models.dead_letter import DeadLetter

log = logging.getLogger(__name__)

config = settings.sink

#: The sink of each persisted record, by its topic (GET /sink/ reads their counters).
SINKS: dict[str, TopicSink] = {}


async def publish_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """Produce dead letters and wait until the broker has them all (before the batch is committed).

    Raises if any of them is not delivered: the sink then waits and publishes the batch's
    letters again (app/pipeline/sink/sink.py), and the batch is not committed meanwhile."""
    deliveries = [produce_confirmed("dead_letter", letter.source_topic, letter) for letter in letters]
    # Every delivery is awaited, so that a second failure is not left unretrieved.
    outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def publish_ack_latency(rows: Sequence[Mapping[str, Any]]) -> None:
    """One ack → persisted latency sample per order_acks row just committed (the ack sink's
    ``on_inserted``). Fire and forget, like every measured stage: the samples are built
    once the event loop is free, and the latency topic's own sink persists them."""
    for row in rows:
        instrument = row["instrument_name"]
        if instrument is not None:  # a combination order's ack names no instrument to key it by
            produce_later("latency", instrument, functools.partial(ack_persisted_sample, row))


#: What a sink's newly inserted rows set off, by record (the specs with ``returning``).
ON_INSERTED = {"ack": publish_ack_latency}


class PersistenceService(Service):
    """One Kafka consumer over every persisted topic; each batch to its topics' sinks, then commit."""

    #: The offsets this service last committed, per partition (the next offset to read): its lag.
    committed: dict

    async def on_start(self) -> None:
        self.committed = {}
        self.consumer = AIOKafkaConsumer(
            *SINKS,
            bootstrap_servers=bootstrap_servers(settings.broker_url),
            group_id=persistence_group(settings.app_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout / 3) * 1000),
            max_poll_interval_ms=int(config.max_wait * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **kafka_client_kwargs(settings),
        )
        await self.consumer.start()
        log.info("persistence: consuming %d topics as group %s-persistence", len(SINKS), settings.app_id)

    async def on_stop(self) -> None:
        # The batch in hand (if any) was cancelled before its commit: it comes again.
        await self.consumer.stop()
        for sink in SINKS.values():
            await sink.close()

    @Service.task
    async def _consume(self) -> None:
        while not self.should_stop:
            batch = await self._take()
            if not batch:
                continue
            by_topic: dict[str, list[SourceRecord]] = defaultdict(list)
            for messages in batch.values():
                for m in messages:
                    by_topic[m.topic].append(SourceRecord(m.topic, m.partition, m.offset, m.key, m.value,
                                                          m.timestamp / 1000 if m.timestamp else None))
            # The topics' sinks write in parallel, each on its own connection and transaction.
            await asyncio.gather(*(SINKS[topic].persist(records) for topic, records in by_topic.items()))
            await self._commit({tp: messages[-1].offset + 1 for tp, messages in batch.items()})

    async def _take(self) -> dict:
        """Up to batch_size records, or what arrived within batch_age of the first one."""
        batch: dict = {}
        count, deadline = 0, None
        while count < config.batch_size:
            wait = config.batch_age if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            got = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=config.batch_size - count)
            if not got:
                if deadline is None:
                    return batch  # nothing at all: let the loop look at should_stop
                break
            if deadline is None:
                deadline = time.monotonic() + config.batch_age
            for tp, messages in got.items():
                batch.setdefault(tp, []).extend(messages)
                count += len(messages)
        return batch

    async def _commit(self, offsets: dict) -> None:
        try:
            await self.consumer.commit(offsets)
            self.committed.update(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took a partition away, or the broker is restarting: its new owner
            # (or we, after the rejoin) reads from the last commit, and the keys skip the repeats.
            log.warning("persistence: commit of %d partitions failed (%s); they will be read again",
                        len(offsets), exc)


#: The persistence service of this worker, once it is configured (a database URL).
service: "PersistenceService | None" = None

if settings.database_url:
    for _name in SPECS:
        _sink = for_record(_name, database_url=settings.database_dsn, registry_url=settings.schema_registry_url,
                           publish_dead_letters=publish_dead_letters, config=config,
                           on_inserted=ON_INSERTED.get(_name))
        SINKS[_sink.topic] = _sink
    service = PersistenceService()
    app.service(service)  # type: ignore[arg-type]  # started and stopped with the worker
else:
    log.warning("no CRYPTICS_DATABASE_URL: persistence is off")


@app.page("/sink/")
async def sink_view(web, request):
    tables = {table.spec.table: {"topic": topic, **table.stats.as_dict()}
              for topic, sink in SINKS.items() for table in sink.tables}
    topics = {topic: topic_view(sink) for topic, sink in SINKS.items()}
    return web.json({
        "enabled": bool(SINKS),
        "config": {"batch_size": config.batch_size, "batch_age": config.batch_age, "write_mode": config.write_mode},
        "topics": topics,
        "tables": tables,
        "totals": {key: sum(t[key] for t in tables.values()) for key in SUMMED},
    })


#: The counters that add up across tables.
SUMMED = ("records", "rows_written", "duplicates", "batches", "transactions", "retries", "dead_letters")


def topic_view(sink: TopicSink) -> dict[str, Any]:
    """One topic's counters: its tables' added up; waiting while any waits, the latest error."""
    views = [table.stats.as_dict() for table in sink.tables]
    latest = max(views, key=lambda v: v["last_error_at"] or "")
    stages: dict[str, int] = defaultdict(int)
    for v in views:
        for stage, n in v["dead_letters_by_stage"].items():
            stages[stage] += n
    return {
        "tables": [table.spec.table for table in sink.tables],
        **{key: sum(v[key] for v in views) for key in SUMMED},
        "dead_letters_by_stage": dict(stages),
        "write_seconds": round(sum(v["write_seconds"] for v in views), 3),
        "last_flush_at": max((v["last_flush_at"] for v in views if v["last_flush_at"]), default=None),
        "last_error": latest["last_error"], "last_error_at": latest["last_error_at"],
        "waiting": any(v["waiting"] for v in views),
    }
