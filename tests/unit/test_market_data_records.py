"""Building records and the quote agent's market events from venue payloads: exchange fields
as sent, clear errors for bad input."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from agents.market_data import MarketEvent, index_event, index_value, position_records, ticker_event, ticker_value
from models.market import BookUpdate, IndexPrice, Ticker

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
TICKER = {"best_bid_price": 104901.0, "best_bid_amount": 0.028, "best_ask_price": 104940.0, "best_ask_amount": 0.3,
          "last_price": 104913.0, "mark_price": 104904.59553398524, "mark_timestamp": 1747578855.2247293,
          "delta": 1, "index": 104916.49833333334, "funding_rate": 0.0, "open_interest": 3740.212,
          "some_future_field": "ignored"}


def ticker_record(instrument: str, payload, received_at: datetime) -> Ticker:
    """The ticker topic's value as a consumer reads it back (the model)."""
    return Ticker.from_data(ticker_value(instrument, payload, received_at))


def index_record(payload, received_at: datetime) -> IndexPrice:
    return IndexPrice.from_data(index_value(payload, received_at))


def test_ticker_record_keeps_the_exchange_fields():
    record = ticker_record("BTC-PERPETUAL", TICKER, NOW)
    assert record.instrument_name == "BTC-PERPETUAL" and record.mark_price == 104904.59553398524
    assert record.delta == 1.0 and isinstance(record.delta, float)
    assert record.best_bid_price == 104901.0 and record.iv is None and record.received_at == NOW


@pytest.mark.parametrize("change,error", [
    ({"mark_price": None}, TypeError), ({"mark_price": "104904"}, TypeError), ({"mark_price": True}, TypeError),
    ({"best_bid_price": "x"}, TypeError),
])
def test_ticker_wrong_types_are_errors(change, error):
    with pytest.raises(error, match="must be a number"):
        ticker_record("BTC-PERPETUAL", {**TICKER, **change}, NOW)


def test_ticker_missing_required_field_is_an_error():
    payload = dict(TICKER)
    del payload["index"]
    with pytest.raises(KeyError, match="index"):
        ticker_record("BTC-PERPETUAL", payload, NOW)
    with pytest.raises(TypeError, match="must be an object"):
        ticker_record("BTC-PERPETUAL", [1, 2], NOW)


def test_index_record():
    record = index_record({"index_name": "BTCUSD", "price": 47389.1, "timestamp": 946684800}, NOW)
    assert (record.index_name, record.price, record.timestamp) == ("BTCUSD", 47389.1, 946684800.0)
    with pytest.raises(TypeError, match="index_name"):
        index_record({"index_name": 7, "price": 1.0, "timestamp": 1.0}, NOW)


def test_position_records():
    entries = [{"instrument_name": "BTC-PERPETUAL", "position": 1, "mark_price": 47299.74, "start_price": 47260,
                "average_price": 47260, "unrealised_pnl": 39.76, "realised_pnl": 0}]
    (record,) = position_records(entries, NOW)
    assert record.position == 1.0 and record.unrealised_pnl == 39.76 and record.iv is None
    assert position_records([], NOW) == []
    with pytest.raises(TypeError, match="instrument_name"):
        position_records([{"position": 1}], NOW)


def test_market_events_carry_what_the_records_carry():
    """The hot path reads events built from the payload; the Kafka path reads them off the
    records (MarketEvent.of): both must give the quote agent the same numbers."""
    event = ticker_event("BTC-PERPETUAL", TICKER, NOW)
    assert (event.kind, event.name, event.received_at) == ("ticker", "BTC-PERPETUAL", NOW)
    assert (event.mark, event.mark_timestamp, event.index, event.funding_rate) == (
        104904.59553398524, 1747578855.2247293, 104916.49833333334, 0.0)
    assert MarketEvent.of(ticker_record("BTC-PERPETUAL", TICKER, NOW)) == event

    index = {"index_name": "BTCUSD", "price": 47389.1, "timestamp": 946684800}
    assert index_event(index, NOW) == MarketEvent("index", "BTCUSD", NOW, index=47389.1)
    assert MarketEvent.of(index_record(index, NOW)) == index_event(index, NOW)

    book = BookUpdate(instrument_name="BTC-PERPETUAL", time=1.0, snapshot=False, bid_changes=[], ask_changes=[],
                      best_bid_price=99.5, best_ask_price=None, received_at=NOW)
    from_book = MarketEvent.of(book)
    assert from_book.kind == "book" and from_book.best_bid == 99.5 and math.isnan(from_book.best_ask)


def test_market_events_reject_what_the_records_reject():
    with pytest.raises(TypeError, match="must be a number"):
        ticker_event("BTC-PERPETUAL", {**TICKER, "mark_price": "1"}, NOW)
    with pytest.raises(TypeError, match="must be an object"):
        ticker_event("BTC-PERPETUAL", [1], NOW)
    with pytest.raises(TypeError, match="index_name"):
        index_event({"index_name": 7, "price": 1.0}, NOW)
    with pytest.raises(KeyError, match="price"):
        index_event({"index_name": "BTCUSD"}, NOW)


def test_the_kafka_values_are_records_of_their_schemas():
    """The source produces plain dictionaries (cheaper than Faust records): each must be a valid
    value of its topic's newest schema, and read back as the same model the consumers use."""
    import fastavro

    from agents.market_data import _book_trades, book_value, index_value, ticker_value, trade_value
    from models.registry import record

    book = {"time": 1747578855.5, "bid_changes": [[104901.0, 0.5, 0.5]], "ask_changes": [[104940, 0.3]],
            "trades": [[104913.0, 0.1, "sell", 1747578855.4, True]], "total_bid_amount": 12.5}
    trades = _book_trades(book["trades"])
    index = {"index_name": "BTCUSD", "price": 47389.1, "timestamp": 946684800}
    values = {
        "ticker": ticker_value("BTC-PERPETUAL", TICKER, NOW),
        "index": index_value(index, NOW),
        "book": book_value("BTC-PERPETUAL", book, False, trades, (104901.0, 0.5), (104940.0, 0.3), NOW),
        "trade": trade_value("BTC-PERPETUAL", trades[0], NOW),
    }
    for name, value in values.items():
        assert fastavro.validate(value, fastavro.parse_schema(record(name).schema), raise_errors=True)
    ticker = record("ticker").model.from_data(values["ticker"])
    assert (ticker.instrument_name, ticker.mark_price, ticker.iv, ticker.received_at) == (
        "BTC-PERPETUAL", TICKER["mark_price"], None, NOW)
    price = record("index").model.from_data(values["index"])
    assert (price.index_name, price.price, price.timestamp, price.received_at) == ("BTCUSD", 47389.1, 946684800.0, NOW)
    update = record("book").model.from_data(values["book"])
    assert update.ask_changes[0].outright_amount == 0.3 and update.trades[0].direction == "sell"
    assert (update.best_bid_price, update.best_ask_amount, update.total_bid_amount) == (104901.0, 0.3, 12.5)
    assert values["trade"] == {"instrument_name": "BTC-PERPETUAL", "price": 104913.0, "amount": 0.1,
                               "direction": "sell", "timestamp": 1747578855.4, "implied_taker": True,
                               "received_at": NOW}
