"""The replay: recorded market events through the live strategy code, against the in-process venue.

Contract (docs/architecture.md#d15-backtests-run-the-live-strategy-code)
- in: ``MarketData`` (app/backtest/data.py), the live settings' ``QuoteParams``,
  ``RiskLimits`` and ``GatewayParams``, a queue model (app/backtest/matching.py), a latency
  model (app/backtest/latency.py) and a fee schedule.
- a replay clock, never the wall clock: each recorded event happens at the venue at its
  exchange time (the matching model takes it then) and reaches the strategy a feed latency
  later; a request reaches the venue after half an order latency and its answer comes back
  after the other half; our fills reach the strategy a feed latency after the trade.
- the strategy is the live one, called as agents/quoting.py calls it: per market event of
  the instrument (ticker, book, index) once an index is known, the volatility estimate, the
  quote core (app/trading/quote.py ``Quoter``), the risk gate (app/trading/risk.py
  ``RiskGate.filter``, with the replay clock's ``now`` and data time), then the order
  mode's plan (app/gateway/planning.py ``plan_reconcile``, as ``OrderMode.reconcile`` calls
  it), the gateway's local token buckets (app/exchange/rate_limit.py, at
  ``rate_headroom`` of the venue's rates with cancel-on-disconnect set,
  docs/thalex-protocol.md §6.2) and its order tracker (app/gateway/tracker.py
  ``OrderTracker``: the venue's answers, acks, fills into the position keeper; its acks and
  fills built as the plain dicts the analytics read, not as Faust records). A fill
  re-quotes at once; a re-check every 0.5 s of replay time pulls quotes on a halt or stale
  data, as the live timer does. A decision that would send nothing is skipped: nothing
  new from the venue since the last one, and the same market inputs (index, mark, book
  top) or the same ladder, position and trading state (the risk gate's denial counters
  then count computed decisions only; quote quality counts them all).
- analytics by app/analytics' code: ``PositionState`` (PnL split: realized, unrealized,
  fees, funding), ``MarkoutBook`` (markouts at 1/5/30/60 s), ``RestingQuotes`` and
  ``QualityWindow`` (uptime, spread, fill ratio).
- funding: the position at the venue pays the change of the ticker's ``funding_mark`` (what
  one long contract has paid, app/venue/marks.py); without it, ``funding_rate`` (per day) ×
  index × the time since the last ticker.
- the order mode only: ``GatewayParams.mass_quote`` is refused (mass quotes are not modelled).
- out: ``Result``: fills, the series the report plots, the analytics and counters. The same
  input gives the same result (no wall clock, seeded latency draws).
"""
from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from app.analytics.markouts import MarkoutBook
from app.analytics.positions import FeeSchedule, PositionState
from app.analytics.quality import QualityWindow, RestingQuotes, split_interval
from app.backtest.data import BOOK, INDEX, TICKER, TRADE, MarketData
from app.backtest.matching import MatchingModel, SimOrder
from app.exchange.protocol import ORDER_NOT_FOUND
from app.exchange.rate_limit import TokenBucket
from app.gateway.context import GatewayContext
from app.gateway.params import GatewayParams
from app.gateway.planning import Amend, Cancel, Insert, plan_reconcile
from app.gateway.tracker import GONE, REJECTED, OrderTracker, TrackedOrder
from app.trading.position import PositionKeeper
from app.trading.quote import Quoter, volatility_estimator
from app.trading.quote_params import QuoteParams
from app.trading.risk import RiskGate, RiskLimits, TradingState

NAN = float("nan")
#: As agents/quoting.py RECHECK_INTERVAL.
RECHECK_INTERVAL = 0.5
#: Internal event kinds of the replay's heap.
_AT_VENUE, _TO_STRATEGY, _ERROR_TO_STRATEGY = 0, 1, 2


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


# The tracker's record builders in a replay. Live, the tracker builds the Faust records the
# agent publishes (app/gateway/records.py); a replay publishes nothing, and its analytics read
# plain dicts, so it builds those directly: the fields they read, converted as ``ack_record``
# and ``fill_record`` convert them.

def _ack_dict(status: dict, order: Optional[TrackedOrder], ack_received_at: datetime) -> dict:
    price = status.get("price")
    return {"amount": float(status["amount"]), "remaining_amount": float(status["remaining_amount"]),
            "price": None if price is None else float(price), "order_id": str(status["order_id"]),
            "ack_received_at": ack_received_at, "change_reason": status["change_reason"],
            "status": status["status"], "direction": status["direction"]}


