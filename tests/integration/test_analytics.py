"""The analytics agents and their Faust tables against the real embedded stack.

Real parts: the simulated venue in this process with its market running (two perpetuals),
Tansu, the schema registry, PostgreSQL (migrated) and `cryptics worker` child processes that
quote, persist and run the analytics. What the tables hold is read back from their changelog
topics in Kafka, independently of the workers.

- ``test_tables_agree_with_the_venue_and_the_database``: one worker quotes for a while, then
  halts. The position table equals the venue's portfolio position exactly, and realized PnL,
  fees (maker and taker apart), volume and trade count agree with the venue's trade history.
  The 1-minute candles equal the SQL views over the persisted rows; the stage latency
  percentiles agree with the SQL percentiles within the histogram's 1% error. Every changelog
  record is on the partition its instrument has in the input topics, which a producer's
  partitioner would give a plain key but not a windowed one. The markouts, PnL snapshots and
  quote-quality snapshots are in the database.
- ``test_kill_9_rebalances_and_recovery_leave_the_tables_exact``: worker A, then B joins (a
  rebalance: each key lives on one worker), A is killed with -9 mid-stream (B takes every
  partition and recovers A's keys from the changelogs; redelivered events are skipped), A
  comes back (another rebalance). At the end every table equals a from-scratch recomputation
  over the input topics.
"""
from __future__ import annotations

import json
import math
import os
import signal
from collections import defaultdict
from typing import Any, Optional

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from app.analytics.audit import Topics, table_mismatches
from app.analytics.engine import INPUTS, TABLES
from app.analytics.histogram import LogHistogram
from app.pipeline.codec import AvroCodec
from app.pipeline.topics import read_until_quiet
from models import examples
from models.registry import record

from .analytics_stack import INSTRUMENTS, PARTITIONS, NotYet

def _source_partitions(inputs: list) -> dict[str, int]:
    """Instrument (or index) → the one partition its records are on, in every input topic."""
    seen: dict[str, set] = defaultdict(set)
    for _, _, name, partition, _, value in inputs:
        seen[value[INPUTS[name]]].add(partition)
    for key, parts in seen.items():
        assert len(parts) == 1, f"{key} is on partitions {parts}: the topics are not co-partitioned"
    return {key: parts.pop() for key, parts in seen.items()}


def _candle_reference(inputs: list) -> tuple[dict, dict, dict]:
    """From the topics, per (record, instrument, minute): the prices at the earliest and at the
    latest time; the number of identical prints beyond the first (one row in public_trades);
    and the amount those add."""
    times: dict = defaultdict(list)
    for _, _, name, _, _, v in inputs:
        if name == "trade":
            times[(name, v["instrument_name"], math.floor(v["timestamp"] / 60) * 60.0)].append(
                (v["timestamp"], v["price"], v["amount"], v["direction"]))
        elif name == "ticker":
            times[(name, v["instrument_name"], math.floor(v["mark_timestamp"] / 60) * 60.0)].append(
                (v["mark_timestamp"], v["mark_price"], 0.0, None))
    edges, duplicates, volume = {}, defaultdict(int), defaultdict(float)
    for key, items in times.items():
        first, last = min(t for t, *_ in items), max(t for t, *_ in items)
        edges[key] = ({p for t, p, *_ in items if t == first}, {p for t, p, *_ in items if t == last})
        seen = set()
        for item in items:
            # The row's key: instrument, time (to the µs), price, amount, direction.
            row_key = (round(item[0], 6), *item[1:])
            if key[0] == "trade" and row_key in seen:
                duplicates[key] += 1
                volume[key[1:]] += item[2]
            seen.add(row_key)
    return edges, duplicates, volume


async def _send_poison(bootstrap: str, registry_url: str) -> dict[tuple, str]:
    """Three fills no analytics can use, onto the fill topic: bytes that are no Avro, a NaN
    price, an instrument nobody trades. Their (partition, offset) → the reason expected."""
    r = record("fill")
    codec = AvroCodec(r.subject, r.schema, registry_url)
    good = {**examples.example("fill"), "instrument_name": "BTC-PERPETUAL"}
    poison = [(b"BTC-PERPETUAL", b"\x00\x00\x00\x00\x01 not avro", "undecodable"),
              (b"BTC-PERPETUAL", codec.dumps({**good, "trade_id": "nan", "price": math.nan}), "non-finite price"),
              (b"XRP-PERPETUAL", codec.dumps({**good, "trade_id": "xrp", "instrument_name": "XRP-PERPETUAL"}),
               "unknown instrument")]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = {}
        for key, value, reason in poison:
            meta = await producer.send_and_wait(r.topic, value, key=key)
            sent[(meta.partition, meta.offset)] = reason
        return sent
    finally:
        await producer.stop()


async def _sql(dsn: str, query: str) -> list:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


# -- the tests --------------------------------------------------------------------------------


