"""The persistence agents end to end, with exact row accounting
(docs/architecture.md#d8-persistence-semantics).

Real parts throughout: Tansu, the schema registry, PostgreSQL and `cryptics worker` (or
`cryptics up`) as child processes, Avro in the Confluent wire format.

- ``test_up_persists_every_topic_record_once``: `cryptics up` (embedded stack, simulated
  venue with its market running, the quote agent quoting) plus records of the trading
  topics (quotes, acks, fills, positions, latency samples, and the analytics' markouts,
  PnL snapshots and quote quality) produced by the test, so that
  each has traffic however the market went. After the run,
  every table holds exactly the natural keys of the records on its topic, read back
  from Kafka independently of the worker.
- ``test_postgres_stopped_for_20_s_mid_stream``: records flow while the sink's database
  is down for 20 s; the agents wait and retry, and afterwards every produced record is
  one row.
- ``test_worker_killed_mid_batch_and_restarted``: kill -9 while batches are being
  written; a new worker resumes from the committed offsets, re-writes what was not
  acknowledged, and the tables end up with every record exactly once.
- The sink's own ack → persisted latency samples (agents/persistence.py) are checked in
  all three: each belongs to one order_acks row, ends at that row's persisted_at (so a
  redelivered ack measured again would match no row), and there is one per ack row the
  worker counted as newly inserted.
- The book topic feeds two tables, book_tops and book_updates (one consume, one write per
  table): the accounting is per table throughout, each book record one row in each.
- Poison records ride along in the last two: schema-valid values that break a table
  constraint, and bytes that are no Avro at all. Each lands on the dead-letter topic
  with its topic, partition, offset and error, once per table it could not enter (a book
  whose level change only book_updates refuses is a book_tops row and a book_updates dead
  letter); every other row is written. After the outage, the constraints are relaxed and
  `cryptics deadletter replay` puts the refused records back: exactly those rows appear.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from app.pipeline.codec import AvroCodec
from app.pipeline.sink import SPECS, TABLES, SourceRecord, tables_of
from app.pipeline.audit import table_keys, topic_keys
from app.pipeline.sink.tables import ACK_PERSISTED_STAGE
from app.pipeline.topics import PIPELINE_TOPICS, bootstrap_servers, ensure_topics, read_until_quiet
from app.stack import migrate
from app.stack.postgres import EmbeddedPostgres
from app.stack.process import Child, environ_for_child, free_port, spawn
from models import examples
from models.registry import record

from .conftest import ROOT, cryptics, database_url_of

UTC = timezone.utc
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL", "SOL-PERPETUAL")
#: Records of the trading topics that the tests produce themselves.
TRADING_RECORDS = ("quote", "ack", "fill", "position", "latency", "markout", "pnl_snapshot", "quote_quality")
DEAD_LETTERS = record("dead_letter").topic
ACKS, LATENCY = record("ack").topic, record("latency").topic


# -- records with distinct natural keys ------------------------------------------------------


def make_value(name: str, i: int, at: datetime) -> dict:
    """The ``i``-th event of record ``name``: the record's example with its natural key made unique."""
    v = examples.example(name)
    instrument = INSTRUMENTS[i % len(INSTRUMENTS)]
    t = at + timedelta(milliseconds=i)
    seconds = t.timestamp()
    if "instrument_name" in v:
        v["instrument_name"] = instrument
    if name == "ticker":
        v.update(mark_timestamp=seconds, received_at=t + timedelta(microseconds=2900))
    elif name == "book":
        v.update(time=seconds, received_at=t + timedelta(microseconds=2100))
    elif name == "index":
        v.update(index_name=instrument.split("-")[0] + "USD", timestamp=seconds, received_at=t)
    elif name == "trade":
        v.update(timestamp=seconds, received_at=t + timedelta(microseconds=1500))
    elif name == "quote":
        v.update(quoted_at=t, received_at=t - timedelta(microseconds=90))
    elif name == "ack":
        v.update(order_id=f"test-order-{i}", ack_received_at=t)
    elif name == "fill":
        v.update(trade_id=f"test-trade-{i}", order_id=f"test-order-{i}", ack_received_at=t)
    elif name == "position":
        v.update(received_at=t)
    elif name == "latency":
        v.update(start_at=t - timedelta(microseconds=100 + i % 50), end_at=t, duration_us=100 + i % 50)
    elif name == "markout":
        v.update(trade_id=f"test-trade-{i}", order_id=f"test-order-{i}", time=seconds)
    elif name in ("pnl_snapshot", "quote_quality"):
        v.update(time=t)
    return v


