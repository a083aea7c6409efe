"""The sink's write path on a real PostgreSQL (the project's migrations applied), no Kafka.

- every persisted record's example becomes a row, once, by COPY and by unnest alike;
- a batch with poison rows is bisected: the poison rows come back with their errors,
  every other row is written;
- the ack table's INSERT returns exactly the rows it newly inserted (not the duplicates,
  not the rows a bisected batch refused), and the ack sink turns them into one
  ack → persisted latency sample each, which the latency sink writes and stage_latency
  counts once per ack;
- the analytics tables refuse what their CHECKs exclude (a NaN markout, a mid-based
  markout without a mid);
- TopicSink: undecodable bytes, rows that cannot be built and rows the table refuses
  become dead letters with their coordinates; connection failures are retried until
  they stop, and nothing is lost or written twice;
- the sink's settings parse and validate.
"""
from __future__ import annotations

import asyncio
import copy
import io
import math
from datetime import datetime, timedelta, timezone

import asyncpg
import fastavro
import pytest

from app.pipeline.codec import WireFormatError
from app.pipeline.sink import SPECS, SinkConfig, SourceRecord, TableWriter, TopicSink, spec
from app.pipeline.sink.tables import ACK_PERSISTED_STAGE, ack_persisted_sample
from app.settings import Settings
from app.stack import migrate
from models import examples
from models.registry import record

UTC = timezone.utc
STAMP = datetime(2025, 5, 18, 14, 34, 15, tzinfo=UTC)


@pytest.fixture
async def conn(database):
    await migrate.migrate(database)
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


def _src(name: str, offset: int = 0, value: bytes | None = b"x", timestamp: float | None = 1747578855.5):
    return SourceRecord(record(name).topic, 0, offset, b"BTC-PERPETUAL", value, timestamp)


def _tickers(n: int) -> list[dict]:
    base = examples.example("ticker")
    out = []
    for i in range(n):
        v = copy.deepcopy(base)
        v["mark_timestamp"] = base["mark_timestamp"] + i * 0.001
        v["received_at"] = base["received_at"] + timedelta(milliseconds=i)
        v["mark_price"] = 100_000.0 + i
        out.append(v)
    return out


async def _count(conn: asyncpg.Connection, table: str) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM {table}")


@pytest.mark.parametrize("mode", ["copy", "unnest"])
async def test_every_record_example_is_written_once(conn, mode):
    for name, table_spec in SPECS.items():
        row = table_spec.build(examples.example(name), _src(name))
        writer = TableWriter(table_spec, mode)
        first = await writer.write(conn, [row, row], STAMP)  # a duplicate inside one batch, too
        assert (first.inserted, first.duplicates, first.rejected) == (1, 1, []), name
        again = await writer.write(conn, [row], STAMP)  # a redelivery
        assert (again.inserted, again.duplicates) == (0, 1), name
        assert await _count(conn, table_spec.table) == 1, name
        stored = await conn.fetchrow(f"SELECT * FROM {table_spec.table}")
        assert stored["persisted_at"] == STAMP
        for column, value in zip(table_spec.columns, row):
            if table_spec.types[table_spec.columns.index(column)] == "jsonb":
                continue  # compared below as JSON
            assert stored[column] == value, f"{name}.{column}"
    ack = await conn.fetchrow("SELECT fills, legs FROM order_acks")
    assert '"trade_id": "0080000000000000169F22D05B785A2B"' in ack["fills"] and ack["legs"] is None
    # the trigger kept the orders table: one order, in the state of its only update
    order = await conn.fetchrow("SELECT * FROM orders")
    assert (order["order_id"], order["status"], order["filled_amount"], order["is_final"]) == \
        ("001F39C500000000", "partially_filled", 0.05, False)


async def test_copy_and_unnest_write_the_same_rows(database, postgres):
    await migrate.migrate(database)
    # a second database for the unnest path, so the two can be compared table by table
    other = database.rsplit("/", 1)[0] + "/" + database.rsplit("/", 1)[1] + "_unnest"
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    await admin.execute(f'CREATE DATABASE "{other.rsplit("/", 1)[1]}"')
    try:
        await migrate.migrate(other)
        a, b = await asyncpg.connect(database), await asyncpg.connect(other)
        try:
            rows = [spec("ticker").build(v, _src("ticker")) for v in _tickers(50)]
            quote = examples.example("quote")
            quote_rows = [spec("quote").build({**quote, "quoted_at": STAMP + timedelta(seconds=i),
                                               "asks": quote["asks"][:i % 3]}, _src("quote"))
                          for i in range(5)]
            for connection, mode in ((a, "copy"), (b, "unnest")):
                await TableWriter(spec("ticker"), mode).write(connection, rows, STAMP)
                await TableWriter(spec("quote"), mode).write(connection, quote_rows, STAMP)
            for table in ("tickers", "quote_decisions"):
                query = f"SELECT * FROM {table} ORDER BY time"
                assert [dict(r) for r in await a.fetch(query)] == [dict(r) for r in await b.fetch(query)]
        finally:
            await a.close()
            await b.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{other.rsplit("/", 1)[1]}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("mode", ["copy", "unnest"])