def _fill_dict(raw: dict, status: dict, order: Optional[TrackedOrder], trade_id: str, order_id: str,
               instrument: str, direction: str, ack_received_at: datetime) -> dict:
    return {"trade_id": trade_id, "order_id": order_id, "direction": direction, "maker_taker": raw["maker_taker"],
            "price": float(raw["price"]), "amount": float(raw["amount"]), "time": raw.get("time")}


@dataclass
class Result:
    """What a replay produced; app/backtest/report.py turns it into the report."""

    instrument: str
    start: float
    end: float
    fills: list[dict] = field(default_factory=list)
    #: (time, mark, mid or None) at most one per second.
    prices: list[tuple] = field(default_factory=list)
    #: (time, our best bid or None, our best ask or None) resting at the venue, at most one per second.
    quotes: list[tuple] = field(default_factory=list)
    #: (time, position, net pnl, realized, unrealized, fees, funding) at most one per second and at each fill.
    equity: list[tuple] = field(default_factory=list)
    markouts: dict = field(default_factory=dict)
    markout_records: int = 0
    quality: dict = field(default_factory=dict)
    pnl: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    events: int = 0
    gaps: list = field(default_factory=list)
    book_depth: str = "full"


class _Stats(dict):
    """The gateway's stats dict: missing counters start at 0, errors_by_code is a Counter."""

    def __missing__(self, key):
        value = self[key] = Counter() if key == "errors_by_code" else 0
        return value


