"""Tick → order latency at the venue's probe: the in-process hot path, through Kafka, and with mass quotes.

    .venv/bin/python -m benchmarks.bench_quoting [--seconds 20] [--rate 20] [--quick]

The simulated venue runs in this process with its market still (market_running=False);
this benchmark steps it at a fixed rate (default 20 steps/s, same seed for every case),
so every case sees a comparable stream of ticker, book and index notifications. Per case,
on a fresh Tansu broker (same PostgreSQL-backed schema registry):

  (a) in-process: `cryptics worker` as a child process, quoting out of the box: the
      source hands each notification to the quote agent as a MarketEvent (a direct call,
      inside the client's read callback), which decides, and the order gateway writes the
      insert/amend on the same websocket session before anything else runs (docs/architecture.md#d1-the-hot-path-stays-in-one-process);
  (b) Kafka: `python -m benchmarks.kafka_quote_path`, the same worker except that the
      quote agent's input comes from the ticker/book/index Kafka topics the source
      already produces (Avro through the registry); the in-process channel only counts;
  (c) mass quotes: (a) with CRYPTICS_GATEWAY_MASS_QUOTE=1, one private/mass_quote per
      decision instead of an amend per order (and CRYPTICS_RISK_MAX_POSITION=2.0, see CASES).

The venue runs on uvloop here, as under `cryptics venue`; the workers do too. With
--persist the workers also get the database, as under `cryptics up`: they take the
quoting lease and run the persistence sink on the event loop the hot path uses.

The latency is the venue's probe (app/venue/latency.py, GET /venue/latency, reset with
?reset=1 after a warm-up): per order request, the time from the last market-data
notification the venue wrote to that connection (stamped as it hands the bytes to the
socket) to the arrival of the request (stamped at the socket read that brings it in). Per
method (insert, amend) and over all probed methods. The worker's GET /quoting/ gives the
decisions and the gateway's counters (deltas over the measured window); the venue counts
order requests per session, to show that exactly one session (one path) quotes.

CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS is set to 0 for every case by default (--amend-threshold),
so that every target move becomes an amend: hundreds of samples in ~20 s. The gateway's
local token buckets (80 % of the venue's 10/s before cancel-on-disconnect, 50/s after)
cap what goes out; skipped actions show as throttled_local. That is expected.

Read the probe with care: it times each order from the *latest* notification written to
the connection, not from the one that caused it. At 20 steps/s a notification goes out
every ~17-50 ms, so a path that runs seconds behind (the Kafka path on this machine) still
shows a probe p50 of a few ms. The worker's own D9 stages (latency topic) and the Kafka
agents' lag are printed next to it for that reason. Also run: a floor, a bare ThalexClient
process answering every notification with a private/cancel (venue + loopback + client):
what this machine gives any client of this venue; and a transport floor, the same process
answering the first frame of each read unparsed, with a ready-made request (venue +
loopback + picows). benchmarks/bench_cold.py shows why the two differ so much here: code
that ran 50 ms ago is no longer in the caches. On a 2-core machine the venue, the
worker, the broker and PostgreSQL share the cores, and the tail of every figure here is
mostly time spent waiting for a core.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, AsyncContextManager, Awaitable, Callable, Optional

import uvloop

ROOT = Path(__file__).resolve().parent.parent
INSTRUMENT = "BTC-PERPETUAL"
KID = "bench-quoting"
SEED = 11
#: The Kafka case's window starts once its agents run less than this far behind the source (ms).
CAUGHT_UP_MS = 250.0
PROBED = ("private/insert", "private/amend", "private/cancel", "private/buy", "private/sell", "private/mass_quote")

CASES = (
    ("in-process", "in-process channel (cryptics worker)", [sys.executable, "-m", "app.cli", "worker"], {}),
    ("kafka", "Kafka topics (benchmarks.kafka_quote_path)", [sys.executable, "-m", "benchmarks.kafka_quote_path"], {}),
    # The in-process path again, quoting with private/mass_quote: one request per decision.
    # Its gateway counts the side being replaced as fillable until the venue has read the new
    # one, so with every level moving (threshold 0) a 1.0 limit would hold back half of each
    # ladder; 2.0 leaves room for both (it is the one position limit: the core sizes against
    # it too, which cuts the 2 x 0.6 ladder only past a position of 1.4).
    ("mass-quote", "in-process, mass quotes (cryptics worker)", [sys.executable, "-m", "app.cli", "worker"],
     {"CRYPTICS_GATEWAY_MASS_QUOTE": "1", "CRYPTICS_RISK_MAX_POSITION": "2.0"}),
)


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


async def _aget(port: int, path: str) -> dict:
    return await asyncio.get_running_loop().run_in_executor(None, _get, port, path)


def _count_orders(venue) -> Counter:
    """Count the venue's order requests per (session, method), by wrapping this venue object's handler."""
    counts: Counter = Counter()
    original = venue._handle
    patterns = [(m, f'"{m}"'.encode(), f'"{m}"') for m in PROBED]

    def handle(conn, data, received):
        for method, as_bytes, as_text in patterns:
            if (as_bytes if isinstance(data, bytes) else as_text) in data:
                counts[(conn.session, method)] += 1
                break
        original(conn, data, received)

    venue._handle = handle  # _websocket calls self._handle(...): the instance attribute wins
    return counts


async def _step(venue, seconds: float, rate: float) -> int:
    """Step the market ``rate`` times a second for ``seconds`` (a fixed schedule, no drift)."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / rate
    due = start = loop.time()
    steps = 0
    while loop.time() - start < seconds:
        venue.step_market()
        steps += 1
        due += interval
        await asyncio.sleep(max(0.0, due - loop.time()))
    return steps


