"""The pipeline tables of timescale/ on plain PostgreSQL (the embedded server).

- every table the sink writes exists, its primary key is the spec's natural key and
  includes the time column (docs/architecture.md#d7-database), and so does every unique index;
- the query names dashboards use exist on plain PostgreSQL too (views);
- the orders table, kept by a trigger, ends in the same state whatever the order in
  which the acks arrive, redeliveries included;
- stage latencies are derived from the D9 stamps, except ack → persisted, which comes
  from the latency samples the sink measures (so each ack counts once);
- the candle and markout views agree with a direct computation over the raw rows.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from app.pipeline.sink import SPECS, SourceRecord, TableWriter, spec
from app.pipeline.sink.tables import ack_persisted_sample
from app.stack import migrate
from models import examples

UTC = timezone.utc
T0 = datetime(2025, 5, 18, 14, 0, tzinfo=UTC)
QUERY_NAMES = {"trade_candles_1m", "ticker_candles_1m", "latency_1m", "markouts_1m", "stage_latency",
               "stage_latency_1m"}


@pytest.fixture
async def conn(database):
    await migrate.migrate(database)
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()


def _src(offset: int = 0) -> SourceRecord:
    return SourceRecord("t", 0, offset, b"k", b"v", None)


async def _primary_key(conn: asyncpg.Connection, table: str) -> list[str]:
    return [r["attname"] for r in await conn.fetch(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
           WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        table)]


async def test_tables_keys_and_query_names(conn):
    for table_spec in SPECS.values():
        assert await _primary_key(conn, table_spec.table) == list(table_spec.key), table_spec.table
        assert "time" in table_spec.key
        columns = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table_spec.table)}
        assert columns == set(table_spec.columns) | {"persisted_at"}, table_spec.table
        assert table_spec.columns[0] == "time"
    # every unique index of a pipeline table includes its time column (a hypertable needs it)
    unique = await conn.fetch(
        """SELECT c.relname AS table, array_agg(a.attname) AS columns FROM pg_index i
           JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
           WHERE i.indisunique AND c.relname = ANY ($1::text[]) GROUP BY i.indexrelid, c.relname""",
        [s.table for s in SPECS.values()])
    assert unique and all("time" in r["columns"] for r in unique)
    views = {r["table_name"] for r in await conn.fetch(
        "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'")}
    assert views >= QUERY_NAMES


def _ack(order_id: str, change: str, status: str, filled: float, remaining: float, at: datetime,
         price: float = 100.0) -> dict:
    value = examples.example("ack")
    value.update(order_id=order_id, change_reason=change, status=status, amount=filled + remaining,
                 filled_amount=filled, remaining_amount=remaining, price=price, ack_received_at=at, fills=[],
                 delete_reason="client_cancel" if status.startswith("cancelled") else None)
    return value


def _order_history() -> list[dict]:
    """Three orders: amended A→B→A then cancelled; partly filled twice then filled; inserted only."""
    t = [T0 + timedelta(milliseconds=10 * i) for i in range(12)]
    return [
        _ack("o1", "insert", "open", 0, 1, t[0], 100.0),
        _ack("o1", "amend", "open", 0, 1, t[1], 101.0),
        _ack("o1", "amend", "open", 0, 1, t[2], 100.0),
        _ack("o1", "cancel", "cancelled", 0, 0, t[3], 100.0),
        _ack("o2", "insert", "open", 0, 2, t[4]),
        _ack("o2", "fill", "partially_filled", 0.5, 1.5, t[5]),
        _ack("o2", "fill", "partially_filled", 1.5, 0.5, t[6]),
        _ack("o2", "fill", "filled", 2, 0, t[7]),
        _ack("o3", "insert", "open", 0, 3, t[8], 99.0),
    ]


async def _orders(conn: asyncpg.Connection) -> dict:
    return {r["order_id"]: (r["status"], r["filled_amount"], r["remaining_amount"], r["price"], r["is_final"],
                            r["updated_at"])
            for r in await conn.fetch("SELECT * FROM orders")}


async def test_orders_end_in_the_same_state_whatever_the_arrival_order(conn):
    history = _order_history()
    ack = spec("ack")
    rows = [ack.build(v, _src(i)) for i, v in enumerate(history)]
    writer = TableWriter(ack)
    await writer.write(conn, rows, T0)
    expected = await _orders(conn)
    assert expected["o1"][:5] == ("cancelled", 0, 0, 100.0, True)
    assert expected["o2"][:5] == ("filled", 2, 0, 100.0, True)
    assert expected["o3"][:5] == ("open", 0, 3, 99.0, False)

    shuffler = random.Random(7)
    for attempt in range(6):
        await conn.execute("TRUNCATE order_acks, orders")
        shuffled = rows[:]
        shuffler.shuffle(shuffled)
        # in separate batches, each delivered twice: the trigger sees every order of arrival
        for batch in (shuffled[i:i + 2] for i in range(0, len(shuffled), 2)):
            await writer.write(conn, list(batch), T0)
            await writer.write(conn, list(batch), T0)
        assert await _orders(conn) == expected, f"arrival order {attempt}"
        assert await conn.fetchval("SELECT count(*) FROM order_acks") == len(rows)


async def test_stage_latency_is_derived_from_the_stamps(conn):
    ticker = examples.example("ticker")
    mark = datetime.fromtimestamp(ticker["mark_timestamp"], UTC)
    ticker["received_at"] = mark + timedelta(microseconds=3100)
    await TableWriter(spec("ticker")).write(conn, [spec("ticker").build(ticker, _src())],
                                            ticker["received_at"] + timedelta(microseconds=2500))
    ack = examples.example("ack")
    at = datetime(2025, 5, 18, 12, 0, tzinfo=UTC)
    ack.update(received_at=at, quoted_at=at + timedelta(microseconds=80),
               order_sent_at=at + timedelta(microseconds=200), ack_received_at=at + timedelta(microseconds=900))
    written = await TableWriter(spec("ack")).write(conn, [spec("ack").build(ack, _src())],
                                                   at + timedelta(microseconds=5000))
    stages = {(r["source"], r["stage"]): r["duration_us"] for r in await conn.fetch("SELECT * FROM stage_latency")}
    derived = {
        ("tickers", "exchange_to_received"): 3100, ("tickers", "received_to_persisted"): 2500,
        ("order_acks", "quoted_to_order_sent"): 120, ("order_acks", "order_sent_to_ack_received"): 700,
        ("order_acks", "received_to_ack_received"): 900,
    }
    assert stages == derived  # no ack → persisted from the ack row itself: the sink measures that stage
    # The sample the sink makes of the inserted ack row (agents/persistence.py) is that stage, once.
    (sample,) = [ack_persisted_sample(r) for r in written.returned]
    await TableWriter(spec("latency")).write(conn, [spec("latency").build(sample.to_representation(), _src())],
                                             at + timedelta(microseconds=9000))
    stages = {(r["source"], r["stage"]): r["duration_us"] for r in await conn.fetch("SELECT * FROM stage_latency")}
    assert stages == {**derived, ("latency_samples", "ack_received_to_persisted"): 4100}
    minute = await conn.fetch("SELECT * FROM stage_latency_1m WHERE stage = 'order_sent_to_ack_received'")
    assert [(r["samples"], r["p50_us"], r["max_us"]) for r in minute] == [(1, 700.0, 700)]


async def test_candle_views_agree_with_the_raw_rows(conn):
    rng = random.Random(3)
    trades, tickers = [], []
    for i in range(600):
        at = T0 + timedelta(seconds=i * 0.37)
        trades.append({**examples.example("trade"), "instrument_name": rng.choice(["BTC-PERPETUAL", "ETH-PERPETUAL"]),
                       "timestamp": at.timestamp(), "price": round(rng.uniform(90, 110), 1),
                       "amount": round(rng.uniform(0.01, 2), 3)})
        tickers.append({**examples.example("ticker"), "mark_timestamp": at.timestamp(), "received_at": at,
                        "mark_price": rng.uniform(90, 110)})
    await TableWriter(spec("trade")).write(conn, [spec("trade").build(v, _src(i)) for i, v in enumerate(trades)], T0)
    await TableWriter(spec("ticker")).write(conn, [spec("ticker").build(v, _src(i)) for i, v in enumerate(tickers)],
                                            T0)
    candles = {(r["bucket"], r["instrument_name"]): r for r in await conn.fetch("SELECT * FROM trade_candles_1m")}
    expected: dict = {}
    for t in sorted(trades, key=lambda t: t["timestamp"]):
        at = datetime.fromtimestamp(t["timestamp"], UTC)
        key = (at.replace(second=0, microsecond=0), t["instrument_name"])
        c = expected.setdefault(key, {"open": t["price"], "high": t["price"], "low": t["price"], "volume": 0.0,
                                      "trades": 0})
        c.update(high=max(c["high"], t["price"]), low=min(c["low"], t["price"]), close=t["price"],
                 volume=c["volume"] + t["amount"], trades=c["trades"] + 1)
    assert set(candles) == set(expected)
    for key, c in expected.items():
        got = candles[key]
        assert (got["open"], got["high"], got["low"], got["close"], got["trades"]) == \
            (c["open"], c["high"], c["low"], c["close"], c["trades"])
        assert got["volume"] == pytest.approx(c["volume"])
    ticks = await conn.fetch("SELECT sum(ticks) AS n, count(*) AS buckets FROM ticker_candles_1m")
    assert ticks[0]["n"] == 600 and ticks[0]["buckets"] == 4  # 600 × 0.37 s = 3.7 minutes from 14:00


async def test_markout_view_agrees_with_the_raw_rows(conn):
    rng = random.Random(5)
    values = []
    for i in range(400):
        fill_time = T0 + timedelta(seconds=i * 0.61)
        price = round(rng.uniform(99, 101), 1)
        mid = None if i % 7 == 0 else price + rng.uniform(-0.5, 0.5)
        mark = price + rng.uniform(-0.5, 0.5)
        side = rng.choice([1, -1])
        amount = round(rng.uniform(0.01, 1), 3)
        values.append({**examples.example("markout"), "trade_id": f"trade-{i}", "time": fill_time.timestamp(),
                       "instrument_name": rng.choice(["BTC-PERPETUAL", "ETH-PERPETUAL"]),
                       "direction": "buy" if side == 1 else "sell", "horizon_seconds": rng.choice([1, 5, 30, 60]),
                       "price": price, "amount": amount, "mid_after": mid, "mark_after": mark,
                       "markout_bps": None if mid is None else side * (mid - price) / price * 1e4,
                       "markout": None if mid is None else side * (mid - price) * amount,
                       "markout_bps_mark": side * (mark - price) / price * 1e4,
                       "markout_mark": side * (mark - price) * amount})
    await TableWriter(spec("markout")).write(conn, [spec("markout").build(v, _src(i)) for i, v in enumerate(values)],
                                             T0)
    view = {(r["bucket"], r["instrument_name"], r["direction"], r["horizon_seconds"]): r
            for r in await conn.fetch("SELECT * FROM markouts_1m")}
    expected: dict = {}
    for v in values:
        at = datetime.fromtimestamp(v["time"], UTC)
        key = (at.replace(second=0, microsecond=0), v["instrument_name"], v["direction"], v["horizon_seconds"])
        expected.setdefault(key, []).append(v)
    assert set(view) == set(expected)
    for key, group in expected.items():
        got, mid = view[key], [v for v in group if v["mid_after"] is not None]
        assert (got["markouts"], got["mid_markouts"]) == (len(group), len(mid))
        if mid:
            assert got["avg_markout_bps"] == pytest.approx(sum(v["markout_bps"] for v in mid) / len(mid))
            assert got["sum_markout"] == pytest.approx(sum(v["markout"] for v in mid))
        else:
            assert got["avg_markout_bps"] is None and got["sum_markout"] is None
        assert got["avg_markout_bps_mark"] == pytest.approx(sum(v["markout_bps_mark"] for v in group) / len(group))
        assert got["sum_markout_mark"] == pytest.approx(sum(v["markout_mark"] for v in group))