#: The tables that refuse each record's poison_value (the book's others take it).
REFUSING = {"ticker": ("tickers",), "trade": ("public_trades",), "book": ("book_updates",)}


def poison_value(name: str, i: int, at: datetime) -> dict:
    """Schema-valid, but a table refuses it (REFUSING): a negative price breaks positive_float8,
    a negative level price book_updates' CHECK (book_tops keeps the top, which is fine)."""
    v = make_value(name, i, at)
    if name == "ticker":
        v["mark_price"] = -1.0
    elif name == "trade":
        v["amount"] = -0.5  # nonnegative_float8
    elif name == "book":
        v["bid_changes"] = [{"price": -1.0, "amount": 0.5, "outright_amount": 0.5}]
    else:
        raise ValueError(name)
    return v


def natural_keys(name: str, value: dict) -> dict[str, tuple]:
    """The value's natural key in each table of record ``name``, by table."""
    src = SourceRecord("t", 0, 0, None, None, time.time())
    return {s.table: s.key_of(s.build(value, src)) for s in tables_of(name)}


@dataclass
class Sent:
    """What the test producer put on the topics, with the coordinates Kafka gave each record."""

    #: By table: the natural keys the table must hold.
    keys: dict[str, set] = field(default_factory=lambda: {table: set() for table in TABLES})
    #: (topic, partition, offset, table) → the reason the record must become a dead letter for that table.
    poison: dict[tuple[str, int, int, str], str] = field(default_factory=dict)


class RecordProducer:
    def __init__(self, bootstrap: str, registry_url: str) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.codecs = {name: AvroCodec(record(name).subject, record(name).schema, registry_url) for name in SPECS}
        self.sent = Sent()
        self.pending: list[asyncio.Future] = []
        #: The schema-valid poison, by record (one each): what a replay after the fix writes.
        self.refused: dict[str, dict] = {}

    async def start(self) -> None:
        await self.producer.start()
        # Registers every schema (blocking HTTP, so off the loop); encoding is local after that.
        for name, codec in self.codecs.items():
            await asyncio.get_running_loop().run_in_executor(None, codec.dumps, examples.example(name))

    async def stop(self) -> None:
        await self.flush()
        await self.producer.stop()

    async def flush(self) -> None:
        """Wait until the broker has every record sent so far."""
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)

    async def _send(self, name: str, key: str, payload: bytes):
        return await self.producer.send(record(name).topic, key=key.encode(), value=payload)

    async def send(self, name: str, value: dict) -> None:
        key = value.get("instrument_name") or value.get("index_name")
        self.pending.append(await self._send(name, key, self.codecs[name].dumps(value)))
        for table, key in natural_keys(name, value).items():
            self.sent.keys[table].add(key)
        if len(self.pending) >= 1000:
            await self.flush()

    async def send_poison(self, name: str, value: Optional[dict], reason: str) -> None:
        """A record that must end on the dead-letter topic: a refused value, or (None) bytes that are no Avro."""
        payload = b"\x00\x00\x00\x00\x01 no avro here" if value is None else self.codecs[name].dumps(value)
        refusing = tuple(s.table for s in tables_of(name)) if value is None or reason != "database" else REFUSING[name]
        if value is not None:
            self.refused[name] = value
            for table, key in natural_keys(name, value).items():
                if table not in refusing:  # the tables that take it hold it
                    self.sent.keys[table].add(key)
        meta = await (await self._send(name, INSTRUMENTS[0], payload))
        for table in refusing:
            self.sent.poison[(meta.topic, meta.partition, meta.offset, table)] = reason

    async def stream(self, names: tuple[str, ...], rate: float, seconds: float, at: datetime,
                     start: int = 0) -> int:
        """``rate`` events per second spread over ``names``, for ``seconds``; returns the next index."""
        i, deadline = start, time.monotonic() + seconds
        while time.monotonic() < deadline:
            tick = time.monotonic()
            for name in names:
                await self.send(name, make_value(name, i, at))
            i += 1
            await asyncio.sleep(max(0.0, len(names) / rate - (time.monotonic() - tick)))
        await self.flush()
        return i