async def _step_until(venue, rate: float, check, what: str, timeout: float, worker) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"worker exited ({worker.popen.returncode}) waiting for {what}:\n{worker.log_tail(40)}")
        await _step(venue, 0.5, rate)
        try:
            last = await check()
            if last:
                return
        except OSError as exc:  # the web server is not up yet
            last = exc
    raise RuntimeError(f"timed out waiting for {what} (last: {last!r}); worker log:\n{worker.log_tail(40)}")


def _us(ms: Optional[float]) -> Optional[float]:
    return None if ms is None else ms * 1e3


def _delta(after: dict, before: dict) -> dict:
    out = {}
    for key, value in after.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value - before.get(key, 0)
        elif isinstance(value, dict):
            out[key] = {k: v - before.get(key, {}).get(k, 0) for k, v in value.items()}
    return out


def _decisions(view: dict) -> int:
    return sum(i["decisions"] for i in view["instruments"].values())


async def _stage_latencies(bootstrap: str, registry_url: str, start: float, end: float) -> dict:
    """The worker's own D9 stage samples (the ``latency`` topic) whose stage ended in [start, end] (epoch s):
    stage → sorted durations in µs."""
    from app.pipeline.codec import AvroCodec
    from app.pipeline.topics import read_until_quiet
    from models.registry import record

    stages: dict[str, list[float]] = {}
    for name in ("latency", "ticker"):
        r = record(name)
        codec = AvroCodec(r.subject, r.schema, registry_url)
        for m in await read_until_quiet(bootstrap, r.topic):
            value = codec.loads(m.value)
            if name == "latency" and start <= value["end_at"].timestamp() <= end:
                stages.setdefault(value["stage"], []).append(float(value["duration_us"]))
            elif name == "ticker" and start <= value["received_at"].timestamp() <= end:
                # the venue stamps mark_timestamp with the market step's time.time()
                stages.setdefault("venue_step_to_received", []).append(
                    (value["received_at"].timestamp() - value["mark_timestamp"]) * 1e6)
    return {stage: sorted(values) for stage, values in stages.items()}


