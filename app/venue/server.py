"""The venue's websocket server: Thalex JSON-RPC on ws://host:port/ws/api/v2 (thalex_api.md §1).

One ``Venue`` owns the engine (engine.py), the moving market (market.py), the
authenticator (auth.py) and the latency probe (latency.py), and serves them with
aiohttp. Each websocket connection is one session (``Connection``):
- requests are handled one at a time in arrival order (pipelining works; the
  engine is synchronous, so nothing interleaves inside a request);
- every reply and notification goes through the connection's outbox and one
  writer task, so a slow client never blocks the engine, and a client that stops
  reading is dropped once ``max_outbox`` messages pile up;
- per-connection token buckets enforce the message rates of §6.2 (code 4);
- cancel-on-disconnect (§6.3): closing, going quiet for ``timeout_secs`` (pings
  count as traffic) or ``cancel_session`` deletes the session's non-persistent orders.

After every request and every market step the venue drains the engine's events
and publishes them: private feeds here, public channels through feeds.py.
``GET /venue/latency`` and the JSON-RPC method ``venue/latency`` expose the
latency probe.
"""
from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable, Optional

import orjson
from aiohttp import WSMsgType, web

from app.venue.auth import Authenticator, default_account
from app.venue.config import VenueConfig
from app.venue.engine import (
    AccountTradeEvent,
    Engine,
    OrderEvent,
    PositionEvent,
    ProtectionEvent,
    TradeEvent,
)
from app.venue.errors import (
    INVALID_REQUEST,
    NOT_LOGGED_IN,
    PERSISTENT_SESSION,
    THROTTLE_EXCEEDED,
    UNKNOWN_METHOD,
    VenueError,
)
from app.venue.feeds import ChannelSpec, Feed, notification, parse_channel
from app.venue.instruments import DEFAULT_INSTRUMENTS, Instrument
from app.venue.latency import LatencyProbe
from app.venue.market import Market

log = logging.getLogger(__name__)

PATH = "/ws/api/v2"
API_VERSION = "2.55.0"
ACCOUNT_PATTERN = re.compile(r"^A[0-9]{9}$")
#: Parameters an order entry passes on to the engine (§4.2); others are ignored.
INSERT_PARAMS = ("instrument_name", "direction", "amount", "price", "order_type", "time_in_force", "post_only",
                 "reject_post_only", "reduce_only", "collar", "label", "client_order_id", "stp_level", "stp_action")


class TokenBucket:
    """``rate`` messages per second, burst ``rate`` (§6.2: the limit is both)."""

    __slots__ = ("rate", "tokens", "stamp")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


#: Bytes the venue lets pile up in a session's socket buffer before it stops writing to it.
WRITE_BUFFER_LIMIT = 1 << 20


def _text_frame(data: bytes) -> bytes:
    """A final, unmasked websocket text frame (server to client) carrying ``data``."""
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 1 << 16:
        return b"\x81\x7e" + n.to_bytes(2, "big") + data
    return b"\x81\x7f" + n.to_bytes(8, "big") + data