# -- reading back ----------------------------------------------------------------------------


async def row_count(dsn: str) -> int:
    """Rows in the pipeline tables, but for the sink's own ack latency samples (``ack_samples``)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        total = sum([await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES])
        return total - await conn.fetchval("SELECT count(*) FROM latency_samples WHERE stage = $1",
                                           ACK_PERSISTED_STAGE)
    finally:
        await conn.close()


async def ack_samples(dsn: str) -> tuple[set, set]:
    """(the natural keys of the ack → persisted samples in latency_samples, the keys the
    order_acks rows call for: one per row, from its time to its persisted_at)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        got = {tuple(r) for r in await conn.fetch(
            "SELECT instrument_name, stage, time, start_at FROM latency_samples WHERE stage = $1",
            ACK_PERSISTED_STAGE)}
        wanted = {tuple(r) for r in await conn.fetch(
            "SELECT instrument_name, $1::text, persisted_at, time FROM order_acks WHERE instrument_name IS NOT NULL",
            ACK_PERSISTED_STAGE)}
        return got, wanted
    finally:
        await conn.close()


async def check_ack_samples(dsn: str, at_least: int) -> set:
    """Every ack sample belongs to one ack row, at that row's persisted_at, and there are at
    least ``at_least`` of them (the rows the worker saw committed; a row whose COMMIT went
    unanswered, or whose worker died before producing, is unmeasured: at most once). Their keys."""
    got, wanted = await ack_samples(dsn)
    assert got <= wanted, f"{len(got - wanted)} ack samples match no ack row (measured twice, or wrong)"
    assert at_least <= len(got) <= len(wanted), (at_least, len(got), len(wanted))
    return got


def topic_stats(view: dict, topic: str) -> dict:
    return view["topics"][topic]


