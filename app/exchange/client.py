"""ThalexClient: one websocket session to Thalex or the simulated venue.

What it does, in the protocol's terms (docs/thalex-protocol.md §1–2, §6):
- requests are JSON-RPC ``{method, params, id}``; replies are matched by id, in
  whatever order they come back;
- notifications are dispatched to the handler registered for their channel;
- the socket is pinged every ``ping_interval`` seconds, whatever is received meanwhile,
  which keeps a cancel-on-disconnect session alive; a ping unanswered for half that
  drops the connection (a dead peer);
- with credentials, every connection logs in with a fresh RS512 token
  (app/exchange/auth.py), optionally for a sub-account;
- subscribe checks the channel list the venue returns: Thalex answers success
  even for channels it does not know and simply leaves them out;
- any drop is followed by reconnects with jittered exponential backoff; each new
  connection logs in again, runs the session hooks (e.g. set_cancel_on_disconnect)
  and resubscribes, and stateful feeds then start over from their next snapshot;
- a ``system`` ``{"event": "reconnect"}`` notice (sent ≥ 10 s before a planned
  shutdown) triggers the reconnect ahead of time instead of waiting for the drop.

Nothing the venue sends can crash the client: malformed messages, unknown
channels and notifications a handler cannot digest are logged and counted in
``stats``. A rejected login is the one fatal error: retrying it cannot help.

The same code talks to the simulated venue, Thalex testnet and production: only
the URL and the credentials differ (app/settings.py).

The websocket is picows, for the tick → order hot path (docs/architecture.md#d1-the-hot-path-stays-in-one-process): each frame is
handled inside the event loop's read callback, so a notification handler runs
(and may answer with ``send_request``, which writes at once) before the loop does
anything else, with no task in between. Measured on loopback with uvloop, one way
from an aiohttp server's write to the client's handler: aiohttp's client p50 152 µs,
picows 100 µs; and aiohttp's send is a coroutine, so answering meant a task hop more.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
from collections import Counter
from typing import Any, Awaitable, Callable, Iterable, Optional

import picows
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from app.exchange import messages
from app.exchange.auth import Credentials, tokens
from app.exchange.messages import ErrorReply, Notification, ProtocolError, Result
from app.exchange.protocol import is_private

log = logging.getLogger(__name__)

#: A handler may be a plain function, which runs as the frame is read (the hot path), or a
#: coroutine function, whose coroutines run one after another in the connection's
#: handler task, in arrival order.
Handler = Callable[[Notification], Optional[Awaitable[None]]]
SessionHook = Callable[["ThalexClient"], Awaitable[None]]


#: How many of each kind of bad input to log in full before logging only every 1000th.
_LOG_FIRST = 5


class ThalexError(Exception):
    """The venue answered a request with an error (docs/thalex-protocol.md §6.1 codes)."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: error {code}: {message}")
        self.method = method
        self.code = code
        self.message = message


class LoginRejected(ThalexError):
    """The venue refused our credentials. Fatal: retrying cannot fix it."""


class SubscriptionRejected(RuntimeError):
    """The venue left channels out of a subscribe result: they do not exist there."""

    def __init__(self, rejected: list[str]) -> None:
        super().__init__(f"the venue did not subscribe {rejected} (unknown instrument or channel?)")
        self.rejected = rejected


class NotConnected(ConnectionError):
    pass


