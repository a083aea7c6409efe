"""Quote quality (app/analytics/quality.py) on worked examples: the two-sided intervals of an ack
sequence, the quoted amount of inserts and amends, one minute's quote_quality record, the ratios'
None on empty denominators, split_interval and the states' fastavro round trips.
Random sequences: tests/property/test_analytics_quality.py.
"""
from __future__ import annotations

import io
import math
from datetime import datetime, timezone

import fastavro
import pytest

from app.analytics.quality import (AckEffect, QualityConfig, QualityWindow, RestingOrder, RestingQuotes,
                                   split_interval)
from models import examples, schemas

BTC = "BTC-PERPETUAL"
#: A minute boundary (1747578840 = 29126314 * 60), so the example's times read as seconds into the minute.
T0 = 1_747_578_840.0


def at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(T0 + seconds, tz=timezone.utc)


def ack(order_id: str, direction: str, price: float | None, amount: float, *, t: float | None,
        reason: str = "insert", status: str = "open", remaining: float | None = None) -> dict:
    """An ack record as fastavro decodes it, from the schema's example with these fields replaced."""
    value = examples.example("ack")
    value.update(order_id=order_id, direction=direction, price=price, amount=amount,
                 remaining_amount=amount if remaining is None else remaining,
                 filled_amount=amount - (amount if remaining is None else remaining),
                 status=status, change_reason=reason, fills=[], ack_received_at=at(t))
    return value


def fill(amount: float, price: float = 100_000.0) -> dict:
    value = examples.example("fill")
    value.update(amount=amount, price=price)
    return value


def quote(bids: list[float], asks: list[float], fair_value: float | None, position: float) -> dict:
    value = examples.example("quote")
    value.update(bids=[{"price": p, "amount": 0.2} for p in bids], asks=[{"price": p, "amount": 0.2} for p in asks],
                 fair_value=fair_value, position=position)
    return value


# One bid and one ask through inserts, amends, fills and a cancel; t in seconds after T0.
# The spread of the book after each ack (best ask - best bid over their mid):
#   bid 100000 / ask 100200: 200 / 100100 = 19.98 bps (two-sided at 50)
#   ask amended to 100800:   800 / 100400 = 79.68 bps (too wide)
#   ask amended to 100400:   400 / 100200 = 39.92 bps (two-sided)
SEQUENCE = [
    ack("B1", "buy", 100_000.0, 0.2, t=0),                                        # bid only
    ack("A1", "sell", 100_200.0, 0.2, t=10),                                      # both, 19.98 bps
    ack("A1", "sell", 100_200.0, 0.5, t=25, reason="amend"),                     # +0.3 quoted
    ack("A1", "sell", 100_800.0, 0.4, t=30, reason="amend"),                     # shrank, 79.68 bps
    ack("A1", "sell", 100_400.0, 0.4, t=45, reason="amend"),                     # 39.92 bps
    ack("B1", "buy", 100_000.0, 0.2, t=50, reason="fill", status="partially_filled", remaining=0.05),
    ack("B1", "buy", 100_000.0, 0.2, t=55, reason="fill", status="filled", remaining=0.0),  # bid gone
    ack("A1", "sell", 100_400.0, 0.4, t=70, reason="cancel", status="cancelled"),
]
EXPECTED = [
    AckEffect(None, 0.2),
    AckEffect((T0, T0 + 10, False), 0.2),
    AckEffect((T0 + 10, T0 + 25, True), pytest.approx(0.3)),
    AckEffect((T0 + 25, T0 + 30, True), 0.0),
    AckEffect((T0 + 30, T0 + 45, False), 0.0),
    AckEffect((T0 + 45, T0 + 50, True), 0.0),
    AckEffect((T0 + 50, T0 + 55, True), 0.0),
    AckEffect((T0 + 55, T0 + 70, False), 0.0),
]


def test_each_ack_closes_the_interval_since_the_previous_one_judged_on_the_book_before_it():
    book = RestingQuotes(BTC)
    effects = [book.apply_ack(a) for a in SEQUENCE]
    assert effects == EXPECTED
    assert book.orders == {} and book.last_ack_time == T0 + 70
    two_sided = sum(end - start for start, end, both in (e.interval for e in effects[1:]) if both)
    observed = sum(end - start for start, end, _ in (e.interval for e in effects[1:]))
    assert (two_sided, observed) == (30.0, 70.0)