async def test_poison_rows_are_isolated_and_the_rest_is_written(conn, mode):
    values = _tickers(1000)
    values[17]["mark_price"] = -1.0             # CHECK (domain positive_float8)
    values[500]["index"] = math.nan             # NaN is refused too
    values[999]["best_bid_amount"] = -0.5       # nonnegative_float8
    rows = [spec("ticker").build(v, _src("ticker", i)) for i, v in enumerate(values)]
    result = await TableWriter(spec("ticker"), mode).write(conn, rows, STAMP)
    assert [index for index, _ in result.rejected] == [17, 500, 999]
    assert all("positive_float8" in error or "nonnegative_float8" in error for _, error in result.rejected)
    assert result.inserted == 997 and await _count(conn, "tickers") == 997
    # bisecting costs about 2·log2(n) transactions per bad row, not one per row
    assert result.transactions < 3 * 2 * 10


async def test_a_value_the_client_cannot_encode_is_a_data_error(conn):
    good = spec("trade").build(examples.example("trade"), _src("trade"))
    bad = list(good)
    bad[2] = "four hundred"  # price: not a float
    result = await TableWriter(spec("trade"), "copy").write(conn, [good, tuple(bad)], STAMP)
    assert result.inserted == 1 and [i for i, _ in result.rejected] == [1]
    assert "TypeError" in result.rejected[0][1] or "DataError" in result.rejected[0][1]


def _acks(n: int) -> list[dict]:
    base = examples.example("ack")
    return [{**copy.deepcopy(base), "order_id": f"order-{i}",
             "instrument_name": ("BTC-PERPETUAL", "ETH-PERPETUAL")[i % 2],
             "ack_received_at": STAMP - timedelta(seconds=1, milliseconds=i)} for i in range(n)]


@pytest.mark.parametrize("mode", ["copy", "unnest"])
async def test_the_ack_insert_returns_exactly_the_rows_it_inserted(conn, mode):
    writer = TableWriter(spec("ack"), mode)
    values = _acks(40)
    rows = [spec("ack").build(v, _src("ack", i)) for i, v in enumerate(values)]
    first = await writer.write(conn, rows[:30], STAMP)
    assert first.inserted == 30 and len(first.returned) == 30
    assert {(r["instrument_name"], r["time"], r["persisted_at"]) for r in first.returned} == \
        {(v["instrument_name"], v["ack_received_at"], STAMP) for v in values[:30]}
    # a batch that overlaps the first: only the new rows come back, at their own flush's stamp
    later = STAMP + timedelta(seconds=1)
    second = await writer.write(conn, rows[20:], later)
    assert (second.inserted, second.duplicates) == (10, 10)
    assert sorted(r["time"] for r in second.returned) == sorted(v["ack_received_at"] for v in values[30:])
    assert all(r["persisted_at"] == later for r in second.returned)
    assert (await writer.write(conn, rows, later)).returned == []  # all redelivered
    # a bisected batch: the refused row is not among the returned ones, the others are
    poisoned = _acks(41)[40:] + [{**_acks(42)[41], "price": -1.0}] + _acks(44)[42:]
    third = await writer.write(conn, [spec("ack").build(v, _src("ack", i)) for i, v in enumerate(poisoned)], later)
    assert [i for i, _ in third.rejected] == [1] and third.inserted == 3 == len(third.returned)
    order_of = {v["ack_received_at"]: v["order_id"] for v in poisoned}
    assert sorted(order_of[r["time"]] for r in third.returned) == ["order-40", "order-42", "order-43"]
    # a spec without returning returns nothing
    ticker = await TableWriter(spec("ticker"), mode).write(conn, [spec("ticker").build(_tickers(1)[0], _src("ticker"))],
                                                           STAMP)
    assert ticker.inserted == 1 and ticker.returned == []