FLOOR_CLIENT = """
import asyncio, os, sys
from pathlib import Path
from app.exchange.auth import Credentials
from app.exchange.client import ThalexClient, ThalexError
import uvloop

async def main():
    creds = Credentials.from_file(os.environ["KID"], Path(os.environ["KEY"]), None)
    client = ThalexClient(os.environ["URL"], creds)
    await client.start()
    tasks = set()

    async def cancel():
        try:
            await client.call("private/cancel", {"client_order_id": 4_000_000_000})
        except ThalexError:
            pass  # order not found: expected, only the request's arrival is measured

    def on_market_data(notification):
        task = asyncio.get_running_loop().create_task(cancel())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await client.subscribe([f"ticker.{os.environ['INSTRUMENT']}.raw", f"book.{os.environ['INSTRUMENT']}.none.all.raw",
                            "price_index.BTCUSD"], on_market_data)
    print("subscribed", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())  # as the worker
"""

#: The transport floor: the same login and subscriptions, then the client's frame callback is
#: replaced by one that answers the first market-data frame of each read with a ready-made
#: cancel, unparsed: venue + loopback + picows, and no Python work to speak of.
RAW_FLOOR_CLIENT = FLOOR_CLIENT.replace('    print("subscribed", flush=True)', '''
    import orjson
    from picows import WSMsgType
    cancel_frame = orjson.dumps({"method": "private/cancel", "params": {"client_order_id": 4_000_000_000},
                                 "id": 1 << 40})
    answered = [False]
    handle_frame = client._socket.on_ws_frame

    def on_ws_frame(transport, frame):
        if frame.msg_type == WSMsgType.TEXT and frame.get_payload_as_memoryview()[:15] == b'{"channel_name"':
            if not answered[0]:
                transport.send(WSMsgType.TEXT, cancel_frame)
                answered[0] = True
                asyncio.get_running_loop().call_soon(answered.__setitem__, 0, False)  # the next read's turn
            return
        handle_frame(transport, frame)  # replies, pings, closes: as before
    client._socket.on_ws_frame = on_ws_frame
    print("subscribed", flush=True)''')


async def run_floor(stack: "Stack", args, private_key: Path, trusted: Path, script: str = FLOOR_CLIENT) -> dict:
    """The floor: a bare client process (the project's ThalexClient, nothing else) that answers every
    market-data notification with a private/cancel at once. Venue + loopback + client parsing only."""
    from app.stack.process import environ_for_child, spawn
    from app.venue import Venue, VenueConfig

    venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=trusted, market_running=False,
                                      seed=SEED))
    client = None
    try:
        await venue.start()
        orders = _count_orders(venue)
        client = spawn("floor-client", [sys.executable, "-c", script],
                       log_path=stack.root / "logs" / "floor-client.log", cwd=ROOT,
                       env=environ_for_child({"URL": venue.url, "KID": KID, "KEY": str(private_key),
                                              "INSTRUMENT": INSTRUMENT}))

        async def answering() -> bool:
            return sum(orders.values()) > 0
        await _step_until(venue, args.rate, answering, "floor client", 60, client)
        await _step(venue, args.warmup, args.rate)
        venue.latency.reset()
        orders.clear()
        await _step(venue, min(args.seconds, 10.0), args.rate)
        probe, orders_seen = venue.latency_stats(), Counter(orders)
        sessions = Counter()
        for (session, _method), n in orders_seen.items():
            sessions[session] += n
        return {"probe": probe, "sessions": dict(sessions)}
    finally:
        if client is not None:
            client.stop(timeout=10)
        await venue.stop()


