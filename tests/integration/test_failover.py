"""One venue session per account across workers (docs/architecture.md#d2-one-active-quoter-per-venue-account), with real processes.

Two `cryptics worker` processes share a database: only the holder of the quoting
lease opens a venue session, and quotes on it. Killing it with -9 hands the session to
the other. Throughout, the venue (in this process) is sampled: never two logged-in
sessions, never orders of two sessions at once; the killed worker's orders are
cancelled by cancel-on-disconnect, and the new holder quotes.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
import urllib.request

from app.stack.process import Child, environ_for_child, free_port, spawn
from app.venue import Venue, VenueConfig, create_keypair
from app.venue.auth import default_account

from .conftest import ROOT, cryptics

KID = "failover"


def _view(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/market-data/", timeout=1) as response:
            return json.loads(response.read())
    except OSError:
        return None


async def test_kill_9_of_the_session_holder_hands_over(broker, registry_url, database, tmp_path):
    private, _ = create_keypair(tmp_path / "keys", KID, tmp_path / "keys" / "trusted")
    venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=tmp_path / "keys" / "trusted"))
    await venue.start()
    workers: dict[int, Child] = {}
    peak = 0

    def logged_in() -> int:
        return sum(1 for c in venue.connections if c.kid == KID and not c.closed)

    account = default_account(KID)
    quoting_sessions: set[int] = set()  # every session seen with orders resting
    peak_quoting = 0

    def sessions_with_orders() -> set[int]:
        return {o.session for o in venue.engine.orders.values() if o.account == account}

    async def sample_until(predicate, what: str, timeout: float):
        nonlocal peak, peak_quoting
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            peak = max(peak, logged_in())
            live = sessions_with_orders()
            quoting_sessions.update(live)
            peak_quoting = max(peak_quoting, len(live))
            result = await asyncio.get_running_loop().run_in_executor(None, predicate)
            if result:
                return result
            await asyncio.sleep(0.02)
        logs = "\n".join(w.log_tail(30) for w in workers.values())
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def holders() -> list[int]:
        return [port for port in workers if (v := _view(port)) and v["session_open"]]

    try:
        for name in ("a", "b"):
            port = free_port()
            workers[port] = spawn(f"worker-{name}", cryptics("worker"), log_path=tmp_path / f"worker-{name}.log",
                                  cwd=ROOT, env=environ_for_child({
                                      "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
                                      "CRYPTICS_DATABASE_URL": database, "CRYPTICS_VENUE_URL": venue.url,
                                      "CRYPTICS_THALEX_KEY_ID": KID, "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private),
                                      "CRYPTICS_WEB_PORT": str(port), "CRYPTICS_HEARTBEAT_INTERVAL": "0",
                                      "CRYPTICS_STATE_DIR": str(tmp_path / f"state-{name}")}))
        first = (await sample_until(lambda: holders() or None, "a session holder", 120))[0]
        standby = next(port for port in workers if port != first)
        await sample_until(lambda: _view(standby) is not None, "the standby's web view", 120)
        await asyncio.sleep(2)  # both running: still one session
        peak = max(peak, logged_in())
        # (each view is read until it answers: a web view can miss its 1 s on a loaded machine)
        await sample_until(lambda: holders() == [first] or None, "the first holder's view", 30)
        # (its lease appears in the view once the source service has started)
        standby_view = await sample_until(lambda: (v := _view(standby)) and v["lease"] and v,
                                          "the standby's lease in its view", 30)
        assert standby_view["lease"]["held"] is False
        first_sessions = await sample_until(lambda: sessions_with_orders() or None, "the holder's orders", 30)
        assert len(first_sessions) == 1

        # Every session that quoted so far was the first holder's: under load its venue
        # connection can drop and come back (a new session of the same worker) before the kill.
        first_sessions |= quoting_sessions
        workers[first].popen.send_signal(signal.SIGKILL)
        workers[first].popen.wait(10)
        # cancel-on-disconnect: the dead session's orders go with it (the standby cannot have
        # quoted yet: it needs the lease, which PostgreSQL frees only now)
        await sample_until(lambda: not (sessions_with_orders() & first_sessions), "COD to cancel the orders", 10)
        view = await sample_until(lambda: (v := _view(standby)) and v["session_open"] and v, "the handover", 60)
        assert view["lease"]["acquisitions"] == 1
        await sample_until(lambda: (v := _view(standby)) and v["received"].get("ticker.BTC-PERPETUAL.raw", 0) > 0,
                           "market data on the new session", 30)
        new_sessions = await sample_until(lambda: sessions_with_orders() - first_sessions or None,
                                          "the new holder's orders", 30)
        assert peak == 1, f"{peak} logged-in sessions at once"
        assert peak_quoting == 1, f"orders of {peak_quoting} sessions at once"
        # no third session ever quoted (the new holder's orders can first show in the very read
        # that ended the wait, after that round's sample: so a subset, not equality)
        assert first_sessions <= quoting_sessions <= first_sessions | new_sessions, (quoting_sessions, new_sessions)
    finally:
        for worker in workers.values():
            worker.stop(timeout=30)
        await venue.stop()
