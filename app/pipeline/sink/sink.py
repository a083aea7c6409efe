"""One topic's persistence, apart from Faust: decode, build rows, write, dead-letter.

``TopicSink.persist(records)`` takes a batch of raw Kafka records and returns only when
each of them is either in its table or on the dead-letter topic (for a topic of several
tables, the book's: in each table or on the dead-letter topic for it; every table retries,
counts and dead-letters as if alone, see ``TopicSink``). The persistence consumer
(agents/persistence.py) commits the batch's offsets to Kafka after that, and not before:
an event counts as processed only once its batch has committed (docs/architecture.md#d8-persistence-semantics).

What can go wrong, and what happens:

| failure | what happens |
|---|---|
| bytes that do not decode with the topic's schema (or no value at all) | dead letter, stage ``decode`` |
| a decoded record no row can be built from (a NaN exchange time, …) | dead letter, stage ``row`` |
| the table refuses a row (CHECK, NOT NULL, value out of range) | the batch is bisected; that row alone becomes a dead letter, stage ``database``; the rest is written |
| anything else: no connection, the server restarting, a missing table, a registry that does not answer | wait with exponential backoff and try the same batch again, for as long as it takes |

A sink whose spec has ``returning`` columns (the acks') tells ``on_inserted`` what the
insert returned, once the rows are committed and before ``persist`` returns: one entry per
row newly inserted, none for a row the natural key skipped. The persistence consumer
publishes the ack → persisted latency samples from them. They are at most once: a COMMIT
whose answer was lost (the retry finds the rows there) or a worker that dies before the
samples reach Kafka leaves those rows unmeasured, never measured twice.

While ``persist`` waits, the consumer takes no more records and aiokafka stops fetching
once its buffer is full. Nothing is dropped; at worst a batch is written twice, which
the natural keys absorb.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Mapping, Optional, Sequence

import asyncpg

from app.clock import utc_now
from app.pipeline.codec import WireFormatError
from app.pipeline.sink.config import SinkConfig
from app.pipeline.sink.tables import Row, SourceRecord, TableSpec
from app.pipeline.sink.writer import TableWriter, WriteResult, describe
from models.dead_letter import DeadLetter

log = logging.getLogger(__name__)

Decoder = Callable[[bytes], Mapping[str, Any]]
Connect = Callable[[], Awaitable[asyncpg.Connection]]
Publish = Callable[[Sequence[DeadLetter]], Awaitable[None]]
#: Told the ``returning`` columns of the rows a batch newly inserted, after they committed.
OnInserted = Callable[[Sequence[Mapping[str, Any]]], None]

#: Errors that mean "these bytes are not a record of this topic": the codec's own, and what
#: fastavro raises on bytes it cannot read. Anything else from the decoder (the registry
#: not answering while we look up a writer schema) is transient and retried.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    WireFormatError, ValueError, TypeError, EOFError, IndexError, KeyError, OverflowError,
)


@dataclass
class SinkStats:
    """Counters of one topic's sink, for GET /sink/ and the tests."""

    #: Records received (every delivery counts, redeliveries too).
    records: int = 0
    #: Rows newly inserted into the table.
    rows_written: int = 0
    #: Rows skipped because their natural key was already there (redeliveries, repeats).
    duplicates: int = 0
    #: Batches fully handled (written and dead-lettered, ready to acknowledge).
    batches: int = 0
    #: Transactions committed (more than batches when a batch was bisected).
    transactions: int = 0
    #: Waits after an error that was not the rows' fault (connection, server, registry, broker).
    retries: int = 0
    dead_letters: int = 0
    dead_letters_by_stage: Counter = field(default_factory=Counter)
    #: Seconds spent writing (connection waits and retries included).
    write_seconds: float = 0.0
    last_flush_at: Optional[datetime] = None
    last_error: Optional[str] = None
    last_error_at: Optional[datetime] = None
    #: True while the batch in hand is waiting for the database (or registry, or broker).
    waiting: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "rows_written": self.rows_written, "duplicates": self.duplicates,
            "batches": self.batches, "transactions": self.transactions, "retries": self.retries,
            "dead_letters": self.dead_letters, "dead_letters_by_stage": dict(self.dead_letters_by_stage),
            "write_seconds": round(self.write_seconds, 3),
            "last_flush_at": self.last_flush_at.isoformat() if self.last_flush_at else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "waiting": self.waiting,
        }


class Backoff:
    """Exponential pauses from ``initial`` to ``maximum`` seconds, with a little jitter so
    that the sinks of one worker do not all knock at the same instant."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * (2 ** self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.8, 1.0)


@dataclass
class SinkTable:
    """One table of a topic's sink: its spec, its writer and its own counters."""

    spec: TableSpec
    writer: TableWriter
    stats: SinkStats = field(default_factory=SinkStats)