class ThalexClient:
    def __init__(
        self,
        url: str,
        credentials: Optional[Credentials] = None,
        *,
        ping_interval: float = 5.0,
        request_timeout: float = 10.0,
        reconnect_min_delay: float = 0.1,
        reconnect_max_delay: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.ping_interval = ping_interval
        self.request_timeout = request_timeout
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self._rng = rng

        #: Counts of what happened: messages, notifications, malformed, unknown_channel,
        #: bad_notifications, unmatched_replies, disconnects, reconnects, reconnect_notices.
        self.stats: Counter[str] = Counter()
        #: The account the session trades for, as the venue confirmed at login.
        self.account: Optional[str] = None
        #: Set while a logged-in, subscribed connection is up.
        self.connected = asyncio.Event()
        #: The error that stopped the client for good (a rejected login), if any.
        self.fatal: Optional[BaseException] = None

        # `system` carries the reconnect notice before a planned shutdown (docs/thalex-protocol.md §3.7): every
        # connection subscribes it; _on_system acts on it before any handler runs.
        self._handlers: dict[str, list[Handler]] = {"system": []}
        self._session_hooks: list[SessionHook] = []
        self._disconnect_listeners: list[Callable[[], None]] = []
        self._pending: dict[int, tuple[str, asyncio.Future]] = {}
        self._ids = itertools.count(1)
        self._socket: Optional[_Socket] = None
        self._supervisor: Optional[asyncio.Task] = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------

    def add_session_hook(self, hook: SessionHook) -> None:
        """Run ``hook(client)`` after login on every connection, before resubscribing."""
        self._session_hooks.append(hook)

    def add_disconnect_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever the connection drops (state built from feeds is stale)."""
        self._disconnect_listeners.append(listener)

    async def start(self) -> None:
        """Connect (and log in) once; raise if that fails. Later drops reconnect by themselves."""
        await self._open()
        self._supervisor = asyncio.create_task(self._supervise(), name="thalex-client")

    async def close(self, cancel_session: bool = False) -> None:
        """Close for good; with ``cancel_session``, first delete this session's orders (docs/thalex-protocol.md §4.6)."""
        if cancel_session and self.connected.is_set():
            try:
                await self.call("private/cancel_session", timeout=2.0)
            except (ThalexError, NotConnected, asyncio.TimeoutError) as exc:
                log.warning("cancel_session on close failed: %s", exc)
        self._closing = True
        self.connected.clear()
        if self._socket is not None:
            await self._socket.close()
        task = self._supervisor
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_pending(NotConnected("client closed"))

    async def wait_closed(self) -> None:
        """Return when the client has stopped for good (closed, or a fatal error)."""
        if self._supervisor is not None:
            await asyncio.shield(self._supervisor)

    # -- requests --------------------------------------------------------------

    def send_request(self, method: str, params: Optional[dict] = None) -> asyncio.Future:
        """Write a request now (no await: the frame is on the socket when this returns) and
        return the future of its result; a venue error sets ThalexError on it. Raises
        NotConnected when there is no connection. Whoever holds the future times it out."""
        sock = self._socket
        if sock is None or sock.transport.is_disconnected:
            raise NotConnected(f"{method}: not connected to {self.url}")
        request_id = next(self._ids)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (method, future)
        future.add_done_callback(lambda _f: self._pending.pop(request_id, None))
        sock.transport.send(WSMsgType.TEXT, messages.request(method, params, request_id))
        return future

    async def call(self, method: str, params: Optional[dict] = None, *, timeout: Optional[float] = None) -> Any:
        """Send a request and return its result; a venue error raises ThalexError."""
        return await asyncio.wait_for(self.send_request(method, params), timeout or self.request_timeout)

    # -- subscriptions ---------------------------------------------------------

    async def subscribe(self, channels: Iterable[str], handler: Handler) -> list[str]:
        """Subscribe ``channels``, each notification going to ``handler``.

        Several parts of the worker may listen to one channel (the market-data
        source and the order gateway both read ``account.portfolio``): a channel
        already subscribed just gets one more handler, which sees what comes next
        (``resubscribe`` for a fresh snapshot to all). Raises SubscriptionRejected
        naming any channel the venue left out; the others stay subscribed.
        """
        wanted = list(dict.fromkeys(channels))
        if any(is_private(c) for c in wanted) and self.credentials is None:
            raise NotConnected("private channels need credentials: set CRYPTICS_THALEX_KEY_ID and "
                               "CRYPTICS_THALEX_PRIVATE_KEY_FILE")
        new = [c for c in wanted if c not in self._handlers]
        for channel in wanted:
            self._handlers.setdefault(channel, []).append(handler)
        accepted = await self._subscribe(new) if new else []
        rejected = [c for c in new if c not in accepted]
        for channel in rejected:
            del self._handlers[channel]
        if rejected:
            raise SubscriptionRejected(rejected)
        return [c for c in wanted if c not in rejected]

    async def unsubscribe(self, channels: Iterable[str]) -> list[str]:
        """Unsubscribe ``channels``, dropping every handler they had."""
        gone = list(channels)
        for channel in gone:
            self._handlers.pop(channel, None)
        result = await self.call("unsubscribe", {"channels": gone})
        return list(result or [])

    async def resubscribe(self, channel: str) -> None:
        """Unsubscribe and subscribe again, keeping the handlers: stateful feeds answer
        with a fresh snapshot."""
        handlers = self._handlers[channel]
        await self.unsubscribe([channel])
        self._handlers[channel] = handlers
        accepted = await self._subscribe([channel])
        if channel not in accepted:
            del self._handlers[channel]
            raise SubscriptionRejected([channel])

    async def _subscribe(self, channels: list[str]) -> list[str]:
        accepted: list[str] = []
        public = [c for c in channels if not is_private(c)]
        private = [c for c in channels if is_private(c)]
        for method, group in (("public/subscribe", public), ("private/subscribe", private)):
            if group:
                result = await self.call(method, {"channels": group})
                accepted.extend(c for c in (result or []) if isinstance(c, str))
        return accepted

    # -- connection ------------------------------------------------------------

    async def _open(self) -> None:
        secure = ssl.create_default_context() if self.url.startswith("wss:") else None
        # Pings on the client's own clock, whatever is received: a session that only listens
        # (a halted quoter) must still look alive to the venue's cancel-on-disconnect timer,
        # which counts pings as traffic (docs/thalex-protocol.md §4.1). picows waits the idle timeout, pings, then
        # waits the reply timeout: half the interval each makes one ping per interval, and
        # a pong missing for half an interval means a dead peer.
        half = self.ping_interval / 2
        _transport, sock = await picows.ws_connect(
            lambda: _Socket(self), self.url, ssl_context=secure, websocket_handshake_timeout=self.request_timeout,
            enable_auto_ping=half > 0, auto_ping_idle_timeout=half, auto_ping_reply_timeout=half,
            auto_ping_strategy=picows.WSAutoPingStrategy.PING_PERIODICALLY,
            max_frame_size=64 << 20, logger_name="app.exchange.client.ws")
        self._socket = sock
        try:
            if self.credentials is not None:
                await self._login(self.credentials)
            for hook in self._session_hooks:
                await hook(self)
            if self._handlers:
                channels = list(self._handlers)
                accepted = set(await self._subscribe(channels))
                lost = [c for c in channels if c not in accepted]
                if lost:
                    log.error("after reconnecting, the venue did not resubscribe %s", lost)
                    self.stats["resubscribe_rejected"] += len(lost)
        except BaseException:
            await sock.close()
            raise
        self.connected.set()

    async def _login(self, credentials: Credentials) -> None:
        params: dict[str, Any] = {"token": tokens.token(credentials)}
        if credentials.account:
            params["account"] = credentials.account
        try:
            result = await self.call("public/login", params)
        except ThalexError as exc:
            raise LoginRejected("public/login", exc.code,
                                f"{exc.message} (key id {credentials.key_id!r}: check CRYPTICS_THALEX_KEY_ID "
                                "and CRYPTICS_THALEX_PRIVATE_KEY_FILE)") from None
        self.account = result.get("account_number") if isinstance(result, dict) else None

    async def _supervise(self) -> None:
        """Wait for each drop, then reconnect with backoff, until closed or a fatal error."""
        while True:
            assert self._socket is not None
            await self._socket.transport.wait_disconnected()
            self._dropped()
            if self._closing:
                return
            attempt = 0
            while not self._closing:
                await asyncio.sleep(self._backoff(attempt))
                try:
                    await self._open()
                except LoginRejected as exc:
                    log.error("giving up: %s", exc)
                    self.fatal = exc
                    return
                except (picows.WSError, OSError, ThalexError, NotConnected, asyncio.TimeoutError) as exc:
                    attempt += 1
                    log.warning("reconnect attempt %d to %s failed: %s", attempt, self.url, exc)
                    continue
                self.stats["reconnects"] += 1
                log.info("reconnected to %s after %d failed attempt(s)", self.url, attempt)
                break

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: spreads the reconnects of many clients apart."""
        ceiling = min(self.reconnect_max_delay, self.reconnect_min_delay * (2 ** attempt))
        return ceiling * (0.5 + 0.5 * self._rng())

    def _dropped(self) -> None:
        self.connected.clear()
        self._socket = None
        self._fail_pending(NotConnected("connection lost"))
        if self._closing:
            return
        self.stats["disconnects"] += 1
        log.warning("connection to %s lost", self.url)
        for listener in self._disconnect_listeners:
            try:
                listener()
            except Exception:
                log.exception("disconnect listener failed")

    def _fail_pending(self, error: BaseException) -> None:
        for _method, future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    # -- incoming --------------------------------------------------------------

    def handle(self, raw: str | bytes) -> Optional[Awaitable[None]]:
        """Route one raw message. Never raises: bad input is logged and counted.

        Returns the awaitable of the async handlers, if any, for the connection's handler
        task to await (plain handlers have run when this returns)."""
        self.stats["messages"] += 1
        try:
            message = messages.parse(raw)
        except ProtocolError as exc:
            self._bad("malformed", str(exc))
            return None
        if isinstance(message, Notification):
            self.stats["notifications"] += 1
            if message.channel == "system":
                self._on_system(message)
            handlers = self._handlers.get(message.channel)
            if handlers is None:
                self._bad("unknown_channel", f"notification on unsubscribed channel {message.channel!r}")
                return None
            pending = []
            for handler in handlers:
                try:
                    outcome = handler(message)
                except Exception as exc:  # a payload the handler cannot digest: missing fields, wrong types
                    self._bad("bad_notifications", f"{message.channel}: {type(exc).__name__}: {exc}")
                    continue
                if outcome is not None:
                    pending.append(outcome)
            return self._finish_handlers(pending, message.channel) if pending else None
        entry = self._pending.get(message.id) if isinstance(message.id, int) else None
        if entry is None:
            self._bad("unmatched_replies", f"reply with unknown id {message.id!r}")
            return None
        method, future = entry
        if future.done():
            return None
        if isinstance(message, Result):
            future.set_result(message.result)
        else:
            assert isinstance(message, ErrorReply)
            future.set_exception(ThalexError(method, message.code, message.message))
        return None

    async def _finish_handlers(self, outcomes: list[Awaitable[None]], channel: str) -> None:
        for outcome in outcomes:  # in subscription order, like the plain handlers
            try:
                await outcome
            except Exception as exc:
                self._bad("bad_notifications", f"{channel}: {type(exc).__name__}: {exc}")

    def _on_system(self, message: Notification) -> None:
        payload = message.payload
        if isinstance(payload, dict) and payload.get("event") == "reconnect":
            self.stats["reconnect_notices"] += 1
            log.warning("venue announced a shutdown: reconnecting ahead of time")
            if self._socket is not None:
                # The supervisor sees the drop and reconnects as after any other.
                asyncio.get_running_loop().create_task(self._socket.close())

    def _bad(self, kind: str, detail: str) -> None:
        self.stats[kind] += 1
        count = self.stats[kind]
        if count <= _LOG_FIRST or count % 1000 == 0:
            log.warning("%s #%d: %s", kind.replace("_", " "), count, detail)


class _Socket(WSListener):
    """One websocket connection of a ThalexClient (picows callbacks)."""

    def __init__(self, client: ThalexClient) -> None:
        self.client = client
        self.transport: WSTransport = None  # type: ignore[assignment]  # set on connect
        #: Payloads of a fragmented message so far (the venue may split large ones).
        self._fragments: list[bytes] = []
        #: Coroutines of async handlers, run in order by one task per connection.
        self._lane: asyncio.Queue = asyncio.Queue()
        self._lane_task: Optional[asyncio.Task] = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._lane_task = asyncio.get_running_loop().create_task(self._run_lane(), name="thalex-handlers")

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY or kind == WSMsgType.CONTINUATION:
            if not frame.fin:
                self._fragments.append(frame.get_payload_as_bytes())
                return
            data = frame.get_payload_as_bytes()
            if self._fragments:
                data = b"".join(self._fragments) + data
                self._fragments = []
            pending = self.client.handle(data)
            if pending is not None:
                self._lane.put_nowait(pending)
        elif kind == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._lane_task is not None:
            self._lane_task.cancel()

    async def _run_lane(self) -> None:
        while True:
            await (await self._lane.get())

    async def close(self) -> None:
        """Close politely, then hang up if the venue does not answer within a second."""
        transport = self.transport
        if not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
            try:
                await asyncio.wait_for(transport.wait_disconnected(), 1.0)
            except asyncio.TimeoutError:
                transport.disconnect()
                await transport.wait_disconnected()