def sink_view(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sink/", timeout=2) as response:
        return json.loads(response.read())


def summed_sink_views(urls: list[str]) -> dict:
    """The sink views of several workers (sharing the sink's consumer group), added up."""
    views = []
    for url in urls:
        with urllib.request.urlopen(f"{url}/sink/", timeout=2) as response:
            views.append(json.loads(response.read()))
    totals = {key: sum(v["totals"][key] for v in views) for key in views[0]["totals"]}
    topics: dict = {}
    for v in views:
        for topic, stats in v["topics"].items():
            into = topics.setdefault(topic, {k: 0 for k, x in stats.items() if isinstance(x, (int, float))
                                             and not isinstance(x, bool)})
            for k in into:
                into[k] += stats[k]
    return {"totals": totals, "topics": topics}


async def poll(predicate: Callable[[], Any], what: str, timeout: float, child: Optional[Child] = None,
               interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if child is not None:
            assert child.alive(), f"{child.name} died:\n{child.log_tail(80)}"
        try:
            last = predicate()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
        except (OSError, asyncpg.PostgresError) as exc:
            last = exc
        await asyncio.sleep(interval)
    tail = child.log_tail(80) if child is not None else ""
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{tail}")


async def check_dead_letters(bootstrap: str, registry_url: str, sent: Sent) -> list[dict]:
    """The dead-letter topic holds exactly the poison records, each with its coordinates, once
    per table that could not take it."""
    codec = AvroCodec(record("dead_letter").subject, record("dead_letter").schema, registry_url)
    letters = [codec.loads(m.value) for m in await read_until_quiet(bootstrap, DEAD_LETTERS)]
    by_origin = {(d["source_topic"], d["source_partition"], d["source_offset"], d["target_table"]): d
                 for d in letters}
    # Exactly the poison, once each per table: a batch written again after a fault can
    # dead-letter a record a second time, which is why the coordinates identify it.
    assert set(by_origin) == set(sent.poison)
    for origin, reason in sent.poison.items():
        letter = by_origin[origin]
        assert letter["stage"] == reason, (origin, letter)
        assert letter["value"] and letter["error"]
        if reason == "database":
            assert any(check in letter["error"] for check in
                       ("positive_float8", "nonnegative_float8", "book_updates_levels_check")), letter["error"]
    return letters


# -- a worker on its own services --------------------------------------------------------------


class Pipeline:
    """A `cryptics worker` whose sinks write to a PostgreSQL of their own (which the test may stop)."""

    def __init__(self, broker, registry_url: str, sink_pg: EmbeddedPostgres, tmp_path: Path, **env: str) -> None:
        self.broker, self.pg, self.tmp = broker, sink_pg, tmp_path
        self.web_port = free_port()
        self.env = {
            "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
            "CRYPTICS_DATABASE_URL": sink_pg.dsn(), "CRYPTICS_WEB_PORT": str(self.web_port),
            "CRYPTICS_STATE_DIR": str(tmp_path / "state"), "CRYPTICS_HEARTBEAT_INTERVAL": "0",
            "CRYPTICS_SINK_BATCH_AGE": "0.2", "CRYPTICS_SINK_RETRY_MAX": "1.0",
            # The rows are counted exactly: no markouts or snapshots but the test's own (the
            # analytics agents would publish theirs from the test's fills and tickers).
            "CRYPTICS_ANALYTICS_ENABLED": "false", **env,
        }
        self.workers = 0
        self.worker: Optional[Child] = None

    async def start_worker(self) -> Child:
        self.workers += 1
        self.worker = spawn("worker", cryptics("worker"), log_path=self.tmp / f"worker-{self.workers}.log",
                            env=environ_for_child(self.env), cwd=ROOT)
        await poll(lambda: sink_view(self.web_port)["enabled"], "the worker's sink view", 60, self.worker)
        return self.worker

    def view(self) -> dict:
        return sink_view(self.web_port)


@pytest.fixture
def sink_postgres(service_root: Path) -> EmbeddedPostgres:
    """A PostgreSQL for the sinks alone, migrated; a test may stop and start it."""
    folder = service_root / f"sink-{os.getpid()}-{time.monotonic_ns()}"
    pg = EmbeddedPostgres(folder / "pgdata", folder / "logs")
    asyncio.run(pg.start())
    asyncio.run(migrate.migrate(pg.dsn()))
    yield pg
    pg.stop()


async def assert_tables_hold(dsn: str, expected: dict[str, set]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        got = await table_keys(conn)
    finally:
        await conn.close()
    for table in TABLES:
        missing, extra = expected[table] - got[table], got[table] - expected[table]
        assert not missing and not extra, f"{table}: {len(missing)} missing, {len(extra)} extra"


# -- the tests ---------------------------------------------------------------------------------


async def test_postgres_stopped_for_20_s_mid_stream(broker, registry_url, sink_postgres, tmp_path):
    pipeline = Pipeline(broker, registry_url, sink_postgres, tmp_path)
    worker = await pipeline.start_worker()  # creates the topics
    producer = RecordProducer(broker.bootstrap, registry_url)
    await producer.start()
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    names = tuple(SPECS)
    try:
        i = await producer.stream(names, rate=300, seconds=3, at=at)
        await producer.send_poison("ticker", poison_value("ticker", 10**6, at), "database")
        await poll(lambda: row_count(sink_postgres.dsn()), "the first rows", 60, worker)

        sink_postgres.stop()
        outage = asyncio.create_task(producer.stream(names, rate=300, seconds=20, at=at, start=i))
        waiting = await poll(lambda: [t for t, s in pipeline.view()["topics"].items() if s["waiting"]],
                             "the sinks to notice the outage", 15, worker)
        await producer.send_poison("trade", poison_value("trade", 10**6 + 1, at), "database")
        await producer.send_poison("book", None, "decode")
        await producer.send_poison("book", poison_value("book", 10**6 + 2, at), "database")
        i = await outage
        during = pipeline.view()
        await sink_postgres.start()
        i = await producer.stream(names, rate=300, seconds=3, at=at, start=i)

        expected = producer.sent.keys
        total = sum(len(k) for k in expected.values())
        await poll(lambda: _rows_equal(sink_postgres, total), "every record to be written", 90, worker)
        # The rows can be visible before the worker has read its COMMIT's answer and counted
        # them, so the view is read until its counters account for every row too, the ack
        # latency samples included (one per ack row the worker counted as inserted).
        final = await poll(lambda: _view_accounts_for(pipeline.view(), total, with_ack_samples=True),
                           "the sink's counters", 60, worker)
        measured = topic_stats(final, ACKS)["rows_written"]
        samples = await check_ack_samples(sink_postgres.dsn(), at_least=measured)
        assert len(samples) == measured
        expected["latency_samples"] |= samples
        await assert_tables_hold(sink_postgres.dsn(), producer.sent.keys)
        await check_dead_letters(broker.bootstrap, registry_url, producer.sent)

        # The fix (here: the price domains were too strict), then the replay of what the
        # database refused: those rows get in, and nothing else changes.
        conn = await asyncpg.connect(sink_postgres.dsn())
        try:
            await conn.execute("ALTER DOMAIN positive_float8 DROP CONSTRAINT positive_float8_check")
            await conn.execute("ALTER DOMAIN nonnegative_float8 DROP CONSTRAINT nonnegative_float8_check")
            await conn.execute("ALTER TABLE book_updates DROP CONSTRAINT book_updates_levels_check")
        finally:
            await conn.close()
        replay = subprocess.run(
            cryptics("deadletter", "replay", "--all", "--stage", "database"), cwd=ROOT, capture_output=True,
            text=True, timeout=120, env=environ_for_child({"CRYPTICS_BROKER_URL": broker.url,
                                                           "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url}))
        assert replay.returncode == 0, replay.stderr
        refused = {(table, key) for name, value in producer.refused.items()
                   for table, key in natural_keys(name, value).items() if table in REFUSING[name]}
        await poll(lambda: _rows_equal(sink_postgres, total + len(refused)), "the replayed rows", 60, worker)
        await asyncio.sleep(1.0)  # a stray extra row would show up below
        for table, key in refused:
            expected[table].add(key)
        await assert_tables_hold(sink_postgres.dsn(), expected)
    finally:
        await producer.stop()
        worker.stop(timeout=30)
    assert worker.popen.returncode == 0, worker.log_tail(60)

    # the sinks noticed the outage and retried rather than dropping or failing
    assert waiting and all(during["topics"][t]["retries"] >= 1 for t in waiting)
    assert any("connect" in (during["topics"][t]["last_error"] or "").lower() or
               "connection" in (during["topics"][t]["last_error"] or "").lower() for t in waiting), during
    assert final["totals"]["retries"] >= len(waiting)
    # A COMMIT that the stopping server carried out but never answered is retried, and the
    # retry finds its rows already there: they count as duplicates, not as rows written.
    assert final["totals"]["dead_letters"] >= 5  # the book's undecodable bytes: one per table
    assert final["totals"]["rows_written"] + final["totals"]["duplicates"] == total + measured
    assert not any(s["waiting"] for s in final["topics"].values())


async def _rows_equal(pg: EmbeddedPostgres, total: int) -> bool:
    return await row_count(pg.dsn()) == total


async def test_worker_killed_mid_batch_and_restarted(broker, registry_url, sink_postgres, tmp_path):
    # Small batches, so that many are in flight and the kill lands inside one.
    pipeline = Pipeline(broker, registry_url, sink_postgres, tmp_path, CRYPTICS_SINK_BATCH_SIZE="200")
    # The topics first, as `cryptics up` and the worker create them
    # (docs/architecture.md#d3-kafka-topics): a producer writing to a missing topic would
    # have Tansu create it with 4 partitions.
    await ensure_topics(broker.url, PIPELINE_TOPICS, 3)
    producer = RecordProducer(broker.bootstrap, registry_url)
    await producer.start()
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    names = ("ticker", "book", "trade", "quote", "ack")
    per_record = 3000
    try:
        # Preloaded, so that the worker has a backlog to chew through when it is killed.
        for n in range(per_record):
            for name in names:
                await producer.send(name, make_value(name, n, at))
            if n == per_record // 2:
                await producer.send_poison("ticker", poison_value("ticker", 10**6, at), "database")
                await producer.send_poison("quote", None, "decode")
    finally:
        await producer.stop()
    total = sum(len(k) for k in producer.sent.keys.values())
    assert total == per_record * sum(len(tables_of(name)) for name in names)

    first = await pipeline.start_worker()
    written = await poll(lambda: _rows_between(sink_postgres, total // 10, total * 6 // 10),
                         "a part of the backlog to be written", 90, first, interval=0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.popen.wait(timeout=10)
    assert first.popen.returncode == -signal.SIGKILL
    after_kill = await row_count(sink_postgres.dsn())
    assert after_kill < total, "the kill came too late to test anything"

    second = await pipeline.start_worker()
    try:
        await poll(lambda: _rows_equal(sink_postgres, total), "the second worker to finish the backlog", 120, second)
        # the samples of the acks the second worker inserted come through the latency topic
        await poll(lambda: _ack_samples_at_least(sink_postgres, topic_stats(pipeline.view(), ACKS)["rows_written"]),
                   "the second worker's ack latency samples", 60, second)
        await asyncio.sleep(1.0)  # anything still arriving would show up as an extra row below
        view = pipeline.view()
    finally:
        second.stop(timeout=30)
    assert second.popen.returncode == 0, second.log_tail(60)

    # The first worker's samples are at most once (it may have died between a commit and
    # their produce), the second's are all there; none is a redelivered ack measured again.
    samples = await check_ack_samples(sink_postgres.dsn(), at_least=topic_stats(view, ACKS)["rows_written"])
    producer.sent.keys["latency_samples"] |= samples
    await assert_tables_hold(sink_postgres.dsn(), producer.sent.keys)
    await check_dead_letters(broker.bootstrap, registry_url, producer.sent)
    # The second worker resumed at the first offset the first had not committed: it wrote
    # exactly the missing rows, and whatever it re-read that was already there (rows the
    # first wrote but did not get to commit to Kafka) the natural keys skipped. The latency
    # topic carries only the sink's own samples here, counted above.
    totals = {key: sum(s[key] for topic, s in view["topics"].items() if topic != LATENCY)
              for key in ("rows_written", "duplicates", "records", "dead_letters")}
    assert totals["rows_written"] == total - after_kill
    assert totals["duplicates"] == totals["records"] - totals["rows_written"] - totals["dead_letters"]
    assert written >= total // 10


def _view_accounts_for(view: dict, rows: int, with_ack_samples: bool = False) -> Optional[dict]:
    """The view, once its rows written and duplicates add up to ``rows`` (plus, with
    ``with_ack_samples``, one latency sample per ack row written)."""
    totals = view["totals"]
    samples = topic_stats(view, ACKS)["rows_written"] if with_ack_samples else 0
    return view if totals["rows_written"] + totals["duplicates"] == rows + samples else None


async def _ack_samples_at_least(pg: EmbeddedPostgres, n: int) -> bool:
    got, _ = await ack_samples(pg.dsn())
    return len(got) >= n


async def _rows_between(pg: EmbeddedPostgres, low: int, high: int) -> Optional[int]:
    n = await row_count(pg.dsn())
    if n > high:
        raise AssertionError(f"the worker wrote {n} rows before the kill could land; raise the backlog")
    return n if n >= low else None


# -- end to end on `cryptics up` ---------------------------------------------------------------


class Quiet:
    """A poll predicate: true once ``read()`` gives the same value twice in a row."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read, self.last = read, object()

    def __call__(self) -> bool:
        value = self.read()
        same, self.last = value == self.last, value
        return same


async def test_up_persists_every_topic_record_once(service_root, tmp_path):
    state = service_root / f"up-{time.monotonic_ns()}"
    web_port = free_port()
    env = environ_for_child({"CRYPTICS_STATE_DIR": str(state), "CRYPTICS_WEB_PORT": str(web_port),
                             "CRYPTICS_SINK_BATCH_AGE": "0.2",
                             # a busier market than the default, so that a short run has plenty of rows
                             "CRYPTICS_VENUE_NOISE_RATE": "8", "CRYPTICS_VENUE_INFORMED_RATE": "2"})
    up = spawn("up", cryptics("up"), log_path=tmp_path / "up.log", env=env, cwd=ROOT)
    try:
        info = await poll(lambda: json.loads((state / "up.json").read_text()) if (state / "up.json").exists()
                          else None, "cryptics up to be healthy", 120, up)
        urls = info["urls"]
        bootstrap = bootstrap_servers(urls["broker"])
        producer = RecordProducer(bootstrap, urls["registry"])
        await producer.start()
        try:
            at = datetime.now(UTC) - timedelta(minutes=1)
            await producer.stream(TRADING_RECORDS, rate=250, seconds=15, at=at)
        finally:
            await producer.stop()

        # Freeze the venue, so that nothing new arrives while the counts are compared.
        venue_pid = info["children"]["venue"]
        os.kill(venue_pid, signal.SIGSTOP)
        try:
            # Both workers of `cryptics up` persist: the quoting worker and the analytics worker.
            workers = [urls["web"], urls["analytics"]]
            await poll(Quiet(lambda: summed_sink_views(workers)["totals"]["records"]), "the sinks to go quiet", 60, up,
                       interval=2.0)
            counts = {name: await topic_keys(bootstrap, urls["registry"], name) for name in SPECS}
            expected = {table: keys for read in counts.values() for table, keys in read.keys.items()}
            await assert_tables_hold(database_url_of(urls), expected)
            view = summed_sink_views(workers)
            # No fault in this run: every ack row the worker inserted was measured, once.
            samples = await check_ack_samples(database_url_of(urls), at_least=topic_stats(view, ACKS)["rows_written"])
        finally:
            os.kill(venue_pid, signal.SIGCONT)
    finally:
        up.stop(timeout=60)
    assert up.popen.returncode == 0, up.log_tail(60)

    # Real traffic on every topic: the venue's market data and the test's trading records.
    for name, read in counts.items():
        records = read.records
        for table, keys in read.keys.items():
            assert len(keys) >= 10, (table, records)
            if name != "trade":
                # one record, one event: nothing on these topics repeats a natural key (the
                # book's records are one row in book_tops and one in book_updates)
                assert records == len(keys), (table, records, len(keys))
    # The test's records are all there, next to the quote agent's own (it quotes out of the box).
    assert all(producer.sent.keys[s.table] <= expected[s.table] for name in TRADING_RECORDS for s in tables_of(name))
    assert samples and samples <= expected["latency_samples"]  # on the latency topic, like every sample
    assert view["totals"]["dead_letters"] == 0 and view["totals"]["retries"] == 0, view["totals"]
    # The sink counts each record once per table it feeds.
    assert view["totals"]["records"] == sum(read.records * len(tables_of(name)) for name, read in counts.items())
