"""PositionState (app/analytics/positions.py): worked examples of the booking, fees, mark, funding,
the pnl_snapshot record, the account totals and the state's Avro round trip.
Random fill sequences against the venue's own booking: tests/property/test_analytics_positions.py.
"""
from __future__ import annotations

import io
import json
import math
from datetime import datetime, timezone

import fastavro
import pytest

from app.analytics.positions import FeeSchedule, PositionState, account_totals
from models.schemas import SCHEMA_ROOT

BTC, ETH = "BTC-PERPETUAL", "ETH-PERPETUAL"
FEES = FeeSchedule(maker_rate=0.0002, taker_rate=0.0005)
T0 = 1_800_000_000.0
SCHEMA = json.loads((SCHEMA_ROOT / "position_state" / "v2.avsc").read_text())

SNAPSHOT_SCHEMA = json.loads((SCHEMA_ROOT / "pnl_snapshot" / "v1.avsc").read_text())


def fill(direction: str, amount: float, price: float, maker_taker: str = "maker", time: float | None = T0,
         instrument: str = BTC) -> dict:
    return {"trade_id": f"t{price}{amount}", "order_id": "o1", "instrument_name": instrument, "direction": direction,
            "maker_taker": maker_taker, "price": price, "amount": amount, "leg_index": 0, "client_order_id": None,
            "time": time, "order_sent_at": None, "ack_received_at": None}


def ticker(mark: float, at: float, instrument: str = BTC) -> dict:
    return {"instrument_name": instrument, "mark_price": mark, "mark_timestamp": at, "delta": 1.0, "index": mark}


def position_record(position: float, funding: float | None, instrument: str = BTC) -> dict:
    return {"instrument_name": instrument, "position": position, "mark_price": 100.0,
            "unrealised_perpetual_funding": funding}


def test_a_new_state_is_flat_with_nothing_known():
    state = PositionState(BTC)
    assert (state.position, state.average_price, state.realized_pnl, state.trades) == (0.0, 0.0, 0.0, 0)
    assert state.unrealized_pnl is None and state.net_pnl is None and state.funding_pnl is None
    assert state.offsets == {}


def test_opening_and_adding_move_the_average_and_realise_nothing():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 0.5, 100.0), FEES)
    assert (state.position, state.average_price, state.realized_pnl) == (0.5, 100.0, 0.0)
    state.apply_fill(fill("buy", 1.5, 104.0, "taker"), FEES)
    # (0.5 * 100 + 1.5 * 104) / 2 = 103
    assert state.position == 2.0
    assert state.average_price == pytest.approx(103.0, abs=1e-12)
    assert state.realized_pnl == 0.0
    assert (state.volume, state.notional, state.trades, state.maker_trades) == (2.0, 206.0, 2, 1)


def test_closing_realises_against_the_average_and_keeps_it():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 0.5, 100.0), FEES)
    state.apply_fill(fill("buy", 1.5, 104.0), FEES)
    state.apply_fill(fill("sell", 0.5, 110.0), FEES)
    # 0.5 * (110 - 103)
    assert state.realized_pnl == pytest.approx(3.5, abs=1e-12)
    assert state.position == 1.5
    assert state.average_price == pytest.approx(103.0, abs=1e-12)
    state.apply_fill(fill("sell", 1.5, 101.0), FEES)
    # + 1.5 * (101 - 103) = 3.5 - 3 = 0.5; flat: the average resets
    assert state.realized_pnl == pytest.approx(0.5, abs=1e-12)
    assert (state.position, state.average_price) == (0.0, 0.0)


def test_a_flip_closes_the_whole_position_and_opens_the_rest_at_the_fill_price():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 1.5, 103.0), FEES)
    state.apply_fill(fill("sell", 2.5, 100.0), FEES)
    # closes 1.5 at 100: 1.5 * (100 - 103) = -4.5; the other 1.0 opens a short at 100
    assert state.realized_pnl == pytest.approx(-4.5, abs=1e-12)
    assert (state.position, state.average_price) == (-1.0, 100.0)
    state.apply_fill(fill("buy", 0.25, 90.0), FEES)
    # a short gains when it buys back lower: 0.25 * (90 - 100) * -1 = 2.5
    assert state.realized_pnl == pytest.approx(-2.0, abs=1e-12)
    assert (state.position, state.average_price) == (-0.75, 100.0)


def test_a_flat_position_reads_exactly_zero_after_float_noise():
    state = PositionState(BTC)
    for _ in range(3):
        state.apply_fill(fill("buy", 0.1, 100.0), FEES)
    # 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats: the rounding after each fill removes it
    state.apply_fill(fill("sell", 0.3, 100.0), FEES)
    assert state.position == 0.0 and state.average_price == 0.0


