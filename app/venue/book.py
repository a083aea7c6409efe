"""A price-time priority limit order book for one instrument.

Each side maps a price (in ticks) to its level: a dict of the resting orders by
order id. Python dicts keep insertion order, so a level is a FIFO queue that also
removes any order in O(1). A sorted list of the side's prices gives the best
price (last bid, first ask). Matching itself lives in the engine, which walks the
levels this class exposes; the book only stores and orders.
"""
from __future__ import annotations

import bisect
from typing import Iterator, Optional

from app.venue.orders import BUY, Order


class OrderBook:
    __slots__ = ("bids", "asks", "bid_prices", "ask_prices")

    def __init__(self) -> None:
        self.bids: dict[int, dict[str, Order]] = {}
        self.asks: dict[int, dict[str, Order]] = {}
        #: Ascending, so the best bid is the last element and the best ask the first.
        self.bid_prices: list[int] = []
        self.ask_prices: list[int] = []

    def _side(self, direction: int) -> tuple[dict[int, dict[str, Order]], list[int]]:
        return (self.bids, self.bid_prices) if direction == BUY else (self.asks, self.ask_prices)

    def add(self, order: Order) -> None:
        """Queue ``order`` at the back of its price level."""
        levels, prices = self._side(order.direction)
        level = levels.get(order.ticks)
        if level is None:
            level = levels[order.ticks] = {}
            bisect.insort(prices, order.ticks)
        level[order.order_id] = order

    def remove(self, order: Order) -> None:
        levels, prices = self._side(order.direction)
        level = levels.get(order.ticks)
        if level is None or level.pop(order.order_id, None) is None:
            return
        if not level:
            del levels[order.ticks]
            del prices[bisect.bisect_left(prices, order.ticks)]

    def contains(self, order: Order) -> bool:
        levels, _ = self._side(order.direction)
        level = levels.get(order.ticks)
        return level is not None and order.order_id in level

    def best_bid(self) -> Optional[int]:
        return self.bid_prices[-1] if self.bid_prices else None

    def best_ask(self) -> Optional[int]:
        return self.ask_prices[0] if self.ask_prices else None

    def best(self, direction: int) -> Optional[int]:
        return self.best_bid() if direction == BUY else self.best_ask()

    def level(self, direction: int, ticks: int) -> dict[str, Order]:
        levels, _ = self._side(direction)
        return levels.get(ticks, {})

    def level_units(self, direction: int, ticks: int) -> int:
        return sum(o.remaining for o in self.level(direction, ticks).values())

    def levels(self, direction: int) -> Iterator[tuple[int, dict[str, Order]]]:
        """(price, orders) from the best price outwards. Do not modify the book while iterating."""
        levels, prices = self._side(direction)
        ordered = reversed(prices) if direction == BUY else iter(prices)
        for ticks in ordered:
            yield ticks, levels[ticks]

    def depth(self, direction: int, max_levels: Optional[int] = None) -> list[tuple[int, int]]:
        """[(price, total remaining units)] from the best price outwards."""
        out = []
        for ticks, level in self.levels(direction):
            out.append((ticks, sum(o.remaining for o in level.values())))
            if max_levels is not None and len(out) >= max_levels:
                break
        return out

    def orders(self) -> Iterator[Order]:
        for levels in (self.bids, self.asks):
            for level in levels.values():
                yield from level.values()

    def crossed(self) -> bool:
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid >= ask
