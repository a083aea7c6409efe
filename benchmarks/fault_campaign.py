"""The fault campaign: the embedded stack quoting and analysing a live market while faults are
thrown at it, then an exact account of what it kept (docs/benchmarks.md, "Fault campaign").

    .venv/bin/python -m benchmarks.fault_campaign --minutes 10

The simulated venue runs in this process, its market stepping every 50 ms with takers on
both perpetuals, so that every notification it sends is counted here. `cryptics up` runs the
rest (Tansu, PostgreSQL, the schema registry, the quoting worker, the analytics worker) as a
child process, supervising them. Every 20-30 s one fault, drawn so that each kind comes once
in every eight:

- ``worker_kill``: the quoting worker killed with SIGKILL (the supervisor restarts it);
- ``worker_term``: the same with SIGTERM;
- ``postgres_stopped``: every PostgreSQL process stopped (SIGSTOP) for 20 s;
- ``venue_drop``: the venue drops every connection (no close handshake);
- ``venue_shutdown_notice``: the venue's planned-shutdown notice (the client reconnects);
- ``poison_burst``: records no table or agent can take, onto the input topics: bytes that
  are no Avro, tickers with a negative mark (the table refuses them), fills with a NaN price;
- ``slow_database``: an exclusive lock on the tickers table, held for 10 s;
- ``rebalance``: a third worker joins the app's consumer groups for 15 s and leaves.

At the end quoting is halted through the token-guarded POST, the market stops, and once the
sinks and the analytics are quiet the campaign checks, with the stack still up:

1. every market-data notification the venue sent is one row (tickers, book tops, index
   prices), but for those in flight to a worker a fault ended: the ones sent to a session in
   the 2 s before a fault ended it (kill, drop, SIGTERM, the shutdown notice) may be lost
   and are reported;
2. every topic record is one row in each table it feeds (its natural key), but for those the
   sink sent to the dead-letter topic, and every poison record is a dead letter;
3. every analytics table equals a recomputation from its input topics (app/analytics/audit.py);
4. the analytics positions and the quoting worker's equal the venue's;
5. no order is open at the venue that the quoting worker does not know (before the halt),
   none after it, and none open in the ``orders`` table;
6. the position limit was never exceeded, from the venue's trade history;
7. the stack is still up, every service running.

The result is a table (one line per check) and a JSON file; the exit code is 1 if a check
failed. tests/integration/test_fault_campaign.py runs a 2-minute version with 5 faults.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import asyncpg
import psutil

from app.analytics.audit import Topics, activity, table_mismatches
from app.pipeline.audit import table_keys, topic_keys
from app.pipeline.codec import AvroCodec
from app.pipeline.sink import SPECS, tables_of
from app.pipeline.topics import bootstrap_servers, read_until_quiet
from app.stack.process import free_port
from app.venue import Venue, VenueConfig, create_keypair
from app.venue.auth import default_account
from models import examples
from models.registry import record

ROOT = Path(__file__).resolve().parent.parent
KID = "campaign"
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL")
FAULTS = ("worker_kill", "worker_term", "postgres_stopped", "venue_drop", "venue_shutdown_notice", "poison_burst",
          "slow_database", "rebalance")
#: Faults that end the venue session of the quoting worker: what was in flight to it may be lost.
SESSION_ENDING = {"worker_kill", "worker_term", "venue_drop", "venue_shutdown_notice"}
#: Market-data notifications the venue counts (its channel prefix) and the table of each.
MARKET = {"ticker.": "tickers", "book.": "book_tops", "price_index.": "index_prices"}
#: A notification sent this long before a fault ended its session may have been in flight.
IN_FLIGHT_S = 2.0
TOKEN = "campaign-token-0123456789abcdef"
LIMIT = 1.0


@dataclasses.dataclass
class Fault:
    kind: str
    started: float  # seconds since the campaign's start
    took: float = 0.0
    detail: str = ""


@dataclasses.dataclass
class Check:
    name: str
    passed: bool
    detail: str


def _get_json(url: str, timeout: float = 5.0) -> Optional[dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Up:
    """`cryptics up` in a child process; its up.json read on demand."""

    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir, self.env = state_dir, env
        state_dir.mkdir(parents=True, exist_ok=True)
        self.log = state_dir.parent / "up.out"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "up"], cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def state(self) -> dict:
        try:
            return json.loads((self.state_dir / "up.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def pid(self, service: str) -> Optional[int]:
        return (self.state().get("services", {}).get(service) or {}).get("pid")

    async def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float, interval: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise CampaignError(f"cryptics up exited ({self.proc.returncode}) waiting for {what}:\n"
                                    f"{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise CampaignError(f"no {what} within {timeout:.0f} s:\n{self.output()[-3000:]}")
            await asyncio.sleep(interval)

    def all_running(self) -> bool:
        state = self.state()
        return state.get("state") == "up" and all(s["state"] == "running" for s in state["services"].values())

    def stop(self) -> int:
        for p in self._descendants():
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            for p in self._descendants():
                p.kill()
            self.proc.kill()
            return self.proc.wait(10)

    def _descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


class CampaignError(Exception):
    """The campaign could not run to its checks (the stack did not come up, or went down)."""


class Campaign:
    def __init__(self, root: Path, seconds: float, faults: Optional[int], seed: int,
                 say: Callable[[str], None] = print, gap: tuple[float, float] = (20.0, 30.0),
                 kinds: Sequence[str] = FAULTS) -> None:
        unknown = set(kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; the kinds are {', '.join(FAULTS)}")
        self.root, self.seconds, self.fault_limit, self.say = root, seconds, faults, say
        self.gap, self.kinds = gap, tuple(kinds)
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        #: (time, {(session, table): notifications sent so far}), sampled every 0.5 s.
        self.sent_history: list[tuple[float, Counter]] = []
        #: Session-ending faults: (when, the sessions open then).
        self.session_ends: list[tuple[float, set[int]]] = []
        self.poison: set[tuple[str, int, int]] = set()
        self.extra_worker: Optional[subprocess.Popen] = None
        self.start, self.wall_start = time.monotonic(), time.time()

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> tuple[list[Check], dict]:
        keys = self.root / "keys"
        private_key, _ = create_keypair(keys, KID, keys / "trusted")
        self.venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=keys / "trusted",
                                               tick_interval=0.05, noise_rate=4.0, informed_rate=0.5,
                                               reconnect_lead=1.0))
        await self.venue.start()
        self.account = default_account(KID)
        web_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTICS_")}
        env.update({
            "CRYPTICS_STATE_DIR": str(self.root / "state"), "CRYPTICS_WEB_PORT": str(web_port),
            "CRYPTICS_VENUE_URL": self.venue.url, "CRYPTICS_THALEX_KEY_ID": KID,
            "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private_key), "CRYPTICS_INSTRUMENTS": ",".join(INSTRUMENTS),
            "CRYPTICS_WEB_TOKEN": TOKEN, "CRYPTICS_RISK_MAX_POSITION": str(LIMIT),
            # Inside the house's 3 bps, so that the takers fill us on both instruments.
            "CRYPTICS_QUOTE_SPREAD_UNIT": "bps", "CRYPTICS_QUOTE_HALF_SPREAD": "2", "CRYPTICS_QUOTE_LEVEL_STEP": "2",
            "CRYPTICS_QUOTE_BID_SIZES": "0.1,0.2", "CRYPTICS_QUOTE_ASK_SIZES": "0.1,0.2",
            "CRYPTICS_RISK_MAX_DRAWDOWN": "1000000000",
        })
        self.up = Up(self.root / "state", env)
        sampler = asyncio.get_running_loop().create_task(self._sample_sent())
        try:
            await self.up.wait_for(self.up.all_running, "the stack up", 180)
            state = self.up.state()
            self.urls = state["urls"]
            self.bootstrap = bootstrap_servers(self.urls["broker"])
            password = Path(self.urls["database_password_file"]).read_text().strip()
            self.dsn = self.urls["database"].replace(":***@", f":{password}@", 1)
            await self.up.wait_for(self._quoting, "the worker quoting", 90)
            self.say(f"stack up; campaign of {self.seconds:.0f} s starts")
            self.start, self.wall_start = time.monotonic(), time.time()
            await self._throw_faults()
            await self.up.wait_for(self.up.all_running, "every service running after the last fault", 180)
            await self.up.wait_for(self._quoting, "the worker quoting after the last fault", 120)
            unknown = await self._orders_unknown_to_the_worker()
            await self._halt_and_settle()
            sampler.cancel()
            checks = await self._checks(unknown)
            summary = self._summary(checks)
        finally:
            sampler.cancel()
            if self.extra_worker is not None and self.extra_worker.poll() is None:
                self.extra_worker.kill()
            code = self.up.stop()
            await self.venue.stop()
        checks.append(Check("cryptics up stopped cleanly", code == 0, f"exit code {code}"))
        summary["checks"] = [dataclasses.asdict(c) for c in checks]
        return checks, summary

    def _elapsed(self) -> float:
        return time.monotonic() - self.start

    def _quoting(self) -> bool:
        view = _get_json(f"{self.urls['web']}/quoting/")
        return bool(view and view.get("quoting") and view["gateway"].get("acks", 0) > 0
                    and self.venue.engine.open_orders(self.account))

    async def _sample_sent(self) -> None:
        while True:
            self.sent_history.append((time.monotonic(), self._sent_now()))
            await asyncio.sleep(0.5)

    async def _throw_faults(self) -> None:
        """A fault every ``gap`` seconds (start to start; one that lasts longer delays the next),
        until ``seconds`` have passed (or ``faults`` were thrown)."""
        cycle: list[str] = []
        next_at = self.rng.uniform(*self.gap)
        while True:
            await asyncio.sleep(max(0.0, next_at - self._elapsed()))
            next_at += self.rng.uniform(*self.gap)
            if self._elapsed() >= self.seconds or (self.fault_limit is not None and len(self.faults) >= self.fault_limit):
                return
            if not cycle:
                cycle = list(self.kinds)
                self.rng.shuffle(cycle)
            kind = cycle.pop()
            # The stack may still be restarting what the last fault took down: a fault needs its target.
            await self.up.wait_for(self.up.all_running, f"every service running before {kind}", 120)
            fault = Fault(kind, round(self._elapsed(), 1))
            self.say(f"{fault.started:7.1f} s  fault {len(self.faults) + 1}: {kind}")
            begun = time.monotonic()
            fault.detail = await getattr(self, f"_{kind}")()
            fault.took = round(time.monotonic() - begun, 1)
            self.faults.append(fault)
            self.say(f"{'':9}  {fault.detail} ({fault.took:.1f} s)")

    # -- the faults ---------------------------------------------------------------------------

    def _sessions(self) -> set[int]:
        return {c.session for c in self.venue.connections}

    def _signal_worker(self, sig: int) -> str:
        pid = self.up.pid("worker")
        self.session_ends.append((time.monotonic(), self._sessions()))
        os.kill(pid, sig)
        return f"worker pid {pid} sent {signal.Signals(sig).name}"

    async def _worker_kill(self) -> str:
        return self._signal_worker(signal.SIGKILL)

    async def _worker_term(self) -> str:
        return self._signal_worker(signal.SIGTERM)

    async def _postgres_stopped(self) -> str:
        root = psutil.Process(self.up.pid("postgres"))
        processes = [root] + root.children(recursive=True)
        for p in processes:
            p.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(20.0)
        finally:
            for p in processes:
                try:
                    p.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass
        return f"{len(processes)} PostgreSQL processes stopped for 20 s"

    async def _venue_drop(self) -> str:
        self.session_ends.append((time.monotonic(), self._sessions()))
        dropped = 0
        for conn in list(self.venue.connections):
            if conn.transport is not None:
                conn.transport.abort()
                dropped += 1
        return f"{dropped} connections dropped"

    async def _venue_shutdown_notice(self) -> str:
        self.session_ends.append((time.monotonic(), self._sessions()))
        self.venue.publish_system_event({"event": "reconnect"})
        return "system reconnect notice sent"

    async def _poison_burst(self) -> str:
        from aiokafka import AIOKafkaProducer

        ticker, fill = record("ticker"), record("fill")
        ticker_codec = AvroCodec(ticker.subject, ticker.schema, self.urls["registry"])
        fill_codec = AvroCodec(fill.subject, fill.schema, self.urls["registry"])
        burst = []
        for i in range(4):
            topic = (ticker, fill, record("trade"), record("book"))[i].topic
            burst.append((topic, b"BTC-PERPETUAL", b"\x00\x00\x00\x00\x01 not avro " + str(i).encode()))
        for i in range(3):
            value = {**examples.example("ticker"), "instrument_name": "BTC-PERPETUAL", "mark_price": -1.0,
                     "mark_timestamp": time.time() + i * 1e-3}
            burst.append((ticker.topic, b"BTC-PERPETUAL", ticker_codec.dumps(value)))
        for i in range(3):
            value = {**examples.example("fill"), "instrument_name": "BTC-PERPETUAL",
                     "trade_id": f"poison-{len(self.faults)}-{i}", "price": math.nan}
            burst.append((fill.topic, b"BTC-PERPETUAL", fill_codec.dumps(value)))
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for topic, key, value in burst:
                meta = await producer.send_and_wait(topic, value, key=key)
                self.poison.add((topic, meta.partition, meta.offset))
        finally:
            await producer.stop()
        return f"{len(burst)} poison records (4 not Avro, 3 negative marks, 3 NaN fill prices)"

    async def _slow_database(self) -> str:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE tickers IN ACCESS EXCLUSIVE MODE")
                await asyncio.sleep(10.0)
        finally:
            await conn.close()
        return "tickers locked (ACCESS EXCLUSIVE) for 10 s"

    async def _rebalance(self) -> str:
        # The analytics worker's own environment, on a port and state folder of its own.
        env = psutil.Process(self.up.pid("analytics")).environ()
        port = free_port()
        env.update(CRYPTICS_WEB_PORT=str(port), CRYPTICS_STATE_DIR=str(self.root / f"extra-{len(self.faults)}"))
        log = open(self.root / f"extra-worker-{len(self.faults)}.log", "wb")
        self.extra_worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env,
                                             stdout=log, stderr=subprocess.STDOUT)
        log.close()
        await asyncio.sleep(15.0)
        self.extra_worker.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, self.extra_worker.wait, 60)
        self.extra_worker = None
        return f"a third worker joined for 15 s and left (exit code {code})"

    # -- the end ------------------------------------------------------------------------------

    async def _orders_unknown_to_the_worker(self) -> list[dict]:
        """The venue's open orders of our account that the quoting worker does not list, on a
        snapshot where both agree on the rest (orders change every tick: tried a few times)."""
        unknown: list[dict] = []
        for _ in range(20):
            view = _get_json(f"{self.urls['web']}/quoting/") or {"instruments": {}}
            known = {o["client_order_id"] for s in view["instruments"].values() for o in s["open_orders"]}
            unknown = [o for o in self.venue.engine.open_orders(self.account) if o.get("client_order_id") not in known]
            if not unknown:
                return []
            await asyncio.sleep(0.5)
        return unknown

    async def _halt_and_settle(self) -> None:
        _post_json(f"{self.urls['web']}/quoting/state/", {"state": "halted", "reason": "end of the fault campaign"})
        await self.up.wait_for(lambda: not self.venue.engine.open_orders(self.account), "our orders pulled", 30)
        await asyncio.sleep(1.0)
        # The worker's positions while it still has its venue session (it forgets them without).
        self.worker_view = _get_json(f"{self.urls['web']}/quoting/") or {"instruments": {}}
        await self.venue.stop()  # no more market data: what was sent can be counted
        self.venue_sent = self._sent_now()
        previous: Any = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            # (None for a worker whose view did not answer or that waits for a hole: not settled)
            now = [activity(_get_json(f"{url}/analytics/"), _get_json(f"{url}/sink/"))
                   for url in (self.urls["web"], self.urls["analytics"])]
            unpersisted = (self.up.state().get("unpersisted") or {}).get("records")
            if now == previous and None not in now and unpersisted == 0:
                return
            previous = now
            await asyncio.sleep(2.0)
        raise CampaignError(f"the sinks and the analytics did not settle within 180 s (last readings: events and "
                            f"records per worker {now}, None if not idle; unpersisted {unpersisted})")

    def _sent_now(self) -> Counter:
        counts: Counter = Counter()
        for (session, channel), n in self.venue.notifications_sent.items():
            for prefix, table in MARKET.items():
                if channel.startswith(prefix):
                    counts[(session, table)] += n
        return counts

    def _in_flight_allowance(self) -> Counter:
        """Per table, the notifications sent to a session in the IN_FLIGHT_S before a fault ended it
        (and after: until the venue saw the session gone)."""
        allowed: Counter = Counter()
        for at, sessions in self.session_ends:
            before = next((c for t, c in reversed(self.sent_history) if t <= at - IN_FLIGHT_S), Counter())
            for (session, table), n in self.venue_sent.items():
                if session in sessions:
                    allowed[table] += n - before.get((session, table), 0)
        return allowed

    async def _checks(self, unknown_orders: list[dict]) -> list[Check]:
        checks = []
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in MARKET.values()}
            keys = await table_keys(conn)
            open_in_table = await conn.fetchval("SELECT count(*) FROM orders WHERE NOT is_final")
        finally:
            await conn.close()

        # 1. venue → rows
        sent: Counter = Counter()
        for (_session, table), n in self.venue_sent.items():
            sent[table] += n
        allowed = self._in_flight_allowance()
        self.lost_in_flight = {t: sent[t] - rows[t] for t in MARKET.values()}
        ok = all(0 <= sent[t] - rows[t] <= allowed[t] for t in MARKET.values())
        checks.append(Check("venue notifications are rows", ok, "; ".join(
            f"{t}: sent {sent[t]}, rows {rows[t]}, lost in flight {sent[t] - rows[t]} (at most {allowed[t]} in "
            f"flight at a session-ending fault)" for t in MARKET.values())))

        # 2. topic records → rows, dead letters
        letters = await self._dead_letters()
        sink_letters = {(d["source_topic"], d["source_partition"], d["source_offset"], d["target_table"])
                        for d in letters if d["target_table"] != "analytics"}
        lettered = {c[:3] for c in sink_letters}
        records, problems, poison_rows = 0, [], 0
        #: trade_id -> how many decodable records of the fill topic carry it
        fills_on_topic: Counter = Counter()
        for name in SPECS:
            read = await topic_keys(self.bootstrap, self.urls["registry"], name)
            records += read.records
            if name == "fill":
                fills_on_topic = Counter(at["fills"][0] for at in read.key_at.values())
            topic = record(name).topic
            for partition, offset in read.undecodable:
                if (topic, partition, offset) not in lettered:
                    problems.append(f"{topic}@{partition}:{offset} does not decode and is no dead letter")
            for spec in tables_of(name):
                want = read.keys[spec.table]
                # The decodable records the table refused (the sink made them dead letters): their keys.
                refused = {read.key_at[(c[1], c[2])][spec.table] for c in sink_letters
                           if c[0] == topic and c[3] == spec.table and (c[1], c[2]) in read.key_at}
                missing, extra = want - keys[spec.table], keys[spec.table] - want
                if missing != refused or extra:
                    problems.append(f"{spec.table}: {len(missing - refused)} keys missing, {len(refused - missing)} "
                                    f"refused but present, {len(extra)} rows with no record")
                poison_rows += len(refused)
        not_lettered = {p for p in self.poison if p not in {c[:3] for c in letters_coordinates(letters)}}
        if not_lettered:
            problems.append(f"{len(not_lettered)} poison records are no dead letter: {sorted(not_lettered)[:3]}")
        checks.append(Check("topic records are rows", not problems, "; ".join(problems) or
                            f"{records} records on {len(SPECS)} topics; {len(self.poison)} poison records, all dead "
                            f"letters ({poison_rows} rows refused by their table); {len(letters)} dead letters in all"))

        # 3. analytics tables = recomputation
        mismatches = await table_mismatches(Topics(self.bootstrap, self.urls["registry"]), INSTRUMENTS)
        bad = {name: found[:3] for name, found in mismatches.items() if found}
        # Whether the analytics worker's consumer handed over every input offset (app/analytics/continuity.py).
        counters = (_get_json(f"{self.urls['analytics']}/analytics/") or {}).get("counters", {})
        continuity = {k: counters.get(k) for k in ("offset_gaps", "offset_gaps_resynced", "offsets_held",
                                                   "offsets_skipped", "offset_rewinds", "partitions_waiting")}
        checks.append(Check("analytics tables equal a recomputation", not bad,
                            (json.dumps(bad) if bad else f"{len(mismatches)} tables") + f"; input offsets: {continuity}"))

        # 4. positions
        positions, _ = await Topics(self.bootstrap, self.urls["registry"]).changelog("position_pnl", "position_state")
        view = self.worker_view
        venue_positions = self.venue.engine.account(self.account).positions
        differ = []
        for instrument in INSTRUMENTS:
            venue = round(venue_positions[instrument].contracts, 9) if instrument in venue_positions else 0.0
            analytics = round(positions.get(instrument, {}).get("position", 0.0), 9)
            worker = round((view["instruments"].get(instrument) or {}).get("position") or 0.0, 9)
            if not venue == analytics == worker:
                differ.append(f"{instrument}: venue {venue}, analytics {analytics}, worker {worker}")
        if differ:
            # Which of the venue's trades never reached the fill topic, and when (campaign seconds).
            venue_trades = {t["trade_id"]: t for t in self.venue.engine.account(self.account).trades}
            unsent = [t for trade_id, t in venue_trades.items() if trade_id not in fills_on_topic]
            differ.append(f"{len(unsent)} venue trades not on the fill topic: " + ", ".join(
                f"{t['trade_id']} {t['instrument_name']} {t['direction']} {t['amount']} at "
                f"{t['time'] - self.wall_start:.1f} s" for t in unsent[:10]))
            twice = {t: n for t, n in fills_on_topic.items() if n > 1}
            differ.append(f"{len(twice)} trades more than once on the fill topic: " + ", ".join(
                f"{t} x{n}" + (f" at {venue_trades[t]['time'] - self.wall_start:.1f} s" if t in venue_trades else "")
                for t, n in list(twice.items())[:10]))
        shown = ", ".join(f"{i} {round(venue_positions[i].contracts, 9)}" for i in INSTRUMENTS if i in venue_positions)
        checks.append(Check("positions equal the venue's", not differ, "; ".join(differ) or shown))

        # 5. orders
        left_at_venue = self.venue.engine.open_orders(self.account)
        checks.append(Check("no order unknown to the worker", not unknown_orders and not left_at_venue
                            and open_in_table == 0,
                            f"{len(unknown_orders)} open at the venue but unknown to the worker; {len(left_at_venue)} "
                            f"open after the halt; {open_in_table} not final in the orders table"))

        # 6. the position limit
        trades = self.venue.engine.account(self.account).trades
        worst = max((abs(t["position_after"]) for t in trades), default=0.0)
        # The fills that took the position past the limit, placed on the campaign's clock.
        offset = time.time() - time.monotonic() + self.start
        past = [f"{t['instrument_name']} {t['direction']} {t['amount']} at {t['time'] - offset:.1f} s to "
                f"{t['position_after']} (order {t['order_id']}, client id {t.get('client_order_id')})"
                for t in trades if abs(t["position_after"]) > LIMIT + 1e-9]
        checks.append(Check("position limit held", not past,
                            f"largest position {worst} over {len(trades)} fills (limit {LIMIT})"
                            + (f"; past it: {'; '.join(past[:5])}" if past else "")))

        # 7. the stack
        state = self.up.state()
        self.restarts = {name: s["restarts"] for name, s in state.get("services", {}).items()}
        self.unpersisted = state.get("unpersisted") or {}
        checks.append(Check("stack still up", self.up.proc.poll() is None and self.up.all_running(),
                            f"state {state.get('state')}; restarts {self.restarts}"))
        return checks

    async def _dead_letters(self) -> list[dict]:
        r = record("dead_letter")
        codec = AvroCodec(r.subject, r.schema, self.urls["registry"])
        return [codec.loads(m.value) for m in await read_until_quiet(self.bootstrap, r.topic)]

    def _summary(self, checks: list[Check]) -> dict:
        return {
            "seconds": round(self._elapsed(), 1), "faults": [dataclasses.asdict(f) for f in self.faults],
            "faults_by_kind": dict(Counter(f.kind for f in self.faults)), "restarts": self.restarts,
            "lost_in_flight": self.lost_in_flight,
            "unpersisted_most_records": self.unpersisted.get("most_records"),
            "unpersisted_longest_seconds": self.unpersisted.get("longest_seconds"),
            "fills": len(self.venue.engine.account(self.account).trades),
        }


def letters_coordinates(letters: list[dict]) -> set[tuple[str, int, int]]:
    return {(d["source_topic"], d["source_partition"], d["source_offset"]) for d in letters}


def print_report(checks: list[Check], summary: dict, say: Callable[[str], None] = print) -> None:
    say("")
    say(f"fault campaign: {summary['seconds']:.0f} s, {len(summary['faults'])} faults "
        f"({', '.join(f'{k} {n}' for k, n in sorted(summary['faults_by_kind'].items()))}), {summary['fills']} fills")
    say(f"restarts: {summary['restarts']}; unpersisted at most {summary['unpersisted_most_records']} records, "
        f"the longest window {summary['unpersisted_longest_seconds']} s")
    width = max(len(c.name) for c in checks)
    for c in checks:
        say(f"  {'PASS' if c.passed else 'FAIL'}  {c.name:{width}}  {c.detail}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long faults are thrown (default 10)")
    parser.add_argument("--faults", type=int, default=None, help="stop after this many faults")
    parser.add_argument("--seed", type=int, default=1, help="seed of the faults' order and gaps")
    parser.add_argument("--json", type=Path, default=None, help="write the result here too")
    parser.add_argument("--keep", type=Path, default=None,
                        help="run in this folder and keep it (the stack's logs, up.json); default: a temporary one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cryptics-campaign-") as folder:
        root = Path(folder)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=False)
            root = args.keep.resolve()
        try:
            checks, summary = asyncio.run(Campaign(root, args.minutes * 60, args.faults, args.seed).run())
        except CampaignError as exc:
            print(f"fault campaign could not finish: {exc}", file=sys.stderr)
            return 1
    print_report(checks, summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
