"""The backtest's venue: the recorded book, our orders in it with their queue position, and their fills.

Contract
- ``MatchingModel`` holds the recorded market book (full depth, or the top when the
  recording has only ``book_tops``) and our resting orders; it has no socket and no clock of
  its own: the replay (app/backtest/replay.py) calls it at exchange time.
- the market's book comes from the recording only: our orders are not added to it (the
  recording is the market without us; a recording of a session of ours holds our own
  orders too, which the report's fidelity caveats say).
- ``insert``/``amend``/``cancel`` answer as the venue would (docs/thalex-protocol.md §4):
  a post-only order that would cross the recorded book is cancelled at once
  (``delete_reason`` ``immediate_cancel``, as the simulated venue does, app/venue/matching.py);
  an amend or cancel of an order no longer resting is error 1 (order not found).
- queue position: an order joins behind the amount the book shows at its price when it
  arrives (an amend that moves the price or raises the amount joins again at the back; one
  that only lowers the amount keeps its place). Then:
  - ``trade`` at our price by a taker of the other side first uses up the amount ahead of
    us, then fills us; a trade through our price (a taker sell below our bid, a buy above our
    ask) fills all that is left of us: the taker must have passed our level;
  - the level shrinking in a book update by more than the trades at that price since the
    last update is cancellations: ``ConservativeQueue`` assumes none was ahead of us (only
    the rule that no more can be ahead of us than the level shows), ``ProbabilisticQueue``
    moves us up by the share of them it expects ahead of us, ``f(ahead) / (f(ahead) +
    f(behind))`` with ``f(x) = x ** power`` (the idea of hftbacktest's probability queue
    models; power 2 by default: cancellations come more from the back of a long queue).
- fills are maker fills at our price (we only send post-only orders).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

#: Amounts below this are nothing (float residue of subtractions).
EPSILON = 1e-9


class ConservativeQueue:
    """Cancellations never move us up; only trades at our price do."""

    name = "conservative"

    def cancelled_ahead(self, cancelled: float, ahead: float, depth_before: float) -> float:
        return 0.0


class ProbabilisticQueue:
    """A share of each cancellation at our level was ahead of us: ``f(ahead) / (f(ahead) + f(behind))``."""

    name = "probabilistic"

    def __init__(self, power: float = 2.0) -> None:
        self.power = power

    def cancelled_ahead(self, cancelled: float, ahead: float, depth_before: float) -> float:
        behind = max(0.0, depth_before - ahead)
        front, back = ahead ** self.power, behind ** self.power
        if front + back <= 0:
            return 0.0
        return cancelled * front / (front + back)


QUEUE_MODELS = {"conservative": ConservativeQueue, "probabilistic": ProbabilisticQueue}


def queue_model(name: str):
    try:
        return QUEUE_MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown queue model {name!r}: one of {', '.join(QUEUE_MODELS)}") from None


@dataclass(slots=True)
class SimOrder:
    """One of our orders at the simulated venue."""

    order_id: str
    client_order_id: Optional[int]
    instrument: str
    direction: str  # buy | sell
    price: float
    amount: float
    create_time: float
    label: str
    filled: float = 0.0
    #: Market amount ahead of us at our price.
    ahead: float = 0.0
    status: str = "open"
    delete_reason: Optional[str] = None
    fills: list = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return max(0.0, self.amount - self.filled)


def _apply_levels(book: dict[float, float], levels: list, snapshot: bool, best: float, bid: bool) -> float:
    """One side's levels of a book update applied to ``book`` (the bids if ``bid``, else the
    asks); returns the side's new best price, NaN when the side is empty."""
    if snapshot:
        book.clear()
        best = math.nan
    stale = False
    for price, amount in levels:
        if amount > 0:
            book[price] = amount
            # A plain comparison, not max()/min(): a builtin's call costs more on this hot path.
            if not (price <= best if bid else price >= best):  # also when best is NaN
                best = price
        elif book.pop(price, None) is not None and price == best:
            stale = True  # the best level left: the next one is found below
    if stale:
        return (max(book) if bid else min(book)) if book else math.nan
    return best