class Stack:
    """PostgreSQL and the schema registry, shared by every case."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg = None
        self.registry = None
        self.registry_url = ""

    async def start(self) -> None:
        from app.stack.postgres import EmbeddedPostgres
        from app.stack.process import environ_for_child, free_port, spawn, wait_until

        self.pg = EmbeddedPostgres(self.root / "pg", self.root / "logs")
        await self.pg.start()
        port = free_port()
        self.registry = spawn("registry", [sys.executable, "-m", "app.cli", "registry", "--port", str(port)],
                              log_path=self.root / "logs" / "registry.log", cwd=ROOT,
                              env=environ_for_child({"CRYPTICS_DATABASE_URL": self.pg.dsn()}))
        self.registry_url = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            await _aget(port, "/subjects")
            return True
        await wait_until(up, what="schema registry", timeout=60, child=self.registry, interval=0.2)
        from app.stack import migrate
        await migrate.migrate(self.pg.dsn())  # for --persist: the sink's tables

    def stop(self) -> None:
        if self.registry is not None:
            self.registry.stop()
        if self.pg is not None:
            self.pg.stop()


async def run_case(key: str, argv: list[str], case_env: dict[str, str], stack: Stack, args, private_key: Path,
                   trusted: Path, profile: Optional[Path], companion_env: Optional[dict[str, str]] = None,
                   companion_ready: Optional[Callable[[int], Awaitable[bool]]] = None,
                   companion_view: Optional[Callable[[int], Awaitable[dict]]] = None,
                   observers: Optional[Callable[[dict[str, int]], AsyncContextManager[dict[str, int]]]] = None,
                   window: Optional[Callable[[Any, float, float], Awaitable[int]]] = None) -> dict:
    """One case: a fresh broker and venue, the worker ``argv``, the measured window.

    ``companion_env`` (for benchmarks/bench_analytics.py): a second `cryptics worker` of the same
    app, as `cryptics up` runs its analytics worker beside the quoting one: the worker's
    environment with no venue URL (it never takes the quoting lease), a web port and state
    folder of its own, then ``companion_env``; started once the worker quotes, and the market
    stepped until ``companion_ready(its web port)`` is true, before the warm-up.
    ``companion_view(port)`` is read before and after the window (result ``companion``).

    For benchmarks/bench_observers.py: ``observers`` is entered before the warm-up with the web
    ports (``worker``, and ``companion`` if there is one) and left after the window; it yields
    the pids of what it started, whose CPU is measured with the rest. ``window(venue, seconds,
    rate)``, if given, steps the measured window instead of a plain run of steps (it returns
    the steps it took); the probe's figures in the result are then only what it left there."""
    from app.stack.broker import EmbeddedBroker
    from app.stack.process import environ_for_child, free_port, spawn
    from app.venue import Venue, VenueConfig
    from benchmarks.bench_sink.common import CpuMeter

    root = stack.root
    broker = EmbeddedBroker(root / "logs" / key)
    venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=trusted, market_running=False,
                                      seed=SEED))
    worker = None
    companion = None
    spy = None
    observing = contextlib.AsyncExitStack()
    try:
        await broker.start()
        await venue.start()
        orders = _count_orders(venue)
        web = free_port()
        env = {
            "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_VENUE_URL": venue.url,
            "CRYPTICS_SCHEMA_REGISTRY_URL": stack.registry_url,
            "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state" / key),
            "CRYPTICS_HEARTBEAT_INTERVAL": "0", "CRYPTICS_THALEX_KEY_ID": KID,
            "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private_key), "CRYPTICS_INSTRUMENTS": INSTRUMENT,
            "CRYPTICS_LOG_LEVEL": "info", **case_env,
        }
        if args.persist:  # as under `cryptics up`: the worker also holds the lease and runs the sink
            env["CRYPTICS_DATABASE_URL"] = stack.pg.dsn()
        if args.amend_threshold is not None:
            env["CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS"] = str(args.amend_threshold)
        worker = spawn(f"worker-{key}", argv, log_path=root / "logs" / f"worker-{key}.log", cwd=ROOT,
                       env=environ_for_child(env))

        async def quoting() -> bool:
            view = await _aget(web, "/quoting/")
            placed = view["gateway"].get("inserts", 0) + view["gateway"].get("mass_quotes", 0)
            if not (view["quoting"] and _decisions(view) > 0 and placed > 0):
                return False
            if key == "kafka":  # the Kafka agents have their partitions and the channel path is silent
                counts = (await _aget(web, "/kafka-quote-path/"))["counts"]
                return counts.get("kafka_index", 0) > 0 and counts.get("kafka_ticker", 0) > 0
            return True
        await _step_until(venue, args.rate, quoting, f"{key}: quoting", 120, worker)
        companion_web = None
        if companion_env is not None:
            companion_web = free_port()
            companion = spawn(f"companion-{key}", [sys.executable, "-m", "app.cli", "worker"],
                              log_path=root / "logs" / f"companion-{key}.log", cwd=ROOT,
                              env=environ_for_child({**env, "CRYPTICS_VENUE_URL": "",
                                                     "CRYPTICS_WEB_PORT": str(companion_web),
                                                     "CRYPTICS_STATE_DIR": str(root / "state" / f"{key}-companion"),
                                                     **companion_env}))
            if companion_ready is not None:
                async def ready() -> bool:
                    if not companion.alive():
                        raise RuntimeError(f"companion exited ({companion.popen.returncode}):\n"
                                           f"{companion.log_tail(40)}")
                    return await companion_ready(companion_web)
                await _step_until(venue, args.rate, ready, f"{key}: companion ready", 120, worker)
        lags: list[float] = []
        if key == "kafka":
            # The Kafka agents start at the topics' beginning (auto_offset_reset=earliest), after the
            # group join: let them work through what the source produced meanwhile.
            async def caught_up() -> bool:
                lag = max((await _aget(web, "/kafka-quote-path/"))["lag_ms"].values())
                lags.append(lag)
                return lag < CAUGHT_UP_MS
            try:
                await _step_until(venue, args.rate, caught_up, "kafka: caught up", 10, worker)
            except RuntimeError:
                pass  # reported: the lag never fell under CAUGHT_UP_MS
        observer_pids: dict[str, int] = {}
        if observers is not None:
            ports = {"worker": web, **({"companion": companion_web} if companion_web else {})}
            observer_pids = await observing.enter_async_context(observers(ports))
        await _step(venue, args.warmup, args.rate)

        quoting_before = await _aget(web, "/quoting/")
        market_before = await _aget(web, "/market-data/")
        paths_before = (await _aget(web, "/kafka-quote-path/"))["counts"] if key == "kafka" else {}
        sent_before = sum(venue.notifications_sent.values())
        companion_before = await companion_view(companion_web) if companion_view and companion_web else None
        pids = {"worker": worker.pid, "broker": broker.child.pid}
        if stack.pg is not None and stack.pg.child is not None:
            pids["postgres"] = stack.pg.child.pid
        if companion is not None:
            pids["companion"] = companion.pid
        pids.update(observer_pids)
        meter = CpuMeter(pids, "venue (this benchmark)")
        # The probe (what GET /venue/latency?reset=1 does) and the per-session counts, reset together.
        venue.latency.reset()
        orders.clear()
        if profile is not None:
            spy = subprocess.Popen([str(profile), "record", "-p", str(worker.pid), "-d", str(int(args.seconds)),
                                    "-r", "1000", "-f", "raw", "-o", str(root / f"profile-{key}.txt"), "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        started, wall_start = time.perf_counter(), time.time()
        steps = await (window or _step)(venue, args.seconds, args.rate)
        elapsed, wall_end = time.perf_counter() - started, time.time()
        cpu = meter.stop()
        sent = sum(venue.notifications_sent.values()) - sent_before
        # Read together (GET /venue/latency returns the same venue.latency_stats()); no await in between.
        probe, orders_seen = venue.latency_stats(), Counter(orders)
        logged_in = sorted(c.session for c in venue.connections if c.account is not None)
        await asyncio.sleep(0.5)  # answers in flight, before the worker's counters are read
        quoting_after = await _aget(web, "/quoting/")
        market_after = await _aget(web, "/market-data/")
        paths_after = await _aget(web, "/kafka-quote-path/") if key == "kafka" else {"counts": {}, "lag_ms": {}}
        companion_after = await companion_view(companion_web) if companion_view and companion_web else None
        await observing.aclose()
        if spy is not None:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)
            spy = None
        sessions = Counter()
        for (session, _method), n in orders_seen.items():
            sessions[session] += n
        if companion is not None:
            if not companion.alive():
                raise RuntimeError(f"companion exited ({companion.popen.returncode}):\n{companion.log_tail(40)}")
            companion.stop(timeout=30)
        worker.stop(timeout=30)  # flushes its producer: every latency sample is on the topic
        stages = await _stage_latencies(broker.bootstrap, stack.registry_url, wall_start, wall_end + 0.5)
        return {
            "probe": probe, "steps": steps, "stages": stages, "elapsed": elapsed, "notifications_sent": sent,
            "received": sum(n for c, n in market_after["received"].items() if c != "account.portfolio")
            - sum(n for c, n in market_before["received"].items() if c != "account.portfolio"),
            "decisions": _decisions(quoting_after) - _decisions(quoting_before),
            "gateway": _delta(quoting_after["gateway"], quoting_before["gateway"]),
            "errors_by_code": {k: v for k, v in _delta(quoting_after["gateway"], quoting_before["gateway"])
                               .get("errors_by_code", {}).items() if v},
            "errors_by_code_total": quoting_after["gateway"].get("errors_by_code", {}),
            "quote_errors": quoting_after["errors"], "state": quoting_after["state"],
            "denials": quoting_after["denials"],
            "paths": _delta(paths_after["counts"], paths_before), "lag_ms": paths_after["lag_ms"],
            "catch_up_lags": lags,
            "sessions": dict(sessions),
            "orders": {f"{s}:{m.split('/')[1]}": n for (s, m), n in sorted(orders_seen.items())},
            "logged_in_sessions": logged_in,
            "cpu": cpu, "window": (wall_start, wall_end),
            "companion": None if companion is None else {"before": companion_before, "after": companion_after},
        }
    finally:
        await observing.aclose()
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(10)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)
        if companion is not None:
            companion.stop(timeout=30)
        if worker is not None:
            worker.stop(timeout=30)
        await venue.stop()
        broker.stop()


