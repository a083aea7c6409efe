"""One websocket session on the venue's side of the wire: ``Connection``.

What it holds, from the socket up:
- ``_ReadStamp``: stamps each socket read, so the latency probe (latency.py) times an order
  from its arrival, not from when the venue got round to it;
- the outbox: every reply and notification is queued, framed (``text_frame``) and written
  to the socket in one piece per round by one writer task, so a slow client never blocks
  the engine; a client that stops reading is closed once ``max_outbox`` messages pile up;
- the rate buckets of docs/thalex-protocol.md §6.2 (app.exchange.rate_limit.TokenBucket),
  one for orders and one for cancels;
- the session's login, cancel-on-disconnect timeout and subscriptions, which the layers
  above (routing.py, publishing.py) read and write.

Nothing here knows the engine or the channels: the layers above import this, never the
other way round.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Coroutine, Optional

import orjson
from aiohttp import web

from app.exchange.rate_limit import TokenBucket
from app.venue.config import VenueConfig
from app.venue.errors import VenueError

log = logging.getLogger(__name__)

#: Bytes the venue lets pile up in a session's socket buffer before it stops writing to it.
WRITE_BUFFER_LIMIT = 1 << 20


def text_frame(data: bytes) -> bytes:
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
    """One websocket session. ``spawn`` runs background work (closing a slow consumer)."""

    def __init__(self, config: VenueConfig, ws: web.WebSocketResponse, session: int,
                 transport: Optional[asyncio.Transport], spawn: Callable[[Coroutine], None]) -> None:
        now = time.perf_counter()
        self.ws = ws
        #: The socket under ``ws`` (None once the request lost it): the outbox is written to it in
        #: one piece (see write()).
        self.transport = transport
        self.session = session
        self.max_outbox = config.max_outbox
        self._spawn = spawn
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
        #: Public channels subscribed, by name: their feeds (feeds.Feed; not imported here, as
        #: feeds sit above the transport).
        self.feeds: dict[str, Any] = {}
        self.private: set[str] = set()
        #: Mark at the last account.portfolio line per instrument (resent on a >1 % move, docs/thalex-protocol.md §4.9).
        self.portfolio_marks: dict[str, float] = {}
        self.order_bucket = TokenBucket(config.order_rate, now)
        self.cancel_bucket = TokenBucket(config.cancel_rate, now)
        #: Work to do after the current reply is queued (subscription snapshots follow the result).
        self.after_reply: list[Callable[[], None]] = []
        if transport is not None:  # every read is stamped from now on
            transport.set_protocol(_ReadStamp(transport.get_protocol(), self))

    def enqueue(self, data: bytes, market_data: bool = False) -> None:
        if self.closed:
            return
        self.outbox.append((data, market_data))
        self.wake.set()
        if len(self.outbox) > self.max_outbox:
            log.warning("session %d does not read its messages; closing it", self.session)
            self.closed = True
            self._spawn(self.ws.close(code=1008, message=b"slow consumer"))

    def reply(self, request_id: Any, result: Any) -> None:
        self.enqueue(orjson.dumps({"id": request_id, "result": result}))

    def fail(self, request_id: Any, error: VenueError) -> None:
        self.enqueue(orjson.dumps({"id": request_id, "error": error.to_json()}))

    async def write(self) -> None:
        """Send the outbox in order; stamps the latency probe's market-data clock.

        Everything queued since the last round (a market step's notifications, replies) is
        framed here and handed to the socket in one write: one system call and, usually, one
        read for the client, instead of one of each per message (aiohttp's send_frame). The
        frames are plain unmasked text frames (RFC 6455, section 5.2; the venue never compresses).
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
            transport.write(b"".join([text_frame(data) for data, _market_data in batch]))
            while transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT and not transport.is_closing():
                await asyncio.sleep(0.005)
