"""The venue's websocket server: Thalex JSON-RPC on ws://host:port/ws/api/v2 (docs/thalex-protocol.md §1).

One ``Venue`` owns the engine (engine.py), the moving market (market.py), the
authenticator (auth.py) and the latency probe (latency.py), and serves them with
aiohttp. It is three layers, each in its own module:
- publishing.py  connections, subscriptions, and the notifications after every engine action;
- routing.py     the JSON-RPC method table and its handlers (on top of publishing);
- server.py      this module, on top of routing: start/stop and the aiohttp app, the
                 connection life cycle, the timers (market steps, cancel-on-disconnect
                 timeouts, account summaries) and the planned-shutdown notice; ``serve``.
Each websocket connection is one session (transport.py's ``Connection``):
- requests are handled one at a time in arrival order (pipelining works; the
  engine is synchronous, so nothing interleaves inside a request);
- every reply and notification goes through the connection's outbox and one
  writer task, so a slow client never blocks the engine;
- cancel-on-disconnect (docs/thalex-protocol.md §6.3): closing, going quiet for ``timeout_secs`` (pings
  count as traffic) or ``cancel_session`` deletes the session's non-persistent orders.

``GET /venue/latency`` and the JSON-RPC method ``venue/latency`` expose the latency probe.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, Iterable, Optional

import orjson
from aiohttp import WSMsgType, web

from app.venue.auth import Authenticator
from app.venue.config import VenueConfig
from app.venue.engine import Engine
from app.venue.instruments import DEFAULT_INSTRUMENTS, Instrument
from app.venue.latency import LatencyProbe
from app.venue.market import Market
from app.venue.routing import Routing
from app.venue.transport import Connection

log = logging.getLogger(__name__)

PATH = "/ws/api/v2"


class Venue(Routing):
    """The simulated exchange. ``await start()``, then connect to ``url``; ``await stop()``."""

    def __init__(self, config: VenueConfig = VenueConfig(),
                 instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS) -> None:
        config.validate()
        now = time.time()
        engine = Engine(config, instruments, now)
        super().__init__(engine, config, Authenticator(config.trusted_keys_dir, config.login_iat_window),
                         LatencyProbe())
        self.market = Market(engine, now)
        self._session_seq = 0
        self._runner: Optional[web.AppRunner] = None
        self._tasks: list[asyncio.Task] = []
        #: Fire-and-forget work (closing sockets), referenced until done.
        self._background: set[asyncio.Task] = set()
        self.port: Optional[int] = None

    # -- life cycle --------------------------------------------------------------------------

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
        """Close every connection and the server; with ``planned``, announce it first (docs/thalex-protocol.md §3.7)."""
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
        self.publish_system_event({"event": "reconnect"})
        await asyncio.sleep(self.config.reconnect_lead)

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def latency_stats(self) -> dict:
        """Tick-to-order latency distribution (latency.py)."""
        return self.latency.stats()

    async def _http_latency(self, request: web.Request) -> web.Response:
        stats = self.latency_report(reset=request.query.get("reset") in ("1", "true"))
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    # -- timers ------------------------------------------------------------------------------

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
        """Cancel-on-disconnect timeouts: a COD session silent for ``timeout_secs`` is dead (docs/thalex-protocol.md §4.1)."""
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
            self.publish_summaries()

    # -- connections -------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        # autoping off: the venue answers pings itself, so that a ping counts as
        # traffic for cancel-on-disconnect, as docs/thalex-protocol.md §1.1 says it does.
        ws = web.WebSocketResponse(autoping=False, compress=False, decode_text=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        self._session_seq += 1
        conn = Connection(self.config, ws, self._session_seq, request.transport, self.spawn)
        self._connected(conn)
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
        self._disconnected(conn)
        self.engine.close_session(conn.session, time.time())
        self.publish()


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
