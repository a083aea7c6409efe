"""The quoting lease on a real PostgreSQL: one holder at a time, handover when the holder goes."""
from __future__ import annotations

import asyncio

import asyncpg

from app.stack.lease import QuotingLease, lock_key


class Holder:
    def __init__(self, dsn: str, name: str, log: list) -> None:
        self.name = name
        self.log = log
        self.lease = QuotingLease(dsn, "account-A", self.acquired, self.lost, poll_interval=0.05)
        self.task = asyncio.create_task(self.lease.run())

    async def acquired(self) -> None:
        self.log.append(("acquired", self.name))

    async def lost(self) -> None:
        self.log.append(("lost", self.name))


def holders_now(log: list) -> set:
    """Who holds the lease after replaying the log."""
    holding: set = set()
    for event, name in log:
        (holding.add if event == "acquired" else holding.discard)(name)
    return holding


async def _until(predicate, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_one_holder_and_handover(database):
    log: list = []
    a = Holder(database, "a", log)
    await _until(lambda: a.lease.held)
    b = Holder(database, "b", log)
    c = Holder(database, "c", log)
    await asyncio.sleep(0.5)
    assert holders_now(log) == {"a"} and not b.lease.held and not c.lease.held

    a.task.cancel()  # the holder stops: its connection closes and the lock goes with it
    await asyncio.gather(a.task, return_exceptions=True)
    await _until(lambda: b.lease.held or c.lease.held)
    await asyncio.sleep(0.3)
    assert len(holders_now(log)) == 1
    for h in (b, c):
        h.task.cancel()
    await asyncio.gather(b.task, c.task, return_exceptions=True)
    # at no point did the log show two holders
    holding: set = set()
    for event, name in log:
        (holding.add if event == "acquired" else holding.discard)(name)
        assert len(holding) <= 1


async def test_losing_the_database_connection_loses_the_lease(database):
    log: list = []
    a = Holder(database, "a", log)
    await _until(lambda: a.lease.held)
    admin = await asyncpg.connect(database)
    try:
        # Kill the holder's backend, as a database restart or a network cut would.
        key = lock_key("account-A")  # a bigint advisory key shows as classid (high half), objid (low half)
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 1 AND classid = $1::bigint::oid AND objid = $2::bigint::oid",
            (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
        assert killed == 1
        await _until(lambda: ("lost", "a") in log)
        await _until(lambda: a.lease.held)  # and it takes the lease again once it can
        assert log == [("acquired", "a"), ("lost", "a"), ("acquired", "a")]
    finally:
        await admin.close()
        a.task.cancel()
        await asyncio.gather(a.task, return_exceptions=True)