class Replay:
    """One backtest run over one instrument's recorded market data."""

    def __init__(self, data: MarketData, quote: QuoteParams, risk: RiskLimits, gateway: GatewayParams,
                 queue, latency, fees: FeeSchedule, *, trading_state: TradingState = TradingState.ACTIVE,
                 skip_unchanged: bool = True) -> None:
        if gateway.mass_quote:
            raise ValueError("the backtest replays the order mode only: unset CRYPTICS_GATEWAY_MASS_QUOTE "
                             "(mass quotes are not modelled yet)")
        self.data = data
        info = data.instrument
        self.name, self.tick, self.step, self.underlying = info.name, info.tick_size, info.size_step, info.underlying
        self.params, self.gateway_params, self.latency, self.fees = quote, gateway, latency, fees
        self.quoter = Quoter(quote, self.tick, self.step, risk.max_position)
        self.volatility = volatility_estimator(quote)
        self.risk = RiskGate(risk, trading_state)
        self.positions = PositionKeeper()
        self.venue = MatchingModel(queue, self.name)
        self.now = data.start
        self.stats = _Stats()
        rate = gateway.rate_headroom
        self.order_bucket = TokenBucket(gateway.order_rate_cod * rate, self.now, gateway.throttle_backoff_s,
                                        gateway.throttle_backoff_max_s)
        self.cancel_bucket = TokenBucket(gateway.cancel_rate * rate, self.now, gateway.throttle_backoff_s,
                                         gateway.throttle_backoff_max_s)
        self.context = GatewayContext(None, gateway, lambda: self.now, self.stats, self.order_bucket,
                                      self.cancel_bucket, on_ack=self._on_ack, on_fill=self._on_fill)
        self.tracker = OrderTracker(self.context, self.positions, ack_builder=_ack_dict, fill_builder=_fill_dict)
        self._client_ids = iter(range(gateway.first_client_order_id, 1 << 62))
        # the strategy's view
        self.index = self.mark = self.best_bid = self.best_ask = self.sigma = NAN
        self.mark_timestamp: Optional[float] = None
        self.last_data_at: Optional[float] = None
        self.last_quoted_at = -math.inf
        self._changed = True
        #: False: compute every decision (the tests compare: skipping must change nothing sent).
        self._skip_unchanged = skip_unchanged
        self._last_key: Optional[tuple] = None
        self._sigma_time: Optional[float] = None
        #: The best level of each side of the last decision, as quote records list them (quote quality).
        self._quoted_sides: tuple = ([], [])
        #: The last decision's quote record, as quote quality reads it.
        self._quote_record: Optional[dict] = None
        self._fair_value_source = quote.fair_value_source
        self._min_interval = quote.min_interval_seconds
        self._dirty = True
        self._next_recheck = data.start + RECHECK_INTERVAL
        self._last_ladder: tuple = ([], [])
        self._requote = False
        # the venue's side
        self._heap: list = []
        self._seq = 0
        self._venue_position = 0.0
        self._funding_paid = 0.0
        self._last_funding: Optional[tuple[float, float]] = None  # (time, funding_mark or NaN)
        # analytics
        self.pnl = PositionState(self.name)
        self.markouts = MarkoutBook(self.name)
        self.resting = RestingQuotes(self.name)
        self.windows: dict[float, QualityWindow] = {}
        self._current_window: Optional[QualityWindow] = None
        self.result = Result(self.name, data.start, data.end, gaps=list(data.gaps), book_depth=data.book_depth)
        self._last_sample = -math.inf
        self.decisions = self.skipped_decisions = 0

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Result:
        events, heap = self.data.events, self._heap
        # What the strategy is yet to see, in delivery order (a feed keeps its order): (time, event, top).
        deliveries: deque[tuple] = deque()
        i, n = 0, len(events)
        feed, pop, inf = self.latency.feed, heapq.heappop, math.inf
        at_venue, internal, to_strategy = self._at_venue, self._internal, self._to_strategy
        end, next_recheck, last_delivery = self.data.end, self._next_recheck, -inf
        # Four time-ordered sources, merged; at equal times the market goes first, then the
        # venue's answers (the heap), then the strategy's feed, then the re-check timer.
        while True:
            t_market = events[i][0] if i < n else inf
            t_heap = heap[0][0] if heap else inf
            t_delivery = deliveries[0][0] if deliveries else inf
            # The live re-check timer ticks through gaps in the data too (stale data pulls the quotes).
            t_recheck = next_recheck if next_recheck < end else inf
            if t_market <= t_heap and t_market <= t_delivery and t_market <= t_recheck:
                if t_market == inf:
                    break
                event = events[i]
                i += 1
                self.now = t_market
                top = at_venue(event)
                # A feed is one ordered stream: nothing overtakes what was sent before it. Every
                # event draws its feed latency, a public trade too, so that a recorded latency
                # model draws the same sequence whatever the strategy reads.
                at = t_market + feed()
                if at < last_delivery:
                    at = last_delivery
                last_delivery = at
                # Public trades reach the quote agent inside book notifications and set nothing
                # it reads: not queued (dropping a no-op from the feed moves nothing else).
                if event[1] != TRADE:
                    deliveries.append((at, event, top))
            elif t_heap <= t_delivery and t_heap <= t_recheck:
                item = pop(heap)
                self.now = item[0]
                internal(item)
            elif t_delivery <= t_recheck:
                at, event, top = deliveries.popleft()
                self.now = at
                to_strategy(event, top)
            else:
                self.now = t_recheck
                next_recheck += RECHECK_INTERVAL
                self._recheck()
        self.now = self.data.end
        return self._finish()

    def _push(self, at: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, payload))

    # -- the venue side (exchange time) ------------------------------------------------------

    def _at_venue(self, event: tuple) -> Optional[tuple]:
        kind = event[1]
        venue = self.venue
        if kind == BOOK:
            venue.book(event[3], event[4], event[5])
            return venue.best_bid, venue.best_ask
        if kind == TRADE:
            for order, amount in venue.trade(event[0], event[3], event[4], event[5]):
                self._venue_fill(order, amount)
            return None
        if kind == TICKER:
            self._ticker(event)
        return None

    def _venue_fill(self, order: SimOrder, amount: float) -> None:
        sign = 1.0 if order.direction == "buy" else -1.0
        self._venue_position = round(self._venue_position + sign * amount, 10)
        fill = order.fills[-1]
        # session.orders is a feed: the report reaches us a feed latency later.
        self._push(self.now + self.latency.feed(), _TO_STRATEGY, (self._status(order, "fill", [fill]), None))

    def _ticker(self, event: tuple) -> None:
        t, mark, index, rate, funding_mark = event[0], event[3], event[4], event[5], event[6]
        last = self._last_funding
        if last is not None and self._venue_position:
            if not math.isnan(funding_mark) and not math.isnan(last[1]):
                self._funding_paid += self._venue_position * (funding_mark - last[1])
            elif not math.isnan(rate):
                self._funding_paid += self._venue_position * rate * index * (t - last[0]) / 86400.0
        self._last_funding = (t, funding_mark)
        self.pnl.apply_ticker({"mark_timestamp": t, "mark_price": mark})
        self.pnl.apply_position({"position": self._venue_position, "unrealised_perpetual_funding": -self._funding_paid})
        bid, ask = event[7], event[8]
        bid, ask = (None if math.isnan(bid) else bid), (None if math.isnan(ask) else ask)
        records = self.markouts.add_fair_value({"mark_timestamp": t, "mark_price": mark, "best_bid_price": bid,
                                                "best_ask_price": ask})
        self.result.markout_records += len(records)
        if t - self._last_sample >= 1.0:
            self._last_sample = t
            self.result.prices.append((t, mark, None if bid is None or ask is None else (bid + ask) / 2))
            self.result.quotes.append((t, self.venue.resting("buy"), self.venue.resting("sell")))
            self._sample_equity(t)

    def _sample_equity(self, t: float) -> None:
        p = self.pnl
        self.result.equity.append((t, p.position, p.net_pnl, p.realized_pnl, p.unrealized_pnl, p.fees,
                                   p.funding_pnl or 0.0))

    def _status(self, order: SimOrder, change_reason: str, fills: list) -> dict:
        """The OrderStatus the venue would send (docs/thalex-protocol.md §4.10)."""
        return {
            "order_id": order.order_id, "client_order_id": order.client_order_id, "instrument_name": order.instrument,
            "direction": order.direction, "price": order.price, "amount": order.amount,
            "filled_amount": order.filled, "remaining_amount": order.remaining if order.status in (
                "open", "partially_filled") else 0.0,
            "status": order.status, "change_reason": change_reason, "delete_reason": order.delete_reason,
            "insert_reason": "client_request", "order_type": "limit", "time_in_force": "good_till_cancelled",
            "create_time": order.create_time, "persistent": False, "label": order.label, "fills": list(fills),
        }

    def _internal(self, item: tuple) -> None:
        kind, payload = item[2], item[3]
        if kind == _AT_VENUE:
            self._request_at_venue(*payload)
        elif kind == _TO_STRATEGY:
            status, answered = payload
            self._dirty = True
            if answered is not None:  # the answer to a request: as OrderMode._await_reply
                answered.in_flight = None
                bucket = self.cancel_bucket if status["change_reason"] == "cancel" else self.order_bucket
                bucket.recovered(self.now)
            self.tracker.on_status(status)
            if status["change_reason"] == "fill" and self._requote:
                self._requote = False
                self._quote()
        else:  # an error answer: as app/gateway/orders.py ``_on_error`` treats code 1
            order, method = payload
            order.in_flight = None
            self._dirty = True
            self.stats["errors_by_code"][ORDER_NOT_FOUND] += 1
            if method == "private/insert":
                self.tracker.finish(order, REJECTED)
            elif not order.final:
                self.tracker.finish(order, GONE)

    def _request_at_venue(self, method: str, order: TrackedOrder, price: float, amount: float, rtt: float) -> None:
        venue, back = self.venue, self.now + rtt / 2
        if method == "private/insert":
            sim = venue.insert(self.now, order.client_order_id, order.direction, price, amount,
                               self.gateway_params.label)
            self._push(back, _TO_STRATEGY, (self._status(sim, "insert", []), order))
            return
        sim = None if order.order_id is None else (
            venue.amend(order.order_id, price, amount) if method == "private/amend" else venue.cancel(order.order_id))
        if sim is None:
            self._push(back, _ERROR_TO_STRATEGY, (order, method))
        else:
            self._push(back, _TO_STRATEGY, (self._status(sim, "amend" if method == "private/amend" else "cancel", []),
                                            order))

    # -- the strategy side (delivery time) ----------------------------------------------------

    def _to_strategy(self, event: tuple, top: Optional[tuple]) -> None:
        kind = event[1]
        if kind == BOOK:  # the most frequent first
            if top != (self.best_bid, self.best_ask):  # NaN never equals: a book without a side counts as new
                self.best_bid, self.best_ask = top
                self._changed = True
        elif kind == TICKER:
            self.mark, self.mark_timestamp, self._changed = event[3], event[0], True
            if math.isnan(self.index):
                self.index = event[4]
        elif kind == INDEX:
            if event[2] != self.underlying:
                return
            if event[3] != self.index:
                self.index, self._changed = event[3], True
        else:
            return  # public trades are not queued for the strategy (``run``): they set nothing it reads
        self.last_data_at = self.now
        interval = self._min_interval
        if interval and self.now - self.last_quoted_at < interval:
            return
        self._quote()

    def _quote(self) -> None:
        """One decision, as agents/quoting.py ``Quoting.quote``."""
        if math.isnan(self.index):
            return
        # The estimator ignores a sample no later than its last one: only a new mark is news to it.
        if self.mark_timestamp is not None and self.mark_timestamp != self._sigma_time and not math.isnan(self.mark):
            self.sigma = self.volatility.update(self.mark, self.mark_timestamp)
            self._sigma_time = self.mark_timestamp
        # ``_changed``: a market input moved; ``_dirty``: the venue said something (the position
        # moves only with a fill report, which sets it) or an action waits. Neither: skipped.
        if self._skip_unchanged and not self._dirty and not self._changed:
            self.skipped_decisions += 1
            # Quote quality counts every decision (live, each one is a quote record), skipped or
            # not. Nothing it reads moved since the last decision (fair value, position, our
            # best levels): that decision's record is this one's.
            self._window(self.now).add_quote(self._quote_record)
            return
        self._changed = False
        position = self.positions.position(self.name)
        ladder = self.quoter.ladder(self.index, self.mark, self.best_bid, self.best_ask, position, self.sigma)
        pnl = self.positions.pnl(self.name, self.mark)
        # The same ladder, position and trading state as the last decision, with nothing new
        # from the venue since, would be planned into nothing: skipped.
        state = self.risk.evaluate(self.name, self.now, self.last_data_at, pnl)[0]
        key = (ladder, position, state)
        if self._dirty or key != self._last_key or not self._skip_unchanged:
            self._last_key, self._dirty = key, False
            self.last_quoted_at = self.now
            bid_prices, bid_sizes, ask_prices, ask_sizes = ladder
            bids, asks, _denials = self.risk.filter(
                self.name, position, list(zip(bid_prices, bid_sizes)), list(zip(ask_prices, ask_sizes)),
                self.now, self.last_data_at, pnl, volume_tick=self.step)
            self._reconcile(bids, asks, position)
            self.decisions += 1
            self._last_ladder = (bids, asks)
            self._quoted_sides = ([{"price": bids[0][0]}] if bids else [], [{"price": asks[0][0]}] if asks else [])
        else:
            self.skipped_decisions += 1
        source = self._fair_value_source
        fair = self.index if source == "index" else self.mark if source == "mark" else (
            self.best_bid + self.best_ask) / 2
        bids, asks = self._quoted_sides
        self._quote_record = {"position": position, "bids": bids, "asks": asks,
                              "fair_value": fair if math.isfinite(fair) else None}
        self._window(self.now).add_quote(self._quote_record)

    def _reconcile(self, bids: list, asks: list, position: float) -> None:
        """app/gateway/orders.py ``OrderMode.reconcile`` without a socket: the same plan, the
        same buckets; each request goes to the in-process venue."""
        stats = self.stats
        plan = plan_reconcile(self.tracker, self.name, bids, asks, self.tick, self.gateway_params.amend_threshold_ticks,
                              self.risk.limits.max_position, position, stats)
        if plan.in_flight or plan.held_back:
            self._dirty = True  # what waits now may go at the next decision
        now = self.now
        for action in plan.actions:
            bucket = self.cancel_bucket if isinstance(action, Cancel) else self.order_bucket
            if not bucket.take(now):
                stats["throttled_local"] += 1
                self._dirty = True
                continue
            self._send(action)

    def _send(self, action) -> None:
        if isinstance(action, Insert):
            order = TrackedOrder(client_order_id=next(self._client_ids), instrument=self.name,
                                 direction=action.direction, level=action.level, target_price=action.price,
                                 target_amount=action.amount, price=action.price, amount=action.amount,
                                 remaining_amount=action.amount)
            self.tracker.add(order)
            method, price, amount = "private/insert", action.price, action.amount
            self.stats["inserts"] += 1
        elif isinstance(action, Amend):
            order = action.order
            order.target_price, order.target_amount = action.price, action.amount
            method, price, amount = "private/amend", action.price, action.amount
            self.stats["amends"] += 1
        else:
            order = action.order
            method, price, amount = "private/cancel", order.price, order.amount
            self.stats["cancels"] += 1
        order.in_flight = method
        order.order_sent_at = _utc(self.now)
        rtt = self.latency.order()
        self._push(self.now + rtt / 2, _AT_VENUE, (method, order, price, amount, rtt))

    def _recheck(self) -> None:
        """The live timer (agents/quoting.py ``recheck``), on the replay clock."""
        mode, _why = self.risk.evaluate(self.name, self.now, self.last_data_at,
                                        self.positions.pnl(self.name, self.mark))
        if mode == TradingState.HALTED and (self._last_ladder != ([], []) or self.tracker.live(self.name)):
            self._dirty = True
            self._quote()

    # -- the gateway's callbacks: the analytics ---------------------------------------------

    def _on_ack(self, record: dict) -> None:
        """An ack as ``_ack_dict`` built it: the resting quotes and quote quality."""
        effect = self.resting.apply_ack(record)
        if effect.interval is not None:
            start, end, two_sided = effect.interval
            for window_start, seconds in split_interval(start, end):
                self._window(window_start).add_interval(seconds, two_sided)
        self._window(self.now).add_ack(record, effect.quoted_amount)

    def _on_fill(self, record: dict) -> None:
        """A fill as ``_fill_dict`` built it (in the position keeper already): PnL, markouts, quality, the Result."""
        self.pnl.apply_fill(record, self.fees)
        self.result.markout_records += len(self.markouts.add_fill(record))
        self._window(self.now).add_fill(record)
        fee = self.fees.fee(record["price"], record["amount"], record["maker_taker"])
        self.result.fills.append({**record, "fee": fee, "received_at": self.now,
                                  "position_after": self.positions.position(self.name)})
        self._sample_equity(self.now)
        self._requote = True  # the position moved: re-quote now (after the tracker is done)

    def _window(self, t: float) -> QualityWindow:
        window = self._current_window
        if window is not None and window.start <= t < window.start + 60.0:
            return window
        start = math.floor(t / 60.0) * 60.0
        window = self._current_window = self.windows.get(start)
        if window is None:
            window = self.windows[start] = self._current_window = QualityWindow(self.name, start)
        return window

    # -- the end ------------------------------------------------------------------------------

    def _finish(self) -> Result:
        result = self.result
        self._sample_equity(self.data.end)
        result.events = len(self.data.events)
        result.markouts = self.markouts.aggregates()
        p = self.pnl
        result.pnl = {"net": p.net_pnl, "realized": p.realized_pnl, "unrealized": p.unrealized_pnl,
                      "fees": p.fees, "fees_maker": p.fees_maker, "fees_taker": p.fees_taker,
                      "funding": p.funding_pnl or 0.0, "position": p.position, "volume": p.volume,
                      "notional": p.notional, "trades": p.trades}
        totals = defaultdict(float)
        for window in self.windows.values():
            for key in ("observed_seconds", "two_sided_seconds", "quotes", "spread_sum", "quoted_amount",
                        "filled_amount", "fills", "order_actions"):
                totals[key] += getattr(window, key)
        # The last interval (from the last ack to the end of the range) is closed here.
        if self.resting.last_ack_time is not None and self.data.end > self.resting.last_ack_time:
            seconds = self.data.end - self.resting.last_ack_time
            totals["observed_seconds"] += seconds
            if self.resting.two_sided():
                totals["two_sided_seconds"] += seconds
        result.quality = {
            "uptime": totals["two_sided_seconds"] / (self.data.end - self.data.start),
            "two_sided_seconds": totals["two_sided_seconds"],
            "mean_spread": totals["spread_sum"] / totals["quotes"] if totals["quotes"] else None,
            "quoted_amount": totals["quoted_amount"], "filled_amount": totals["filled_amount"],
            "fill_ratio": totals["filled_amount"] / totals["quoted_amount"] if totals["quoted_amount"] else None,
            "order_actions": int(totals["order_actions"]),
            "minutes": [w.record() | {"time": w.start} for _, w in sorted(self.windows.items())],
        }
        result.counters = {
            "decisions": self.decisions, "skipped_decisions": self.skipped_decisions,
            "denials": dict(self.risk.denials),
            "gateway": {k: (dict(v) if isinstance(v, Counter) else v) for k, v in sorted(self.stats.items())},
            "resting_at_end": len(self.venue.orders),
        }
        return result