class MatchingModel:
    """Recorded book + our orders + queue positions; fills from the recorded trades."""

    def __init__(self, queue, instrument: str) -> None:
        self.queue = queue
        self.instrument = instrument
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.best_bid = math.nan
        self.best_ask = math.nan
        #: Our resting orders by order_id.
        self.orders: dict[str, SimOrder] = {}
        #: (side "buy"/"sell" of the resting book, price) → amount traded there since the last update.
        self._traded: dict[tuple[str, float], float] = {}
        self._ids = 0
        self._trades = 0

    # -- the recorded market -------------------------------------------------------------------

    def book(self, snapshot: bool, bids: list, asks: list) -> None:
        """One book update (a snapshot replaces the book; amount 0 removes a level)."""
        orders, bid_book, ask_book = self.orders, self.bids, self.asks
        # The depth at each of our prices before the update: what the queue models compare.
        before = [(order, (bid_book if order.direction == "buy" else ask_book).get(order.price, 0.0))
                  for order in orders.values()] if orders else ()
        self.best_bid = _apply_levels(bid_book, bids, snapshot, self.best_bid, True)
        self.best_ask = _apply_levels(ask_book, asks, snapshot, self.best_ask, False)
        for order, depth_before in before:
            depth_after = (bid_book if order.direction == "buy" else ask_book).get(order.price, 0.0)
            if depth_after != depth_before or order.ahead > depth_after:
                self._level_changed(order, depth_before, depth_after)
        if self._traded:
            self._traded.clear()

    def _level_changed(self, order: SimOrder, depth_before: float, depth_after: float) -> None:
        shrunk = depth_before - depth_after
        if shrunk > EPSILON:
            traded = self._traded.get((order.direction, order.price), 0.0)
            cancelled = max(0.0, shrunk - traded)
            if cancelled > EPSILON:
                order.ahead -= self.queue.cancelled_ahead(cancelled, order.ahead, depth_before)
        # No more can be ahead of us than the level shows.
        order.ahead = max(0.0, min(order.ahead, depth_after))

    def trade(self, time: float, price: float, amount: float, taker_direction: str) -> list[tuple[SimOrder, float]]:
        """One public trade; ``(order, amount)`` of each of our orders it fills."""
        resting_side = "buy" if taker_direction == "sell" else "sell"
        key = (resting_side, price)
        self._traded[key] = self._traded.get(key, 0.0) + amount
        fills = []
        if not self.orders:
            return fills
        for order in list(self.orders.values()):
            if order.direction != resting_side:
                continue
            through = price < order.price if resting_side == "buy" else price > order.price
            if through:
                filled = order.remaining
            elif price == order.price:
                reaching = amount - order.ahead
                order.ahead = max(0.0, order.ahead - amount)
                filled = min(order.remaining, reaching) if reaching > EPSILON else 0.0
            else:
                continue
            if filled > EPSILON:
                fills.append((order, self._fill(order, filled, time)))
        return fills

    def _fill(self, order: SimOrder, amount: float, time: float) -> float:
        self._trades += 1
        order.filled = round(order.filled + amount, 12)
        order.fills.append({"trade_id": f"bt-{self._trades}", "price": order.price, "amount": amount,
                            "maker_taker": "maker", "time": time})
        if order.remaining <= EPSILON:
            order.status = "filled"
            order.delete_reason = "filled"
            del self.orders[order.order_id]
        else:
            order.status = "partially_filled"
        return amount

    # -- our requests ----------------------------------------------------------------------

    def _crosses(self, direction: str, price: float) -> bool:
        if direction == "buy":
            return not math.isnan(self.best_ask) and price >= self.best_ask
        return not math.isnan(self.best_bid) and price <= self.best_bid

    def _depth(self, direction: str, price: float) -> float:
        return (self.bids if direction == "buy" else self.asks).get(price, 0.0)

    def insert(self, time: float, client_order_id: Optional[int], direction: str, price: float, amount: float,
               label: str) -> SimOrder:
        self._ids += 1
        order = SimOrder(f"bt-order-{self._ids}", client_order_id, self.instrument, direction, price, amount,
                         time, label)
        if self._crosses(direction, price):
            order.status, order.delete_reason = "cancelled", "immediate_cancel"
            return order
        order.ahead = self._depth(direction, price)
        self.orders[order.order_id] = order
        return order

    def amend(self, order_id: str, price: float, amount: float) -> Optional[SimOrder]:
        """The amended order, or None if it no longer rests (error 1)."""
        order = self.orders.get(order_id)
        if order is None:
            return None
        if amount <= order.filled + EPSILON:
            order.status, order.delete_reason = "filled" if order.filled else "cancelled", "amended_away"
            del self.orders[order_id]
            return order
        if self._crosses(order.direction, price):
            order.status = "cancelled_partially_filled" if order.filled else "cancelled"
            order.delete_reason = "immediate_cancel"
            del self.orders[order_id]
            return order
        if price != order.price or amount > order.amount + EPSILON:
            order.ahead = self._depth(order.direction, price)  # the back of the queue
        order.price, order.amount = price, amount
        return order

    def cancel(self, order_id: str) -> Optional[SimOrder]:
        order = self.orders.pop(order_id, None)
        if order is None:
            return None
        order.status = "cancelled_partially_filled" if order.filled else "cancelled"
        order.delete_reason = "client_cancel"
        return order

    def resting(self, direction: str) -> Optional[float]:
        """Our best resting price on a side, None without an order there."""
        prices = [o.price for o in self.orders.values() if o.direction == direction]
        if not prices:
            return None
        return max(prices) if direction == "buy" else min(prices)
