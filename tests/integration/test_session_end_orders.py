"""Orders the venue deleted when a session ended end as final in the `orders` table
(docs/architecture.md#d17-orders-that-end-with-a-session), with real workers, broker,
registry and PostgreSQL, and the simulated venue (with a running market and takers, so orders
fill) in this process, where the test reads the venue's own state.

- kill -9 of the quoting worker while its orders rest: cancel-on-disconnect deletes them and
  the dead worker reports nothing. Once the standby holds the session, no order of the dead
  session is open in the table, every one of them ends as the venue's trade history says
  (filled, or deleted with its session), and the venue holds none.
- SIGTERM of the quoting worker: it cancels its session (cancel_session) and its own reports of
  the deleted orders close them in the table; a second worker, without a venue session (as the
  analytics worker of `cryptics up`), persists what the stopped one produced.
"""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import asyncpg

from app.stack import migrate
from app.stack.process import Child, environ_for_child, free_port, spawn
from app.venue import Venue, VenueConfig, create_keypair
from app.venue.auth import default_account

from .conftest import ROOT, cryptics
from .observers import get_json

KID = "session-end"
BTC = "BTC-PERPETUAL"


class Stack:
    """The venue with a running market, and `cryptics worker` children on the test's services."""

    def __init__(self, broker, registry_url: str, database: str, tmp_path: Path) -> None:
        keys = tmp_path / "keys"
        private_key, _ = create_keypair(keys, KID, keys / "trusted")
        # Takers every few hundred ms: some of our orders fill, partly or fully, before the end.
        self.venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=keys / "trusted",
                                               tick_interval=0.05, noise_rate=4.0, informed_rate=0.5))
        self.database, self.tmp = database, tmp_path
        self.env = {
            "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
            "CRYPTICS_DATABASE_URL": database, "CRYPTICS_HEARTBEAT_INTERVAL": "0",
            "CRYPTICS_THALEX_KEY_ID": KID, "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private_key),
            "CRYPTICS_INSTRUMENTS": BTC, "CRYPTICS_ANALYTICS_ENABLED": "false", "CRYPTICS_SINK_BATCH_AGE": "0.2",
            # Small orders close to the touch (the house quotes 3 bps wide): the takers reach them.
            "CRYPTICS_QUOTE_BID_SIZES": "0.01,0.01", "CRYPTICS_QUOTE_ASK_SIZES": "0.01,0.01",
            "CRYPTICS_QUOTE_SPREAD_UNIT": "bps", "CRYPTICS_QUOTE_HALF_SPREAD": "1", "CRYPTICS_QUOTE_LEVEL_STEP": "1",
        }
        self.workers: dict[str, tuple[Child, int]] = {}

    async def start(self) -> None:
        await migrate.migrate(self.database)
        await self.venue.start()

    def spawn(self, name: str, *, with_venue: bool = True, **env_changes: str) -> None:
        port = free_port()
        env = {**self.env, "CRYPTICS_WEB_PORT": str(port), "CRYPTICS_STATE_DIR": str(self.tmp / f"state-{name}"),
               "CRYPTICS_VENUE_URL": self.venue.url if with_venue else "", **env_changes}
        child = spawn(f"worker-{name}", cryptics("worker"), log_path=self.tmp / f"worker-{name}.log",
                      env=environ_for_child(env), cwd=ROOT)
        self.workers[name] = (child, port)

    def stop(self) -> None:
        for child, _ in self.workers.values():
            if child.alive():
                child.popen.kill()
                child.popen.wait(10)

    @property
    def account(self) -> str:
        return default_account(KID)

    def resting(self) -> dict[str, int]:
        """order_id → venue session of each of our orders the venue holds now."""
        return {o.order_id: o.session for o in self.venue.engine.orders.values() if o.account == self.account}

    def traded(self) -> dict[str, float]:
        """order_id → the amount the venue's trade history says it filled."""
        out: dict[str, float] = {}
        for trade in self.venue.engine.account(self.account).trades:
            out[trade["order_id"]] = out.get(trade["order_id"], 0.0) + trade["amount"]
        return out

    async def view(self, name: str, path: str = "/quoting/") -> Optional[dict]:
        """A worker's web view, read in a thread: the venue shares this event loop and must not wait."""
        return await asyncio.get_running_loop().run_in_executor(None, get_json, self.workers[name][1], path)

    async def holder(self) -> Optional[str]:
        for name, (child, _) in self.workers.items():
            if child.alive() and ((await self.view(name)) or {}).get("quoting"):
                return name
        return None

    async def poll(self, predicate: Callable[[], Any], what: str, timeout: float, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
            await asyncio.sleep(interval)
        logs = "\n".join(f"--- {n}\n{c.log_tail(40)}" for n, (c, _) in self.workers.items())
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs}")

    async def fetch(self, sql: str, *args: Any) -> list:
        conn = await asyncpg.connect(self.database)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    async def quoted_and_persisted(self, session_orders: Callable[[], set[str]], fills: bool = True) -> set[str]:
        """Once a few orders rest at the venue and their acks (and, with ``fills``, some of our
        fills) are in the tables: the order_ids resting (falsy until then)."""
        resting = session_orders()
        if len(resting) < 2 or (fills and not self.traded()):
            return set()
        rows = await self.fetch("SELECT count(*) AS n FROM order_acks WHERE order_id = ANY($1)", list(resting))
        return resting if rows[0]["n"] >= len(resting) else set()

    async def none_open(self, order_ids: set[str]) -> Any:
        """True once none of ``order_ids`` is open in `orders`; else the open ones (shown on a timeout)."""
        rows = await self.fetch("SELECT order_id FROM orders WHERE order_id = ANY($1) AND NOT is_final",
                                list(order_ids))
        return not rows or NotYet(sorted(r["order_id"] for r in rows))

    async def fills_missing(self, trade_ids: set[str]) -> Any:
        """True once every one of ``trade_ids`` is a row of `fills`; else the missing ones."""
        rows = await self.fetch("SELECT trade_id FROM fills WHERE trade_id = ANY($1)", list(trade_ids))
        missing = trade_ids - {r["trade_id"] for r in rows}
        return not missing or NotYet(sorted(missing))


