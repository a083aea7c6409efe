"""Persistence agents: every pipeline record into its TimescaleDB/PostgreSQL table (design D8).

Contract
- consumes: the raw value bytes of the ``ticker``, ``book``, ``index``, ``trade``,
  ``quote``, ``ack``, ``fill``, ``position`` and ``latency`` topics, one agent per topic
  (``persist_<record>``), in batches of up to CRYPTICS_SINK_BATCH_SIZE records or
  CRYPTICS_SINK_BATCH_AGE seconds. Bytes, not records: the sink decodes them itself, so
  a record that does not decode is dead-lettered with its bytes instead of being lost in
  Faust's decoder, and no faust.Record is built per event (cheaper).
- produces: ``cryptics.thalex.dead_letter.avro`` (models.dead_letter.DeadLetter, key =
  source topic): records that cannot be decoded, turned into a row, or written because
  the table refuses them, with their topic, partition, offset, key, raw value and error.
- tables (PostgreSQL, timescale/0002–0005): tickers, book_tops, index_prices,
  public_trades, quote_decisions, order_acks (and, through its trigger, orders), fills,
  positions, latency_samples. No Faust tables.
- web view: ``GET /sink/`` → per topic: records, rows_written, duplicates, batches,
  transactions, retries, dead_letters (by stage), last error; and the totals.
- off when CRYPTICS_DATABASE_URL is unset (a worker without a database persists nothing).

Acknowledgement. Faust's ``stream.take()`` acks a batch's events when the agent asks for
the next batch, and also in its ``finally`` when the generator is closed, so an agent
stopped in the middle of a flush would ack events that never reached the database. These
agents use ``stream.noack_take()`` instead, which never acks, and ack each event
themselves after ``TopicSink.persist`` returned, that is after the batch committed (and
its dead letters were delivered). Faust commits an offset only when every event before it
is acked, so a worker that dies mid-batch (even kill -9) resumes at the first unwritten
record; the rows written twice are skipped by the tables' natural keys.

Backpressure. While the database is away, ``persist`` retries with backoff and the agent
takes nothing new: the take buffer stops, Faust's queue for the partition fills and Faust
pauses fetching it. Other agents of the worker keep running.

Known limit (design D6): Faust acks, without processing, events that were already queued
when a rebalance changed the consumer generation; at-least-once here relies on Faust then
seeking back to the last committed offset.
"""
from __future__ import annotations

import logging
from typing import Sequence

import faust

from app.faust_app import app, record_topic, settings
from app.sink import SPECS, SourceRecord, TopicSink, for_record
from models.dead_letter import DeadLetter
from models.registry import record

log = logging.getLogger(__name__)

config = settings.sink_config()
dead_letter_topic = record_topic("dead_letter")

#: The sink of each persisted record, by record name (GET /sink/ reads their counters).
SINKS: dict[str, TopicSink] = {}


async def publish_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """Produce dead letters and wait until the broker has them all (before the batch is acked)."""
    pending = [await dead_letter_topic.send(key=letter.source_topic, value=letter) for letter in letters]
    for delivery in pending:
        await delivery


def raw_topic(name: str) -> faust.TopicT:
    """The topic of record ``name`` with keys and values left as bytes."""
    return app.topic(record(name).topic, key_serializer="raw", value_serializer="raw",
                     partitions=settings.topic_partitions)


def _source(message: faust.types.Message) -> SourceRecord:
    return SourceRecord(message.topic, message.partition, message.offset, message.key, message.value,
                        message.timestamp)


def _persistence_agent(name: str, sink: TopicSink) -> None:
    async def persist(stream: faust.StreamT) -> None:
        try:
            async for events in stream.noack_take(config.batch_size, within=config.batch_age):
                await sink.persist([_source(event.message) for event in events])
                # Only now, with the batch committed, do these events count as processed.
                for event in events:
                    await stream.ack(event)
        finally:
            await sink.close()

    app.agent(raw_topic(name), name=f"persist_{name}")(persist)


if settings.database_url:
    for _name in SPECS:
        SINKS[_name] = for_record(_name, database_url=settings.database_url,
                                  registry_url=settings.schema_registry_url,
                                  publish_dead_letters=publish_dead_letters, config=config)
        _persistence_agent(_name, SINKS[_name])
else:
    log.warning("no CRYPTICS_DATABASE_URL: the persistence agents are off")


@app.page("/sink/")
async def sink_view(web, request):
    topics = {sink.topic: {"table": sink.spec.table, **sink.stats.as_dict()} for sink in SINKS.values()}
    summed = ("records", "rows_written", "duplicates", "batches", "transactions", "retries", "dead_letters")
    return web.json({
        "enabled": bool(SINKS),
        "config": {"batch_size": config.batch_size, "batch_age": config.batch_age, "write_mode": config.write_mode},
        "topics": topics,
        "totals": {key: sum(t[key] for t in topics.values()) for key in summed},
    })
