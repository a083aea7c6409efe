"""What the engine shows: the answers to queries and the payloads of the channels.

``Reports`` reads the engine's state (state.py) and changes nothing in it:
- an account's open orders, portfolio and account summary (docs/thalex-protocol.md §4.8,
  docs/thalex-protocol.md §4.9), and its trade history with filters and paging;
- an instrument's ticker, lwt (lightweight ticker) and top of book, and an underlying's
  index (docs/thalex-protocol.md §3.1–3.5); the 24 h figures come from marks.py.
"""
from __future__ import annotations

from typing import Any

from app.exchange.protocol import INVALID_REQUEST, UNKNOWN_UNDERLYING
from app.venue.accounts import Position
from app.venue.errors import VenueError
from app.venue.orders import BUY, SELL
from app.venue.state import EngineState


class Reports(EngineState):
    """Open orders, portfolio, account summary, trade history; tickers, books and indices."""

    # -- accounts ----------------------------------------------------------------------------

    def open_orders(self, account: str) -> list[dict]:
        return [o.status("existing", o.fills) for o in self.orders.values() if o.account == account]

    def session_open_orders(self, session: int) -> list[dict]:
        return [o.status("existing", o.fills) for o in self.session_orders.get(session, {}).values()]

    def portfolio_entry(self, pos: Position) -> dict:
        ins = pos.instrument
        market = self.markets[ins.instrument_name]
        return {
            "instrument_name": ins.instrument_name,
            "position": ins.amount(pos.units),
            "mark_price": market.mark,
            "index": market.index,
            # No daily settlement in the simulation: start_price stays the entry price.
            "start_price": pos.average_price,
            "average_price": pos.average_price,
            "unrealised_pnl": pos.unrealised_pnl(market.mark),
            "realised_pnl": pos.realised_pnl,
            "entry_value": pos.contracts * pos.average_price,
            "perpetual_funding_entry_value": pos.contracts * pos.funding_entry,
            "unrealised_perpetual_funding": pos.unrealised_funding(market.funding_mark),
        }

    def portfolio(self, account: str) -> list[dict]:
        acc = self.account(account)
        return [self.portfolio_entry(p) for p in acc.positions.values() if p.units != 0]

    def account_summary(self, account: str) -> dict:
        acc = self.account(account)
        unrealised = 0.0
        required = 0.0
        for pos in acc.positions.values():
            market = self.markets[pos.instrument.instrument_name]
            unrealised += pos.unrealised_pnl(market.mark) + pos.unrealised_funding(market.funding_mark)
            required += abs(pos.contracts) * market.mark * self.config.margin_rate
        realised = acc.realised()
        balance = acc.cash + realised
        margin = balance + unrealised
        return {
            "unrealised_pnl": unrealised,
            "cash_collateral": balance,
            "margin": margin,
            "required_margin": required,
            "remaining_margin": margin - required,
            "session_realised_pnl": realised,
            "cash": [{"currency": "USD", "balance": balance, "collateral_factor": 1.0,
                      "collateral_index_price": None, "transactable": True}],
        }

    def trade_history(self, account: str, params: dict) -> dict:
        """private/trade_history: filters and paging as in docs/thalex-protocol.md §4.8; the bookmark is an opaque offset."""
        trades = self.account(account).trades
        time_low = params.get("time_low")
        time_high = params.get("time_high")
        names = params.get("instrument_names")
        order_ids = params.get("order_ids")
        direction = params.get("direction")
        label = params.get("label")
        if isinstance(names, str):
            names = names.split(",")
        if isinstance(order_ids, str):
            order_ids = order_ids.split(",")
        selected = [
            t for t in trades
            if (time_low is None or t["time"] >= time_low) and (time_high is None or t["time"] <= time_high)
            and (names is None or t["instrument_name"] in names) and (order_ids is None or t["order_id"] in order_ids)
            and (direction is None or t["direction"] == direction) and (label is None or t.get("label") == label)
        ]
        sort = params.get("sort", "descending")
        if sort not in ("ascending", "descending"):
            raise VenueError(INVALID_REQUEST, "sort must be ascending or descending")
        if sort == "descending":
            selected.reverse()
        limit = params.get("limit", 100)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise VenueError(INVALID_REQUEST, "limit must be an integer from 1 to 1000")
        bookmark = params.get("bookmark")
        try:
            start = int(bookmark) if bookmark is not None else 0
        except (TypeError, ValueError):
            raise VenueError(INVALID_REQUEST, "invalid bookmark") from None
        page = selected[start:start + limit]
        out: dict = {"trades": page}
        if start + limit < len(selected):
            out["bookmark"] = str(start + limit)
        return out

    # -- market data -------------------------------------------------------------------------

    def ticker(self, name: str) -> dict:
        ins = self.instruments[name]
        book = self.books[name]
        market = self.markets[name]
        bid, ask = book.best_bid(), book.best_ask()
        low, high = self.collars(name)
        realised_funding, average_funding = market.funding_24h()
        if market.trades_24h:
            low_24h, high_24h = market.low_24h[0][1], market.high_24h[0][1]
            change = market.trades_24h[-1][1] - market.trades_24h[0][1]
        else:
            low_24h = high_24h = None
            change = None
        out = {
            "best_bid_price": ins.price(bid) if bid is not None else None,
            "best_bid_amount": ins.amount(book.level_units(BUY, bid)) if bid is not None else None,
            "best_ask_price": ins.price(ask) if ask is not None else None,
            "best_ask_amount": ins.amount(book.level_units(SELL, ask)) if ask is not None else None,
            "last_price": ins.price(market.last_ticks) if market.last_ticks is not None else None,
            "mark_price": market.mark,
            "mark_timestamp": market.mark_time,
            "delta": 1,
            "index": market.index,
            "volume_24h": ins.amount(market.volume_24h),
            "value_24h": market.value_24h,
            "change_24h": change,
            "collar_low": low,
            "collar_high": high,
            "open_interest": ins.amount(market.open_interest_units),
            "funding_rate": market.funding_rate,
            "funding_mark": market.funding_mark,
            "realised_funding_24h": realised_funding,
            "average_funding_rate_24h": average_funding,
        }
        if low_24h is not None:
            out["low_price_24h"] = low_24h
            out["high_price_24h"] = high_24h
        return out

    def lwt(self, name: str) -> dict:
        ins = self.instruments[name]
        book = self.books[name]
        market = self.markets[name]
        out: dict = {"m": market.mark}
        bid, ask = book.best_bid(), book.best_ask()
        if bid is not None:
            units = ins.amount(book.level_units(BUY, bid))
            out["b"] = [ins.price(bid), units, units]
        if ask is not None:
            units = ins.amount(book.level_units(SELL, ask))
            out["a"] = [ins.price(ask), units, units]
        if market.last_ticks is not None:
            out["l"] = ins.price(market.last_ticks)
        return out

    def public_book(self, name: str, levels: int = 5) -> dict:
        """public/book: up to 5 levels a side, [price, amount, outright_amount]."""
        ins = self.instruments[name]
        book = self.books[name]
        market = self.markets[name]

        def side(direction: int) -> list[list[float]]:
            return [[ins.price(t), ins.amount(u), ins.amount(u)] for t, u in book.depth(direction, levels)]

        return {
            "bids": side(BUY),
            "asks": side(SELL),
            "last": ins.price(market.last_ticks) if market.last_ticks is not None else None,
            "time": market.book_time,
        }

    def index(self, underlying: Any) -> dict:
        instruments = self.underlyings.get(underlying) if isinstance(underlying, str) else None
        if not instruments:
            raise VenueError(UNKNOWN_UNDERLYING, f"unknown underlying {underlying!r}")
        market = self.markets[instruments[0].instrument_name]
        return {"index_name": underlying, "price": market.index, "timestamp": self.index_time}