def test_fees_are_price_times_amount_times_the_rate_of_the_side():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 0.5, 100.0, "maker"), FEES)  # 100 * 0.5 * 0.0002 = 0.01
    state.apply_fill(fill("sell", 2.0, 110.0, "taker"), FEES)  # 110 * 2 * 0.0005 = 0.11
    state.apply_fill(fill("buy", 1.0, 120.0, "maker"), FeeSchedule(maker_rate=-0.0001, taker_rate=0.0005))
    # a rebate: 120 * 1 * -0.0001 = -0.012
    assert state.fees_maker == pytest.approx(0.01 - 0.012, abs=1e-15)
    assert state.fees_taker == pytest.approx(0.11, abs=1e-15)
    assert state.fees == pytest.approx(0.108, abs=1e-15)
    assert (state.trades, state.maker_trades) == (3, 2)


def test_unrealized_is_position_times_mark_minus_average():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 2.0, 103.0), FEES)
    assert state.unrealized_pnl is None
    assert state.apply_ticker(ticker(101.0, T0 + 1))
    assert (state.mark_price, state.mark_time) == (101.0, T0 + 1)
    assert state.unrealized_pnl == pytest.approx(-4.0, abs=1e-12)  # 2 * (101 - 103)
    state.apply_fill(fill("sell", 3.0, 105.0), FEES)  # now short 1 at 105
    assert state.unrealized_pnl == pytest.approx(4.0, abs=1e-12)  # -1 * (101 - 105)


def test_a_ticker_older_than_the_mark_held_is_ignored():
    state = PositionState(BTC)
    assert state.apply_ticker(ticker(101.0, T0 + 2))
    assert not state.apply_ticker(ticker(99.0, T0 + 1))
    assert (state.mark_price, state.mark_time) == (101.0, T0 + 2)
    assert state.apply_ticker(ticker(102.0, T0 + 2))  # same time: not older, taken
    assert state.mark_price == 102.0


def test_funding_and_venue_position_come_from_the_latest_position_record():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 2.0, 103.0, "taker"), FEES)  # fee 103 * 2 * 0.0005 = 0.103
    state.apply_ticker(ticker(101.0, T0))
    # without funding yet, net = 0 + (-4) + 0 - 0.103
    assert state.net_pnl == pytest.approx(-4.103, abs=1e-12)
    state.apply_position(position_record(2.0, -0.25))
    assert (state.venue_position, state.funding_pnl) == (2.0, -0.25)
    assert state.net_pnl == pytest.approx(-4.353, abs=1e-12)
    state.apply_position(position_record(1.0, None))
    assert (state.venue_position, state.funding_pnl) == (1.0, None)


def test_the_snapshot_is_the_pnl_snapshot_record():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 1.0, 100.0), FEES)
    state.apply_fill(fill("sell", 0.5, 110.0, "taker"), FEES)
    state.apply_ticker(ticker(120.0, T0))
    state.apply_position(position_record(0.5, 0.5))
    at = datetime(2027, 1, 15, 8, 1, tzinfo=timezone.utc)
    snap = state.snapshot(at)
    assert list(snap) == [f["name"] for f in SNAPSHOT_SCHEMA["fields"]]
    assert write_read(snap, SNAPSHOT_SCHEMA) == snap
    assert snap["time"] == at
    assert snap["position"] == 0.5 and snap["average_price"] == 100.0
    assert snap["realized_pnl"] == pytest.approx(5.0, abs=1e-12)  # 0.5 * (110 - 100)
    assert snap["unrealized_pnl"] == pytest.approx(10.0, abs=1e-12)  # 0.5 * (120 - 100)
    fees_maker, fees_taker = 100 * 1.0 * 0.0002, 110 * 0.5 * 0.0005
    assert (snap["fees_maker"], snap["fees_taker"]) == (pytest.approx(fees_maker), pytest.approx(fees_taker))
    assert snap["net_pnl"] == pytest.approx(5.0 + 10.0 + 0.5 - fees_maker - fees_taker, abs=1e-12)
    assert (snap["mark_price"], snap["funding_pnl"]) == (120.0, 0.5)
    assert (snap["volume"], snap["notional"], snap["trades"]) == (1.5, 155.0, 2)
    unmarked = PositionState(ETH).snapshot(at)
    assert (unmarked["unrealized_pnl"], unmarked["net_pnl"], unmarked["mark_price"]) == (None, None, None)
    assert write_read(unmarked, SNAPSHOT_SCHEMA) == unmarked