def test_the_live_orders_follow_the_acks():
    book = RestingQuotes(BTC)
    for a in SEQUENCE[:6]:
        book.apply_ack(a)
    assert book.orders == {"B1": RestingOrder("buy", 100_000.0, 0.2, 0.05), "A1": RestingOrder("sell", 100_400.0, 0.4, 0.4)}
    assert (book.best_bid, book.best_ask) == (100_000.0, 100_400.0)
    book.apply_ack(SEQUENCE[6])
    assert list(book.orders) == ["A1"] and book.best_bid is None and not book.two_sided()


def test_the_spread_limit_is_the_config_s():
    book = RestingQuotes(BTC)
    for a in SEQUENCE[:4]:  # ends with the 79.68 bps book
        book.apply_ack(a)
    assert not book.two_sided(QualityConfig(max_spread_bps=79.6))
    assert book.two_sided(QualityConfig(max_spread_bps=79.7))
    effect = book.apply_ack(SEQUENCE[4], QualityConfig(max_spread_bps=80.0))
    assert effect.interval == (T0 + 30, T0 + 45, True)  # 79.68 bps is within 80


def test_the_spread_limit_is_inclusive():
    book = RestingQuotes(BTC)
    book.apply_ack(ack("B", "buy", 99_750.0, 0.1, t=0))
    book.apply_ack(ack("A", "sell", 100_250.0, 0.1, t=1))  # 500 / 100000 = 50 bps exactly
    assert book.two_sided(QualityConfig(max_spread_bps=50.0))
    assert not book.two_sided(QualityConfig(max_spread_bps=49.99))


def test_quoted_amount_of_inserts_and_amends():
    book = RestingQuotes(BTC)
    assert book.apply_ack(ack("B1", "buy", 100_000.0, 0.3, t=0)).quoted_amount == 0.3
    assert book.apply_ack(ack("B1", "buy", 100_000.0, 0.5, t=1, reason="amend")).quoted_amount == pytest.approx(0.2)
    assert book.apply_ack(ack("B1", "buy", 99_990.0, 0.1, t=2, reason="amend")).quoted_amount == 0.0
    # An amend that only moves the price quotes nothing; neither does a cancel or a fill.
    assert book.apply_ack(ack("B1", "buy", 99_980.0, 0.1, t=3, reason="amend")).quoted_amount == 0.0
    assert book.apply_ack(ack("B1", "buy", 99_980.0, 0.1, t=4, reason="fill", status="partially_filled",
                              remaining=0.04)).quoted_amount == 0.0
    # The increase is over the order amount (0.1), not over what remains (0.04).
    assert book.apply_ack(ack("B1", "buy", 99_980.0, 0.25, t=5, reason="amend",
                              remaining=0.19)).quoted_amount == pytest.approx(0.15)
    assert book.apply_ack(ack("B1", "buy", 99_980.0, 0.25, t=6, reason="cancel", status="cancelled",
                              remaining=0.0)).quoted_amount == 0.0
    # An amend of an order never seen: its previous amount is unknown, so nothing is counted.
    assert book.apply_ack(ack("X", "sell", 100_100.0, 0.4, t=7, reason="amend")).quoted_amount == 0.0
    assert "X" in book.orders


def test_an_insert_that_does_not_rest_still_quoted_its_amount():
    book = RestingQuotes(BTC)
    effect = book.apply_ack(ack("T", "buy", 100_000.0, 0.2, t=0, status="filled", remaining=0.0))
    assert effect.quoted_amount == 0.2 and book.orders == {}
    # A market order has no price, so it never rests.
    book.apply_ack(ack("M", "sell", None, 0.2, t=1, status="open"))
    assert book.orders == {}


def test_an_older_ack_updates_its_order_but_closes_no_interval():
    book = RestingQuotes(BTC)
    book.apply_ack(ack("B1", "buy", 100_000.0, 0.2, t=10))
    late = book.apply_ack(ack("A1", "sell", 100_100.0, 0.2, t=5))
    assert late == AckEffect(None, 0.2) and book.last_ack_time == T0 + 10 and "A1" in book.orders
    # The next interval starts at the newest time seen, and the ask counts from then.
    assert book.apply_ack(ack("B2", "buy", 99_990.0, 0.2, t=12)).interval == (T0 + 10, T0 + 12, True)