def _row(label: str, summary: dict) -> str:
    def f(ms):
        return "—" if ms is None else f"{_us(ms):,.0f}"
    return (f"  {label:<28} {summary['count']:>6} {f(summary['p50_ms']):>9} {f(summary['p90_ms']):>9} "
            f"{f(summary['p99_ms']):>9} {f(summary['max_ms']):>10}")


def _measured(results: dict):
    """(key, label, result) of each case that ran, in CASES order."""
    return [(key, label, results[key]) for key, label, _argv, _env in CASES if key in results]


def _header(first: str) -> None:
    print(f"  {first:<28} {'count':>6} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>10}")


def report(results: dict, args) -> None:
    print()
    print("tick → order latency at the venue (µs; last market-data notification written → order request read)")
    _header("path / method")
    for key, label, r in _measured(results):
        print(f"  {label}")
        by_method = r["probe"]["by_method"]
        for method, summary in by_method.items():
            print(_row("  " + method.split("/")[1], summary))
        print(_row("  all probed methods", r["probe"]["all"]))
    floor = results.get("floor")
    if floor:
        print("  floor: bare ThalexClient process answering every notification with private/cancel")
        print(_row("  cancel", floor["probe"]["all"]))
    raw = results.get("raw-floor")
    if raw:
        print("  transport floor: the same client answering the first frame of each read, unparsed")
        print(_row("  cancel", raw["probe"]["all"]))
    a, b = results.get("in-process"), results.get("kafka")
    if a and b and a["probe"]["all"]["p50_ms"] and b["probe"]["all"]["p50_ms"]:
        ratio50 = b["probe"]["all"]["p50_ms"] / a["probe"]["all"]["p50_ms"]
        ratio99 = b["probe"]["all"]["p99_ms"] / a["probe"]["all"]["p99_ms"]
        print(f"  Kafka path / in-process: p50 {ratio50:.1f}x, p99 {ratio99:.1f}x")
    m = results.get("mass-quote")
    if a and m and a["probe"]["all"]["p50_ms"] and m["probe"]["all"]["p50_ms"]:
        print(f"  mass quotes / orders (in-process): p50 {m['probe']['all']['p50_ms'] / a['probe']['all']['p50_ms']:.2f}x, "
              f"p99 {m['probe']['all']['p99_ms'] / a['probe']['all']['p99_ms']:.2f}x")
    if a and a["probe"]["all"]["p50_ms"] is not None:
        p50, p99 = _us(a["probe"]["all"]["p50_ms"]), _us(a["probe"]["all"]["p99_ms"])
        print(f"  targets (in-process): p50 ≤ 250 µs: {'met' if p50 <= 250 else 'MISSED'} ({p50:,.0f}); "
              f"p99 ≤ 1,000 µs: {'met' if p99 <= 1000 else 'MISSED'} ({p99:,.0f})")
    print()
    print("inside the worker: its own D9 stage samples from the latency topic (µs, same window; wall clock)")
    _header("path / stage")
    from app.venue.latency import percentile
    for key, label, r in _measured(results):
        print(f"  {label}")
        for stage in ("venue_step_to_received", "received_to_quoted", "quoted_to_order_sent",
                      "order_sent_to_ack_received"):
            values = r["stages"].get(stage, [])
            if values:
                print(f"    {stage:<26} {len(values):>6} {percentile(values, .5):>9,.0f} {percentile(values, .9):>9,.0f} "
                      f"{percentile(values, .99):>9,.0f} {values[-1]:>10,.0f}")
    print("  (venue_step_to_received: ticker records, the market step's time (mark_timestamp) to the source's received_at;"
          " received_at is stamped by the source's handler, after the frame is read and parsed; order_sent_at right"
          " before the gateway writes the request; ack_received_at when its answer is handled)")
    print()
    for key, label, r in _measured(results):
        g = r["gateway"]
        print(f"{label}:")
        print(f"  market: {r['steps']} steps in {r['elapsed']:.1f} s ({r['steps'] / r['elapsed']:.1f}/s); "
              f"venue sent {r['notifications_sent']} public notifications, source handled {r['received']}")
        print(f"  decisions {r['decisions']}; gateway: inserts {g.get('inserts', 0)}, amends {g.get('amends', 0)}, "
              f"mass_quotes {g.get('mass_quotes', 0)} (levels held back {g.get('skipped_exposure', 0)}), "
              f"cancels {g.get('cancels', 0)}, throttled_local {g.get('throttled_local', 0)}, "
              f"skipped_in_flight {g.get('skipped_in_flight', 0)}, throttled_venue {g.get('throttled_venue', 0)}, "
              f"acks {g.get('acks', 0)}, fills {g.get('fills', 0)}; errors_by_code {r['errors_by_code'] or '{}'} in the window "
              f"({r['errors_by_code_total'] or '{}'} since start; 1 = order gone, e.g. filled before its amend); "
              f"quote errors {r['quote_errors']}; state {r['state']}; risk denials {r['denials'] or '{}'}")
        print(f"  order requests at the venue, by session: {r['sessions'] or '{}'} ({r['orders']}); "
              f"logged-in sessions: {r['logged_in_sessions']}")
        if key == "kafka":
            print(f"  quote inputs: {r['paths']} (channel_ignored: events the in-process agent dropped)")
            lags = sorted(r["catch_up_lags"])
            if lags:
                print(f"  Kafka agents' lag behind the source (now − received_at of the last record consumed), polled "
                      f"every ~0.5 s for up to 10 s before the window: min {lags[0]:,.0f}, median "
                      f"{lags[len(lags) // 2]:,.0f}, max {lags[-1]:,.0f} ms"
                      f"{'' if lags[0] < CAUGHT_UP_MS else f' (never under {CAUGHT_UP_MS:.0f} ms)'}; at the end of the "
                      f"window: { {k: round(v) for k, v in r['lag_ms'].items()} } ms")
    print()
    print(f"settings: {args.rate:g} market steps/s, {args.seconds:g} s measured per case after {args.warmup:g} s "
          f"warm-up, venue seed {SEED}, {INSTRUMENT}, CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS="
          f"{'default (5)' if args.amend_threshold is None else f'{args.amend_threshold:g}'} for every case; other "
          f"quote/gateway settings at their defaults (2 levels per side; local order bucket 40/s after COD); "
          f"{'workers persist to PostgreSQL (--persist)' if args.persist else 'no database for the workers (no sink)'}.")


