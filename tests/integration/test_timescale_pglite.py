"""The TimescaleDB migrations on real TimescaleDB: PGlite with TimescaleDB 2.23 (docs/architecture.md#d7-database).

PGlite is PostgreSQL 17.5 compiled to WebAssembly; the pinned build in tests/integration/pglite
carries TimescaleDB 2.23 and is served on the PostgreSQL wire protocol by
pglite-socket (tests/integration/pglite/server.mjs). Its limits shape these tests: one shared
session (one connection at a time, no statement cache, no SSL), no COPY over the socket
(rows go in through the sink's unnest path), and no background workers, so policies
are run by hand with ``CALL run_job(id)``, which executes the very job the policy
scheduled.

Checked here: every migration applies, the pipeline tables (the analytics' of 0006/0007
too) are hypertables with the chosen chunk intervals, segment-by and policies; the
continuous aggregates return the same OHLCV, percentiles and markout averages as direct
queries over the raw rows, materialized by their policy job and in real time; a
compressed chunk still skips redelivered rows; retention drops old chunks; the orders
trigger works on the hypertable.

Skipped, with the reason, only when PGlite cannot be installed (no node or npm, or the
npm registry unreachable); ``./dev.sh test`` installs it with ``npm ci``.
"""
from __future__ import annotations

import asyncio
import fcntl
import random
import shutil
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import asyncpg
import pytest

from app.pipeline.sink import TABLES, SourceRecord, TableWriter, spec
from app.stack import migrate
from app.stack.process import free_port, spawn, wait_until
from models import examples

from .conftest import ROOT

PGLITE = ROOT / "tests" / "integration" / "pglite"
UTC = timezone.utc
HYPERTABLES = set(TABLES)  # every table the sink writes, book_updates (0009/0010) too
CHUNK_INTERVALS = {"tickers": timedelta(hours=6), "book_tops": timedelta(hours=6), "book_updates": timedelta(hours=6),
                   "public_trades": timedelta(hours=6),
                   "quote_decisions": timedelta(hours=6), "latency_samples": timedelta(hours=6),
                   "index_prices": timedelta(days=1), "order_acks": timedelta(days=1), "fills": timedelta(days=1),
                   "positions": timedelta(days=1), "markouts": timedelta(days=1),
                   "pnl_snapshots": timedelta(days=7), "quote_quality_1m": timedelta(days=7)}
RETAINED = {"tickers", "book_tops", "book_updates", "quote_decisions", "latency_samples", "public_trades", "index_prices"}
CAGGS = {"trade_candles_1m", "ticker_candles_1m", "latency_1m", "markouts_1m"}