class NotYet(list):
    """A falsy answer to a poll that lists what is still missing."""

    def __bool__(self) -> bool:
        return False


async def _stack(broker, registry_url, database, tmp_path) -> Stack:
    stack = Stack(broker, registry_url, database, tmp_path)
    await stack.start()
    return stack


async def test_after_kill_9_the_standby_records_the_dead_sessions_orders_as_ended(broker, registry_url, database,
                                                                                   tmp_path):
    stack = await _stack(broker, registry_url, database, tmp_path)
    try:
        stack.spawn("a")
        stack.spawn("b")
        first = await stack.poll(stack.holder, "a session holder", 60)
        standby = next(name for name in stack.workers if name != first)
        session = await stack.poll(lambda: set(stack.resting().values()) or None, "the holder's orders", 30)
        assert len(session) == 1

        def of_first_session() -> set[str]:
            return {o for o, s in stack.resting().items() if s in session}

        await stack.poll(lambda: stack.quoted_and_persisted(of_first_session), "orders resting, fills, acks in", 60)
        resting_at_kill = of_first_session()
        child = stack.workers[first][0]
        child.popen.send_signal(signal.SIGKILL)
        killed_at = time.time()
        child.popen.wait(10)
        assert resting_at_kill, "the holder had orders resting when it was killed"

        # Cancel-on-disconnect: the venue deleted them, and nobody recorded it.
        await stack.poll(lambda: not of_first_session(), "cancel-on-disconnect", 15)
        async def checked() -> Optional[dict]:
            view = await stack.view(standby)
            return view if view and view["quoting"] and view["gateway"].get("leftover_checks", 0) >= 1 else None

        view = await stack.poll(checked, "the standby to hold the session and check the records", 60)

        # Every order of the dead session: each one any of its acks (all from before the kill: the
        # standby had no session then) names, and each one resting when it died.
        dead = {r["order_id"] for r in await stack.fetch("SELECT DISTINCT order_id FROM order_acks WHERE time < $1",
                                                         datetime.fromtimestamp(killed_at, timezone.utc))}
        dead |= resting_at_kill
        await stack.poll(lambda: stack.none_open(dead), "no order of the dead session open", 30)
        # Every trade the venue made up to the kill is a fill in the records, the ones the dead
        # worker had read but not handed on included (recorded by the standby from the trade history).
        made = {t["trade_id"] for t in stack.venue.engine.account(stack.account).trades if t["time"] <= killed_at}
        await stack.poll(lambda: stack.fills_missing(made), "every trade up to the kill a row of fills", 30)
        fill_rows = await stack.fetch("SELECT trade_id, count(*) AS n FROM fills GROUP BY trade_id HAVING count(*) > 1")
        assert not fill_rows, f"a trade recorded twice: {fill_rows}"

        rows = {r["order_id"]: r for r in await stack.fetch(
            "SELECT order_id, status, filled_amount, amount, change_reason, delete_reason FROM orders "
            "WHERE order_id = ANY($1)", list(dead))}
        traded = stack.traded()
        closed_by_standby = [o for o in resting_at_kill if o in rows and rows[o]["change_reason"] == "reconciled"]
        assert closed_by_standby, f"the orders resting at the kill were not closed by the standby: {rows}"
        assert view["gateway"]["leftovers_cancelled"] + view["gateway"]["leftovers_filled"] >= len(closed_by_standby)
        for order_id in closed_by_standby:
            row, filled = rows[order_id], traded.get(order_id, 0.0)
            # as the venue's trade history says: no fill recorded as a cancel, nor the other way round
            assert abs(row["filled_amount"] - filled) < 1e-9, (row, filled)
            if filled >= row["amount"] - 1e-9:
                assert (row["status"], row["delete_reason"]) == ("filled", "filled"), row
            else:
                assert row["status"] == ("cancelled_partially_filled" if filled else "cancelled"), row
                assert row["delete_reason"] == "session_end", row
        # every fill of the dead session's orders is a row of `fills`
        fills = await stack.fetch("SELECT order_id, sum(amount) AS amount FROM fills WHERE order_id = ANY($1) "
                                  "GROUP BY order_id", list(dead))
        assert {r["order_id"]: round(r["amount"], 9) for r in fills} == \
            {o: round(a, 9) for o, a in traded.items() if o in dead}
        assert not of_first_session()  # and the venue holds none of them
    finally:
        stack.stop()
        await stack.venue.stop()