class _ReadStamp(asyncio.Protocol):
    """Sits between a session's socket and aiohttp's protocol and stamps each read.

    The latency probe times an order from its *arrival*: the read that completes it.
    aiohttp hands the venue a message only after a task switch, and the second message
    of one read only after the venue has handled the first (its engine work, replies and
    notifications), so a stamp taken there would charge the venue's own time to the client.
    """

    def __init__(self, inner: asyncio.Protocol, conn: "Connection") -> None:
        self.inner = inner
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.last_read_at = time.perf_counter()
        self.inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self.inner.eof_received()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Connection:
    """One websocket session."""

    def __init__(self, venue: "Venue", ws: web.WebSocketResponse, session: int,
                 transport: Optional[asyncio.Transport]) -> None:
        now = time.perf_counter()
        self.venue = venue
        self.ws = ws
        #: The socket under ``ws`` (None once the request lost it): the outbox is written to it in
        #: one piece (see write()).
        self.transport = transport
        self.session = session
        self.account: Optional[str] = None
        self.kid: Optional[str] = None
        self.cod_timeout: Optional[float] = None
        self.last_traffic = now
        #: perf_counter() when the last market-data notification was handed to the socket.
        self.last_md_sent: Optional[float] = None
        #: perf_counter() of the latest read from the socket (_ReadStamp); None until the first.
        self.last_read_at: Optional[float] = None
        self.outbox: list[tuple[bytes, bool]] = []
        self.wake = asyncio.Event()
        self.closed = False
        self.feeds: dict[str, Feed] = {}
        self.private: set[str] = set()
        #: Mark at the last account.portfolio line per instrument (resent on a >1 % move, §4.9).
        self.portfolio_marks: dict[str, float] = {}
        self.order_bucket = TokenBucket(venue.config.order_rate, now)
        self.cancel_bucket = TokenBucket(venue.config.cancel_rate, now)
        #: Work to do after the current reply is queued (subscription snapshots follow the result).
        self.after_reply: list[Callable[[], None]] = []

    def enqueue(self, data: bytes, market_data: bool = False) -> None:
        if self.closed:
            return
        self.outbox.append((data, market_data))
        self.wake.set()
        if len(self.outbox) > self.venue.config.max_outbox:
            log.warning("session %d does not read its messages; closing it", self.session)
            self.closed = True
            self.venue.spawn(self.ws.close(code=1008, message=b"slow consumer"))

    def reply(self, request_id: Any, result: Any) -> None:
        self.enqueue(orjson.dumps({"id": request_id, "result": result}))

    def fail(self, request_id: Any, error: VenueError) -> None:
        self.enqueue(orjson.dumps({"id": request_id, "error": error.to_json()}))

    async def write(self) -> None:
        """Send the outbox in order; stamps the latency probe's market-data clock.

        Everything queued since the last round (a market step's notifications, replies) is
        framed here and handed to the socket in one write: one system call and, usually, one
        read for the client, instead of one of each per message (aiohttp's send_frame). The
        frames are plain unmasked text frames (RFC 6455 §5.2; the venue never compresses).
        While the client does not read, the socket's buffer stays above WRITE_BUFFER_LIMIT,
        this waits, and the outbox grows until max_outbox closes the session."""
        ws, transport = self.ws, self.transport
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.outbox = self.outbox, []
            if ws.closed or transport is None or transport.is_closing():
                return
            if any(market_data for _data, market_data in batch):
                # Stamped before the write, which hands the bytes to the socket: a stamp after
                # it could come after the client had already answered (the write wakes the
                # client, which may run first), and the probe under-read.
                self.last_md_sent = time.perf_counter()
            transport.write(b"".join([_text_frame(data) for data, _market_data in batch]))
            while transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT and not transport.is_closing():
                await asyncio.sleep(0.005)


