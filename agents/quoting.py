"""Quote agent: market events in, a risk-checked ladder out to the order gateway.

Decisions it follows: docs/architecture.md#d1-the-hot-path-stays-in-one-process (D1),
docs/architecture.md#d2-one-active-quoter-per-venue-account (D2) and
docs/architecture.md#d9-latency-stamps (D9).

Contract
- consumes: the in-process channel of ticker, book and index events (``MarketEvent``), in
  arrival order: ``Quoting.on_market_event`` is a market listener of the market-data source
  (agents/market_data.py), called as each notification is read, so a decision's orders
  are on the socket before anything else runs (D1); and the venue session itself, as a
  session listener of the source: quoting runs only while this worker holds the session
  (the quoting lease, D2).
- per quoting session (``session_opened``): one PositionKeeper (app/trading/position.py),
  handed to the order gateway, which sets it from private/portfolio on every venue session
  and adds every fill; everything below reads the position and the PnL from it.
- per market event of an instrument in CRYPTICS_INSTRUMENTS, once it has an index price:
  fair-value inputs (index, mark, best bid/ask of the local book), the EWMA volatility
  estimate and the position go through the quote core (app/trading/quote.py, Cython), then
  the risk gate (app/trading/risk.py), then ``OrderGateway.reconcile`` (app/gateway/). One
  position limit for all three: the risk gate's CRYPTICS_RISK_MAX_POSITION (the core sizes
  the ladder against it, the gate checks it, the gateway's pre-trade check holds it on the
  way there).
  Recomputation is throttled by CRYPTICS_QUOTE_MIN_INTERVAL_SECONDS (default 0: every event);
  a fill re-quotes its instrument at once (the position moved).
  A timer re-checks every instrument twice a second, so stale data or a halt pulls the quotes
  even when no event arrives.
- produces: ``quote`` (every decision, with received_at and quoted_at), ``ack`` and ``fill``
  (from the gateway, with the stamps of the quote that placed the order), ``latency``
  (received_to_quoted for every decision; quoted_to_order_sent and order_sent_to_ack_received
  for every ack that answers one of our requests). All produced with ``produce_later``,
  after the orders went out: never awaited, and encoded only once the socket's burst of
  notifications is handled.
- keeps, per instrument, a histogram of tick → order (``received_at`` → ``order_sent_at``, µs)
  of every request an ack answers that a market event set off: one ``LogHistogram.add`` per
  timed ack, next to its latency samples; ``GET /metrics`` reads it (agents/metrics.py).
- tables: none; per-instrument state lives in this worker (it is rebuilt from the venue on
  every session: positions from private/portfolio, orders from session.orders).
- with a database, the gateway gets the records of our orders (app/pipeline/order_records.py):
  each session that opens records the ending of the orders earlier sessions left open there,
  a worker killed with -9 or a standby's predecessor included
  (docs/architecture.md#d17-orders-that-end-with-a-session). A session that closes waits for the
  venue's reports of the orders it cancels, and hands them to Kafka before the worker stops.
- web views: ``GET /quoting/`` → state, per instrument inputs, position, PnL, ladder, open
  orders, gateway and risk counters; ``POST /quoting/state/`` with ``{"state": "active" |
  "reducing" | "halted", "reason": "..."}`` and ``Authorization: Bearer <CRYPTICS_WEB_TOKEN>``
  switches the trading state (and releases a tripped kill switch); without the token, 401
  and nothing changes (app/web/auth.py).

PnL for the kill switch is marked to market from this quoting session's fills: cash flows
of the fills plus the position they add up to at the mark (fees left out); it starts at zero
with each quoting session and carries on across reconnects of the venue session.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

import faust

from agents.market_data import MarketEvent, source
from app.analytics.histogram import LogHistogram
from app.clock import micros, utc_now
from app.exchange.client import ThalexClient
from app.faust_app import app, deferred_producer, produce_later, settings
from app.gateway import OrderGateway, QuoteStamps
from app.pipeline.order_records import PersistedOrders, persistence_group
from app.trading.position import PositionKeeper
from app.trading.quote import IMPLEMENTATION, Quoter, volatility_estimator
from app.trading.risk import RiskGate, TradingState
from app.web.auth import SCHEME, Unauthorized, check_bearer
from models.latency import LatencySample
from models.orders import Ack, Fill
from models.quote import QuoteDecision, QuoteLevel
from models.registry import record

log = logging.getLogger(__name__)

NAN = float("nan")
#: How often the timer re-checks staleness and halts (seconds).
RECHECK_INTERVAL = 0.5


@dataclass
class InstrumentState:
    """What the quote agent knows of one instrument."""

    name: str
    underlying: str
    tick_size: float
    size_step: float
    quoter: Quoter
    volatility: Any
    index: float = NAN
    mark: float = NAN
    best_bid: float = NAN
    best_ask: float = NAN
    funding_rate: Optional[float] = None
    mark_timestamp: Optional[float] = None
    last_data_at: Optional[float] = None  # time.time() of the last market event
    last_quoted_at: float = 0.0  # time.monotonic() of the last computation
    sigma: float = NAN
    decisions: int = 0
    last_ladder: tuple = ((), ())
    requote_pending: bool = False


@dataclass
class Quoting:
    """The quote agent's state for the current venue session (a session listener of the source)."""

    params: Any = field(default_factory=lambda: settings.quote)
    risk: RiskGate = field(default_factory=lambda: RiskGate(
        settings.risk, TradingState(settings.trading_state)))
    gateway: Optional[OrderGateway] = None
    #: Positions and the fills' PnL of the current quoting session (a new one per session_opened).
    positions: PositionKeeper = field(default_factory=PositionKeeper)
    instruments: dict[str, InstrumentState] = field(default_factory=dict)
    errors: int = 0
    #: client_order_id (or ("quotes", instrument)) → order_sent_at of the last request already
    #: timed (latency samples).
    _timed_requests: dict[Any, datetime] = field(default_factory=dict)
    #: The cancel_session after a failed decision (a reference, so the task is not collected).
    _pull_task: Optional[asyncio.Task] = None
    #: instrument → tick → order (received_at → order_sent_at, µs) of the requests acks answered,
    #: for the whole process (GET /metrics).
    tick_to_order: dict[str, LogHistogram] = field(default_factory=dict)

    # -- the session (called by the market-data source) ------------------------------------

    async def session_opened(self, client: ThalexClient, instruments: dict[str, dict]) -> None:
        if client.credentials is None:
            log.warning("quoting off: no Thalex credentials (CRYPTICS_THALEX_KEY_ID), market data only")
            return
        self.instruments = {}
        # The core sizes its ladder against the risk gate's limit: one position limit.
        limit = self.risk.limits.max_position
        for name in settings.instrument_names:
            info = instruments[name]
            tick, step = float(info["tick_size"]), float(info["volume_tick_size"])
            self.instruments[name] = InstrumentState(
                name=name, underlying=info["underlying"], tick_size=tick, size_step=step,
                quoter=Quoter(self.params, tick, step, limit), volatility=volatility_estimator(self.params))
        self.positions = PositionKeeper()
        gateway = OrderGateway(client, settings.gateway, on_ack=self._on_ack, on_fill=self._on_fill,
                               products={name: instruments[name]["product"] for name in self.instruments},
                               on_requote=self._on_requote, positions=self.positions, records=order_records())
        await gateway.start()  # cancel-on-disconnect before the first order (no orphans)
        self.gateway = gateway
        log.info("quoting %s on %s (%s core, state %s)", ", ".join(self.instruments), client.account,
                 IMPLEMENTATION, self.risk.state.value)

    async def session_closing(self, client: ThalexClient) -> None:
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            await gateway.close()  # cancel_session: nothing of ours rests once we leave
            # The acks of what it cancelled are the orders' endings in the records: onto Kafka now,
            # before the worker's producer stops (the worker stops this service after its flush).
            await deferred_producer.flush()

    # -- market events -----------------------------------------------------------------

    def update(self, event: MarketEvent) -> list[InstrumentState]:
        """Fold one market event into the state; the instruments it concerns."""
        now = time.time()
        if event.kind == "index":
            touched = [s for s in self.instruments.values() if s.underlying == event.name]
            for state in touched:
                state.index = event.index
        else:
            state = self.instruments.get(event.name)
            if state is None:
                return []
            touched = [state]
            if event.kind == "ticker":
                state.mark, state.mark_timestamp = event.mark, event.mark_timestamp
                state.funding_rate = event.funding_rate
                if math.isnan(state.index):
                    state.index = event.index
            else:
                state.best_bid, state.best_ask = event.best_bid, event.best_ask
        for state in touched:
            state.last_data_at = now
        return touched

    def quote(self, state: InstrumentState, reason: str, received_at: Optional[datetime]) -> None:
        """One decision for one instrument: core → risk → gateway (orders written) → records."""
        gateway = self.gateway
        if gateway is None or math.isnan(state.index):
            return  # no session, or nothing to price from yet (the reference waits for both feeds)
        state.last_quoted_at = time.monotonic()
        if not math.isnan(state.mark) and state.mark_timestamp is not None:
            state.sigma = state.volatility.update(state.mark, state.mark_timestamp)
        position = self.positions.position(state.name)
        bid_prices, bid_sizes, ask_prices, ask_sizes = state.quoter.ladder(
            state.index, state.mark, state.best_bid, state.best_ask, position, state.sigma)
        pnl = self.positions.pnl(state.name, state.mark)
        bids, asks, _denials = self.risk.filter(
            state.name, position, list(zip(bid_prices, bid_sizes)), list(zip(ask_prices, ask_sizes)),
            time.time(), state.last_data_at, pnl, volume_tick=state.size_step)
        quoted_at = utc_now()
        gateway.reconcile(state.name, state.tick_size, bids, asks, QuoteStamps(received_at, quoted_at),
                          max_position=self.risk.limits.max_position)
        state.decisions += 1
        state.last_ladder = (bids, asks)
        fair = state.quoter.params.fair_value_source
        # The record is built later (produce_later), from the values of this decision, bound now.
        produce_later("quote", state.name, functools.partial(
            decision_record, state.name, bids, asks, position=position, reason=reason,
            fair_value={"index": state.index, "mark": state.mark}.get(fair, (state.best_bid + state.best_ask) / 2),
            index=state.index, mark_price=None if math.isnan(state.mark) else state.mark,
            mark_timestamp=state.mark_timestamp,
            best_bid_price=None if math.isnan(state.best_bid) else state.best_bid,
            best_ask_price=None if math.isnan(state.best_ask) else state.best_ask,
            funding_rate=state.funding_rate, received_at=received_at, quoted_at=quoted_at,
        ))
        if received_at is not None:
            _latency("received_to_quoted", state.name, received_at, quoted_at,
                     received_at=received_at, quoted_at=quoted_at)

    def on_market_event(self, event: MarketEvent) -> None:
        """The market listener (the hot path): fold the event in, decide, send. Never raises."""
        try:
            for state in self.update(event):
                interval = self.params.min_interval_seconds
                if interval and time.monotonic() - state.last_quoted_at < interval:
                    continue
                self.quote(state, event.kind, event.received_at)
        except Exception:
            # One bad decision must not stop quoting, but must not go unnoticed either:
            # pull everything (cancel_session) and carry on with the next event.
            self.errors += 1
            log.exception("quote agent: decision failed; cancelling this session's orders")
            if self.gateway is not None:
                self._pull_task = asyncio.get_running_loop().create_task(self._pull_after_failure(self.gateway))

    @staticmethod
    async def _pull_after_failure(gateway: OrderGateway) -> None:
        try:
            await gateway.cancel_all()
        except Exception:
            log.exception("quote agent: cancel_session after a failure failed too")

    def recheck(self) -> None:
        """Timer: a halt or stale data takes effect without waiting for the next event."""
        gateway = self.gateway
        for state in self.instruments.values():
            mode, _why = self.risk.evaluate(state.name, time.time(), state.last_data_at,
                                            self.positions.pnl(state.name, state.mark))
            # Until every order is gone: a cancel skipped because the order's previous request
            # was still in flight is sent on a later pass.
            if mode == TradingState.HALTED and gateway is not None and (
                    state.last_ladder != ([], []) or gateway.open_orders(state.name)):
                self.quote(state, "pull", None)

    # -- gateway callbacks ---------------------------------------------------------------

    def _on_ack(self, ack: Ack) -> None:
        produce_later("ack", ack.instrument_name or ack.order_id, ack)
        # A request is timed by the first update that answers it: its reply or the
        # session.orders item, whichever comes first (both carry the request's stamps). A mass
        # quote is one request for all the quotes it places (key: the instrument); the report
        # that an older quote was replaced carries the older request's stamps: not timed again.
        key = ack.client_order_id if ack.client_order_id is not None else ("quotes", ack.instrument_name)
        timed = self._timed_requests.get(key)
        if (ack.order_sent_at is not None and ack.ack_received_at is not None and ack.change_reason != "fill"
                and (timed is None or ack.order_sent_at > timed)):
            self._timed_requests[key] = ack.order_sent_at
            if len(self._timed_requests) > 10_000:  # only live orders matter; forget the oldest
                del self._timed_requests[next(iter(self._timed_requests))]
            name = ack.instrument_name or ""
            if ack.quoted_at is not None:
                _latency("quoted_to_order_sent", name, ack.quoted_at, ack.order_sent_at, received_at=ack.received_at,
                         quoted_at=ack.quoted_at, order_sent_at=ack.order_sent_at)
            _latency("order_sent_to_ack_received", name, ack.order_sent_at, ack.ack_received_at,
                     received_at=ack.received_at, quoted_at=ack.quoted_at, order_sent_at=ack.order_sent_at,
                     ack_received_at=ack.ack_received_at)
            if ack.received_at is not None:  # set off by a market event, not by a fill or a re-check
                histogram = self.tick_to_order.get(name)
                if histogram is None:
                    histogram = self.tick_to_order[name] = LogHistogram()
                histogram.add(micros(ack.received_at, ack.order_sent_at))

    def _on_fill(self, fill: Fill) -> None:
        produce_later("fill", fill.instrument_name, fill)
        # The gateway has added the fill to the position keeper already.
        state = self.instruments.get(fill.instrument_name)
        if state is not None:
            # The position changed: re-quote now (skew, size cuts, limits), not at the next
            # market event.
            self._schedule_requote(state, "fill")

    def _on_requote(self, instrument: str) -> None:
        """The gateway asks for a new decision (mass quoting): the venue answered a quote while
        decisions waited or levels were held back, or a pulled protection was refilled."""
        state = self.instruments.get(instrument)
        if state is not None:
            self._schedule_requote(state, "room")

    def _schedule_requote(self, state: InstrumentState, reason: str) -> None:
        # One pending re-quote per instrument absorbs a burst of fills.
        if not state.requote_pending:
            state.requote_pending = True
            asyncio.get_running_loop().create_task(self._requote(state, reason))

    async def _requote(self, state: InstrumentState, reason: str) -> None:
        await asyncio.sleep(0)  # let the rest of the burst's fills land first
        state.requote_pending = False
        try:
            self.quote(state, reason, None)
        except Exception:
            self.errors += 1
            log.exception("quote agent: re-quote (%s) failed", reason)

    # -- the web view ----------------------------------------------------------------------

    def view(self) -> dict:
        gateway = self.gateway
        instruments = {}
        for name, s in self.instruments.items():
            instruments[name] = {
                "index": _json_number(s.index), "mark": _json_number(s.mark),
                "best_bid": _json_number(s.best_bid), "best_ask": _json_number(s.best_ask),
                "sigma": _json_number(s.sigma), "tick_size": s.tick_size, "size_step": s.size_step,
                "position": self.positions.position(name) if gateway else None,
                "pnl": self.positions.pnl(name, s.mark),
                "decisions": s.decisions, "bids": s.last_ladder[0], "asks": s.last_ladder[1],
                "open_orders": [{"client_order_id": o.client_order_id, "direction": o.direction, "level": o.level,
                                 "price": o.price, "amount": o.amount, "status": o.status}
                                for o in (gateway.open_orders(name) if gateway else [])],
            }
        return {
            "quoting": gateway is not None, "core": IMPLEMENTATION, "state": self.risk.state.value,
            "state_reason": self.risk.state_reason, "kill_switch": self.risk.kill_switch,
            "denials": dict(self.risk.denials), "errors": self.errors,
            "gateway": {k: (dict(v) if isinstance(v, dict) else v) for k, v in gateway.stats.items()} if gateway else {},
            "instruments": instruments,
        }