async def test_tables_agree_with_the_venue_and_the_database(analytics_stack, broker, registry_url, database):
    analytics_stack.spawn("a")
    await analytics_stack.poll(lambda: analytics_stack.fills_per_instrument(3), "first fills on both instruments", 180)
    poison = await _send_poison(broker.bootstrap, registry_url)
    await analytics_stack.poll(lambda: analytics_stack.fills_per_instrument(6), "fills on both instruments", 180)
    # Past a minute's end by more than the snapshot grace: its PnL and quote-quality snapshots
    # are out, for each instrument (the analytics count what they publish; which instruments,
    # the database says below). Waited on as the analytics see it, in event time, not on the clock.
    def snapshots_out() -> Any:
        published = (analytics_stack.view("a") or {}).get("counters", {}).get("published", {})
        enough = all(published.get(name, 0) >= len(INSTRUMENTS) for name in ("pnl_snapshot", "quote_quality"))
        return enough or NotYet(published)
    await analytics_stack.poll(snapshots_out, "a minute's snapshots of both instruments", 100, interval=1.0)
    await analytics_stack.halt_and_settle()
    view = analytics_stack.view("a")
    analytics_stack.stop_all()

    topics = Topics(broker.bootstrap, registry_url)
    inputs = await topics.inputs()
    where = _source_partitions(inputs)

    # The poison went to the dead-letter topic with its coordinates, once each; nothing else did.
    codec = AvroCodec(record("dead_letter").subject, record("dead_letter").schema, registry_url)
    letters = [codec.loads(m.value) for m in await read_until_quiet(broker.bootstrap, record("dead_letter").topic)]
    ours = {(d["source_partition"], d["source_offset"]): d for d in letters if d["target_table"] == "analytics"}
    assert set(ours) == set(poison), (ours, poison)
    for origin, reason in poison.items():
        assert ours[origin]["source_topic"] == record("fill").topic and ours[origin]["value"]
        assert ours[origin]["stage"] == ("decode" if reason == "undecodable" else "row")
        assert view["counters"]["dead_letters"][reason] == 1

    # Positions and PnL against the venue's own books.
    positions, parts = await topics.changelog("position_pnl", "position_state")
    trades = analytics_stack.our_trades()
    venue_positions = analytics_stack.venue.engine.account(analytics_stack.account).positions
    for instrument in INSTRUMENTS:
        state = positions[instrument]
        ours = [t for t in trades if t["instrument_name"] == instrument]
        venue = venue_positions[instrument]
        assert round(state["position"], 9) == round(venue.contracts, 9), instrument
        assert math.isclose(state["realized_pnl"], venue.realised_pnl, rel_tol=1e-9, abs_tol=1e-6), instrument
        for side in ("maker", "taker"):
            fees = sum(t["fee"] for t in ours if t["maker_taker"] == side)
            assert math.isclose(state[f"fees_{side}"], fees, rel_tol=1e-9, abs_tol=1e-9), (instrument, side)
        assert state["trades"] == len(ours)
        assert math.isclose(state["volume"], sum(t["amount"] for t in ours), rel_tol=1e-9)
        assert math.isclose(state["notional"], sum(t["price"] * t["amount"] for t in ours), rel_tol=1e-9)
        # The view reads the same table.
        assert view["positions"][instrument]["position"] == state["position"]

    # Every changelog record of every table is on its instrument's partition; a partitioner
    # would put the plain keys there, and most windowed keys elsewhere.
    partitioner = DefaultPartitioner()
    elsewhere = 0
    for spec in TABLES:
        _, partitions = await topics.changelog(spec.name, spec.state)
        assert partitions, f"{spec.name}: nothing in its changelog"
        for key, found in partitions.items():
            instrument = (key[0] if isinstance(key, tuple) else key).split("|")[0]
            assert found == {where[instrument]}, (spec.name, key, found)
            if spec.window is None:
                raw = key.encode()
                assert partitioner(raw, list(range(PARTITIONS)), list(range(PARTITIONS))) == where[instrument]
            else:
                raw = json.dumps(list(key)).encode()
                elsewhere += partitioner(raw, list(range(PARTITIONS)), list(range(PARTITIONS))) != where[instrument]
    assert elsewhere > 0

    # Candles against the SQL views over the persisted rows. Trades of one sweep share their
    # time: the open (close) is then any of the prices at the earliest (latest) time, as SQL
    # leaves it, so both are checked against those prices on the topic.
    at_edges, duplicates, duplicate_volume = _candle_reference(inputs)
    for table, view_name, count_column, name in (("trade_candles_1m", "trade_candles_1m", "trades", "trade"),
                                                 ("mark_candles_1m", "ticker_candles_1m", "ticks", "ticker")):
        candles, _ = await topics.changelog(table, "candle")
        rows = await _sql(database, f"SELECT * FROM {view_name}")
        sql = {(r["instrument_name"], r["bucket"].timestamp()): r for r in rows}
        assert {(k, w[0]) for k, w in candles} == set(sql), table
        for (instrument, (start, _)), candle in candles.items():
            row = sql[(instrument, start)]
            assert (candle["high"], candle["low"]) == (row["high"], row["low"]), (table, instrument, start)
            opens, closes = at_edges[(name, instrument, start)]
            assert candle["open"] in opens and row["open"] in opens, (table, instrument, start)
            assert candle["close"] in closes and row["close"] in closes, (table, instrument, start)
            # Identical prints are one row in public_trades (timescale/0002); the table counts each.
            assert candle["count"] - row[count_column] == duplicates[(name, instrument, start)], (table, start)
            if name == "trade":
                assert math.isclose(candle["volume"], float(row["volume"]) + duplicate_volume[(instrument, start)],
                                    rel_tol=1e-9), (table, instrument, start)

    # Stage latency percentiles against SQL within the histogram's error.
    histograms, _ = await topics.changelog("stage_latency_1m", "latency_histogram")
    # The stages the agents measure are latency samples (latency_1m); exchange → received is
    # derived from the market rows' stamps (stage_latency_1m, which also re-derives some
    # measured stages from the order rows, counting those twice).
    rows = [r for r in await _sql(database, "SELECT * FROM stage_latency_1m") if r["stage"] == "exchange_to_received"]
    rows += await _sql(database, "SELECT * FROM latency_1m")
    sql = {(r["instrument_name"], r["stage"], r["bucket"].timestamp()): r for r in rows}
    compared = set()
    for (key, (start, _)), value in histograms.items():
        instrument, stage = key.split("|")
        row = sql.get((instrument, stage, start))
        assert row is not None, (key, start)
        histogram = LogHistogram.from_record(value)
        if histogram.count != row["samples"]:
            continue  # identical public prints: fewer rows than samples (above)
        compared.add(stage)
        for q, column in ((0.5, "p50_us"), (0.9, "p90_us"), (0.99, "p99_us")):
            got, want = histogram.quantile(q), row[column]
            assert abs(got - want) <= 0.01 * abs(want) + 1e-6, (key, start, column, got, want)
        assert histogram.quantile(1.0) == row["max_us"]
    assert {"exchange_to_received", "received_to_quoted", "quoted_to_order_sent",
            "order_sent_to_ack_received", "ack_received_to_persisted"} <= compared

    # What Grafana reads is in the database.
    # What Grafana reads is in the database: every record the analytics published, once.
    published = view["counters"]["published"]
    for name, table in (("markout", "markouts"), ("pnl_snapshot", "pnl_snapshots"), ("quote_quality", "quote_quality_1m")):
        rows = await _sql(database, f"SELECT instrument_name FROM {table}")
        assert len(rows) == published.get(name, 0), (table, len(rows), published)
        assert {r["instrument_name"] for r in rows} == set(INSTRUMENTS), table


