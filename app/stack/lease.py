"""The quoting lease: exactly one worker per venue account holds the venue session (docs/architecture.md#d2-one-active-quoter-per-venue-account).

The lease is a PostgreSQL session-level advisory lock keyed by the venue account.
PostgreSQL holds it for as long as the holder's connection lives: a worker that
dies (even with kill -9) loses it the moment the kernel closes its socket, and a
standby worker polling for it takes over. Two workers can never both hold it.

A holder that loses its database connection cannot know whether a standby has
taken the lock meanwhile, so it must stop at once: ``on_lost`` is called and the
worker closes its venue session (cancel-on-disconnect removes its orders), then
goes back to waiting like any standby.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Awaitable, Callable, Optional

import asyncpg

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"cryptics-quoting:{name}".encode()).digest()[:8], "big", signed=True)


class QuotingLease:
    def __init__(
        self,
        dsn: str,
        name: str,
        on_acquired: Callable[[], Awaitable[None]],
        on_lost: Callable[[], Awaitable[None]],
        *,
        poll_interval: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.name = name
        self.key = lock_key(name)
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.poll_interval = poll_interval
        self.held = False
        #: How often this worker acquired and lost the lease (for the web view and tests).
        self.acquisitions = 0
        self.losses = 0
        self._conn: Optional[asyncpg.Connection] = None

    async def run(self) -> None:
        """Wait for the lease, hold it, and on losing it wait again; until cancelled."""
        try:
            while True:
                try:
                    await self._hold_once()
                except Exception as exc:
                    # Whatever broke (the database, or opening the venue session), the lease
                    # is not held any more: say why, let go, and try again.
                    log.warning("quoting lease %r: %s: %s", self.name, type(exc).__name__, exc)
                if self.held:
                    await self._lose()
                await asyncio.sleep(self.poll_interval)
        finally:
            if self.held:
                await self._lose()
            await self._close()

    async def _hold_once(self) -> None:
        self._conn = await asyncpg.connect(self.dsn, timeout=5)
        while not await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
            await asyncio.sleep(self.poll_interval)
        self.held = True
        self.acquisitions += 1
        log.info("quoting lease %r acquired: this worker holds the venue session", self.name)
        await self.on_acquired()
        # Hold: a query that fails means the connection (hence the lock) is gone.
        while True:
            await asyncio.sleep(self.poll_interval)
            await self._conn.fetchval("SELECT 1", timeout=max(1.0, self.poll_interval * 2))

    async def _lose(self) -> None:
        self.held = False
        self.losses += 1
        log.warning("quoting lease %r lost: stopping the venue session", self.name)
        # The session stops before the connection closes: while the connection lives, so may the
        # lock (a hold query that timed out on a slow machine), and closing it first would let
        # a standby start quoting while this worker still does.
        try:
            await self.on_lost()
        except Exception:
            log.exception("stopping after losing the quoting lease failed")
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 2)
            except Exception:
                conn.terminate()