def test_an_ack_without_its_received_stamp_updates_its_order_but_closes_no_interval():
    book = RestingQuotes(BTC)
    book.apply_ack(ack("B1", "buy", 100_000.0, 0.2, t=0))
    assert book.apply_ack(ack("A1", "sell", 100_100.0, 0.2, t=None)).interval is None
    assert book.last_ack_time == T0 and "A1" in book.orders
    assert book.apply_ack(ack("B1", "buy", 100_000.0, 0.2, t=3, reason="cancel", status="cancelled")).interval \
        == (T0, T0 + 3, True)


@pytest.mark.parametrize("field,value", [("price", math.nan), ("amount", math.inf), ("remaining_amount", -math.inf)])
def test_a_non_finite_ack_is_refused(field, value):
    book = RestingQuotes(BTC)
    bad = ack("B1", "buy", 100_000.0, 0.2, t=0)
    bad[field] = value
    with pytest.raises(ValueError, match=field):
        book.apply_ack(bad)
    assert book == RestingQuotes(BTC)


def one_minute() -> tuple[QualityWindow, QualityWindow]:
    """SEQUENCE, its fills and four quote decisions credited to the minute at T0 and the next."""
    windows = {T0: QualityWindow(BTC, T0), T0 + 60: QualityWindow(BTC, T0 + 60)}
    book = RestingQuotes(BTC)
    for a in SEQUENCE:
        effect = book.apply_ack(a)
        if effect.interval is not None:
            start, end, two_sided = effect.interval
            for window, seconds in split_interval(start, end):
                windows[window].add_interval(seconds, two_sided)
        windows[60 * math.floor(a["ack_received_at"].timestamp() / 60)].add_ack(a, effect.quoted_amount)
    first = windows[T0]
    first.add_fill(fill(0.15))
    first.add_fill(fill(0.05))
    first.add_quote(quote([100_000.0, 99_990.0], [100_200.0], 100_110.0, 0.1))  # spread 200, distances 110 / 90
    first.add_quote(quote([100_050.0], [100_150.0, 100_160.0], 100_080.0, -0.3))  # spread 100, distances 30 / 70
    first.add_quote(quote([100_000.0], [], 100_000.0, 0.2))  # one-sided: its position only
    first.add_quote(quote([100_000.0], [100_100.0], None, 0.0))  # no fair value: its position only
    return first, windows[T0 + 60]


def test_a_minute_s_quote_quality_record():
    first, second = one_minute()
    record = first.record()
    assert record == {
        "instrument_name": BTC, "time": datetime(2025, 5, 18, 14, 34, tzinfo=timezone.utc),
        # 0-60 observed (the 55-70 interval split at the minute); two-sided 10-25, 25-30, 45-50, 50-55.
        "observed_seconds": 60.0, "two_sided_seconds": 30.0, "uptime": 0.5,
        # Two of the four decisions have both sides and a fair value.
        "quotes": 2, "mean_spread": 150.0, "mean_bid_distance": 70.0, "mean_ask_distance": 80.0,
        # Inserted 0.2 + 0.2, amended up 0.3; filled 0.15 + 0.05.
        "quoted_amount": pytest.approx(0.7), "filled_amount": 0.2, "fill_ratio": pytest.approx(0.2 / 0.7),
        # 2 inserts and 3 amends (the two fill acks are no actions) for 2 fills.
        "order_actions": 5, "fills": 2, "order_to_trade": 2.5,
        # |0.1| + |-0.3| + |0.2| + |0| over 4 decisions; 0.2 traded over 0.15 held.
        "volume": 0.2, "mean_abs_position": pytest.approx(0.15), "inventory_turnover": pytest.approx(0.2 / 0.15),
    }
    assert second.record() | {"time": None} == {
        "instrument_name": BTC, "time": None, "observed_seconds": 10.0, "two_sided_seconds": 0.0, "uptime": 0.0,
        "quotes": 0, "mean_spread": None, "mean_bid_distance": None, "mean_ask_distance": None,
        "quoted_amount": 0.0, "filled_amount": 0.0, "fill_ratio": None, "order_actions": 1, "fills": 0,
        "order_to_trade": None, "volume": 0.0, "mean_abs_position": None, "inventory_turnover": None,
    }
    assert second.record()["time"] == datetime(2025, 5, 18, 14, 35, tzinfo=timezone.utc)


def test_the_record_is_a_quote_quality_record():
    first, second = one_minute()
    for window in (first, second, QualityWindow(BTC, T0)):
        record = window.record()
        assert avro_round_trip("quote_quality", record) == record