class Venue:
    """The simulated exchange. ``await start()``, then connect to ``url``; ``await stop()``."""

    def __init__(self, config: VenueConfig = VenueConfig(),
                 instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS) -> None:
        #: Public-channel notifications queued so far, per (session, channel): what a
        #: subscriber should have received, for end-to-end counts in tests and benchmarks.
        self.notifications_sent: Counter[tuple[int, str]] = Counter()
        config.validate()
        self.config = config
        now = time.time()
        self.engine = Engine(config, instruments, now)
        self.market = Market(self.engine, now)
        self.auth = Authenticator(config.trusted_keys_dir, config.login_iat_window)
        self.latency = LatencyProbe()
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
        self._session_seq = 0
        self._runner: Optional[web.AppRunner] = None
        self._tasks: list[asyncio.Task] = []
        #: Fire-and-forget work (closing sockets), referenced until done.
        self._background: set[asyncio.Task] = set()
        self.port: Optional[int] = None
        self.methods: dict[str, tuple[Callable[[Connection, dict], Any], bool, Optional[str]]] = {
            # name: (handler, needs login, rate bucket)
            "public/login": (self._login, False, None),
            "public/instruments": (self._instruments, False, None),
            "public/instrument": (self._instrument, False, None),
            "public/ticker": (self._ticker, False, None),
            "public/index": (self._index, False, None),
            "public/book": (self._book, False, None),
            "public/system_info": (self._system_info, False, None),
            "public/subscribe": (self._public_subscribe, False, None),
            "private/subscribe": (self._private_subscribe, True, None),
            "unsubscribe": (self._unsubscribe, False, None),
            "public/unsubscribe": (self._unsubscribe, False, None),
            "private/unsubscribe": (self._unsubscribe, False, None),
            "private/insert": (self._insert, True, "order"),
            "private/buy": (self._buy, True, "order"),
            "private/sell": (self._sell, True, "order"),
            "private/amend": (self._amend, True, "order"),
            "private/mass_quote": (self._mass_quote, True, "order"),
            "private/cancel": (self._cancel, True, "cancel"),
            "private/cancel_all": (self._cancel_all, True, "cancel"),
            "private/cancel_session": (self._cancel_session, True, "cancel"),
            "private/cancel_mass_quote": (self._cancel_mass_quote, True, "cancel"),
            "private/set_cancel_on_disconnect": (self._set_cancel_on_disconnect, True, None),
            "private/set_mm_protection": (self._set_mm_protection, True, None),
            "private/open_orders": (self._open_orders, True, None),
            "private/portfolio": (self._portfolio, True, None),
            "private/account_summary": (self._account_summary, True, None),
            "private/trade_history": (self._trade_history, True, None),
            "venue/latency": (self._latency, False, None),
        }
        #: Methods whose arrival the latency probe times (orders and their cancels).
        self.probed = {"private/insert", "private/buy", "private/sell", "private/amend", "private/mass_quote",
                       "private/cancel"}

    # -- life cycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the venue is not started")
        return f"ws://{self.config.host}:{self.port}{PATH}"

    @property
    def http_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the venue is not started")
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PATH, self._websocket)
        app.router.add_get("/venue/latency", self._http_latency)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        if self.config.market_running:
            self._tasks.append(loop.create_task(self._run_market()))
        self._tasks.append(loop.create_task(self._watch_sessions()))
        self._tasks.append(loop.create_task(self._send_summaries()))
        self.publish()

    async def stop(self, planned: Optional[bool] = None) -> None:
        """Close every connection and the server; with ``planned``, announce it first (§3.7)."""
        planned = self.config.announce_shutdown if planned is None else planned
        if planned:
            await self.announce_shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # Concurrently: each close waits for the client's closing handshake (or its timeout).
        await asyncio.gather(*(conn.ws.close(code=1001, message=b"venue shutting down")
                               for conn in list(self.connections)), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def announce_shutdown(self) -> None:
        """Send ``system`` → ``{"event": "reconnect"}`` and wait ``reconnect_lead`` seconds."""
        feed = self.feeds.get(self.system_feed_name)
        if feed is not None:
            data = notification(self.system_feed_name, {"event": "reconnect"})
            for conn in list(feed.subscribers):
                conn.enqueue(data)
        await asyncio.sleep(self.config.reconnect_lead)

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def latency_stats(self) -> dict:
        """Tick-to-order latency distribution (latency.py)."""
        return self.latency.stats()

    def step_market(self, now: Optional[float] = None) -> None:
        """Advance the market one step and publish what changed (the timer does this when running)."""
        self.market.step(time.time() if now is None else now)
        self.publish(market_step=True)

    async def _run_market(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.config.tick_interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            if loop.time() - due > 1.0:  # far behind (a paused process): skip, don't burst
                due = loop.time()
            self.step_market()

    async def _watch_sessions(self) -> None:
        """Cancel-on-disconnect timeouts: a COD session silent for ``timeout_secs`` is dead (§4.1)."""
        while True:
            await asyncio.sleep(0.05)
            now = time.perf_counter()
            for conn in list(self.connections):
                if conn.cod_timeout is not None and not conn.closed and now - conn.last_traffic > conn.cod_timeout:
                    log.info("session %d sent nothing for %.1f s: cancelling its orders", conn.session,
                             conn.cod_timeout)
                    self.engine.cancel_session(conn.session, time.time())
                    self.publish()
                    conn.closed = True
                    # Not awaited here: a client that never answers the close must not stall the watch.
                    self.spawn(conn.ws.close(code=1001, message=b"cancel_on_disconnect timeout"))

    async def _send_summaries(self) -> None:
        while True:
            await asyncio.sleep(self.config.summary_interval)
            for conn in list(self.connections):
                if "account.summary" in conn.private and conn.account is not None:
                    conn.enqueue(notification("account.summary", self.engine.account_summary(conn.account)))

    # -- connections ---------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        # autoping off: the venue answers pings itself, so that a ping counts as
        # traffic for cancel-on-disconnect, as §1.1 says it does.
        ws = web.WebSocketResponse(autoping=False, compress=False, decode_text=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        self._session_seq += 1
        conn = Connection(self, ws, self._session_seq, request.transport)
        if request.transport is not None:
            request.transport.set_protocol(_ReadStamp(request.transport.get_protocol(), conn))
        self.connections.add(conn)
        self.sessions[conn.session] = conn
        writer = asyncio.get_running_loop().create_task(conn.write())
        try:
            async for msg in ws:
                # The message arrived with the latest read: the messages one read delivers are
                # all handed over before the loop (and so the socket) is served again.
                received = conn.last_read_at or time.perf_counter()
                conn.last_traffic = received
                if msg.type == WSMsgType.TEXT or msg.type == WSMsgType.BINARY:
                    self._handle(conn, msg.data, received)
                elif msg.type == WSMsgType.PING:
                    try:
                        await ws.pong(msg.data)
                    except ConnectionResetError:  # the client's last ping, as the socket closes
                        break
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._drop(conn)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        return ws

    def _drop(self, conn: Connection) -> None:
        conn.closed = True
        self.connections.discard(conn)
        self.sessions.pop(conn.session, None)
        for feed in list(conn.feeds.values()):
            feed.remove(conn)
        conn.feeds.clear()
        if conn.account is not None:
            self.account_connections[conn.account].discard(conn)
        self.engine.close_session(conn.session, time.time())
        self.publish()

    def _handle(self, conn: Connection, data: bytes, received: float) -> None:
        try:
            request = orjson.loads(data)
        except orjson.JSONDecodeError:
            conn.fail(None, VenueError(INVALID_REQUEST, "message is not valid JSON"))
            return
        if not isinstance(request, dict):
            conn.fail(None, VenueError(INVALID_REQUEST, "a request is a JSON object"))
            return
        request_id = request.get("id")
        method = request.get("method")
        try:
            if not isinstance(method, str):
                raise VenueError(INVALID_REQUEST, "method must be a string")
            entry = self.methods.get(method)
            if entry is None:
                raise VenueError(UNKNOWN_METHOD, f"unknown method {method!r}")
            handler, private, bucket = entry
            params = request.get("params")
            if not isinstance(params, dict):
                raise VenueError(INVALID_REQUEST, "params is required and must be an object ({} for none)")
            if private and conn.account is None:
                raise VenueError(NOT_LOGGED_IN, "log in first (public/login)")
            if method in self.probed and conn.last_md_sent is not None:
                self.latency.record(method, received - conn.last_md_sent)
            if bucket == "order" and not conn.order_bucket.take(received):
                raise VenueError(THROTTLE_EXCEEDED, "matching-engine message rate exceeded")
            if bucket == "cancel" and not conn.cancel_bucket.take(received):
                raise VenueError(THROTTLE_EXCEEDED, "cancel rate exceeded")
            result = handler(conn, params)
        except VenueError as exc:
            conn.fail(request_id, exc)
        else:
            conn.reply(request_id, result)
        finally:
            conn.after_reply, after = [], conn.after_reply
            for work in after:
                work()
            self.publish()

    # -- publishing ------------------------------------------------------------

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

    # -- subscriptions ---------------------------------------------------------

    def _feed(self, spec: ChannelSpec) -> Feed:
        feed = self.feeds.get(spec.name)
        if feed is None:
            feed = self.feeds[spec.name] = Feed(spec, self.engine, asyncio.get_running_loop(), self._feed_emptied)
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

    def _subscribe(self, conn: Connection, params: dict, private_allowed: bool) -> list[str]:
        channels = params.get("channels")
        if not isinstance(channels, list):
            raise VenueError(INVALID_REQUEST, "channels must be a list of channel names")
        done: list[str] = []
        for name in channels:
            spec = parse_channel(name, self.engine)
            if spec is None:
                continue  # unknown channels are left out of the result (§1.5)
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
            conn.enqueue(notification(channel, engine.session_open_orders(conn.session), snapshot=True))
        elif channel == "account.orders":
            conn.enqueue(notification(channel, engine.open_orders(account), snapshot=True))
        elif channel == "account.portfolio":
            entries = engine.portfolio(account)
            for entry in entries:
                conn.portfolio_marks[entry["instrument_name"]] = entry["mark_price"]
            conn.enqueue(notification(channel, entries, snapshot=True))
        elif channel == "account.summary":
            conn.enqueue(notification(channel, engine.account_summary(account)))

    def _public_subscribe(self, conn: Connection, params: dict) -> list[str]:
        return self._subscribe(conn, params, private_allowed=False)

    def _private_subscribe(self, conn: Connection, params: dict) -> list[str]:
        return self._subscribe(conn, params, private_allowed=True)

    def _unsubscribe(self, conn: Connection, params: dict) -> list[str]:
        channels = params.get("channels")
        if not isinstance(channels, list):
            raise VenueError(INVALID_REQUEST, "channels must be a list of channel names")
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

    # -- public methods --------------------------------------------------------

    def _login(self, conn: Connection, params: dict) -> dict:
        if conn.account is not None:
            raise VenueError(INVALID_REQUEST, "this connection is already logged in")
        kid = self.auth.verify(params.get("token"), time.time())
        account = params.get("account")
        if account is None:
            account = default_account(kid)
        elif not isinstance(account, str) or not ACCOUNT_PATTERN.match(account):
            raise VenueError(INVALID_REQUEST, "account must be an account number such as A123456789")
        conn.account = account
        conn.kid = kid
        self.engine.open_session(conn.session, account, customer=kid)
        self.account_connections[account].add(conn)
        return {"account_number": account}

    def _instruments(self, conn: Connection, params: dict) -> list[dict]:
        underlying = params.get("underlying")
        kind = params.get("instrument_type")
        if kind is not None and kind not in ("futures", "options", "future_rolls"):
            raise VenueError(INVALID_REQUEST, "instrument_type must be futures, options or future_rolls")
        out = []
        for ins in self.engine.instruments.values():
            if underlying is not None and ins.underlying != underlying:
                continue
            if kind is not None and kind != "futures":
                continue  # only perpetuals are listed; they count as futures
            if params.get("expiry_date") is not None:
                continue  # perpetuals have no expiry date
            out.append(ins.to_json())
        return out

    def _instrument(self, conn: Connection, params: dict) -> dict:
        return self.engine.instrument(params.get("instrument_name")).to_json()

    def _ticker(self, conn: Connection, params: dict) -> dict:
        return self.engine.ticker(self.engine.instrument(params.get("instrument_name")).instrument_name)

    def _index(self, conn: Connection, params: dict) -> dict:
        return self.engine.index(params.get("underlying"))

    def _book(self, conn: Connection, params: dict) -> dict:
        return self.engine.public_book(self.engine.instrument(params.get("instrument_name")).instrument_name)

    def _system_info(self, conn: Connection, params: dict) -> dict:
        # "testnet": the closest of the two documented environments; "venue" says what it really is.
        return {"environment": "testnet", "api_version": API_VERSION, "banners": [], "venue": "cryptics-simulated"}

    def _latency(self, conn: Connection, params: dict) -> dict:
        stats = self.latency.stats()
        if params.get("reset") is True:
            self.latency.reset()
        return stats

    async def _http_latency(self, request: web.Request) -> web.Response:
        stats = self.latency.stats()
        if request.query.get("reset") in ("1", "true"):
            self.latency.reset()
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    # -- private methods -------------------------------------------------------

    def _order_fields(self, params: dict) -> dict:
        if "legs" in params:
            raise VenueError(INVALID_REQUEST, "combination orders are not supported: no combinations are listed")
        return {name: params[name] for name in INSERT_PARAMS if name in params}

    def _insert(self, conn: Connection, params: dict) -> dict:
        fields = self._order_fields(params)
        if "direction" not in fields:
            raise VenueError(INVALID_REQUEST, "direction is required")
        if "amount" not in fields:
            raise VenueError(INVALID_REQUEST, "amount is required")
        return self.engine.insert(conn.account, conn.session, now=time.time(), **fields)  # type: ignore[arg-type]

    def _buy(self, conn: Connection, params: dict) -> dict:
        return self._insert(conn, {**params, "direction": "buy"})

    def _sell(self, conn: Connection, params: dict) -> dict:
        return self._insert(conn, {**params, "direction": "sell"})

    def _amend(self, conn: Connection, params: dict) -> dict:
        return self.engine.amend(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                 order_id=params.get("order_id"), client_order_id=params.get("client_order_id"),
                                 price=params.get("price"), amount=params.get("amount"),
                                 collar=params.get("collar"))

    def _cancel(self, conn: Connection, params: dict) -> dict:
        return self.engine.cancel(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                  order_id=params.get("order_id"), client_order_id=params.get("client_order_id"))

    def _cancel_all(self, conn: Connection, params: dict) -> int:
        return self.engine.cancel_all(conn.account, time.time())  # type: ignore[arg-type]

    def _cancel_session(self, conn: Connection, params: dict) -> None:
        if conn.cod_timeout is None:
            raise VenueError(PERSISTENT_SESSION, "cancel_session needs set_cancel_on_disconnect first")
        self.engine.cancel_session(conn.session, time.time())
        return None

    def _set_cancel_on_disconnect(self, conn: Connection, params: dict) -> dict:
        timeout = params.get("timeout_secs")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise VenueError(INVALID_REQUEST, "timeout_secs must be a positive number")
        conn.cod_timeout = float(timeout)
        self.engine.set_cancel_on_disconnect(conn.session)
        rate = self.config.order_rate_cod
        conn.order_bucket.rate = rate
        return {"message_rate": int(rate) if float(rate).is_integer() else rate}

    def _set_mm_protection(self, conn: Connection, params: dict) -> None:
        self.engine.set_mm_protection(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                      product=params.get("product"), trade_amount=params.get("trade_amount"),
                                      quote_amount=params.get("quote_amount"), amount=params.get("amount"))
        return None

    def _mass_quote(self, conn: Connection, params: dict) -> dict:
        return self.engine.mass_quote(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                      quotes=params.get("quotes"), label=params.get("label"),
                                      post_only=params.get("post_only", False),
                                      reject_post_only=params.get("reject_post_only", False))

    def _cancel_mass_quote(self, conn: Connection, params: dict) -> None:
        self.engine.cancel_mass_quote(conn.account, time.time(),  # type: ignore[arg-type]
                                      product=params.get("product"))
        return None

    def _open_orders(self, conn: Connection, params: dict) -> list[dict]:
        return self.engine.open_orders(conn.account)  # type: ignore[arg-type]

    def _portfolio(self, conn: Connection, params: dict) -> list[dict]:
        return self.engine.portfolio(conn.account)  # type: ignore[arg-type]

    def _account_summary(self, conn: Connection, params: dict) -> dict:
        return self.engine.account_summary(conn.account)  # type: ignore[arg-type]

    def _trade_history(self, conn: Connection, params: dict) -> dict:
        return self.engine.trade_history(conn.account, params)  # type: ignore[arg-type]


async def serve(config: VenueConfig) -> None:
    """Run a venue until SIGTERM or SIGINT, then close it (announcing it if configured)."""
    venue = Venue(config)
    await venue.start()
    message = f"venue listening on {venue.url}"
    print(message, flush=True)
    log.info(message)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await venue.stop()