async def _flush_to_kafka() -> None:
    """Everything this worker has produced so far, on the broker."""
    await deferred_producer.flush()
    await app.producer.flush()


def order_records() -> Optional[PersistedOrders]:
    """The records of our orders for the gateway, when this worker has a database (and hence persists)."""
    if not settings.database_url or not settings.broker_url:
        return None
    return PersistedOrders(settings.database_dsn, settings.broker_url, persistence_group(settings.app_id),
                           [record("ack").topic, record("fill").topic], flush=_flush_to_kafka)


def _json_number(value: float) -> Optional[float]:
    return None if value is None or math.isnan(value) else value


def decision_record(instrument: str, bids: list, asks: list, **fields: Any) -> QuoteDecision:
    return QuoteDecision(instrument_name=instrument, bids=[QuoteLevel(price=p, amount=a) for p, a in bids],
                         asks=[QuoteLevel(price=p, amount=a) for p, a in asks], **fields)


def _latency(stage: str, instrument: str, start: datetime, end: datetime, **stamps: Any) -> None:
    produce_later("latency", instrument, functools.partial(
        LatencySample, stage=stage, instrument_name=instrument, start_at=start, end_at=end,
        duration_us=micros(start, end), **stamps))


quoting = Quoting()
source.session_listeners.append(quoting)
source.market_listeners.append(quoting.on_market_event)


