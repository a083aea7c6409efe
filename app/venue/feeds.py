"""Subscription channels: parsing their names and producing their notifications.

Public channels are shared: one ``Feed`` per channel name computes each payload
once and hands the same serialised bytes to every subscriber. A feed with a delay
(``100ms`` … ``60000ms``) sends at most once per delay, when something changed; a
``raw`` feed sends after every engine action that changed it (docs/thalex-protocol.md §3).
The channel grammar (delays, private channel names) is the protocol's, in
app/exchange/protocol.py; which instruments and underlyings exist is the venue's.

Book feeds send a snapshot, then deltas (docs/thalex-protocol.md §3.3). Deltas are computed by diffing the
grouped, depth-limited view against the state last sent on that channel, which
makes ``grouping`` and ``nlevels`` the same code as the plain book. A subscriber
joining a running book channel gets that last-sent state as its snapshot, so the
next delta applies to it exactly like to everyone else.

Private channels (``session.*``, ``account.*``) belong to one connection and are
produced by publishing.py from engine events; this module only recognises their names.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

import orjson

from app.exchange.protocol import DELAYS, PRIVATE_CHANNELS
from app.venue.engine import Engine
from app.venue.orders import BUY, SELL
from app.venue.transport import Connection

#: Kinds whose notifications count as market data for the latency probe (latency.py).
MARKET_DATA_KINDS = frozenset({"ticker", "lwt", "book", "price_index", "recent_trades"})


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    kind: str
    instrument: Optional[str] = None
    underlying: Optional[str] = None
    delay: float = 0.0
    grouping_ticks: Optional[int] = None
    nlevels: Optional[int] = None
    #: recent_trades: trades of these instruments
    targets: tuple[str, ...] = ()

    @property
    def private(self) -> bool:
        return self.kind in PRIVATE_CHANNELS


def parse_channel(name: object, engine: Engine) -> Optional[ChannelSpec]:
    """The spec of a channel name, or None if the venue has no such channel."""
    if not isinstance(name, str):
        return None
    if name in PRIVATE_CHANNELS:
        return ChannelSpec(name, name)
    if name in ("instruments", "system"):
        return ChannelSpec(name, name)
    parts = name.split(".")
    kind = parts[0]
    if kind in ("ticker", "lwt") and len(parts) == 3:
        if parts[1] in engine.instruments and parts[2] in DELAYS:
            return ChannelSpec(name, kind, instrument=parts[1], delay=DELAYS[parts[2]])
    elif kind == "book" and len(parts) == 5:
        _, instrument, grouping, levels, delay = parts
        ins = engine.instruments.get(instrument)
        if ins is None or delay not in DELAYS:
            return None
        grouping_ticks = None
        if grouping != "none":
            try:
                size = float(grouping)
            except ValueError:
                return None
            ticks = round(size / ins.tick_size)
            if ticks < 1 or abs(ticks * ins.tick_size - size) > 1e-9 * max(1.0, size):
                return None  # a grouping must be a whole number of ticks
            grouping_ticks = ticks if ticks > 1 else None
        nlevels = None
        if levels != "all":
            if not levels.isdigit() or int(levels) < 1:
                return None
            nlevels = int(levels)
        return ChannelSpec(name, kind, instrument=instrument, delay=DELAYS[delay],
                           grouping_ticks=grouping_ticks, nlevels=nlevels)
    elif kind == "price_index" and len(parts) == 2:
        if parts[1] in engine.underlyings:
            return ChannelSpec(name, kind, underlying=parts[1])
    elif kind == "recent_trades" and len(parts) == 3:
        target, category = parts[1], parts[2]
        if target in engine.instruments and category == "single":
            return ChannelSpec(name, kind, targets=(target,))
        if target in engine.underlyings and category in ("all", "options", "future_rolls"):
            # The venue lists perpetuals only: "options" and "future_rolls" are valid and stay empty.
            names = tuple(i.instrument_name for i in engine.underlyings[target]) if category == "all" else ()
            return ChannelSpec(name, kind, underlying=target, targets=names)
    return None


def notification(channel: str, payload: object, snapshot: bool = False) -> bytes:
    if snapshot:
        return orjson.dumps({"channel_name": channel, "notification": payload, "snapshot": True})
    return orjson.dumps({"channel_name": channel, "notification": payload})


class Feed:
    """One public channel and its subscribers; every notification sent is counted in ``sent``
    per (session, channel)."""

    def __init__(self, spec: ChannelSpec, engine: Engine, loop: asyncio.AbstractEventLoop,
                 on_emptied: Callable[["Feed"], None], sent: Counter[tuple[int, str]]) -> None:
        self.spec = spec
        self.engine = engine
        self.loop = loop
        self.on_emptied = on_emptied
        self.sent = sent
        self.subscribers: set[Connection] = set()
        self.market_data = spec.kind in MARKET_DATA_KINDS
        self.last_sent = float("-inf")
        self.timer: Optional[asyncio.TimerHandle] = None
        self.dirty = False
        self.last_payload: object = None
        #: Book channels: the grouped view last sent, per side {ticks: units}.
        self.book_state: Optional[tuple[dict[int, int], dict[int, int]]] = None
        #: Trades not yet sent (book: [p, a, dir, t, implied]; recent_trades: with instrument).
        self.pending_trades: list[list] = []

    # -- subscribers -----------------------------------------------------

    def add(self, conn: Connection) -> None:
        first = not self.subscribers
        self.subscribers.add(conn)
        kind = self.spec.kind
        if kind == "book":
            if first or self.book_state is None:
                self.book_state = self._book_view()
                self.pending_trades.clear()
                self.last_sent = self.loop.time()
            self._send(conn, notification(self.spec.name, self._book_snapshot(), snapshot=True))
        elif kind == "instruments":
            items = [{"added": i.to_json()} for i in self.engine.instruments.values()]
            self._send(conn, notification(self.spec.name, items, snapshot=True))
        elif kind == "recent_trades":
            recent = [t for name in self.spec.targets for t in self.engine.markets[name].recent_trades]
            recent.sort(key=lambda t: t[3])
            if first:
                self.pending_trades.clear()
            else:  # the newest ones are still pending and will come with the next message
                recent = recent[:len(recent) - len(self.pending_trades)]
            self._send(conn, notification(self.spec.name, recent))
        elif kind in ("ticker", "lwt", "price_index"):
            payload = self._payload()
            if first:
                self.last_payload = payload
                self.last_sent = self.loop.time()
            self._send(conn, notification(self.spec.name, payload))

    def remove(self, conn: Connection) -> None:
        self.subscribers.discard(conn)
        if not self.subscribers:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.on_emptied(self)

    # -- emission ----------------------------------------------------------

    def add_trade(self, instrument: str, price: float, amount: float, direction: str, time: float) -> None:
        if self.spec.kind == "book":
            self.pending_trades.append([price, amount, direction, time, False])
        else:
            self.pending_trades.append([price, amount, direction, time, instrument, False])

    def touch(self, raw_pending: set["Feed"]) -> None:
        """Something this channel shows changed: send now (raw) or when the delay allows."""
        self.dirty = True
        if self.spec.delay == 0.0:
            raw_pending.add(self)
        elif self.timer is None:
            due = max(self.loop.time(), self.last_sent + self.spec.delay)
            self.timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.emit()

    def emit(self) -> None:
        if not self.dirty or not self.subscribers:
            return
        self.dirty = False
        data = self._message()
        if data is None:
            return
        self.last_sent = self.loop.time()
        for conn in list(self.subscribers):
            self._send(conn, data)

    def _send(self, conn: Connection, data: bytes) -> None:
        """Queue one notification for ``conn`` and count it (tests compare what arrived downstream)."""
        conn.enqueue(data, self.market_data)
        self.sent[(conn.session, self.spec.name)] += 1

    def _message(self) -> Optional[bytes]:
        kind = self.spec.kind
        if kind == "book":
            return self._book_delta()
        if kind == "recent_trades":
            if not self.pending_trades:
                return None
            trades, self.pending_trades = self.pending_trades, []
            return notification(self.spec.name, trades)
        payload = self._payload()
        if payload == self.last_payload:
            return None
        self.last_payload = payload
        return notification(self.spec.name, payload)

    def _payload(self) -> object:
        kind = self.spec.kind
        if kind == "ticker":
            return self.engine.ticker(self.spec.instrument)
        if kind == "lwt":
            return self.engine.lwt(self.spec.instrument)
        return self.engine.index(self.spec.underlying)

    # -- books -------------------------------------------------------------

    def _book_view(self) -> tuple[dict[int, int], dict[int, int]]:
        """{ticks: units} per side, grouped into buckets and cut to nlevels."""
        book = self.engine.books[self.spec.instrument]
        group = self.spec.grouping_ticks
        views = []
        for direction in (BUY, SELL):
            view: dict[int, int] = {}
            for ticks, units in book.depth(direction):
                if group is not None:
                    ticks = (ticks // group) * group if direction == BUY else -((-ticks) // group) * group
                if ticks not in view and self.spec.nlevels is not None and len(view) >= self.spec.nlevels:
                    break
                view[ticks] = view.get(ticks, 0) + units
            views.append(view)
        return views[0], views[1]

    def _levels(self, side: dict[int, int], direction: int) -> list[list[float]]:
        ins = self.engine.instruments[self.spec.instrument]
        ordered = sorted(side.items(), reverse=direction == BUY)
        return [[ins.price(t), ins.amount(u), ins.amount(u)] for t, u in ordered]

    def _totals(self, bids: dict[int, int], asks: dict[int, int]) -> tuple[float, float]:
        ins = self.engine.instruments[self.spec.instrument]
        return ins.amount(sum(bids.values())), ins.amount(sum(asks.values()))

    def _book_snapshot(self) -> dict:
        assert self.book_state is not None
        bids, asks = self.book_state
        market = self.engine.markets[self.spec.instrument]
        trades = [[t[0], t[1], t[2], t[3], t[5]] for t in market.recent_trades]
        if self.pending_trades:  # sent with the next delta instead
            trades = trades[:len(trades) - len(self.pending_trades)]
        total_bid, total_ask = self._totals(bids, asks)
        return {"trades": trades, "bid_changes": self._levels(bids, BUY), "ask_changes": self._levels(asks, SELL),
                "total_bid_amount": total_bid, "total_ask_amount": total_ask, "time": market.book_time}

    def _book_delta(self) -> Optional[bytes]:
        assert self.book_state is not None
        old_bids, old_asks = self.book_state
        bids, asks = self._book_view()
        bid_changes = _diff(old_bids, bids)
        ask_changes = _diff(old_asks, asks)
        if not bid_changes and not ask_changes and not self.pending_trades:
            return None
        self.book_state = (bids, asks)
        ins = self.engine.instruments[self.spec.instrument]
        trades, self.pending_trades = self.pending_trades, []
        total_bid, total_ask = self._totals(bids, asks)
        payload = {
            "trades": trades,
            "bid_changes": [[ins.price(t), ins.amount(u), ins.amount(u)] for t, u in sorted(bid_changes, reverse=True)],
            "ask_changes": [[ins.price(t), ins.amount(u), ins.amount(u)] for t, u in sorted(ask_changes)],
            "total_bid_amount": total_bid,
            "total_ask_amount": total_ask,
            "time": self.engine.markets[self.spec.instrument].book_time,
        }
        return notification(self.spec.name, payload)


def _diff(old: dict[int, int], new: dict[int, int]) -> list[tuple[int, int]]:
    """[(ticks, units)] that turn ``old`` into ``new``; units 0 deletes a level."""
    changes = [(t, u) for t, u in new.items() if old.get(t) != u]
    changes.extend((t, 0) for t in old if t not in new)
    return changes
