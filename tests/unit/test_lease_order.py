"""The quoting lease stops its holder's session before it lets the lock go
(app/stack/lease.py ``_lose``): a standby must not start quoting while this worker still does."""
from __future__ import annotations

from app.stack.lease import QuotingLease


class RecordingConnection:
    """Stands in for the asyncpg connection that holds the advisory lock."""

    def __init__(self, events: list) -> None:
        self.events = events

    async def close(self) -> None:
        self.events.append("connection closed: lock released")

    def terminate(self) -> None:
        self.events.append("connection terminated")


async def _nothing() -> None:
    return None


async def test_the_session_stops_before_the_lock_is_released():
    events: list = []

    async def lost() -> None:
        events.append("session stopped")

    lease = QuotingLease("postgresql://unused", "account-A", _nothing, lost)
    lease._conn, lease.held = RecordingConnection(events), True
    await lease._lose()
    assert events == ["session stopped", "connection closed: lock released"]
    assert not lease.held and lease.losses == 1


async def test_the_lock_is_released_even_when_stopping_fails():
    events: list = []

    async def failing() -> None:
        events.append("stop failed")
        raise RuntimeError("venue gone")

    lease = QuotingLease("postgresql://unused", "account-A", _nothing, failing)
    lease._conn, lease.held = RecordingConnection(events), True
    await lease._lose()
    assert events == ["stop failed", "connection closed: lock released"]
