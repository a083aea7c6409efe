"""The gateway's mass-quote mode over a model venue, for tests of its pre-trade check.

``MassQuoteHarness`` is the gateway's own tracker, position keeper and MassQuoteMode for
one instrument (bids only: the sell side is the mirror image), over any client with
``send_request``. ``ModelVenue`` is such a client: it keeps the requests it was sent, and
what it writes back (answers, then session.orders reports) goes through one ordered lane,
as on a websocket; the test decides when the venue reads a request, when the gateway reads
the next frame, and when a taker fills a resting quote. It follows the venue's rules that
matter here (docs/thalex-protocol.md §4.7): a mass quote replaces the side at once, keeping a
quote whose price and remaining amount are asked for again; the answer comes before the
report.
"""
from __future__ import annotations

import asyncio
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any, Optional

from app.exchange.rate_limit import TokenBucket
from app.gateway.context import GatewayContext
from app.gateway.mass_quote import MassQuoteMode
from app.gateway.params import GatewayParams
from app.gateway.tracker import OrderTracker
from app.trading.position import PositionKeeper

BTC, PRODUCT, TICK, LIMIT = "BTC-PERPETUAL", "FBTC", 1.0, 1.0


async def settle() -> None:
    """Let the tasks awaiting answers that were just set run to their end."""
    for _ in range(10):
        await asyncio.sleep(0)


def status(order_id: str, price: float, amount: float, filled: float, state: str, **extra: Any) -> dict:
    """One session.orders entry of a bid quote."""
    return {"instrument_name": BTC, "direction": "buy", "client_order_id": None, "order_type": "limit",
            "time_in_force": "good_till_cancelled", "order_id": order_id, "price": price, "amount": amount,
            "filled_amount": filled, "remaining_amount": round(amount - filled, 10), "status": state, **extra}


class MassQuoteHarness:
    def __init__(self, client: Any, position: float = 0.0) -> None:
        self.client = client
        self.positions = PositionKeeper()
        if position:
            self.positions.add_fill(BTC, "buy", position, 100.0)
        stats: dict[str, Any] = defaultdict(int)
        stats["errors_by_code"] = Counter()
        self.context = GatewayContext(client, GatewayParams(), lambda: 0.0, stats,
                                      TokenBucket(1000.0, 0.0), TokenBucket(1000.0, 0.0))
        self.tracker = OrderTracker(self.context, self.positions)
        self.mode = MassQuoteMode(self.context, self.tracker, {BTC: PRODUCT})

    def quote(self, bids: list[list[float]]):
        return self.mode.reconcile(BTC, TICK, bids, [], None, LIMIT, self.positions.position(BTC))

    def report(self, entry: dict) -> None:
        self.tracker.on_status(entry)


@dataclass
class Quote:
    order_id: str
    price: float
    amount: float
    filled: float = 0.0

    @property
    def remaining(self) -> float:
        return round(self.amount - self.filled, 10)


class ModelVenue:
    """A client of one account (see the module's doc); ``position`` is the venue's truth."""

    def __init__(self, position: float = 0.0) -> None:
        self.position = position
        self.quotes: list[Quote] = []
        self.inbox: deque[tuple[str, dict, asyncio.Future]] = deque()
        #: Every request sent, in order.
        self.sent: list[tuple[str, dict, asyncio.Future]] = []
        #: ("answer", future, result) or ("report", [status, ...]), in the order written.
        self.lane: deque[tuple] = deque()
        self.harness: Optional[MassQuoteHarness] = None
        self._ids = 0

    def send_request(self, method: str, params: dict) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.inbox.append((method, params, future))
        self.sent.append((method, params, future))
        return future

    def read_request(self) -> None:
        """The venue reads and carries out the oldest request; its answer, then its report."""
        method, params, future = self.inbox.popleft()
        if method != "private/mass_quote":
            self.lane.append(("answer", future, None))
            return
        item = params["quotes"][0]
        if "b" not in item:
            self.lane.append(("answer", future, {"n_success": 0, "n_fail": 0, "errors": []}))
            return
        wanted = {price: amount for price, amount in item["b"]}
        report, kept = [], []
        for quote in self.quotes:
            if wanted.get(quote.price) == quote.remaining:
                del wanted[quote.price]
                kept.append(quote)
            else:
                report.append(status(quote.order_id, quote.price, quote.amount, quote.filled, "cancelled",
                                     delete_reason="replaced"))
        self.quotes = kept
        for price, amount in wanted.items():
            self._ids += 1
            quote = Quote(f"q{self._ids}", price, amount)
            self.quotes.append(quote)
            report.append(status(quote.order_id, price, amount, 0.0, "open"))
        self.lane.append(("answer", future, {"n_success": len(item["b"]), "n_fail": 0, "errors": []}))
        self.lane.append(("report", report))

    def fill(self, index: int, share: float) -> None:
        """A taker hits the resting quote ``index`` (modulo) for ``share`` of what remains."""
        if not self.quotes:
            return
        quote = self.quotes[index % len(self.quotes)]
        amount = round(max(0.1, round(quote.remaining * share, 1)), 10)
        amount = min(amount, quote.remaining)
        quote.filled = round(quote.filled + amount, 10)
        self.position = round(self.position + amount, 10)
        self._ids += 1
        state = "filled" if quote.remaining <= 0 else "partially_filled"
        self.lane.append(("report", [status(quote.order_id, quote.price, quote.amount, quote.filled, state,
                                            fills=[{"trade_id": f"t{self._ids}", "price": quote.price,
                                                    "amount": amount, "maker_taker": "maker"}])]))
        if quote.remaining <= 0:
            self.quotes.remove(quote)

    async def deliver(self) -> None:
        """The gateway reads the oldest frame of the lane."""
        frame = self.lane.popleft()
        if frame[0] == "answer":
            frame[1].set_result(frame[2])
        else:
            assert self.harness is not None
            for entry in frame[1]:
                self.harness.report(entry)
        await settle()

    async def run_out(self) -> list[float]:
        """Everything on its way arrives, then takers take every quote left; the venue's
        position after each of those fills."""
        positions = []
        while self.inbox or self.lane:
            if self.inbox:
                self.read_request()
            if self.lane:
                await self.deliver()
        while self.quotes:
            self.fill(0, 1.0)
            positions.append(self.position)
        return positions


def market(position: float = 0.0) -> tuple[ModelVenue, MassQuoteHarness]:
    """A model venue and a gateway on it, both starting at ``position``."""
    venue = ModelVenue(position)
    venue.harness = MassQuoteHarness(venue, position)
    return venue, venue.harness