def _install() -> str | None:
    """Install the pinned PGlite packages if they are missing; the reason to skip, if that fails.
    One installer at a time: the suite runs in several pytest-xdist workers (dev.sh)."""
    with open(Path(tempfile.gettempdir()) / "cryptics-pglite-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install_unlocked()


def _install_unlocked() -> str | None:
    if (PGLITE / "node_modules" / "@unni-craftsman" / "pglite" / "package.json").exists() and \
            (PGLITE / "node_modules" / "@electric-sql" / "pglite-socket" / "package.json").exists():
        return None if shutil.which("node") else "node is not installed (PGlite runs on Node.js)"
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node/npm are not installed: cannot install PGlite with TimescaleDB (tests/integration/pglite)"
    try:
        result = subprocess.run([npm, "ci", "--prefix", str(PGLITE), "--no-audit", "--no-fund"],
                                capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "npm ci --prefix tests/integration/pglite did not finish in 300 s"
    if result.returncode != 0:
        return f"npm ci --prefix tests/integration/pglite failed: {(result.stderr or result.stdout).strip()[-400:]}"
    return None


async def _connect(dsn: str) -> asyncpg.Connection:
    # PGlite serves one shared session: no prepared-statement cache, no SSL (docs/architecture.md#d7-database).
    # It takes one client at a time and refuses the next until it has seen the previous
    # one's socket close, so a connection right after another's close is retried briefly.
    for attempt in range(50):
        try:
            return await asyncpg.connect(dsn, statement_cache_size=0, ssl=False, timeout=10)
        except (asyncpg.ConnectionDoesNotExistError, ConnectionError):
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


def _close(conn: asyncpg.Connection) -> None:
    # pglite-socket never closes its end after a Terminate message, so asyncpg's graceful
    # close() would wait forever; dropping the socket ends the client side at once.
    conn.terminate()


@pytest.fixture(scope="module")
def pglite(tmp_path_factory) -> Iterator[str]:
    """A migrated PGlite + TimescaleDB on a free port; its DSN."""
    reason = _install()
    if reason is not None:
        pytest.skip(reason)
    port = free_port()
    logs = tmp_path_factory.mktemp("pglite")
    child = spawn("pglite", ["node", str(PGLITE / "server.mjs"), str(port)], log_path=logs / "pglite.log",
                  cwd=PGLITE)
    dsn = f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"

    async def ready() -> bool:
        _close(await _connect(dsn))
        return True

    async def setup() -> migrate.MigrationReport:
        await wait_until(ready, what="pglite", timeout=60, child=child, interval=0.2)
        conn = await _connect(dsn)
        try:
            return await migrate.migrate(dsn, conn=conn)
        finally:
            _close(conn)

    try:
        report = asyncio.run(setup())
        assert report.timescaledb and report.skipped_timescaledb == ()
        assert report.applied == tuple(m.version for m in migrate.discover())
        yield dsn
    finally:
        child.stop()


@pytest.fixture
async def conn(pglite):
    connection = await _connect(pglite)
    yield connection
    _close(connection)


async def _write(conn: asyncpg.Connection, record: str, values: list[dict], persisted_at: datetime) -> None:
    table_spec = spec(record)
    rows = [table_spec.build(v, SourceRecord("t", 0, i, None, None, None)) for i, v in enumerate(values)]
    result = await TableWriter(table_spec, "unnest").write(conn, rows, persisted_at)  # no COPY over the socket
    assert result.rejected == []


async def _job(conn: asyncpg.Connection, proc: str, relation: str) -> int:
    job = await conn.fetchval(
        """SELECT j.job_id FROM timescaledb_information.jobs j
           LEFT JOIN timescaledb_information.continuous_aggregates c
             ON c.materialization_hypertable_name = j.hypertable_name
           WHERE j.proc_name = $1 AND (j.hypertable_name = $2 OR c.view_name = $2)""", proc, relation)
    assert job is not None, f"no {proc} job for {relation}"
    return job


async def test_hypertables_chunk_intervals_segmentby_and_policies(conn):
    hypertables = {r["hypertable_name"]: r for r in await conn.fetch(
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables")}
    assert HYPERTABLES <= set(hypertables)
    assert all(hypertables[t]["compression_enabled"] for t in HYPERTABLES)
    intervals = {r["hypertable_name"]: r["time_interval"] for r in await conn.fetch(
        "SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions WHERE column_name = 'time'")}
    assert {t: intervals[t] for t in HYPERTABLES} == CHUNK_INTERVALS
    segments = {(r["hypertable_name"], r["attname"]) for r in await conn.fetch(
        "SELECT hypertable_name, attname FROM timescaledb_information.compression_settings "
        "WHERE segmentby_column_index IS NOT NULL")}
    assert {t for t, column in segments if column in ("instrument_name", "index_name")} == HYPERTABLES
    jobs = await conn.fetch("SELECT proc_name, hypertable_name FROM timescaledb_information.jobs")
    by_proc: dict[str, set] = {}
    for job in jobs:
        by_proc.setdefault(job["proc_name"], set()).add(job["hypertable_name"])
    assert by_proc["policy_compression"] >= HYPERTABLES
    assert by_proc["policy_retention"] == RETAINED
    caggs = {r["view_name"]: r for r in await conn.fetch(
        "SELECT view_name, materialized_only, materialization_hypertable_name "
        "FROM timescaledb_information.continuous_aggregates")}
    assert set(caggs) == CAGGS and not any(c["materialized_only"] for c in caggs.values())
    # TimescaleDB 2.23's jobs view names a refresh job by the aggregate's view; older
    # releases named its materialization hypertable. Either way each aggregate has one.
    refreshed = by_proc["policy_refresh_continuous_aggregate"]
    assert all({name, c["materialization_hypertable_name"]} & refreshed for name, c in caggs.items())
    views = {r["table_name"] for r in await conn.fetch(
        "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'")}
    assert {"stage_latency", "stage_latency_1m"} <= views


# Direct queries over the raw rows, written as an analyst would, to hold the aggregates against.
DIRECT_TRADES = """
SELECT time_bucket('1 minute', time) AS bucket, instrument_name, first(price, time) AS open, max(price) AS high,
       min(price) AS low, last(price, time) AS close, sum(amount) AS volume, count(*) AS trades
FROM public_trades GROUP BY 1, 2"""
DIRECT_TICKS = """
SELECT time_bucket('1 minute', time) AS bucket, instrument_name, first(mark_price, time) AS open,
       max(mark_price) AS high, min(mark_price) AS low, last(mark_price, time) AS close, count(*) AS ticks
FROM tickers GROUP BY 1, 2"""
DIRECT_LATENCY = """
SELECT time_bucket('1 minute', time) AS bucket, instrument_name, stage, count(*) AS samples,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_us) AS p50_us,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_us) AS p99_us, max(duration_us) AS max_us
FROM latency_samples GROUP BY 1, 2, 3"""
DIRECT_MARKOUTS = """
SELECT time_bucket('1 minute', time) AS bucket, instrument_name, direction, horizon_seconds, count(*) AS markouts,
       count(markout_bps) AS mid_markouts, avg(markout_bps) AS avg_markout_bps, sum(markout) AS sum_markout,
       avg(markout_bps_mark) AS avg_markout_bps_mark, sum(markout_mark) AS sum_markout_mark
FROM markouts GROUP BY 1, 2, 3, 4"""


def _by_key(rows, *key: str) -> dict:
    return {tuple(r[k] for k in key): dict(r) for r in rows}


def _same(got: dict, want: dict, exact: tuple[str, ...], approx: tuple[str, ...] = ()) -> None:
    assert set(got) == set(want)
    for key in want:
        for column in exact:
            assert got[key][column] == want[key][column], (key, column)
        for column in approx:  # sums: the aggregate adds partials in another order
            if want[key][column] is None:  # an average or sum of nulls only (no mid in the bucket)
                assert got[key][column] is None, (key, column)
                continue
            assert got[key][column] == pytest.approx(want[key][column], rel=1e-12), (key, column)


async def test_continuous_aggregates_return_the_ohlcv_of_the_raw_rows(conn):
    rng = random.Random(11)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=50)  # inside the refresh window of the policies (2 h … 1 min)
    trades, tickers, samples, markouts = [], [], [], []
    for i in range(3000):
        at = start + timedelta(milliseconds=997 * i + rng.randrange(0, 500))  # distinct times, ~50 minutes
        instrument = rng.choice(["BTC-PERPETUAL", "ETH-PERPETUAL"])
        trades.append({**examples.example("trade"), "instrument_name": instrument, "timestamp": at.timestamp(),
                       "price": round(rng.uniform(90_000, 110_000), 1), "amount": round(rng.uniform(0.001, 3), 3),
                       "direction": rng.choice(["buy", "sell"]), "received_at": at})
        tickers.append({**examples.example("ticker"), "instrument_name": instrument, "mark_timestamp": at.timestamp(),
                        "received_at": at + timedelta(milliseconds=2), "mark_price": rng.uniform(90_000, 110_000)})
        samples.append({**examples.example("latency"), "instrument_name": instrument,
                        "stage": rng.choice(["received_to_quoted", "quoted_to_order_sent"]),
                        "start_at": at, "end_at": at + timedelta(microseconds=(d := rng.randrange(20, 5000))),
                        "duration_us": d})
        mid = None if i % 5 == 0 else rng.uniform(90_000, 110_000)
        mark = rng.uniform(90_000, 110_000)
        markouts.append({**examples.example("markout"), "trade_id": f"cagg-{i}", "instrument_name": instrument,
                         "time": at.timestamp(), "direction": rng.choice(["buy", "sell"]),
                         "horizon_seconds": rng.choice([1, 5, 30, 60]), "price": 100_000.0, "amount": 0.1,
                         "mid_after": mid, "markout_bps": None if mid is None else (mid - 100_000.0) / 10.0,
                         "markout": None if mid is None else (mid - 100_000.0) * 0.1,
                         "mark_after": mark, "markout_bps_mark": (mark - 100_000.0) / 10.0,
                         "markout_mark": (mark - 100_000.0) * 0.1})
    for record, values in (("trade", trades), ("ticker", tickers), ("latency", samples), ("markout", markouts)):
        await _write(conn, record, values, now)

    # Materialize through the policies' own jobs, as the scheduler would.
    for cagg in CAGGS:
        await conn.execute(f"CALL run_job({await _job(conn, 'policy_refresh_continuous_aggregate', cagg)})")

    _same(_by_key(await conn.fetch("SELECT * FROM trade_candles_1m"), "bucket", "instrument_name"),
          _by_key(await conn.fetch(DIRECT_TRADES), "bucket", "instrument_name"),
          exact=("open", "high", "low", "close", "trades"), approx=("volume",))
    _same(_by_key(await conn.fetch("SELECT * FROM ticker_candles_1m"), "bucket", "instrument_name"),
          _by_key(await conn.fetch(DIRECT_TICKS), "bucket", "instrument_name"),
          exact=("open", "high", "low", "close", "ticks"))
    _same(_by_key(await conn.fetch("SELECT * FROM latency_1m"), "bucket", "instrument_name", "stage"),
          _by_key(await conn.fetch(DIRECT_LATENCY), "bucket", "instrument_name", "stage"),
          exact=("samples", "p50_us", "p99_us", "max_us"))
    _same(_by_key(await conn.fetch("SELECT * FROM markouts_1m"), "bucket", "instrument_name", "direction",
                  "horizon_seconds"),
          _by_key(await conn.fetch(DIRECT_MARKOUTS), "bucket", "instrument_name", "direction", "horizon_seconds"),
          exact=("markouts", "mid_markouts"),
          approx=("avg_markout_bps", "sum_markout", "avg_markout_bps_mark", "sum_markout_mark"))
    # The aggregates really hold materialized buckets (they do not answer from the raw rows alone).
    for cagg in CAGGS:
        schema, table = await conn.fetchrow(
            "SELECT materialization_hypertable_schema, materialization_hypertable_name "
            "FROM timescaledb_information.continuous_aggregates WHERE view_name = $1", cagg)
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}"."{table}"') > 0, cagg

    # Real-time aggregation: rows newer than the last refresh show up without one.
    late = now + timedelta(seconds=5)
    await _write(conn, "trade", [{**examples.example("trade"), "instrument_name": "BTC-PERPETUAL",
                                  "timestamp": late.timestamp(), "price": 123.5, "amount": 2.0, "received_at": late}], now)
    current = await conn.fetchrow("SELECT * FROM trade_candles_1m WHERE bucket = $1 AND instrument_name = $2",
                                  now, "BTC-PERPETUAL")
    assert (current["open"], current["close"], current["trades"]) == (123.5, 123.5, 1)


async def test_compressed_chunks_still_skip_redelivered_rows(conn):
    old = datetime.now(UTC) - timedelta(days=3)
    values = [{**examples.example("ticker"), "instrument_name": "SOL-PERPETUAL",
               "mark_timestamp": (old + timedelta(seconds=i)).timestamp(),
               "received_at": old + timedelta(seconds=i, milliseconds=3), "mark_price": 150.0 + i} for i in range(200)]
    await _write(conn, "ticker", values, old)
    await conn.execute(f"CALL run_job({await _job(conn, 'policy_compression', 'tickers')})")
    compressed = await conn.fetchval(
        """SELECT count(*) FROM timescaledb_information.chunks
           WHERE hypertable_name = 'tickers' AND is_compressed AND range_end < now() - interval '1 day'""")
    assert compressed >= 1
    table_spec = spec("ticker")
    rows = [table_spec.build(v, SourceRecord("t", 0, i, None, None, None)) for i, v in enumerate(values)]
    again = await TableWriter(table_spec, "unnest").write(conn, rows, old)
    assert (again.inserted, again.duplicates) == (0, 200)
    late = {**values[0], "received_at": values[0]["received_at"] + timedelta(seconds=1)}  # a new event, late
    await _write(conn, "ticker", [late], old)
    assert await conn.fetchval("SELECT count(*) FROM tickers WHERE instrument_name = 'SOL-PERPETUAL'") == 201


async def test_retention_drops_old_chunks_and_orders_follow_acks(conn):
    ancient = datetime.now(UTC) - timedelta(days=45)
    await _write(conn, "index", [{**examples.example("index"), "index_name": "OLDUSD",
                                  "timestamp": (ancient - timedelta(days=60)).timestamp(),
                                  "received_at": ancient}], ancient)
    await _write(conn, "ticker", [{**examples.example("ticker"), "instrument_name": "OLD-PERPETUAL",
                                   "mark_timestamp": ancient.timestamp(), "received_at": ancient}], ancient)
    await conn.execute(f"CALL run_job({await _job(conn, 'policy_retention', 'tickers')})")
    await conn.execute(f"CALL run_job({await _job(conn, 'policy_retention', 'index_prices')})")
    assert await conn.fetchval("SELECT count(*) FROM tickers WHERE instrument_name = 'OLD-PERPETUAL'") == 0
    assert await conn.fetchval("SELECT count(*) FROM index_prices WHERE index_name = 'OLDUSD'") == 0

    at = datetime.now(UTC)
    acks = [{**examples.example("ack"), "order_id": "hyper-1", "change_reason": change, "status": status,
             "filled_amount": filled, "remaining_amount": 0.2 - filled, "ack_received_at": at + timedelta(seconds=i)}
            for i, (change, status, filled) in enumerate([("insert", "open", 0.0), ("fill", "partially_filled", 0.05),
                                                          ("cancel", "cancelled_partially_filled", 0.05)])]
    await _write(conn, "ack", list(reversed(acks)), at)
    order = await conn.fetchrow("SELECT * FROM orders WHERE order_id = 'hyper-1'")
    assert (order["status"], order["filled_amount"], order["is_final"]) == ("cancelled_partially_filled", 0.05, True)


async def test_book_updates_compress_and_skip_redeliveries(conn):
    # book_updates (0009/0010): the level arrays through the unnest path, ordered for compression
    # like book_tops, and a redelivery skipped inside a compressed chunk.
    orderby = [r["attname"] for r in await conn.fetch(
        "SELECT attname FROM timescaledb_information.compression_settings "
        "WHERE hypertable_name = 'book_updates' AND orderby_column_index IS NOT NULL ORDER BY orderby_column_index")]
    assert orderby == ["time", "received_at"]
    old = datetime.now(UTC) - timedelta(days=3)
    values = [{**examples.example("book"), "instrument_name": "SOL-PERPETUAL", "snapshot": i == 0,
               "time": (old + timedelta(seconds=i)).timestamp(), "received_at": old + timedelta(seconds=i, milliseconds=2),
               "bid_changes": [{"price": 150.0 - j, "amount": float(i % 3), "outright_amount": 0.0} for j in range(3)],
               "ask_changes": [{"price": 151.0 + i, "amount": 1.5, "outright_amount": 1.5}]} for i in range(100)]
    book_updates = TABLES["book_updates"]
    rows = [book_updates.build(v, SourceRecord("t", 0, i, None, None, None)) for i, v in enumerate(values)]
    first = await TableWriter(book_updates, "unnest").write(conn, rows, old)
    assert (first.inserted, first.rejected) == (100, [])
    await conn.execute(f"CALL run_job({await _job(conn, 'policy_compression', 'book_updates')})")
    assert await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'book_updates' AND is_compressed") >= 1
    again = await TableWriter(book_updates, "unnest").write(conn, rows, old)
    assert (again.inserted, again.duplicates) == (0, 100)
    stored = await conn.fetchrow("SELECT * FROM book_updates WHERE instrument_name = 'SOL-PERPETUAL' ORDER BY time LIMIT 1")
    assert (stored["snapshot"], stored["bid_prices"], stored["bid_amounts"], stored["ask_prices"]) == \
        (True, [150.0, 149.0, 148.0], [0.0, 0.0, 0.0], [151.0])