async def test_ack_latency_samples_once_per_inserted_ack(conn, database):
    """The ack sink reports each newly inserted row once; the samples made of them go through
    the latency sink, and stage_latency counts every ack once in that stage."""
    reported: list = []
    cfg = SinkConfig(retry_initial=0.01, retry_max=0.05)

    async def connect():
        return await asyncpg.connect(database)
    acks = TopicSink(spec("ack"), record("ack").topic, _decoder("ack"), connect, Letters(), cfg,
                     on_inserted=reported.extend)
    latency = TopicSink(spec("latency"), record("latency").topic, _decoder("latency"), connect, Letters(), cfg)
    values = _acks(25)
    values[3]["instrument_name"] = None  # a combination order's ack: a row, but no sample
    batch = [_src("ack", i, _avro("ack", v)) for i, v in enumerate(values)]
    try:
        await acks.persist(batch[:20] + batch[:5])  # a repeat inside the batch
        await acks.persist(batch)  # a redelivery overlapping it, with 5 new acks
        assert acks.stats.rows_written == 25 and acks.stats.duplicates == 25
        assert len(reported) == 25
        samples = [s for s in map(ack_persisted_sample, reported) if s is not None]
        assert len(samples) == 24
        await latency.persist([_src("latency", i, _avro("latency", s.to_representation()))
                               for i, s in enumerate(samples)])
    finally:
        await acks.close()
        await latency.close()
    stored = {r["time"]: r for r in await conn.fetch("SELECT * FROM order_acks")}
    assert len(stored) == 25
    for sample in samples:
        row = stored[sample.start_at]  # the ack's time
        assert sample.end_at == row["persisted_at"] and sample.instrument_name == row["instrument_name"]
        assert sample.duration_us == (row["persisted_at"] - row["time"]) // timedelta(microseconds=1)
    counted = await conn.fetch("SELECT source, count(*) AS n FROM stage_latency WHERE stage = $1 GROUP BY 1",
                               ACK_PERSISTED_STAGE)
    assert [(r["source"], r["n"]) for r in counted] == [("latency_samples", 24)]


async def test_the_analytics_tables_refuse_what_their_checks_exclude(conn):
    good = examples.example("markout")
    bad = [{**good, "markout_mark": math.nan},                             # finite_float8
           {**good, "mid_after": None},                                    # a mid-based markout without a mid
           {**good, "horizon_seconds": 0}]
    values = [good] + [{**v, "trade_id": f"t{i}"} for i, v in enumerate(bad)]
    result = await TableWriter(spec("markout"), "copy").write(
        conn, [spec("markout").build(v, _src("markout", i)) for i, v in enumerate(values)], STAMP)
    assert result.inserted == 1 and [i for i, _ in result.rejected] == [1, 2, 3]
    assert "finite_float8" in result.rejected[0][1] and "check constraint" in result.rejected[1][1]
    snapshot = {**examples.example("pnl_snapshot"), "volume": -1.0}
    refused = await TableWriter(spec("pnl_snapshot"), "copy").write(
        conn, [spec("pnl_snapshot").build(snapshot, _src("pnl_snapshot"))], STAMP)
    assert refused.inserted == 0 and "nonnegative_float8" in refused.rejected[0][1]


# -- TopicSink -------------------------------------------------------------------------------------


def _avro(name: str, value: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(record(name).schema), value)
    return out.getvalue()


def _decoder(name: str):
    parsed = fastavro.parse_schema(record(name).schema)

    def decode(data: bytes) -> dict:
        if data.startswith(b"garbage"):
            raise WireFormatError("not Confluent-framed Avro")
        return fastavro.schemaless_reader(io.BytesIO(data), parsed, parsed)
    return decode