def test_ratios_are_none_when_their_denominator_is_zero():
    empty = QualityWindow(BTC, T0).record()
    ratios = ["uptime", "mean_spread", "mean_bid_distance", "mean_ask_distance", "fill_ratio", "order_to_trade",
              "mean_abs_position", "inventory_turnover"]
    assert {name: empty[name] for name in ratios} == dict.fromkeys(ratios)
    # Flat all minute: the mean position is 0 and the turnover has no denominator.
    flat = QualityWindow(BTC, T0)
    flat.add_quote(quote([100_000.0], [100_100.0], 100_050.0, 0.0))
    flat.add_fill(fill(0.1))
    assert (flat.record()["mean_abs_position"], flat.record()["inventory_turnover"]) == (0.0, None)
    assert flat.record()["order_to_trade"] == 0.0 and flat.record()["fill_ratio"] is None


def test_non_finite_inputs_are_refused_by_the_window():
    window = QualityWindow(BTC, T0)
    with pytest.raises(ValueError, match="fair_value"):
        window.add_quote(quote([100_000.0], [100_100.0], math.nan, 0.0))
    with pytest.raises(ValueError, match="amount"):
        window.add_fill(fill(math.inf))
    with pytest.raises(ValueError, match="seconds"):
        window.add_interval(math.nan, True)
    with pytest.raises(ValueError, match="quoted_amount"):
        window.add_ack(SEQUENCE[0], math.inf)


def test_split_interval_across_minute_boundaries():
    assert split_interval(T0 + 50, T0 + 130) == [(T0, 10.0), (T0 + 60, 60.0), (T0 + 120, 10.0)]
    assert split_interval(T0 + 50, T0 + 55) == [(T0, 5.0)]
    # A boundary belongs to the window it starts: no empty piece either side of it.
    assert split_interval(T0, T0 + 60) == [(T0, 60.0)]
    assert split_interval(T0 + 60, T0 + 61) == [(T0 + 60, 1.0)]
    assert split_interval(T0 + 5, T0 + 5) == [] and split_interval(T0 + 5, T0 + 4) == []
    assert split_interval(T0 + 1, T0 + 11, size=5.0) == [(T0, 4.0), (T0 + 5, 5.0), (T0 + 10, 1.0)]
    # Where time / size rounds across a boundary, the window is still the one holding the time.
    # 211751.4 / 0.1 rounds up to the window starting just above it; 1065117.2 / 0.1 rounds down to the one before its own.
    for time in (211_751.4, 1_065_117.2):
        (window, seconds), *_ = split_interval(time, time + 0.05, size=0.1)
        assert window <= time and 0 < seconds <= 0.1
    with pytest.raises(ValueError):
        split_interval(math.nan, T0)
    with pytest.raises(ValueError):
        split_interval(T0, T0 + 1, size=0.0)


def avro_round_trip(folder: str, record: dict) -> dict:
    schema = fastavro.parse_schema(schemas.load(folder))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return fastavro.schemaless_reader(io.BytesIO(out.getvalue()), schema, schema)


def test_resting_quotes_round_trip_through_fastavro():
    book = RestingQuotes(BTC)
    for a in SEQUENCE[:6]:
        book.apply_ack(a)
    book.offsets.update(ack=41, quote=7)
    back = RestingQuotes.from_record(avro_round_trip("resting_quotes", book.to_record()))
    assert back == book and len(back.orders) == 2
    # The restored book goes on exactly as the original would.
    assert back.apply_ack(SEQUENCE[6]) == book.apply_ack(SEQUENCE[6])
    empty = RestingQuotes.from_record(avro_round_trip("resting_quotes", RestingQuotes("ETH-PERPETUAL").to_record()))
    assert empty == RestingQuotes("ETH-PERPETUAL") and empty.last_ack_time is None


def test_quality_window_round_trips_through_fastavro():
    first, _ = one_minute()
    first.offsets.update(ack=41, fill=3, quote=9)
    back = QualityWindow.from_record(avro_round_trip("quote_window", first.to_record()))
    assert back == first and back.record() == first.record()
    assert back.offsets == {"ack": 41, "fill": 3, "quote": 9}


def test_a_record_without_offsets_reads_as_none_applied():
    record = RestingQuotes(BTC).to_record()
    del record["offsets"]
    assert RestingQuotes.from_record(record).offsets == {}
    record = QualityWindow(BTC, T0).to_record()
    del record["offsets"]
    assert QualityWindow.from_record(record).offsets == {}
