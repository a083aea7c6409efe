"""The stack the analytics, table-view and inspector tests run on: the simulated venue in this
process with its market running (two perpetuals, takers every few hundred ms so that a short
run has fills on both sides), and `cryptics worker` child processes on the test's broker,
registry and database that quote, persist and run the analytics. The fixture is
``analytics_stack`` (conftest.py)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from app.analytics.audit import activity
from app.stack import migrate
from app.stack.process import Child, environ_for_child, free_port, spawn
from app.venue import Venue, VenueConfig, create_keypair
from app.venue.auth import default_account

from .conftest import ROOT, cryptics
from .observers import get_json

KID = "analytics"
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL")
PARTITIONS = 3


#: The workers' web token: the test halts quoting at the end through the token-guarded POST.
TOKEN = "analytics-test-token-0123456789"


def post_json(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                                     method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


class NotYet:
    """A falsy answer to a poll that says how far it got (shown when the poll times out)."""

    def __init__(self, detail: Any) -> None:
        self.detail = detail

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"not yet: {self.detail!r}"


class Stack:
    """The venue with a running market, and the workers that quote, persist and analyse it."""

    def __init__(self, broker, registry_url: str, database: str, tmp_path: Path) -> None:
        keys = tmp_path / "keys"
        private_key, _ = create_keypair(keys, KID, keys / "trusted")
        # A busy market (takers every few hundred ms) so that a short run has fills on both sides.
        self.venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=keys / "trusted",
                                               tick_interval=0.05, noise_rate=4.0, informed_rate=0.5))
        self.broker, self.registry_url, self.database, self.tmp = broker, registry_url, database, tmp_path
        self.env = {
            "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
            "CRYPTICS_DATABASE_URL": database, "CRYPTICS_HEARTBEAT_INTERVAL": "0",
            "CRYPTICS_THALEX_KEY_ID": KID, "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private_key),
            "CRYPTICS_INSTRUMENTS": ",".join(INSTRUMENTS), "CRYPTICS_TOPIC_PARTITIONS": str(PARTITIONS),
            "CRYPTICS_WEB_TOKEN": TOKEN,
            "CRYPTICS_ANALYTICS_BATCH_AGE": "0.2", "CRYPTICS_SINK_BATCH_AGE": "0.2", "CRYPTICS_ANALYTICS_SNAPSHOT_GRACE": "1",
            # Small ladders well inside the limit: the run is about the accounting, not the risk gate.
            "CRYPTICS_QUOTE_BID_SIZES": "0.01", "CRYPTICS_QUOTE_ASK_SIZES": "0.01",
            # Inside the house's 3 bps on both instruments (ticks differ: 1 USD on BTC, 0.1 on ETH).
            "CRYPTICS_QUOTE_SPREAD_UNIT": "bps", "CRYPTICS_QUOTE_HALF_SPREAD": "2", "CRYPTICS_QUOTE_LEVEL_STEP": "2",
        }
        self.workers: dict[str, tuple[Child, int]] = {}

    async def start(self) -> None:
        await migrate.migrate(self.database)
        await self.venue.start()
        self.env["CRYPTICS_VENUE_URL"] = self.venue.url

    def spawn(self, name: str) -> Child:
        port = free_port()
        env = {**self.env, "CRYPTICS_WEB_PORT": str(port), "CRYPTICS_STATE_DIR": str(self.tmp / f"state-{name}")}
        child = spawn(f"worker-{name}", cryptics("worker"), log_path=self.tmp / f"worker-{name}-{len(self.workers)}.log",
                      env=environ_for_child(env), cwd=ROOT)
        self.workers[name] = (child, port)
        return child

    def view(self, name: str, path: str = "/analytics/") -> Optional[dict]:
        return get_json(self.workers[name][1], path)

    @property
    def account(self) -> str:
        return default_account(KID)

    def our_trades(self) -> list[dict]:
        return list(self.venue.engine.account(self.account).trades)

    def fills_per_instrument(self, least: int) -> Any:
        """True once each instrument has ``least`` of our fills; else the counts (shown on a timeout)."""
        counts = {name: 0 for name in INSTRUMENTS}
        for trade in self.our_trades():
            counts[trade["instrument_name"]] += 1
        return all(n >= least for n in counts.values()) or NotYet(counts)

    async def poll(self, predicate: Callable[[], Any], what: str, timeout: float, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, (child, _) in self.workers.items():
                assert child.alive() or child.popen.returncode == -signal.SIGKILL, \
                    f"worker {name} died:\n{child.log_tail(60)}"
            last = predicate()
            if last:
                return last
            await asyncio.sleep(interval)
        logs = "\n".join(f"--- {n}\n{c.log_tail(40)}" for n, (c, _) in self.workers.items())
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs}")

    def quoting_worker(self) -> Optional[str]:
        for name, (child, port) in self.workers.items():
            if child.alive() and (get_json(port, "/quoting/") or {}).get("quoting"):
                return name
        return None

    async def halt_and_settle(self) -> None:
        """Stop quoting (every order pulled), stop the venue, and wait until the analytics and
        the sink have taken every record the run produced."""
        name = await self.poll(self.quoting_worker, "a quoting worker", 60)
        post_json(self.workers[name][1], "/quoting/state/", {"state": "halted", "reason": "end of the test run"})
        await self.poll(lambda: not self.venue.engine.open_orders(self.account), "our orders to be pulled", 30)
        await asyncio.sleep(1.0)
        await self.venue.stop()
        await self.poll(self._settled, "the analytics and the sink to settle", 90, interval=1.0)

    def _settled(self) -> bool:
        """Nothing new applied or written by any worker over the last three polls (a second
        apart: on a loaded machine a worker's loop was seen stalled for over 5 s, so one
        unchanged second could still have records on the way), and no input partition waiting
        for a hole (its events are held, not applied, until it closes or is given up)."""
        now = []
        for name, (child, port) in self.workers.items():
            if child.alive():
                progress = activity(get_json(port, "/analytics/"), get_json(port, "/sink/"))
                if progress is None:
                    return False
                now.append((name, progress))
        readings = self._last_counts = [*getattr(self, "_last_counts", [])[-2:], now]
        return len(readings) == 3 and readings[0] == readings[1] == readings[2]

    def stop_all(self) -> None:
        for name, (child, _) in self.workers.items():
            if child.alive():
                child.stop(timeout=30)
                assert child.popen.returncode == 0, child.log_tail(60)