class Letters:
    """A dead-letter publisher that keeps what it got (and can fail a few times first)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.got: list = []

    async def __call__(self, letters) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unavailable")
        self.got.extend(letters)


def _sink(database: str, letters: Letters, connect=None, **config) -> TopicSink:
    cfg = SinkConfig(retry_initial=0.01, retry_max=0.05, **config)

    async def connect_default():
        return await asyncpg.connect(database)
    return TopicSink(spec("ticker"), record("ticker").topic, _decoder("ticker"), connect or connect_default,
                     letters, cfg)


async def test_topic_sink_dead_letters_each_kind_of_bad_record(conn, database):
    values = _tickers(20)
    records = [_src("ticker", i, _avro("ticker", v)) for i, v in enumerate(values)]
    values[3]["mark_price"] = 0.0
    records[3] = _src("ticker", 3, _avro("ticker", values[3]))             # the table refuses it
    values[5]["mark_timestamp"] = math.inf
    records[5] = _src("ticker", 5, _avro("ticker", values[5]))             # no row can be built
    records[7] = _src("ticker", 7, b"garbage bytes")                        # does not decode
    records[9] = _src("ticker", 9, None)                                    # no value at all
    letters = Letters(failures=2)  # and the broker refuses the dead letters twice first
    sink = _sink(database, letters)
    try:
        await sink.persist(records)
    finally:
        await sink.close()
    assert await _count(conn, "tickers") == 16
    by_offset = {letter.source_offset: letter for letter in letters.got}
    assert {o: by_offset[o].stage for o in by_offset} == {3: "database", 5: "row", 7: "decode", 9: "decode"}
    assert by_offset[3].value == records[3].value and by_offset[7].value == b"garbage bytes"
    assert all(letter.source_topic == "cryptics.thalex.ticker.avro" and letter.key == b"BTC-PERPETUAL"
               and letter.target_table == "tickers" for letter in letters.got)
    assert "positive_float8" in by_offset[3].error and "WireFormatError" in by_offset[7].error
    stats = sink.stats.as_dict()
    assert stats["rows_written"] == 16 and stats["dead_letters"] == 4 and stats["retries"] == 2
    assert stats["dead_letters_by_stage"] == {"database": 1, "row": 1, "decode": 2}


async def test_topic_sink_waits_out_a_database_that_is_away(conn, database):
    attempts = 0

    async def flaky_connect():
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise ConnectionRefusedError("the database is restarting")
        return await asyncpg.connect(database)

    sink = _sink(database, Letters(), connect=flaky_connect)
    values = _tickers(300)
    try:
        await sink.persist([_src("ticker", i, _avro("ticker", v)) for i, v in enumerate(values[:100])])
        # the connection dies between two batches: the next batch reconnects and is written
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        for _ in range(500):  # until asyncpg has seen the server end it (a dead connection is
            if sink._conn.is_closed():  # replaced without a failed attempt, so no retry)
                break
            await asyncio.sleep(0.01)
        await sink.persist([_src("ticker", i, _avro("ticker", v)) for i, v in enumerate(values[100:], 100)])
        # and a batch delivered again is skipped row by row
        await sink.persist([_src("ticker", i, _avro("ticker", v)) for i, v in enumerate(values[:150])])
    finally:
        await sink.close()
    assert await _count(conn, "tickers") == 300
    # the three refused connects; the terminated connection was replaced without a retry
    assert sink.stats.retries == 3 and sink.stats.rows_written == 300 and sink.stats.duplicates == 150
    assert sink.stats.dead_letters == 0 and not sink.stats.waiting


async def test_topic_sink_retries_a_missing_table_instead_of_dropping(conn, database):
    await conn.execute("ALTER TABLE tickers RENAME TO tickers_away")
    sink = _sink(database, Letters())
    task = asyncio.create_task(sink.persist([_src("ticker", 0, _avro("ticker", _tickers(1)[0]))]))
    try:
        while sink.stats.retries < 2:
            await asyncio.sleep(0.01)
        assert not task.done() and sink.stats.waiting and "UndefinedTable" in sink.stats.last_error
        await conn.execute("ALTER TABLE tickers_away RENAME TO tickers")
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await sink.close()
    assert await _count(conn, "tickers") == 1 and sink.stats.dead_letters == 0


# -- settings ------------------------------------------------------------------------------------


def test_sink_config_from_env():
    def from_env(environ):
        return Settings.from_env(environ).sink

    assert from_env({}) == SinkConfig()
    config = from_env({"CRYPTICS_SINK_BATCH_SIZE": "250", "CRYPTICS_SINK_BATCH_AGE": "0.05",
                                  "CRYPTICS_SINK_WRITE_MODE": "unnest"})
    assert (config.batch_size, config.batch_age, config.write_mode) == (250, 0.05, "unnest")
    with pytest.raises(ValueError, match="CRYPTICS_SINK_BATCH_SIZE"):
        from_env({"CRYPTICS_SINK_BATCH_SIZE": "0"})
    with pytest.raises(ValueError, match="CRYPTICS_SINK_WRITE_MODE"):
        from_env({"CRYPTICS_SINK_WRITE_MODE": "csv"})
    with pytest.raises(ValueError, match="CRYPTICS_SINK_BATCH_AGE"):
        from_env({"CRYPTICS_SINK_BATCH_AGE": "soon"})