async def test_kill_9_rebalances_and_recovery_leave_the_tables_exact(analytics_stack, broker, registry_url):
    a = analytics_stack.spawn("a")
    await analytics_stack.poll(lambda: len(analytics_stack.our_trades()) >= 3, "first fills", 180)
    analytics_stack.spawn("b")

    def split_between_workers() -> Optional[tuple]:
        va, vb = analytics_stack.view("a"), analytics_stack.view("b")
        if not va or not vb:
            return None
        keys_a, keys_b = set(va["positions"]), set(vb["positions"])
        # After the rebalance both hold keys, and no key is on both.
        if keys_a and keys_b and not keys_a & keys_b:
            return keys_a, keys_b
        return None

    await analytics_stack.poll(split_between_workers, "the keys to be split between two workers", 120)
    before = len(analytics_stack.our_trades())
    await analytics_stack.poll(lambda: len(analytics_stack.our_trades()) >= before + 3, "fills with two workers", 120)
    os.kill(a.pid, signal.SIGKILL)
    a.popen.wait(timeout=10)
    await analytics_stack.poll(lambda: analytics_stack.view("b") and len(analytics_stack.view("b")["positions"]) == 2,
                     "worker b to hold every key", 120)
    analytics_stack.spawn("a")  # back, with a fresh process: one more rebalance
    await analytics_stack.poll(split_between_workers, "the keys to be split again", 120)
    before = len(analytics_stack.our_trades())
    await analytics_stack.poll(lambda: len(analytics_stack.our_trades()) >= before + 3, "fills after the restart", 180)
    await analytics_stack.halt_and_settle()
    analytics_stack.stop_all()

    mismatches = await table_mismatches(Topics(broker.bootstrap, registry_url), INSTRUMENTS)
    assert set(mismatches) == {spec.name for spec in TABLES}
    assert not any(mismatches.values()), {name: found for name, found in mismatches.items() if found}