class TopicSink:
    """Persists the records of one topic into its table, or tables.

    A topic feeding several tables (the book's: book_tops and book_updates) is consumed and
    decoded once; each table then gets its rows built, written with retries and its failures
    dead-lettered on its own, as if it were the topic's only table: a table that waits for
    the database does not undo the other's committed rows, and a record one table refuses
    is a dead letter for that table alone (``target_table``), written into the others. The
    tables are written one after the other on the topic's one connection."""

    def __init__(
        self,
        spec: "TableSpec | Sequence[TableSpec]",
        topic: str,
        decode: Decoder,
        connect: Connect,
        publish_dead_letters: Publish,
        config: SinkConfig,
        clock: Callable[[], datetime] = utc_now,
        on_inserted: Optional[OnInserted] = None,
    ) -> None:
        specs = (spec,) if isinstance(spec, TableSpec) else tuple(spec)
        if not specs or len({s.record for s in specs}) != 1:
            raise ValueError(f"{topic}: a topic's sink writes one record's tables, got {[s.table for s in specs]}")
        self.tables = tuple(SinkTable(s, TableWriter(s, config.write_mode)) for s in specs)
        self.topic = topic
        self.decode = decode
        self.connect = connect
        self.publish_dead_letters = publish_dead_letters
        self.config = config
        self.clock = clock
        self.on_inserted = on_inserted
        self._conn: Optional[asyncpg.Connection] = None

    @property
    def spec(self) -> TableSpec:
        """The first table's spec (a sink's only one, but for the book's)."""
        return self.tables[0].spec

    @property
    def writer(self) -> TableWriter:
        """The first table's writer."""
        return self.tables[0].writer

    @writer.setter
    def writer(self, writer: TableWriter) -> None:
        self.tables[0].writer = writer

    @property
    def stats(self) -> SinkStats:
        """The first table's counters (a sink's only one, but for the book's; ``tables`` has each)."""
        return self.tables[0].stats

    # -- the batch ------------------------------------------------------------------------

    async def persist(self, records: Sequence[SourceRecord]) -> None:
        """Write ``records``; return once each is in each table or on the dead-letter topic for it."""
        for table in self.tables:
            table.stats.records += len(records)
        decoded: list[tuple[SourceRecord, Mapping[str, Any]]] = []
        letters: list[DeadLetter] = []
        for i, src in enumerate(records):
            if i % RECORDS_PER_SLICE == RECORDS_PER_SLICE - 1:
                await asyncio.sleep(0)  # the quoting worker's hot path shares this event loop
            value, error = await self._decode(src)
            if error is not None:
                # Lost to every table: each has its dead letter, as it would if it were alone.
                letters.extend(self._dead_letter(src, "decode", error, table) for table in self.tables)
            else:
                decoded.append((src, value))

        results = []
        for table in self.tables:
            result = await self._persist_into(table, decoded, letters)
            results.append((table, result))
        if letters:
            await self._publish(letters)

        flushed_at = self.clock()
        for table, result in results:
            table.stats.rows_written += result.inserted
            table.stats.duplicates += result.duplicates
            table.stats.transactions += result.transactions
            table.stats.batches += 1
            table.stats.last_flush_at = flushed_at

    async def _persist_into(self, table: SinkTable, decoded: Sequence[tuple[SourceRecord, Mapping[str, Any]]],
                            letters: list[DeadLetter]) -> WriteResult:
        """Build and write one table's rows; its refused records are added to ``letters``."""
        rows: list[Row] = []
        origins: list[SourceRecord] = []
        for i, (src, value) in enumerate(decoded):
            if i % RECORDS_PER_SLICE == RECORDS_PER_SLICE - 1:
                await asyncio.sleep(0)
            try:
                rows.append(table.spec.build(value, src))
            except Exception as exc:  # builders are pure: whatever they raise is this record's fault
                letters.append(self._dead_letter(src, "row", describe(exc), table))
                continue
            origins.append(src)

        started = time.perf_counter()
        result = await self._write(table, rows)
        table.stats.write_seconds += time.perf_counter() - started
        if result.returned and self.on_inserted is not None:
            try:
                self.on_inserted(result.returned)
            except Exception:  # what the rows report is secondary: they are in, the batch goes on
                log.exception("%s: reporting %d inserted rows failed", self.topic, len(result.returned))
        for index, error in result.rejected:
            letters.append(self._dead_letter(origins[index], "database", error, table))
        return result

    async def _decode(self, src: SourceRecord) -> tuple[Optional[Mapping[str, Any]], Optional[str]]:
        """(the decoded value, None), or (None, why these bytes are no record of the topic)."""
        if src.value is None:
            return None, "the record has no value"
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        while True:
            try:
                return self.decode(src.value), None
            except DECODE_ERRORS as exc:
                return None, describe(exc)
            except Exception as exc:  # the registry did not answer: not the record's fault
                await self._wait_after(exc, backoff, "decoding (schema registry)", self.tables)

    async def _write(self, table: SinkTable, rows: list[Row]) -> WriteResult:
        if not rows:
            return WriteResult()
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        while True:
            try:
                conn = await self._connection()
                # persisted_at is stamped per attempt: the stamp of the attempt that committed.
                result = await table.writer.write(conn, rows, self.clock())
            except Exception as exc:  # data errors never get here: the writer bisects them
                await self._drop_connection()
                await self._wait_after(exc, backoff, f"writing {table.spec.table}", (table,))
                continue
            table.stats.waiting = False
            return result

    async def _publish(self, letters: list[DeadLetter]) -> None:
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        while True:
            try:
                await self.publish_dead_letters(letters)
            except Exception as exc:
                await self._wait_after(exc, backoff, "producing dead letters", self.tables)
                continue
            for table in self.tables:
                table.stats.waiting = False
            break
        by_table = {table.spec.table: table.stats for table in self.tables}
        for letter in letters:
            stats = by_table[letter.target_table]
            stats.dead_letters += 1
            stats.dead_letters_by_stage[letter.stage] += 1
            log.warning("dead letter: %s[%d]@%d (%s, %s) %s", letter.source_topic, letter.source_partition,
                        letter.source_offset, letter.target_table, letter.stage, letter.error)

    async def _wait_after(self, exc: BaseException, backoff: Backoff, doing: str,
                          tables: Sequence[SinkTable]) -> None:
        """Pause before the next attempt; ``tables`` are the ones waiting (their counters say so)."""
        delay = backoff.next_delay()
        error, now = f"{doing}: {describe(exc)}", self.clock()
        for table in tables:
            table.stats.retries += 1
            table.stats.waiting = True
            table.stats.last_error = error
            table.stats.last_error_at = now
        log.warning("%s: %s; retrying in %.1f s (attempt %d)", self.topic, error, delay, backoff.attempt)
        await asyncio.sleep(delay)

    def _dead_letter(self, src: SourceRecord, stage: str, error: str,
                     table: Optional[SinkTable] = None) -> DeadLetter:
        """A dead letter of ``src`` for ``table`` (the first table when None)."""
        table = table or self.tables[0]
        return DeadLetter(
            source_topic=src.topic, source_partition=src.partition, source_offset=src.offset,
            stage=stage, error=error, failed_at=self.clock(), key=src.key, value=src.value,
            target_table=table.spec.table,
        )

    # -- the connection ---------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncio.wait_for(self.connect(), self.config.connect_timeout)
        return self._conn

    async def _drop_connection(self) -> None:
        """Forget the connection after an error: its state is unknown, a new one is cheap."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()


#: Longest a single statement may take before the connection is given up and the batch
#: retried (a half-open TCP connection would otherwise hang the sink forever). A flush of
#: a few thousand rows takes tens of milliseconds; a committed-but-unanswered flush is
#: harmless to retry (the natural keys skip it).
COMMAND_TIMEOUT = 60.0
#: Records decoded and turned into rows between two yields to the event loop: about 0.5 ms
#: of work (~30 µs a record), so a batch never holds a tick waiting for longer than that.
RECORDS_PER_SLICE = 16


def for_record(
    record_name: str,
    *,
    database_url: str,
    registry_url: Optional[str],
    publish_dead_letters: Publish,
    config: SinkConfig,
    connect: Optional[Connect] = None,
    on_inserted: Optional[OnInserted] = None,
) -> TopicSink:
    """The sink of one record's topic (into each of the record's tables), with the topic's Avro
    codec and a plain asyncpg connection."""
    from app.pipeline.codec import AvroCodec
    from app.pipeline.sink.tables import tables_of
    from models.registry import record

    r = record(record_name)
    codec = AvroCodec(r.subject, r.schema, registry_url)

    async def connect_default() -> asyncpg.Connection:
        return await asyncpg.connect(database_url, timeout=config.connect_timeout, command_timeout=COMMAND_TIMEOUT)

    return TopicSink(tables_of(record_name), r.topic, codec.loads, connect or connect_default, publish_dead_letters,
                     config, on_inserted=on_inserted)
