"""The venue's fan-out: who is connected, what each subscribed, and what they are sent.

``Publishing`` is the bottom layer of the ``Venue`` (routing.py builds on it, server.py on
that). It keeps the connections by session and by account, and the public feeds
(feeds.py) by what they show. After every request and every market step the venue calls
``publish``: it drains the engine's events (events.py) and changes and turns them into
- private notifications (docs/thalex-protocol.md §4.9): session.orders, account.orders,
  account.trade_history, account.portfolio (also resent when the mark moved by more than
  1 %), session.mm_protection; each connection gets one message per channel per round;
- public ones: prints go to the book and recent_trades feeds, changed instruments and (on a
  market step) the indices touch their feeds, and every raw feed touched sends once.
Subscribing a connection, its snapshots, and forgetting it when it is gone are here too.
"""
from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

from app.exchange.protocol import SNAPSHOT_CHANNELS
from app.venue.engine import Engine
from app.venue.events import AccountTradeEvent, OrderEvent, PositionEvent, ProtectionEvent, TradeEvent
from app.venue.feeds import ChannelSpec, Feed, notification, parse_channel
from app.venue.transport import Connection


class Publishing:
    """Connections, subscriptions and the notifications that follow the engine's work."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: Public-channel notifications queued so far, per (session, channel): what a
        #: subscriber should have received, for end-to-end counts in tests and benchmarks.
        self.notifications_sent: Counter[tuple[int, str]] = Counter()
        self.connections: set[Connection] = set()
        self.sessions: dict[int, Connection] = {}
        self.account_connections: dict[str, set[Connection]] = defaultdict(set)
        self.feeds: dict[str, Feed] = {}
        #: ticker, lwt and book feeds by instrument; book and recent_trades feeds by traded instrument.
        self.instrument_feeds: dict[str, set[Feed]] = defaultdict(set)
        self.trade_feeds: dict[str, set[Feed]] = defaultdict(set)
        self.index_feeds: dict[str, Feed] = {}
        self.system_feed_name = "system"
        self._raw_pending: set[Feed] = set()

    # -- connections -------------------------------------------------------------------------

    def _connected(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.sessions[conn.session] = conn

    def _disconnected(self, conn: Connection) -> None:
        """Forget ``conn``: its session, its subscriptions, its account's audience."""
        self.connections.discard(conn)
        self.sessions.pop(conn.session, None)
        for feed in list(conn.feeds.values()):
            feed.remove(conn)
        conn.feeds.clear()
        if conn.account is not None:
            self.account_connections[conn.account].discard(conn)

    # -- publishing --------------------------------------------------------------------------

    def publish(self, market_step: bool = False) -> None:
        """Turn the engine's events and changes into notifications."""
        engine = self.engine
        private: dict[Connection, dict[str, list]] = {}

        def add(conn: Connection, channel: str, item: Any) -> None:
            private.setdefault(conn, {}).setdefault(channel, []).append(item)

        portfolio_lines: dict[Connection, set[str]] = {}
        for event in engine.take_events():
            if isinstance(event, OrderEvent):
                for conn in self.account_connections.get(event.account, ()):
                    if "account.orders" in conn.private:
                        add(conn, "account.orders", event.status)
                    if conn.session == event.session and "session.orders" in conn.private:
                        add(conn, "session.orders", event.status)
            elif isinstance(event, TradeEvent):
                for feed in self.trade_feeds.get(event.instrument, ()):
                    feed.add_trade(event.instrument, event.price, event.amount, event.direction, event.time)
                    feed.touch(self._raw_pending)
            elif isinstance(event, AccountTradeEvent):
                for conn in self.account_connections.get(event.account, ()):
                    if "account.trade_history" in conn.private:
                        add(conn, "account.trade_history", event.trade)
            elif isinstance(event, PositionEvent):
                for conn in self.account_connections.get(event.account, ()):
                    if "account.portfolio" in conn.private:
                        portfolio_lines.setdefault(conn, set()).add(event.instrument)
            elif isinstance(event, ProtectionEvent):
                conn = self.sessions.get(event.session)
                if conn is not None and "session.mm_protection" in conn.private:
                    add(conn, "session.mm_protection", {"product": event.product,
                                                        "remaining_amount": event.remaining_amount,
                                                        "reason": event.reason})
        for name in engine.take_dirty():
            for feed in self.instrument_feeds.get(name, ()):
                feed.touch(self._raw_pending)
        if market_step:
            for feed in self.index_feeds.values():
                feed.touch(self._raw_pending)
            self._portfolio_mark_moves(portfolio_lines)
        for conn, names in portfolio_lines.items():
            acc = engine.accounts[conn.account]  # type: ignore[index]
            for name in sorted(names):
                entry = engine.portfolio_entry(acc.positions[name])
                conn.portfolio_marks[name] = entry["mark_price"]
                add(conn, "account.portfolio", entry)
        pending, self._raw_pending = self._raw_pending, set()
        for feed in pending:
            feed.emit()
        for conn, channels in private.items():
            for channel, items in channels.items():
                conn.enqueue(notification(channel, items))

    def _portfolio_mark_moves(self, lines: dict[Connection, set[str]]) -> None:
        for conn in self.connections:
            if "account.portfolio" not in conn.private or conn.account is None:
                continue
            for name, pos in self.engine.accounts[conn.account].positions.items():
                if pos.units == 0:
                    continue
                mark = self.engine.markets[name].mark
                last = conn.portfolio_marks.get(name)
                if last is None or abs(mark - last) > 0.01 * abs(last):
                    lines.setdefault(conn, set()).add(name)

    def publish_summaries(self) -> None:
        """account.summary to every connection subscribed to it (the server's timer calls this)."""
        for conn in list(self.connections):
            if "account.summary" in conn.private and conn.account is not None:
                conn.enqueue(notification("account.summary", self.engine.account_summary(conn.account)))

    def publish_system_event(self, event: dict) -> None:
        """One ``system`` notification to its subscribers (docs/thalex-protocol.md §3.7)."""
        feed = self.feeds.get(self.system_feed_name)
        if feed is not None:
            data = notification(self.system_feed_name, event)
            for conn in list(feed.subscribers):
                conn.enqueue(data)

    # -- subscriptions -----------------------------------------------------------------------

    def _feed(self, spec: ChannelSpec) -> Feed:
        feed = self.feeds.get(spec.name)
        if feed is None:
            feed = self.feeds[spec.name] = Feed(spec, self.engine, asyncio.get_running_loop(), self._feed_emptied,
                                                self.notifications_sent)
            if spec.kind in ("ticker", "lwt", "book"):
                self.instrument_feeds[spec.instrument].add(feed)  # type: ignore[index]
            if spec.kind == "book":
                self.trade_feeds[spec.instrument].add(feed)  # type: ignore[index]
            if spec.kind == "recent_trades":
                for name in spec.targets:
                    self.trade_feeds[name].add(feed)
            if spec.kind == "price_index":
                self.index_feeds[spec.name] = feed
        return feed

    def _feed_emptied(self, feed: Feed) -> None:
        self.feeds.pop(feed.spec.name, None)
        for feeds in (*self.instrument_feeds.values(), *self.trade_feeds.values()):
            feeds.discard(feed)
        self.index_feeds.pop(feed.spec.name, None)
        self._raw_pending.discard(feed)

    def subscribe(self, conn: Connection, channels: list, private_allowed: bool) -> list[str]:
        """Subscribe ``conn`` to the ``channels`` the venue has; returns those. Snapshots are
        sent after the reply (``conn.after_reply``)."""
        done: list[str] = []
        for name in channels:
            spec = parse_channel(name, self.engine)
            if spec is None:
                continue  # unknown channels are left out of the result (docs/thalex-protocol.md §1.5)
            if spec.private:
                if not private_allowed or conn.account is None:
                    continue
                if name not in conn.private:
                    conn.private.add(name)
                    conn.after_reply.append(lambda n=name: self._private_snapshot(conn, n))
            elif name not in conn.feeds:
                feed = self._feed(spec)
                conn.feeds[name] = feed
                conn.after_reply.append(lambda f=feed: f.add(conn))
            if name not in done:
                done.append(name)
        return done

    def _private_snapshot(self, conn: Connection, channel: str) -> None:
        engine = self.engine
        account = conn.account
        assert account is not None
        if channel == "session.orders":
            items: Any = engine.session_open_orders(conn.session)
        elif channel == "account.orders":
            items = engine.open_orders(account)
        elif channel == "account.portfolio":
            items = engine.portfolio(account)
            for entry in items:
                conn.portfolio_marks[entry["instrument_name"]] = entry["mark_price"]
        elif channel == "account.summary":
            items = engine.account_summary(account)
        else:
            return  # the rest start with the first change
        conn.enqueue(notification(channel, items, snapshot=channel in SNAPSHOT_CHANNELS))

    def unsubscribe(self, conn: Connection, channels: list) -> list[str]:
        """Unsubscribe ``conn`` from ``channels``; returns those it was subscribed to."""
        done = []
        for name in channels:
            if not isinstance(name, str):
                continue
            feed = conn.feeds.pop(name, None)
            if feed is not None:
                feed.remove(conn)
                done.append(name)
            elif name in conn.private:
                conn.private.discard(name)
                done.append(name)
        return done