@app.timer(RECHECK_INTERVAL)
async def recheck_quotes() -> None:
    try:
        quoting.recheck()
    except Exception:
        quoting.errors += 1
        log.exception("quote agent: re-check failed")


@app.page("/quoting/")
async def quoting_view(web, request):
    return web.json(quoting.view())


@app.page("/quoting/state/")
class QuotingState(faust.web.View):
    async def get(self, request):
        return self.json({"state": quoting.risk.state.value, "reason": quoting.risk.state_reason})

    async def post(self, request):
        try:
            check_bearer(request.headers, settings.web_token)
        except Unauthorized as exc:
            return self.json({"error": str(exc)}, status=401, headers={"WWW-Authenticate": SCHEME})
        try:
            body = await request.json()
        except ValueError:
            return self.json({"error": "the body must be JSON: {\"state\": ..., \"reason\": ...}"}, status=400)
        if not isinstance(body, dict):
            return self.json({"error": "the body must be a JSON object"}, status=400)
        try:
            state = TradingState(body.get("state"))
        except ValueError:
            return self.json({"error": f"state must be one of {[s.value for s in TradingState]}"}, status=400)
        quoting.risk.set_state(state, str(body.get("reason") or "operator"))
        quoting.recheck()
        return self.json({"state": quoting.risk.state.value, "reason": quoting.risk.state_reason})