async def test_a_graceful_stop_records_its_sessions_orders_as_cancelled(broker, registry_url, database, tmp_path):
    stack = await _stack(broker, registry_url, database, tmp_path)
    try:
        # Quotes wide of the takers' reach: the orders rest until the stop.
        stack.spawn("quoter", CRYPTICS_QUOTE_HALF_SPREAD="30", CRYPTICS_QUOTE_LEVEL_STEP="10")
        stack.spawn("persister", with_venue=False)  # persists, as the analytics worker of `cryptics up` does
        await stack.poll(stack.holder, "the quoting session", 60)
        await stack.poll(lambda: stack.view("persister", "/sink/"), "the second worker", 60)
        await stack.poll(lambda: stack.quoted_and_persisted(lambda: set(stack.resting()), fills=False),
                         "orders resting, their acks in", 60)
        resting = set(stack.resting())
        child = stack.workers["quoter"][0]
        child.popen.send_signal(signal.SIGTERM)
        # (waited for without blocking: the venue in this process answers its cancel_session meanwhile)
        await stack.poll(lambda: not child.alive(), "the quoter to stop", 60)
        assert child.popen.returncode == 0, child.log_tail(40)
        assert not stack.resting()  # cancel_session took them all

        ours = {r["order_id"] for r in await stack.fetch("SELECT DISTINCT order_id FROM order_acks")} | resting
        await stack.poll(lambda: stack.none_open(ours), "no order of the stopped session open", 60)
        rows = {r["order_id"]: r for r in await stack.fetch(
            "SELECT order_id, status, change_reason, delete_reason FROM orders WHERE order_id = ANY($1)",
            list(resting))}
        assert set(rows) == resting
        for row in rows.values():
            # the session's own report of its cancel_session, as the venue sent it
            assert (row["change_reason"], row["delete_reason"]) == ("cancel", "session_end"), row
            assert row["status"] in ("cancelled", "cancelled_partially_filled"), row
    finally:
        stack.stop()
        await stack.venue.stop()