def test_account_totals_sum_over_instruments():
    btc, eth = PositionState(BTC), PositionState(ETH)
    btc.apply_fill(fill("buy", 1.0, 100.0), FEES)  # fee 0.02
    btc.apply_fill(fill("sell", 0.5, 110.0), FEES)  # fee 0.011, realised 5
    btc.apply_ticker(ticker(120.0, T0))  # unrealised 0.5 * 20 = 10
    btc.apply_position(position_record(0.5, -1.0))
    eth.apply_fill(fill("sell", 2.0, 50.0, "taker", instrument=ETH), FEES)  # fee 0.05, no mark: unmarked
    totals = account_totals([btc, eth])
    assert totals["instruments"] == 2 and totals["unmarked"] == 1
    assert totals["realized_pnl"] == pytest.approx(5.0)
    assert totals["unrealized_pnl"] == pytest.approx(10.0)
    assert totals["fees_maker"] == pytest.approx(0.031) and totals["fees_taker"] == pytest.approx(0.05)
    assert totals["fees"] == pytest.approx(0.081)
    assert totals["funding_pnl"] == pytest.approx(-1.0)
    assert totals["net_pnl"] == pytest.approx(5.0 + 10.0 - 1.0 - 0.081)
    assert (totals["volume"], totals["notional"], totals["trades"]) == (3.5, 255.0, 3)
    assert account_totals([])["net_pnl"] == 0.0


def test_last_fill_time_is_the_latest_fill_time():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 1.0, 100.0, time=T0 + 5), FEES)
    state.apply_fill(fill("buy", 1.0, 100.0, time=T0 + 3), FEES)
    state.apply_fill(fill("buy", 1.0, 100.0, time=None), FEES)
    assert state.last_fill_time == T0 + 5


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, None, "x"])
@pytest.mark.parametrize("name", ["price", "amount"])
def test_a_non_finite_fill_raises_and_changes_nothing(name, bad):
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 1.0, 100.0), FEES)
    before = state.to_record()
    bad_fill = fill("buy", 1.0, 100.0) | {name: bad}
    with pytest.raises(ValueError):
        state.apply_fill(bad_fill, FEES)
    assert state.to_record() == before


@pytest.mark.parametrize("change", [{"amount": 0.0}, {"amount": -1.0}, {"direction": "hold"},
                                    {"maker_taker": "both"}, {"time": math.nan}])
def test_an_invalid_fill_raises_and_changes_nothing(change):
    state = PositionState(BTC)
    with pytest.raises(ValueError):
        state.apply_fill(fill("buy", 1.0, 100.0) | change, FEES)
    assert state == PositionState(BTC)


@pytest.mark.parametrize("field,bad", [("mark_price", math.nan), ("mark_timestamp", math.inf)])
def test_a_non_finite_ticker_raises(field, bad):
    state = PositionState(BTC)
    with pytest.raises(ValueError):
        state.apply_ticker(ticker(100.0, T0) | {field: bad})
    assert state.mark_price is None


@pytest.mark.parametrize("field,bad", [("position", math.nan), ("unrealised_perpetual_funding", -math.inf)])
def test_a_non_finite_position_record_raises(field, bad):
    with pytest.raises(ValueError):
        PositionState(BTC).apply_position(position_record(1.0, 0.0) | {field: bad})


def write_read(record: dict, schema: dict = SCHEMA) -> dict:
    parsed = fastavro.parse_schema(schema)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed, parsed)


def test_the_state_round_trips_through_its_avro_schema():
    state = PositionState(BTC)
    state.apply_fill(fill("buy", 1.0, 100.0), FEES)
    state.apply_fill(fill("sell", 0.25, 110.5, "taker"), FEES)
    state.apply_ticker(ticker(120.0, T0 + 0.123456))
    state.apply_position(position_record(0.75, -0.125))
    state.offsets = {"fill": 41, "ticker": 7_000_000_000, "position": 3}
    state.remember_fill("t-1", 40)
    state.remember_fill("t-2", 41)
    restored = PositionState.from_record(write_read(state.to_record()))
    assert restored == state
    assert PositionState.from_record(write_read(PositionState(ETH).to_record())) == PositionState(ETH)


def test_the_schema_is_the_record():
    assert SCHEMA["namespace"] == "cryptics.analytics"
    assert [f["name"] for f in SCHEMA["fields"]] == list(PositionState(BTC).to_record())
    assert all(f.get("doc") for f in SCHEMA["fields"])
    offsets = next(f for f in SCHEMA["fields"] if f["name"] == "offsets")
    assert offsets["type"] == {"type": "map", "values": "long"} and offsets["default"] == {}
