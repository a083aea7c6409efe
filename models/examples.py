"""Realistic example values of every record, built from the examples in docs/thalex-protocol.md.

For tests, benchmarks and documentation. ``example(name)`` is a fresh value (a
plain dictionary, as fastavro reads and writes it) of the newest schema;
``example(name, version)`` is the same event as an older version's producer would
have written it (only that version's fields). Local stage stamps (docs/architecture.md#d9-latency-stamps) sit a
few milliseconds after the exchange times they follow, as they would in a run.
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from models import schemas


def _at(unix_seconds: float, after_ms: float = 0.0) -> datetime:
    """A local wall-clock stamp ``after_ms`` after an exchange time, at µs precision (timestamp-micros)."""
    micros = round(unix_seconds * 1_000_000 + after_ms * 1000)
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)


# docs/thalex-protocol.md §3.1: a BTC-PERPETUAL ticker (values CLB recorded from the venue).
_TICKER = {
    "instrument_name": "BTC-PERPETUAL",
    "mark_price": 104904.59553398524, "mark_timestamp": 1747578855.2247293, "delta": 1.0,
    "index": 104916.49833333334,
    "best_bid_price": 104901.0, "best_bid_amount": 0.028, "best_ask_price": 104940.0, "best_ask_amount": 0.3,
    "last_price": 104913.0, "iv": None, "forward": None,
    "volume_24h": 812.3, "value_24h": 85100000.0, "low_price_24h": 103500.0, "high_price_24h": 105800.0,
    "change_24h": 412.0, "collar_low": 99660.0, "collar_high": 110150.0, "open_interest": 3740.212,
    "funding_rate": 0.0, "funding_mark": 0.0123, "realised_funding_24h": 0.0, "average_funding_rate_24h": 0.0,
    "received_at": _at(1747578855.2247293, 3.1),
}

# docs/thalex-protocol.md §3.3: the book snapshot example; top of book as the local book shows it after applying it.
_BOOK = {
    "instrument_name": "BTC-PERPETUAL", "time": 1683901254.785744, "snapshot": True,
    "bid_changes": [{"price": 9120.5, "amount": 0.0, "outright_amount": 0.0},
                    {"price": 9121.0, "amount": 54.0, "outright_amount": 53.0}],
    "ask_changes": [{"price": 9125.0, "amount": 3.0, "outright_amount": 3.0}],
    "trades": [{"price": 9120.5, "amount": 15.0, "direction": "buy", "timestamp": 156789.103, "implied_taker": False}],
    "total_bid_amount": 45.0, "total_ask_amount": 30.0,
    "best_bid_price": 9121.0, "best_bid_amount": 54.0, "best_ask_price": 9125.0, "best_ask_amount": 3.0,
    "received_at": _at(1683901254.785744, 2.4),
}

# docs/thalex-protocol.md §3.5.
_INDEX = {
    "index_name": "BTCUSD", "price": 47389.10833333334, "timestamp": 946684800.0,
    "expiration_print_average": None, "expiration_progress": None, "expected_expiration_price": None,
    "previous_settlement_price": None,
    "received_at": _at(946684800.0, 1.7),
}

# docs/thalex-protocol.md §3.4: the recent_trades item [400, 1, "buy", 1652187265.515, "BTC-11MAY22-32400-C", false].
_TRADE = {
    "instrument_name": "BTC-11MAY22-32400-C", "price": 400.0, "amount": 1.0, "direction": "buy",
    "timestamp": 1652187265.515, "implied_taker": False,
    "received_at": _at(1652187265.515, 2.0),
}

# perp_quoter's ladder (docs/thalex-protocol.md §7.1) on the docs/thalex-protocol.md §3.1 ticker: index ± (25 + 5k) ticks, sizes 0.2 and 0.4.
_QUOTE = {
    "instrument_name": "BTC-PERPETUAL",
    "bids": [{"price": 104891.0, "amount": 0.2}, {"price": 104886.0, "amount": 0.4}],
    "asks": [{"price": 104941.0, "amount": 0.2}, {"price": 104946.0, "amount": 0.4}],
    "position": 0.0, "reason": "ticker",
    "fair_value": 104916.49833333334, "index": 104916.49833333334,
    "mark_price": 104904.59553398524, "mark_timestamp": 1747578855.2247293,
    "best_bid_price": 104901.0, "best_ask_price": 104940.0, "funding_rate": 0.0,
    "received_at": _at(1747578855.2247293, 3.1), "quoted_at": _at(1747578855.2247293, 3.2),
}

# docs/thalex-protocol.md §4.10: the partial-fill session.orders item.
_FILL_ITEM = {"trade_id": "0080000000000000169F22D05B785A2B", "price": 103855.0, "amount": 0.05,
              "maker_taker": "maker", "leg_index": 0, "time": 1747562215.2}
_ACK = {
    "order_id": "001F39C500000000", "order_type": "limit", "time_in_force": "good_till_cancelled",
    "direction": "buy", "amount": 0.2, "filled_amount": 0.05, "remaining_amount": 0.15,
    "status": "partially_filled", "fills": [_FILL_ITEM], "change_reason": "fill",
    "insert_reason": "client_request", "create_time": 1747562209.1035967, "persistent": False,
    "instrument_name": "BTC-PERPETUAL", "legs": None, "price": 103855.0, "label": None, "client_order_id": 100,
    "delete_reason": None, "conditional_order_id": None, "bot_id": None, "close_time": None, "reduce_only": None,
    # A maker fill of a resting order: the venue sent it unprompted, so no request stamps.
    "received_at": None, "quoted_at": None, "order_sent_at": None,
    "ack_received_at": _at(1747562215.2, 1.9),
}

# The fill of that update, with its order's context.
_FILL = {
    "trade_id": "0080000000000000169F22D05B785A2B", "order_id": "001F39C500000000",
    "instrument_name": "BTC-PERPETUAL", "direction": "buy", "maker_taker": "maker",
    "price": 103855.0, "amount": 0.05, "leg_index": 0, "client_order_id": 100, "time": 1747562215.2,
    "order_sent_at": None, "ack_received_at": _at(1747562215.2, 1.9),
}

# docs/thalex-protocol.md §4.11: the PortfolioEntry example.
_POSITION = {
    "instrument_name": "BTC-PERPETUAL", "position": 1.0, "mark_price": 47299.74,
    "iv": None, "index": None, "start_price": 47260.0, "average_price": 47260.0, "unrealised_pnl": 39.76,
    "realised_pnl": 0.0, "entry_value": 47260.0, "perpetual_funding_entry_value": -0.13040705,
    "unrealised_perpetual_funding": 0.0173,
    "received_at": _at(1630059868.4145653, 2.5),
}

# The quote stage of the docs/thalex-protocol.md §3.1 ticker: received 3.1 ms after the mark, quoted 100 µs later.
_LATENCY = {
    "stage": "received_to_quoted", "instrument_name": "BTC-PERPETUAL",
    "start_at": _at(1747578855.2247293, 3.1), "end_at": _at(1747578855.2247293, 3.2), "duration_us": 100,
    "received_at": _at(1747578855.2247293, 3.1), "quoted_at": _at(1747578855.2247293, 3.2),
    "order_sent_at": None, "ack_received_at": None, "persisted_at": None,
}

# The 5-second markout of that fill: the first ticker at or after 5 s later had mark 103861.2
# and a book of 103860.0 / 103861.0 (mid 103860.5). Positive: the buy gained.
_MARKOUT = {
    "trade_id": "0080000000000000169F22D05B785A2B", "order_id": "001F39C500000000",
    "instrument_name": "BTC-PERPETUAL", "direction": "buy", "maker_taker": "maker",
    "price": 103855.0, "amount": 0.05, "time": 1747562215.2, "horizon_seconds": 5,
    "mark_after": 103861.2, "markout_bps_mark": (103861.2 - 103855.0) / 103855.0 * 1e4,
    "markout_mark": (103861.2 - 103855.0) * 0.05,
    "mid_after": 103860.5, "markout_bps": (103860.5 - 103855.0) / 103855.0 * 1e4,
    "markout": (103860.5 - 103855.0) * 0.05,
}

# The minute after that fill, at a mark of 103861.2 (maker fee 0.01 %, no funding yet).
_PNL_SNAPSHOT = {
    "instrument_name": "BTC-PERPETUAL", "time": _at(1747562220.0),
    "position": 0.05, "average_price": 103855.0, "realized_pnl": 0.0,
    "fees_maker": 103855.0 * 0.05 * 0.0001, "fees_taker": 0.0, "volume": 0.05, "notional": 103855.0 * 0.05,
    "trades": 1,
    "unrealized_pnl": 0.05 * (103861.2 - 103855.0), "mark_price": 103861.2, "funding_pnl": None, "net_pnl": None,
}

# The minute of that fill: two-sided for 54 of the 58.5 s observed, 40 decisions with both sides.
_QUOTE_QUALITY = {
    "instrument_name": "BTC-PERPETUAL", "time": _at(1747562160.0),
    "observed_seconds": 58.5, "two_sided_seconds": 54.0, "quotes": 40, "quoted_amount": 1.6,
    "filled_amount": 0.05, "order_actions": 24, "fills": 1, "volume": 0.05,
    "uptime": 54.0 / 58.5, "mean_spread": 50.0, "mean_bid_distance": 25.0, "mean_ask_distance": 25.0,
    "fill_ratio": 0.05 / 1.6, "order_to_trade": 24.0, "mean_abs_position": 0.025, "inventory_turnover": 2.0,
}

_HEARTBEAT = {"source": "worker-1:4242", "sequence": 17, "sent_at": _at(1747578855.0)}

# A ticker whose mark price broke the tickers table's positive_float8 domain, as the sink
# dead-letters it: the source coordinates, the raw bytes (Confluent framing, schema id 1,
# the first bytes of the Avro body) and the database's error.
_DEAD_LETTER = {
    "source_topic": "cryptics.thalex.ticker.avro", "source_partition": 2, "source_offset": 1577,
    "key": b"BTC-PERPETUAL",
    "value": b"\x00\x00\x00\x00\x01\x1aBTC-PERPETUAL\x00\x00\x00\x00\x00\x00\xf0\xbf",
    "stage": "database",
    "error": 'CheckViolationError: value for domain positive_float8 violates check constraint "positive_float8_check"',
    "target_table": "tickers",
    "failed_at": _at(1747578855.2247293, 250.0),
}

_EXAMPLES: dict[str, dict[str, Any]] = {
    "heartbeat": _HEARTBEAT, "ticker": _TICKER, "book": _BOOK, "index": _INDEX, "trade": _TRADE,
    "quote": _QUOTE, "ack": _ACK, "fill": _FILL, "position": _POSITION, "latency": _LATENCY,
    "dead_letter": _DEAD_LETTER, "markout": _MARKOUT, "pnl_snapshot": _PNL_SNAPSHOT,
    "quote_quality": _QUOTE_QUALITY,
}


def names() -> list[str]:
    return list(_EXAMPLES)


def example(record: str, version: Optional[int] = None) -> dict[str, Any]:
    """A fresh example of ``record`` with exactly the top-level fields of ``version`` (default: newest)."""
    fields = [f["name"] for f in schemas.load(record, version)["fields"]]
    value = _EXAMPLES[record]
    return {name: copy.deepcopy(value[name]) for name in fields}


def book_with_levels(levels: int = 10, instrument: str = "BTC-PERPETUAL") -> dict[str, Any]:
    """A book snapshot with ``levels`` levels per side around 104,920 (tick 1), and one trade."""
    time = 1747578855.2247293
    bids = [{"price": 104919.0 - i, "amount": round(0.1 + 0.05 * i, 3), "outright_amount": round(0.1 + 0.05 * i, 3)}
            for i in range(levels)]
    asks = [{"price": 104921.0 + i, "amount": round(0.12 + 0.04 * i, 3), "outright_amount": round(0.12 + 0.04 * i, 3)}
            for i in range(levels)]
    value = example("book")
    value.update(
        instrument_name=instrument, time=time, snapshot=True, bid_changes=bids, ask_changes=asks,
        trades=[{"price": 104920.0, "amount": 0.2, "direction": "sell", "timestamp": time - 0.4,
                 "implied_taker": False}],
        total_bid_amount=round(sum(b["amount"] for b in bids), 3),
        total_ask_amount=round(sum(a["amount"] for a in asks), 3),
        best_bid_price=bids[0]["price"] if bids else None, best_bid_amount=bids[0]["amount"] if bids else None,
        best_ask_price=asks[0]["price"] if asks else None, best_ask_amount=asks[0]["amount"] if asks else None,
        received_at=_at(time, 2.4),
    )
    return value