def _checks(results: dict) -> list[str]:
    problems = []
    for key, r in results.items():
        if len(r["sessions"]) != 1:
            problems.append(f"{key}: order requests from {len(r['sessions'])} sessions, expected exactly 1")
        if key in ("floor", "raw-floor"):
            continue
        throttled = {c: n for c, n in r["errors_by_code_total"].items() if c in ("3", "4")}
        if throttled or r["gateway"].get("throttled_venue", 0):
            problems.append(f"{key}: the venue throttled the gateway: {throttled}")
        by_method = r["probe"]["by_method"]
        probed = sum(s["count"] for s in by_method.values())
        sent = sum(r["sessions"].values())
        if probed != sent:
            problems.append(f"{key}: the probe has {probed} samples, the venue saw {sent} order requests")
        if key == "kafka":
            p = r["paths"]
            kafka = sum(v for k, v in p.items() if k.startswith("kafka_"))
            if kafka == 0 or p.get("channel_ignored", 0) == 0:
                problems.append(f"kafka: expected both the Kafka agents and the ignored channel to see events: {p}")
    return problems


async def main_async(args) -> int:
    from app.venue import create_keypair

    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-quoting-"))
    os.chmod(root, 0o755)
    stack = Stack(root)
    results: dict = {}
    profile = None
    if args.py_spy:
        profile = Path(sys.executable).parent / "py-spy"
        if not profile.exists():
            found = shutil.which("py-spy")
            if not found:
                raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy into .venv)")
            profile = Path(found)
    try:
        private, _ = create_keypair(root / "keys", KID, root / "keys" / "trusted")
        await stack.start()
        if not args.no_floor:
            print("floor client: starting ...", flush=True)
            results["floor"] = await run_floor(stack, args, private, root / "keys" / "trusted")
            print("transport floor client: starting ...", flush=True)
            results["raw-floor"] = await run_floor(stack, args, private, root / "keys" / "trusted",
                                                   RAW_FLOOR_CLIENT)
        for key, label, argv, case_env in CASES:
            print(f"{label}: starting ...", flush=True)
            results[key] = await run_case(key, argv, case_env, stack, args, private, root / "keys" / "trusted",
                                          profile)
            r = results[key]["probe"]["all"]
            print(f"{label}: {r['count']} samples, p50 {_us(r['p50_ms']) or 0:,.0f} µs", flush=True)
        report(results, args)
        if args.py_spy:
            for key, _label, _argv, _env in CASES:
                path = root / f"profile-{key}.txt"
                if path.exists():
                    target = Path(args.py_spy)
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
            print(f"py-spy profiles (raw, collapsed stacks) in {args.py_spy}")
        problems = _checks(results)
        for problem in problems:
            print(f"CHECK FAILED: {problem}")
        return 1 if problems else 0
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per case (default 20; the floor client runs at most 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds stepped after quoting starts, "
                        "before the probe is reset (default 3)")
    parser.add_argument("--rate", type=float, default=20.0, help="market steps per second (default 20)")
    parser.add_argument("--amend-threshold", type=float, default=0.0,
                        help="CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS for every case (default 0; -1: the product's "
                        "default)")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-client floor measurement")
    parser.add_argument("--persist", action="store_true", help="give the workers the database, as `cryptics up` "
                        "does: they then take the quoting lease and run the persistence sink on the same event loop")
    parser.add_argument("--quick", action="store_true", help="a short check: 6 s per case, 2 s warm-up")
    parser.add_argument("--py-spy", metavar="DIR", help="record each worker with py-spy during the measured window "
                        "(py-spy must be installed; raw collapsed stacks are copied to DIR)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup = 6.0, 2.0
    if args.amend_threshold is not None and args.amend_threshold < 0:
        args.amend_threshold = None
    sys.exit(uvloop.run(main_async(args)))  # the venue runs here: on uvloop, as `cryptics venue` does


if __name__ == "__main__":
    main()
