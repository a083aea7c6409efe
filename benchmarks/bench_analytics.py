"""Analytics throughput and cost: the analytics agent alone, the whole pipeline with it, and the hot path beside it.

    .venv/bin/python -m benchmarks.bench_analytics [--quick] [--parts 1,2,3] [--events 100000] [--naive-events N]
                                                   [--venue-events 100000] [--quoting-rounds 2] [--profile]

Everything runs on loopback in a temporary folder removed at the end, with the project's own
embedded services only (Tansu, PostgreSQL, the schema registry as `cryptics registry`, the
simulated venue in this process), so the ratios within a part come from one run.

Part 1, the analytics agent alone over preloaded topics. Synthetic records for two perpetuals
(BTC-PERPETUAL, ETH-PERPETUAL) are produced onto the nine input topics (ticker, book, index,
trade, quote, ack, fill, position, latency; Avro through the registry, keyed by instrument or
index name, Kafka timestamps = their local stamps) BEFORE any worker starts; per market step
of 50 ms and instrument: an index price, a ticker, a book update, a quote decision with its
received → quoted sample, two order acks (amends) with their quoted → order sent and order sent →
ack received samples; a public trade every 4 steps, a fill and a position update every 25 (see
``synthetic_events``). Then, each as a real worker process with its own app id (consumer group,
changelog topics), so that each reads the same topics from the start:
  (a) the product: `cryptics worker` with CRYPTICS_INSTRUMENTS, no database, no venue URL,
      heartbeat off: the analytics agent (agents/analytics.py) is the only one with work;
  (b) the naive agent of benchmarks/naive_analytics_app.py: the same tables and engine, one
      event per stream iteration and ``engine.apply([event])`` per event, over every record by
      default (--naive-events times it over fewer, but then over another mix: Faust hands the
      topics of a backlog over in runs of one topic, so the first 20% of the events held no
      latency, ack or index record in a trial);
  (c) consume-only agents (benchmarks/naive_analytics_app.py): per event (``stream.events()``) and
      batched (``take_events`` with the product's batch size); no decode, no table.
Each is timed from the first event its web view reports (the group join on Tansu takes
session_timeout/2 before that) to the moment it reports the target count, polled every 0.1 s;
the CPU the worker and the broker used meanwhile is read from /proc. The product must apply every
event (no dead letter, no redelivery), and its tables, read back from their changelog topics,
must equal a recomputation over the same records with app/analytics/engine.py and local_tables()
(floats to 1e-9 relative; analytics_progress compares pnl_minute only).

"Analytics on" in parts 2 and 3 is `cryptics up`'s topology (app/stack/supervisor.py): two
workers of the one Faust app (app id ``cryptics``) on the same broker, registry and database:
the quoting (here also the market-data source) worker with CRYPTICS_ANALYTICS_ENABLED=false,
which holds the venue session, quotes and persists, and an analytics worker with
CRYPTICS_ANALYTICS_ENABLED=true and no venue URL (it never takes the quoting lease), its own
web port and CRYPTICS_STATE_DIR, which persists too (the sink's consumer group is shared).
"Analytics off" is the quoting worker alone, with CRYPTICS_ANALYTICS_ENABLED=false.

Part 2, the whole pipeline with the analytics on: benchmarks/bench_sink/from_venue.py's run (the
venue stepped as fast as the pipeline persists, market data only, no credentials) through the
source worker and the analytics worker (started once the first serves, as `cryptics up` does;
the warm-up lasts until the analytics worker has applied events and every notification so far
is persisted), timed until the market tables hold every notification and the analytics
worker's GET /analytics/ counts as many events as the input topics hold records (their offsets);
then zero loss (from_venue's checks, over both workers' /sink/: every notification one row,
every topic record one row, no dead letter) and exact tables (the changelogs of app id
``cryptics`` against a recomputation over the input topics read back from Kafka; the analytics
worker counted each input record once; the source worker ran no analytics). Before it, the
same run with one worker and CRYPTICS_ANALYTICS_ENABLED=false (bench_sink's part 3 as it is;
--no-venue-baseline skips it) gives the same run's pipeline without the analytics.

Part 3, tick → order with the analytics on and off: benchmarks/bench_quoting.py's in-process case
(``run_case``) with the database, the quoting worker with the analytics off in every run and,
in the runs with the analytics on, the analytics worker beside it (``run_case``'s companion:
started once the worker quotes, ready once it has applied events, before the warm-up);
alternating off, on, on, off, ... (--quoting-rounds pairs); p50 and p99 at the venue's probe and
the ratio on / off (means of the runs); the quoting worker's own received → quoted and quoted →
order sent stages beside them, and the CPU of each process during the window.
--quoting-batch-size sets CRYPTICS_ANALYTICS_BATCH_SIZE of the analytics worker.

--parts picks the parts (e.g. --parts 2,3); --events 0, --venue-events 0 and --quoting-rounds 0
skip one too. --profile samples the product worker of part 1 and the two workers of part 2 with
py-spy, if installed (.venv/bin/py-spy or on the PATH), and prints the top functions.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.bench_sink.common import (
    ROOT,
    BenchmarkError,
    CpuMeter,
    child_env,
    create_database,
    get_json,
    machine_summary,
    scratch_folder,
    profile_summary,
)

#: The two perpetuals of the simulated venue (benchmarks/bench_sink/from_venue.py uses the same).
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL")
INDEX_OF = {"BTC-PERPETUAL": "BTCUSD", "ETH-PERPETUAL": "ETHUSD"}
START_PRICE = {"BTC-PERPETUAL": 104_900.0, "ETH-PERPETUAL": 2_510.0}
TICK = {"BTC-PERPETUAL": 1.0, "ETH-PERPETUAL": 0.1}
#: One market step every 50 ms (bench_quoting's 20 steps a second).
STEP_SECONDS = 0.05
TRADE_EVERY = 4
FILL_EVERY = 13
ORDERS_PER_STEP = 2
PARTITIONS = 3
PRODUCT_APP_ID = "cryptics"
POLL_SECONDS = 0.1


# -- synthetic input records ------------------------------------------------------------------


def _stamp(t: float, after_us: float = 0.0) -> datetime:
    """A local wall-clock stamp ``after_us`` after unix time ``t``, at µs precision (timestamp-micros)."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=round(t * 1e6 + after_us))


def synthetic_events(n: int, start: float, seed: int = 7) -> list[tuple[str, dict]]:
    """``n`` input records (record name, fastavro value) in the order a live run produces them,
    from unix time ``start`` on. Per market step (STEP_SECONDS) and instrument, in the proportions
    of a live quoting run (bench_quoting, one instrument, 20 steps a second: ~5.7 public
    notifications, one decision per notification, 2 amends and 4 acks a step, a fill every ~13
    steps): an index price, two tickers and two book updates; a public trade (also in its book
    update) every TRADE_EVERY steps; a quote decision with its received_to_quoted sample per
    market-data record; ORDERS_PER_STEP amends, each answered by two acks (the reply and the
    session.orders update), each amend with its quoted_to_order_sent and order_sent_to_ack_received
    samples and each ack with the sink's ack_received_to_persisted sample (as under `cryptics up`);
    a maker fill of one of our orders and a position update every FILL_EVERY steps. Shapes are
    models/examples.py's, every D9 stamp set, every number finite."""
    from app.clock import micros
    from models.examples import example

    rng = random.Random(seed)
    base = {name: example(name) for name in ("ticker", "book", "index", "trade", "quote", "ack", "fill",
                                             "position", "latency")}
    index_price = dict(START_PRICE)
    position = dict.fromkeys(INSTRUMENTS, 0.0)
    out: list[tuple[str, dict]] = []
    step = 0
    trade_id = 0

    def amount(scale: float, most: int) -> float:
        return round(scale * rng.randint(1, most), 3)

    def latency(stage: str, instrument: str, start_at: datetime, end_at: datetime, **stamps: Any) -> tuple[str, dict]:
        v = dict(base["latency"])
        v.update(stage=stage, instrument_name=instrument, start_at=start_at, end_at=end_at,
                 duration_us=micros(start_at, end_at), received_at=None, quoted_at=None, order_sent_at=None,
                 ack_received_at=None, persisted_at=None)
        v.update(stamps)
        return "latency", v

    while len(out) < n:
        t0 = start + step * STEP_SECONDS
        for k, instrument in enumerate(INSTRUMENTS):
            tick = TICK[instrument]
            half = tick * 25
            market: list[tuple[str, dict]] = []
            index_price[instrument] *= math.exp(rng.gauss(0.0, 0.0002))
            ix = index_price[instrument]
            v = dict(base["index"])
            v.update(index_name=INDEX_OF[instrument], price=ix, timestamp=t0, received_at=_stamp(t0, 1700 + rng.randint(0, 300)))
            market.append(("index", v))
            for half_step in range(2):
                t = t0 + half_step * STEP_SECONDS / 2
                mark = ix * (1 + rng.gauss(0.0, 0.00005))
                bid = math.floor(mark / tick) * tick - tick * rng.randint(0, 3)
                ask = math.ceil(mark / tick) * tick + tick * rng.randint(0, 3)
                if ask <= bid:
                    ask = bid + tick
                v = dict(base["ticker"])
                v.update(instrument_name=instrument, mark_price=mark, mark_timestamp=t, index=ix, best_bid_price=bid,
                         best_bid_amount=amount(0.01, 300), best_ask_price=ask, best_ask_amount=amount(0.01, 300),
                         last_price=bid if step % 2 else ask, low_price_24h=START_PRICE[instrument] * 0.97,
                         high_price_24h=START_PRICE[instrument] * 1.03, collar_low=ix * 0.95, collar_high=ix * 1.05,
                         received_at=_stamp(t, 3100 + rng.randint(0, 400)))
                market.append(("ticker", v))
                trades = []
                if half_step == 0 and (step + k) % TRADE_EVERY == 0:
                    direction = rng.choice(("buy", "sell"))
                    trades.append({"price": ask if direction == "buy" else bid, "amount": amount(0.001, 500),
                                   "direction": direction, "timestamp": t - 0.01, "implied_taker": False})
                v = dict(base["book"])
                v.update(instrument_name=instrument, time=t, snapshot=False,
                         bid_changes=[{"price": bid - i * tick, "amount": amount(0.05, 40),
                                       "outright_amount": amount(0.05, 40)} for i in range(2)],
                         ask_changes=[{"price": ask + i * tick, "amount": amount(0.05, 40),
                                       "outright_amount": amount(0.05, 40)} for i in range(2)],
                         trades=trades, total_bid_amount=round(rng.uniform(20, 60), 3),
                         total_ask_amount=round(rng.uniform(20, 60), 3), best_bid_price=bid,
                         best_bid_amount=amount(0.01, 300), best_ask_price=ask, best_ask_amount=amount(0.01, 300),
                         received_at=_stamp(t, 2400 + rng.randint(0, 300)))
                market.append(("book", v))
                for trade in trades:
                    w = dict(base["trade"])
                    w.update(instrument_name=instrument, **trade, received_at=v["received_at"])
                    market.append(("trade", w))
            levels = [(math.floor((ix - half - 5 * tick * i) / tick) * tick,
                       math.ceil((ix + half + 5 * tick * i) / tick) * tick) for i in range(2)]
            first_quote = None
            for name, v in market:
                out.append((name, v))
                if name == "trade":
                    continue  # the trade came in its book update, which was quoted on
                # One decision per market-data record: 2 levels a side around the index.
                received = v["received_at"]
                quoted = received + timedelta(microseconds=30 + rng.randint(0, 40))
                q = dict(base["quote"])
                q.update(instrument_name=instrument, position=position[instrument], reason=name, fair_value=ix,
                         bids=[{"price": b, "amount": 0.2 * (i + 1)} for i, (b, _) in enumerate(levels)],
                         asks=[{"price": a, "amount": 0.2 * (i + 1)} for i, (_, a) in enumerate(levels)],
                         index=ix, mark_price=ix, mark_timestamp=t0, best_bid_price=levels[0][0] - tick,
                         best_ask_price=levels[0][1] + tick, funding_rate=0.0, received_at=received, quoted_at=quoted)
                out.append(("quote", q))
                out.append(latency("received_to_quoted", instrument, received, quoted, received_at=received,
                                   quoted_at=quoted))
                first_quote = first_quote or (received, quoted)
            received, quoted = first_quote
            # Two of our four orders amended to their new level (the local bucket lets ~2 a step out).
            for a in range(ORDERS_PER_STEP):
                order = (step * ORDERS_PER_STEP + a) % 4  # 0, 1 bids; 2, 3 asks
                level, is_bid = order % 2, order < 2
                price = levels[level][0] if is_bid else levels[level][1]
                sent = quoted + timedelta(microseconds=120 + 30 * a + rng.randint(0, 40))
                answered = sent + timedelta(microseconds=900 + rng.randint(0, 900))
                out.append(latency("quoted_to_order_sent", instrument, quoted, sent, received_at=received,
                                   quoted_at=quoted, order_sent_at=sent))
                out.append(latency("order_sent_to_ack_received", instrument, sent, answered, received_at=received,
                                   quoted_at=quoted, order_sent_at=sent, ack_received_at=answered))
                for reply in range(2):  # the reply, then the session.orders update
                    acked = answered + timedelta(microseconds=reply * (40 + rng.randint(0, 60)))
                    v = dict(base["ack"])
                    v.update(order_id=f"{k:02X}{order:014X}", direction="buy" if is_bid else "sell",
                             amount=0.2 * (level + 1), filled_amount=0.0, remaining_amount=0.2 * (level + 1),
                             status="open", fills=[], change_reason="amend", insert_reason="client_request",
                             create_time=start, instrument_name=instrument, price=price, client_order_id=k * 100 + order,
                             received_at=received, quoted_at=quoted, order_sent_at=sent, ack_received_at=acked)
                    out.append(("ack", v))
                    persisted = acked + timedelta(microseconds=30_000 + rng.randint(0, 40_000))
                    out.append(latency("ack_received_to_persisted", instrument, acked, persisted, received_at=received,
                                       quoted_at=quoted, order_sent_at=sent, ack_received_at=acked,
                                       persisted_at=persisted))
            if (step + 5 * k) % FILL_EVERY == FILL_EVERY - 1:
                trade_id += 1
                is_bid = rng.random() < 0.5
                size = 0.05
                price = levels[0][0] if is_bid else levels[0][1]
                position[instrument] = round(position[instrument] + (size if is_bid else -size), 9)
                fill_time = t0 + 0.04
                v = dict(base["fill"])
                v.update(trade_id=f"{trade_id:032X}", order_id=f"{k:02X}{0 if is_bid else 2:014X}",
                         instrument_name=instrument, direction="buy" if is_bid else "sell", maker_taker="maker",
                         price=price, amount=size, client_order_id=k * 100 + (0 if is_bid else 2), time=fill_time,
                         order_sent_at=None, ack_received_at=_stamp(fill_time, 1900))
                out.append(("fill", v))
                v = dict(base["position"])
                v.update(instrument_name=instrument, position=position[instrument], mark_price=ix, index=ix,
                         start_price=price, average_price=price, unrealised_pnl=0.0, realised_pnl=0.0,
                         entry_value=price * position[instrument], perpetual_funding_entry_value=0.0,
                         unrealised_perpetual_funding=rng.uniform(-0.5, 0.5), received_at=_stamp(fill_time, 2500))
                out.append(("position", v))
        step += 1
    return out[:n]


def _kafka_time(name: str, value: dict) -> datetime:
    """The local stamp a live worker would have produced the record at."""
    for stamp in ("ack_received_at", "end_at", "quoted_at", "received_at"):
        if value.get(stamp) is not None:
            return value[stamp]
    raise ValueError(f"{name} without a local stamp")


async def preload_inputs(bootstrap: str, registry_url: str,
                         events: list[tuple[str, dict]]) -> list[tuple[str, int, int, bytes]]:
    """Produce ``events`` onto their topics, in order; (name, partition, offset, value bytes) of each."""
    from aiokafka import AIOKafkaProducer

    from app.analytics.engine import INPUTS
    from app.pipeline.codec import AvroCodec
    from models.registry import record

    codecs = {name: AvroCodec(record(name).subject, record(name).schema, registry_url) for name in INPUTS}
    encoded = [(name, value[INPUTS[name]].encode(), codecs[name].dumps(value),
                int(_kafka_time(name, value).timestamp() * 1000)) for name, value in events]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                enable_idempotence=False, client_id="bench-analytics-preload")
    await producer.start()
    out: list[tuple[str, int, int, bytes]] = []
    try:
        for i in range(0, len(encoded), 5000):
            chunk = encoded[i:i + 5000]
            futures = [await producer.send(record(name).topic, value=value, key=key, timestamp_ms=ts)
                       for name, key, value, ts in chunk]
            for (name, _, value, _), meta in zip(chunk, await asyncio.gather(*futures)):
                out.append((name, meta.partition, meta.offset, value))
        await producer.flush()
    finally:
        await producer.stop()
    return out


# -- reading the tables back, and recomputing them --------------------------------------------


#: Changelog values read back, by the format they were in (the schemas say Avro; Faust's default is JSON).
CHANGELOG_FORMATS: Counter = Counter()


async def read_changelogs(bootstrap: str, registry_url: str, app_id: str) -> dict[str, dict]:
    """Every analytics table of ``app_id`` as its changelog topic leaves it: last value per key."""
    from app.analytics.engine import TABLES
    from app.pipeline.codec import AvroCodec, WireFormatError
    from app.pipeline.topics import read_until_quiet
    from models import schemas

    tables: dict[str, dict] = {}
    read = await asyncio.gather(*(read_until_quiet(bootstrap, f"{app_id}-{spec.name}-changelog") for spec in TABLES))
    for spec, messages in zip(TABLES, read):
        topic = f"{app_id}-{spec.name}-changelog"
        codec = AvroCodec(f"{topic}-value", schemas.load(spec.state), registry_url)
        values: dict = {}
        for m in messages:
            if spec.window is None:
                key: Any = m.key.decode()
            else:
                name, (start, end) = json.loads(m.key)
                key = (name, (start, end))
            if m.value is None:
                values.pop(key, None)
                continue
            try:
                values[key] = codec.loads(m.value)
                CHANGELOG_FORMATS["avro"] += 1
            except WireFormatError:  # a changelog written as JSON (Faust's default serializer)
                values[key] = json.loads(m.value)
                CHANGELOG_FORMATS["json"] += 1
        tables[spec.name] = values
    return tables


def recompute(ordered: list[tuple[str, int, int, dict]], instruments: tuple[str, ...]) -> dict[str, dict]:
    """Every table from scratch with the analytics engine over local tables: each record of
    ``ordered`` (name, partition, offset, value) applied once, in that order, in one batch."""
    from app.analytics.config import AnalyticsConfig
    from app.analytics.engine import AnalyticsEngine, Event, local_tables

    tables = local_tables()
    refused: list = []
    engine = AnalyticsEngine(instruments, AnalyticsConfig(), tables, publish=lambda name, key, value: None,
                             refuse=lambda event, reason, error: refused.append(reason))
    engine.apply(Event(name, partition, offset, value) for name, partition, offset, value in ordered)
    if refused:
        raise BenchmarkError(f"the recomputation refused {len(refused)} records: {Counter(refused)}")
    return {name: table.data for name, table in tables.items()}


def _close(a: Any, b: Any, path: str = "") -> Optional[str]:
    """Where two records differ (floats to 1e-9 relative: sums may add in another order), or None."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and (isinstance(a, float) or isinstance(b, float)):
        return None if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) else f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(map(str, set(a) ^ set(b)))[:6]} differ"
        for k in a:
            if (diff := _close(a[k], b[k], f"{path}.{k}")) is not None:
                return diff
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if (diff := _close(x, y, f"{path}[{i}]")) is not None:
                return diff
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def compare_tables(live: dict[str, dict], expected: dict[str, dict]) -> tuple[dict[str, int], list[str]]:
    """(keys per table, differences): the live tables against the recomputed ones."""
    keys: dict[str, int] = {}
    problems: list[str] = []
    for name, want in expected.items():
        got = live.get(name, {})
        if name == "analytics_progress":
            # Which snapshots are out depends on how the topics interleaved; the minute does not.
            got = {k: v["pnl_minute"] for k, v in got.items()}
            want = {k: v["pnl_minute"] for k, v in want.items()}
        keys[name] = len(got)
        if set(got) != set(want):
            extra, missing = set(got) - set(want), set(want) - set(got)
            problems.append(f"{name}: {len(missing)} keys missing (e.g. {sorted(map(str, missing))[:3]}), "
                            f"{len(extra)} extra (e.g. {sorted(map(str, extra))[:3]})")
            continue
        differing = [(k, d) for k in want if (d := _close(got[k], want[k])) is not None]
        if differing:
            k, d = differing[0]
            problems.append(f"{name}: {len(differing)} of {len(want)} keys differ, e.g. [{k}]{d}")
    return keys, problems


# -- one worker, timed through its web view ---------------------------------------------------------


@dataclasses.dataclass
class AgentRun:
    name: str
    #: Events counted from the first poll that saw any to the one that saw the target.
    events: int
    seconds: float
    started_after: float
    at_first: int
    cpu: dict[str, float]
    view: dict
    log: Path

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def us_per_event(self, who: str = "worker") -> float:
        return 1e6 * self.cpu[who] / self.events


def _py_spy() -> Optional[str]:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def _start_spy(pid: int, output: Path) -> Optional[subprocess.Popen]:
    spy = _py_spy()
    if spy is None:
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output",
                             str(output), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _stop_spy(spy: Optional[subprocess.Popen]) -> None:
    if spy is None:
        return
    spy.send_signal(2)  # SIGINT: py-spy writes what it has
    try:
        await asyncio.get_running_loop().run_in_executor(None, spy.wait, 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)


async def measure_agent(name: str, argv: list[str], env: dict[str, str], target: int, view_path: str,
                        counted: Callable[[dict], int], web_port: int, log_path: Path, services: dict[str, int],
                        profile: Optional[Path] = None, after: Optional[Callable[[dict], Any]] = None) -> AgentRun:
    """Start a worker, wait until its view at ``view_path`` counts an event, then time until it counts
    ``target``; ``after(view)`` runs on the final view before the worker is stopped (SIGTERM: Faust
    flushes its producer, changelogs included)."""
    from app.stack.process import spawn

    worker = spawn(name, argv, log_path=log_path, env=env, cwd=ROOT)
    loop = asyncio.get_running_loop()
    url = f"http://127.0.0.1:{web_port}{view_path}"
    spy = None

    async def view() -> Optional[dict]:
        if not worker.alive():
            raise BenchmarkError(f"{name} exited with code {worker.popen.returncode}:\n{worker.log_tail(40)}")
        try:
            return await loop.run_in_executor(None, get_json, url)
        except OSError:
            return None  # not serving yet

    try:
        launched = time.perf_counter()
        while not ((v := await view()) and counted(v)):
            if time.perf_counter() - launched > 180:
                raise BenchmarkError(f"{name}: no event after 180 s:\n{worker.log_tail(40)}")
            await asyncio.sleep(0.02)
        first, at_first = time.perf_counter(), counted(v)
        meter = CpuMeter({"worker": worker.pid, **services}, "this benchmark (polling)")
        if profile is not None:
            spy = _start_spy(worker.pid, profile)
        deadline = first + max(120.0, target / 300)
        while counted(v) < target:
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"{name}: {counted(v):,} of {target:,} events after {deadline - first:.0f} s:\n"
                                     f"{worker.log_tail(40)}")
            await asyncio.sleep(POLL_SECONDS)
            v = await view() or v
        done, at_done = time.perf_counter(), counted(v)
        cpu = meter.stop()
        await _stop_spy(spy)
        spy = None
        await asyncio.sleep(1.0)  # a moment more: an event counted twice would show
        v = await view() or v
        if after is not None:
            after(v)
        return AgentRun(name, at_done - at_first, done - first, first - launched, at_first, cpu, v, log_path)
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        code = worker.stop(timeout=30)
        if code not in (0, None):
            print(f"  note: {name} exited with code {code} on SIGTERM (log: {log_path.name})", flush=True)


def _print_run(r: AgentRun) -> None:
    print(f"  {r.name}: first events {r.started_after:.1f} s after start ({r.at_first:,} by then); then "
          f"{r.events:,} events in {r.seconds:.2f} s = {r.rate:,.0f} events/s", flush=True)
    print("    CPU meanwhile: " + ", ".join(
        f"{k} {v / r.seconds:.2f} cores" + ("" if k == "other processes" else f" ({1e6 * v / r.events:.0f} µs/event)")
        for k, v in r.cpu.items()), flush=True)


# -- part 1 ---------------------------------------------------------------------------------------------


async def part1(root: Path, pg, registry_url: str, args) -> dict:
    from app.analytics.config import AnalyticsConfig
    from app.pipeline import topics
    from app.stack.broker import EmbeddedBroker
    from app.stack.process import free_port

    broker = EmbeddedBroker(root / "logs" / "part1")
    await broker.start()
    try:
        await topics.ensure_topics(broker.url, topics.PIPELINE_TOPICS, PARTITIONS)
        started = time.perf_counter()
        events = synthetic_events(args.events, time.time())
        mix = Counter(name for name, _ in events)
        built = time.perf_counter() - started
        started = time.perf_counter()
        placed = await preload_inputs(broker.bootstrap, registry_url, events)
        per_partition = Counter((name, p) for name, p, _, _ in placed)
        print(f"  {len(events):,} records built in {built:.1f} s and preloaded in {time.perf_counter() - started:.1f} s; "
              f"per record {dict(mix)}", flush=True)
        print(f"  per (record, partition): {dict(sorted(per_partition.items()))}", flush=True)
        steps = sum(1 for name, v in events if name == "ticker") // len(INSTRUMENTS)
        print(f"  {steps:,} market steps of {STEP_SECONDS * 1000:.0f} ms ({steps * STEP_SECONDS:.0f} s of market time), "
              f"{len(events) / steps:.1f} records a step", flush=True)

        common = {"CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
                  "CRYPTICS_HEARTBEAT_INTERVAL": "0", "CRYPTICS_INSTRUMENTS": ",".join(INSTRUMENTS),
                  "CRYPTICS_TOPIC_PARTITIONS": str(PARTITIONS)}
        services = {"broker": broker.child.pid}
        profile_dir = root / "profile" if args.profile else None
        if profile_dir is not None:
            profile_dir.mkdir(exist_ok=True)
        runs: dict[str, AgentRun] = {}

        def product_checks(view: dict) -> None:
            c = view["counters"]
            if c["dead_letters"] or c["redelivered"] or sum(c["applied"].values()) != len(events):
                raise BenchmarkError(f"product: {len(events):,} records, counters {c}")

        web = free_port()
        runs["product"] = await measure_agent(
            "product (cryptics worker)", [sys.executable, "-m", "app.cli", "worker"],
            child_env({**common, "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state-product")}),
            len(events), "/analytics/", lambda v: v["counters"]["events"], web, root / "logs" / "product.log",
            services, None if profile_dir is None else profile_dir / "product.txt", product_checks)
        _print_run(runs["product"])
        c = runs["product"].view["counters"]
        print(f"    /analytics/ counters: batches {c['batches']:,}, keys_written {c['keys_written']:,} "
              f"({c['keys_written'] / max(1, c['batches']):.0f} per batch, {c['keys_written'] / len(events):.3f} per event), "
              f"published {c['published']}", flush=True)
        if profile_dir is not None and (profile_dir / "product.txt").exists():
            print("\n".join(profile_summary(profile_dir / "product.txt")), flush=True)

        batch = AnalyticsConfig().batch_size
        for key, mode, label in (("batched", "consume-batched", f"consume-only, take_events({batch:,})"),
                                 ("per-event", "consume-events", "consume-only, per event")):
            web = free_port()
            runs[key] = await measure_agent(
                label, [sys.executable, "-m", "benchmarks.naive_analytics_app"],
                child_env({**common, "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / f"state-{mode}"),
                           "NAIVE_ANALYTICS_MODE": mode}),
                len(events), "/bench/", lambda v: v["events"], web, root / "logs" / f"{mode}.log", services)
            _print_run(runs[key])

        naive_target = min(args.naive_events, len(events))

        def naive_checks(view: dict) -> None:
            c = view["counters"]
            if c["dead_letters"] or c["redelivered"]:
                raise BenchmarkError(f"naive agent: counters {c}")

        web = free_port()
        runs["naive"] = await measure_agent(
            "naive agent (one apply per event)", [sys.executable, "-m", "benchmarks.naive_analytics_app"],
            child_env({**common, "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state-naive"),
                       "NAIVE_ANALYTICS_MODE": "naive"}),
            naive_target, "/bench/", lambda v: v["events"], web, root / "logs" / "naive.log", services, None,
            naive_checks)
        _print_run(runs["naive"])
        c = runs["naive"].view["counters"]
        print(f"    counters: events {c['events']:,}, applied {c['applied']}, keys_written {c['keys_written']:,} "
              f"({c['keys_written'] / max(1, c['events']):.2f} per event)", flush=True)

        # The product's tables against a recomputation over the same records, in the order produced.
        from app.pipeline.codec import AvroCodec
        from models.registry import record

        started = time.perf_counter()
        codecs = {name: AvroCodec(record(name).subject, record(name).schema, registry_url) for name in mix}
        ordered = [(name, p, o, codecs[name].loads(value)) for name, p, o, value in placed]
        expected = recompute(ordered, INSTRUMENTS)
        CHANGELOG_FORMATS.clear()
        live = await read_changelogs(broker.bootstrap, registry_url, PRODUCT_APP_ID)
        keys, problems = compare_tables(live, expected)
        print(f"  changelog values read back: {dict(CHANGELOG_FORMATS)}", flush=True)
        print(f"  product tables vs a recomputation over the {len(events):,} records "
              f"({time.perf_counter() - started:.1f} s): keys {keys}; "
              + ("equal" if not problems else "DIFFERENT:\n    " + "\n    ".join(problems)), flush=True)
        return {"runs": runs, "events": len(events), "mix": dict(mix), "steps": steps, "exact": not problems,
                "problems": problems, "keys": keys}
    finally:
        broker.stop()


# -- part 2 ------------------------------------------------------------------------------------------


async def topic_records(broker_url: str, topic_names: list[str]) -> int:
    """Records on ``topic_names`` now: end minus beginning offsets of every partition, the end offsets
    corrected for Tansu's under-reporting (app/pipeline/tansu_compat.py)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.pipeline.tansu_compat import corrected_end_offsets
    from app.pipeline.topics import bootstrap_servers

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(broker_url), group_id=None,
                                enable_auto_commit=False, client_id="bench-analytics-count")
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topic_names for p in range(PARTITIONS)]  # ensure_topics made them
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        if broker_url.startswith("tansu://"):
            end = await corrected_end_offsets(bootstrap_servers(broker_url), end)
        return sum(end[tp] - begin[tp] for tp in tps)
    finally:
        await consumer.stop()


async def venue_baseline(root: Path, pg, registry_url: str, args):
    """Part 2's run with CRYPTICS_ANALYTICS_ENABLED=false (bench_sink part 3 as it is), on a broker and
    database of its own: the same run's pipeline without the analytics."""
    from app.pipeline import topics
    from app.stack import migrate
    from app.stack.broker import EmbeddedBroker
    from app.stack.process import free_port
    from benchmarks.bench_sink.from_venue import measure_from_venue

    broker = EmbeddedBroker(root / "logs" / "part2-off")
    await broker.start()
    try:
        await topics.ensure_topics(broker.url, topics.PIPELINE_TOPICS, PARTITIONS)
        await create_database(pg.dsn("postgres"), "bench_venue_off")
        dsn = pg.dsn("bench_venue_off")
        await migrate.migrate(dsn)
        web = free_port()
        env = child_env({"CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
                         "CRYPTICS_HEARTBEAT_INTERVAL": "0", "CRYPTICS_DATABASE_URL": dsn,
                         "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state-venue-off"),
                         "CRYPTICS_TOPIC_PARTITIONS": str(PARTITIONS), "CRYPTICS_ANALYTICS_ENABLED": "false"})
        result = await measure_from_venue(env, dsn, broker.bootstrap, args.venue_events, root, web,
                                          {"broker": broker.child.pid, "postgres": pg.child.pid},
                                          name="venue → worker → PostgreSQL, analytics off")
        moved = result.events - result.rows_at_first
        print(f"  {moved:,} rows in {result.seconds:.2f} s = {result.rate:,.0f} events/s", flush=True)
        print("    CPU meanwhile: " + ", ".join(
            f"{k} {v / result.seconds:.2f} cores" + ("" if k == "other processes" else f" ({1e6 * v / moved:.0f} µs/event)")
            for k, v in result.cpu.items()), flush=True)
        return result
    finally:
        broker.stop()


async def part2(root: Path, pg, registry_url: str, args) -> dict:
    from app.analytics.engine import INPUTS
    from app.pipeline import topics
    from app.pipeline.codec import AvroCodec
    from app.pipeline.topics import read_until_quiet
    from app.stack import migrate
    from app.stack.broker import EmbeddedBroker
    from app.stack.process import free_port
    from benchmarks.bench_sink.from_venue import measure_from_venue
    from models.registry import record

    broker = EmbeddedBroker(root / "logs" / "part2")
    await broker.start()
    try:
        await topics.ensure_topics(broker.url, topics.PIPELINE_TOPICS, PARTITIONS)
        await create_database(pg.dsn("postgres"), "bench_venue_analytics")
        dsn = pg.dsn("bench_venue_analytics")
        await migrate.migrate(dsn)
        web, analytics_web = free_port(), free_port()
        loop = asyncio.get_running_loop()
        input_topics = [record(name).topic for name in INPUTS]
        seen: dict[str, Any] = {}
        target: Optional[int] = None  # records on the input topics, counted when the tables are full

        async def views() -> tuple[dict, dict, dict]:
            analytics = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{analytics_web}/analytics/")
            sink = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{web}/sink/")
            analytics_sink = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{analytics_web}/sink/")
            return analytics, sink, analytics_sink

        async def analytics_events() -> Optional[int]:
            try:
                view = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{analytics_web}/analytics/")
            except OSError:
                return None  # not serving yet
            return view["counters"]["events"]

        async def analytics_started() -> bool:
            # Both groups settled: the analytics worker applies events (the Faust group) and its sink
            # reads records (the sink's group, which it joins after); then the warm-up catches up.
            if not await analytics_events():
                return False
            if not args.analytics_sink:
                return True
            sink = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{analytics_web}/sink/")
            return sink["totals"]["records"] > 0

        async def analytics_caught_up() -> bool:
            # Polled once the market tables hold every notification: the analytics worker's events
            # against the records on the input topics (recounted when it reaches the last count).
            nonlocal target
            events = await analytics_events()
            if events is None:
                return False
            if target is None or events >= target:
                target = await topic_records(broker.url, input_topics)
            return events >= target

        async def before_stop() -> None:
            seen["analytics"], seen["sink"], seen["analytics_sink"] = await views()
            seen["source_analytics"] = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{web}/analytics/")

        spy_dir = None
        if args.profile:
            spy_dir = root / "profile"
            spy_dir.mkdir(exist_ok=True)
            if _py_spy() is not None:
                os.environ["PATH"] = f"{Path(_py_spy()).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        common = {"CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
                  "CRYPTICS_HEARTBEAT_INTERVAL": "0", "CRYPTICS_DATABASE_URL": dsn,
                  "CRYPTICS_TOPIC_PARTITIONS": str(PARTITIONS)}
        # As `cryptics up` runs them: the quoting (here: source) worker without the analytics, and
        # a worker of the same app with the analytics, no venue URL (measure_from_venue gives the
        # first one the venue), its own web port and state folder; both persist (one sink group).
        env = child_env({**common, "CRYPTICS_WEB_PORT": str(web), "CRYPTICS_STATE_DIR": str(root / "state-venue"),
                         "CRYPTICS_ANALYTICS_ENABLED": "false"})
        analytics_common = dict(common)
        if not args.analytics_sink:  # a diagnostic, not `cryptics up`: the source worker persists everything
            analytics_common.pop("CRYPTICS_DATABASE_URL")
        analytics_env = child_env({**analytics_common, "CRYPTICS_WEB_PORT": str(analytics_web),
                                   "CRYPTICS_STATE_DIR": str(root / "state-venue-analytics"),
                                   "CRYPTICS_ANALYTICS_ENABLED": "true", "CRYPTICS_VENUE_URL": "",
                                   "CRYPTICS_VENUE": "simulated",
                                   "CRYPTICS_INSTRUMENTS": ",".join(INSTRUMENTS)})
        result = await measure_from_venue(env, dsn, broker.bootstrap, args.venue_events, root, web,
                                          {"broker": broker.child.pid, "postgres": pg.child.pid}, spy_dir,
                                          name="venue → source worker + analytics worker → PostgreSQL and analytics",
                                          also_done=analytics_caught_up, before_stop=before_stop,
                                          companions=[("analytics-worker", analytics_env, analytics_web)],
                                          also_ready=analytics_started)
        moved = result.events - result.rows_at_first
        print(f"  {moved:,} rows in {result.seconds:.2f} s = {result.rate:,.0f} events/s (from the first step after "
              "the warm-up until every row is in and the analytics worker has applied every record on the input "
              "topics)", flush=True)
        print("    CPU meanwhile: " + ", ".join(
            f"{k} {v / result.seconds:.2f} cores" + ("" if k == "other processes" else f" ({1e6 * v / moved:.0f} µs/event)")
            for k, v in result.cpu.items()), flush=True)
        market = [record(kind).topic for kind in ("ticker", "book", "index", "trade")]
        for who, view in (("source worker", seen["sink"]), ("analytics worker", seen["analytics_sink"])):
            print(f"    {who}'s sink: " + ", ".join(
                f"{t.split('.')[2]} {view['topics'].get(t, {}).get('rows_written', 0):,}" for t in market)
                + " rows written", flush=True)
        for sampled in ("venue-worker", "analytics-worker", "venue"):
            if spy_dir is not None and (spy_dir / f"{sampled}.txt").exists():
                print(f"  {sampled}:\n" + "\n".join(profile_summary(spy_dir / f"{sampled}.txt")), flush=True)

        # Exact tables: the worker has stopped (its changelogs flushed); every input record read back.
        started = time.perf_counter()
        inputs = []
        order = {name: i for i, name in enumerate(INPUTS)}
        per_record: Counter = Counter()
        read = await asyncio.gather(*(read_until_quiet(broker.bootstrap, record(name).topic) for name in INPUTS))
        for name, messages in zip(INPUTS, read):
            r = record(name)
            codec = AvroCodec(r.subject, r.schema, registry_url)
            for m in messages:
                inputs.append((m.timestamp, order[name], m.partition, m.offset, name, codec.loads(m.value)))
                per_record[name] += 1
        inputs.sort(key=lambda x: x[:4])
        expected = recompute([(name, p, o, v) for _, _, p, o, name, v in inputs], INSTRUMENTS)
        CHANGELOG_FORMATS.clear()
        live = await read_changelogs(broker.bootstrap, registry_url, PRODUCT_APP_ID)
        keys, problems = compare_tables(live, expected)
        print(f"  changelog values read back: {dict(CHANGELOG_FORMATS)}", flush=True)
        counters = seen["analytics"]["counters"]
        if counters["events"] != len(inputs):
            problems.append(f"the analytics counted {counters['events']:,} events, the input topics hold {len(inputs):,}")
        if counters["dead_letters"]:
            problems.append(f"analytics dead letters: {counters['dead_letters']}")
        if target != len(inputs):
            problems.append(f"the input topics' offsets counted {target:,} records, reading them gave {len(inputs):,}")
        source = seen["source_analytics"]
        if source["enabled"] or source["counters"]["events"]:
            problems.append(f"the source worker ran analytics: enabled {source['enabled']}, "
                            f"events {source['counters']['events']:,}")
        print(f"  input records on the topics: {dict(per_record)}; analytics counters: events {counters['events']:,}, "
              f"batches {counters['batches']:,}, redelivered {counters['redelivered']}, dead letters "
              f"{counters['dead_letters']}, published {counters['published']}", flush=True)
        print(f"  tables vs a recomputation over the input topics ({time.perf_counter() - started:.1f} s): keys {keys}; "
              + ("equal" if not problems else "DIFFERENT:\n    " + "\n    ".join(problems)), flush=True)
        return {"result": result, "exact": not problems, "problems": problems, "inputs": dict(per_record),
                "counters": counters, "baseline": None}
    finally:
        broker.stop()


# -- part 3 ----------------------------------------------------------------------------------------------


def _rebalances_in(log: Path, start: float, end: float) -> int:
    """Partition revocations (either consumer group) a worker logged between unix times start and end."""
    count = 0
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    for line in lines:
        if "Revoking previously assigned partitions" not in line or not line.startswith("["):
            continue
        try:
            at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time, as logged
        except ValueError:
            continue
        count += start <= at <= end
    return count


async def part3(root: Path, args) -> dict:
    """bench_quoting's in-process case with the database, analytics off and on, alternating."""
    from app.venue import create_keypair
    from benchmarks import bench_quoting

    stack = bench_quoting.Stack(root)
    quoting_args = argparse.Namespace(seconds=args.quoting_seconds, warmup=args.quoting_warmup, rate=20.0,
                                      amend_threshold=0.0, persist=True)
    results: dict[str, list[dict]] = {"off": [], "on": []}
    problems_extra: list[str] = []
    try:
        private, _ = create_keypair(root / "keys", bench_quoting.KID, root / "keys" / "trusted")
        await stack.start()
        order = []
        for i in range(args.quoting_rounds):
            order += (["off", "on"] if i % 2 == 0 else ["on", "off"])
        by_key = {}
        loop = asyncio.get_running_loop()

        async def analytics_view(port: int) -> dict:
            analytics = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{port}/analytics/")
            sink = await loop.run_in_executor(None, get_json, f"http://127.0.0.1:{port}/sink/")
            return {"enabled": analytics["enabled"], "counters": analytics["counters"], "sink": sink["totals"]}

        async def analytics_ready(port: int) -> bool:
            # Both groups settled: the analytics worker applies events (the Faust group) and its sink
            # reads records (the sink's group, which it joins after): the rebalances are behind us.
            try:
                view = await analytics_view(port)
            except OSError:
                return False  # not serving yet
            return view["counters"]["events"] > 0 and view["sink"]["records"] > 0

        for n, mode in enumerate(order):
            key = f"analytics-{mode}-{n + 1}"
            # The quoting worker never runs the analytics: with them on, `cryptics up`'s analytics
            # worker runs beside it (same broker, registry and database; no venue URL).
            case_env = {"CRYPTICS_ANALYTICS_ENABLED": "false"}
            companion = dict(companion_env=None)
            if mode == "on":
                companion_env = {"CRYPTICS_ANALYTICS_ENABLED": "true", "CRYPTICS_VENUE": "simulated"}
                if args.quoting_batch_size is not None:
                    companion_env["CRYPTICS_ANALYTICS_BATCH_SIZE"] = str(args.quoting_batch_size)
                companion = dict(companion_env=companion_env, companion_ready=analytics_ready,
                                 companion_view=analytics_view)
            r = await bench_quoting.run_case(key, [sys.executable, "-m", "app.cli", "worker"], case_env, stack,
                                             quoting_args, private, root / "keys" / "trusted", None, **companion)
            results[mode].append(r)
            by_key[key] = r
            a = r["probe"]["all"]
            g = r["gateway"]
            cpu = ", ".join(f"{k} {v / r['elapsed']:.2f}" for k, v in r["cpu"].items())
            print(f"  {key}: {a['count']} orders, probe p50 {1e3 * a['p50_ms']:,.0f} µs, p90 {1e3 * a['p90_ms']:,.0f}, "
                  f"p99 {1e3 * a['p99_ms']:,.0f}, max {1e3 * a['max_ms']:,.0f}; {r['steps']} steps, "
                  f"{r['decisions']} decisions, acks {g.get('acks', 0)}, fills {g.get('fills', 0)}; CPU (cores) "
                  f"{cpu}", flush=True)
            window = r["window"]
            revoked = {who: _rebalances_in(root / "logs" / f"{who}-{key}.log", *window) for who in ("worker", "companion")}
            if any(revoked.values()):
                print(f"    partition revocations in the window: {revoked}", flush=True)
            c = r["companion"]
            if c is not None:
                events = c["after"]["counters"]["events"] - c["before"]["counters"]["events"]
                rows = c["after"]["sink"]["rows_written"] - c["before"]["sink"]["rows_written"]
                print(f"    analytics worker in the window: {events:,} events applied ({events / r['elapsed']:,.0f}/s), "
                      f"{c['after']['counters']['events']:,} in all, dead letters "
                      f"{c['after']['counters']['dead_letters'] or 0}; its sink wrote {rows:,} rows", flush=True)
                if not events or c["after"]["counters"]["dead_letters"]:
                    problems_extra.append(f"{key}: the analytics worker applied {events} events in the window, "
                                          f"dead letters {c['after']['counters']['dead_letters']}")
        problems = bench_quoting._checks(by_key) + problems_extra
        for problem in problems:
            print(f"  CHECK FAILED: {problem}", flush=True)
        return {"results": results, "order": order, "problems": problems}
    finally:
        stack.stop()


# -- the summary -------------------------------------------------------------------------------------------


def report(p1: Optional[dict], p2: Optional[dict], p3: Optional[dict]) -> None:
    print()
    if p1:
        runs = p1["runs"]
        print("Part 1: the analytics agent alone, preloaded topics")
        print("| agent | events timed | s | events/s | worker CPU µs/event | broker CPU µs/event |")
        print("|---|---:|---:|---:|---:|---:|")
        for key in ("product", "naive", "batched", "per-event"):
            r = runs[key]
            print(f"| {r.name} | {r.events:,} | {r.seconds:.2f} | {r.rate:,.0f} | {r.us_per_event():.0f} "
                  f"| {r.us_per_event('broker'):.0f} |")
        product = runs["product"]
        print(f"product / naive: {product.rate / runs['naive'].rate:.1f}× (aim ≥ 3×: "
              f"{'met' if product.rate >= 3 * runs['naive'].rate else 'NOT met'})")
        print(f"product / consume-only batched: {product.rate / runs['batched'].rate:.2f}×; "
              f"/ consume-only per event: {product.rate / runs['per-event'].rate:.2f}×")
        print(f"product: {product.rate:,.0f} events/s (aim ≥ 5,000 on 2 cores: "
              f"{'met' if product.rate >= 5000 else 'NOT met'}); tables exact: {'yes' if p1['exact'] else 'NO'}")
        extra = product.us_per_event() - runs["batched"].us_per_event()
        print(f"the product's worker spends {product.us_per_event():.0f} CPU µs per event, of which ~"
              f"{runs['batched'].us_per_event():.0f} is Faust taking it (the batched consume-only agent) and ~{extra:.0f} "
              "decoding, applying and writing the tables")
    if p2:
        r = p2["result"]
        moved = r.events - r.rows_at_first
        a = r.cpu["analytics-worker"]
        print(f"\nPart 2: venue → Kafka → persistence and analytics (source worker + analytics worker, as `cryptics "
              f"up`): {r.rate:,.0f} events/s (aim ≥ 8,000 on 2 cores: {'met' if r.rate >= 8000 else 'NOT met'}), "
              f"source worker {1e6 * r.cpu['worker'] / moved:.0f} CPU µs/event ({r.cpu['worker'] / r.seconds:.2f} cores), "
              f"analytics worker {1e6 * a / moved:.0f} ({a / r.seconds:.2f} cores), broker "
              f"{1e6 * r.cpu['broker'] / moved:.0f} ({r.cpu['broker'] / r.seconds:.2f}), postgres "
              f"{1e6 * r.cpu['postgres'] / moved:.0f} ({r.cpu['postgres'] / r.seconds:.2f}); zero loss: yes "
              f"(from_venue's checks); tables exact: {'yes' if p2['exact'] else 'NO'}")
        b = p2.get("baseline")
        if b is not None:
            b_moved = b.events - b.rows_at_first
            print(f"  the same pipeline with the analytics off: {b.rate:,.0f} events/s, worker "
                  f"{1e6 * b.cpu['worker'] / b_moved:.0f} CPU µs/event ({b.cpu['worker'] / b.seconds:.2f} cores); "
                  f"on / off: {r.rate / b.rate:.2f}×")
    if p3:
        from app.venue.latency import percentile

        print("\nPart 3: tick → order at the venue's probe, in-process quoting worker with the database; analytics on = "
              "a second worker with them, as `cryptics up` (µs)")
        print("| run | analytics | orders | p50 | p90 | p99 | received → quoted p50 / p99 | quoted → order sent p50 / p99 |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        pooled: dict[str, dict[str, list[float]]] = {"off": defaultdict(list), "on": defaultdict(list)}
        index = {"off": 0, "on": 0}
        for n, mode in enumerate(p3["order"]):
            r = p3["results"][mode][index[mode]]
            index[mode] += 1
            a = r["probe"]["all"]
            for q in ("p50_ms", "p99_ms"):
                pooled[mode][q].append(a[q])
            stages = []
            for stage in ("received_to_quoted", "quoted_to_order_sent"):
                values = r["stages"].get(stage, [])
                stages.append(f"{percentile(values, .5):,.0f} / {percentile(values, .99):,.0f}" if values else "—")
            print(f"| {n + 1} | {mode} | {a['count']} | {1e3 * a['p50_ms']:,.0f} | {1e3 * a['p90_ms']:,.0f} "
                  f"| {1e3 * a['p99_ms']:,.0f} | {stages[0]} | {stages[1]} |")
        med = {mode: {q: sum(v) / len(v) for q, v in pooled[mode].items()} for mode in pooled}
        r50 = med["on"]["p50_ms"] / med["off"]["p50_ms"]
        r99 = med["on"]["p99_ms"] / med["off"]["p99_ms"]
        print(f"on / off (mean of the runs): p50 {1e3 * med['on']['p50_ms']:,.0f} / {1e3 * med['off']['p50_ms']:,.0f} µs "
              f"= {r50:.2f}×, p99 {1e3 * med['on']['p99_ms']:,.0f} / {1e3 * med['off']['p99_ms']:,.0f} µs = {r99:.2f}× "
              f"(aim within 10%: {'met' if r50 <= 1.1 and r99 <= 1.1 else 'NOT met'})")


async def main_async(args) -> int:
    from app.stack.postgres import EmbeddedPostgres
    from app.stack.process import free_port, spawn, wait_until

    root = Path(tempfile.mkdtemp(prefix="cryptics-bench-analytics-"))
    os.chmod(root, 0o755)  # the PostgreSQL service user must be able to traverse it
    pg = EmbeddedPostgres(root / "pg", root / "logs")
    registry = None
    p1 = p2 = None
    failed = False
    try:
        await pg.start()
        port = free_port()
        registry_url = f"http://127.0.0.1:{port}"
        registry = spawn("registry", [sys.executable, "-m", "app.cli", "registry", "--port", str(port)],
                         log_path=root / "logs" / "registry.log", cwd=ROOT,
                         env=child_env({"CRYPTICS_DATABASE_URL": pg.dsn()}))
        loop = asyncio.get_running_loop()

        async def registry_ready() -> bool:
            await loop.run_in_executor(None, get_json, f"{registry_url}/subjects")
            return True
        await wait_until(registry_ready, what="registry", timeout=60, child=registry, interval=0.1)
        print(f"machine: {machine_summary()}", flush=True)
        if args.events:
            print(f"\nPart 1: the analytics agent alone over {args.events:,} preloaded records "
                  f"({args.naive_events:,} for the naive agent)", flush=True)
            p1 = await part1(root, pg, registry_url, args)
            failed |= not p1["exact"]
            print(f"machine after part 1: {machine_summary()}", flush=True)
        if args.venue_events:
            print(f"\nPart 2: venue → Kafka → persistence and analytics, {args.venue_events:,} notifications", flush=True)
            baseline = None
            if args.venue_baseline:
                baseline = await venue_baseline(root, pg, registry_url, args)
            p2 = await part2(root, pg, registry_url, args)
            p2["baseline"] = baseline
            failed |= not p2["exact"]
            print(f"machine after part 2: {machine_summary()}", flush=True)
    except BenchmarkError as exc:
        print(f"BENCHMARK FAILED: {exc}", flush=True)
        failed = True
    finally:
        if registry is not None:
            registry.stop()
        pg.stop()
        args.result = (p1, p2)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


async def main_part3(args) -> Optional[dict]:
    with scratch_folder("cryptics-bench-analytics-quoting-", args.keep) as root:
        print(f"\nPart 3: tick → order with the analytics off and on, {args.quoting_rounds} rounds of "
              f"{args.quoting_seconds:g} s at 20 steps/s (bench_quoting's in-process case, with the database)",
              flush=True)
        return await part3(root, args)


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_analytics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that it runs; not the figures")
    parser.add_argument("--events", type=int, help="preloaded records for part 1 (default 100,000; quick 10,000; "
                                                   "0 skips part 1)")
    parser.add_argument("--naive-events", type=int, help="records the naive agent is timed over (default: all of "
                                                         "--events; fewer see another mix of records, as Faust hands "
                                                         "the topics over in runs)")
    parser.add_argument("--no-venue-baseline", dest="venue_baseline", action="store_false",
                        help="part 2: skip the same pipeline with the analytics off")
    parser.add_argument("--no-analytics-sink", dest="analytics_sink", action="store_false",
                        help="part 2, a diagnostic: the analytics worker without the database (no sink of its own; "
                             "`cryptics up` gives it one)")
    parser.add_argument("--quoting-batch-size", type=int, help="part 3: CRYPTICS_ANALYTICS_BATCH_SIZE of the analytics "
                                                               "worker (default: the product's)")
    parser.add_argument("--venue-events", type=int, help="market-data notifications through the whole pipeline "
                                                         "(part 2; default 100,000; quick 10,000; 0 skips part 2)")
    parser.add_argument("--quoting-rounds", type=int, help="part 3: pairs of runs, analytics off and on (default 2; "
                                                           "quick 1; 0 skips part 3)")
    parser.add_argument("--quoting-seconds", type=float, help="part 3: measured seconds per run (default 20; quick 6)")
    parser.add_argument("--quoting-warmup", type=float, help="part 3: seconds stepped before the probe is reset "
                                                             "(default 3; quick 2)")
    parser.add_argument("--profile", action="store_true", help="sample the product worker (part 1) and the "
                                                               "pipeline's two workers (part 2) with py-spy, if "
                                                               "installed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (logs) at the end")
    parser.add_argument("--parts", default="1,2,3", help="the parts to run, e.g. 2,3 (default 1,2,3)")
    args = parser.parse_args()
    quick = args.quick
    try:
        parts = {int(p) for p in args.parts.split(",") if p.strip()}
    except ValueError:
        parser.error(f"--parts: {args.parts!r} is not a list of part numbers")
    if not parts <= {1, 2, 3}:
        parser.error(f"--parts: parts are 1, 2 and 3, not {sorted(parts - {1, 2, 3})}")
    if args.events is None:
        args.events = 10_000 if quick else 100_000
    if args.naive_events is None:
        args.naive_events = args.events  # the same mix: Faust hands the topics over in runs, not interleaved
    if args.venue_events is None:
        args.venue_events = 10_000 if quick else 100_000
    if args.quoting_rounds is None:
        args.quoting_rounds = 1 if quick else 2
    if 1 not in parts:
        args.events = 0
    if 2 not in parts:
        args.venue_events = 0
    if 3 not in parts:
        args.quoting_rounds = 0
    args.quoting_seconds = args.quoting_seconds or (6.0 if quick else 20.0)
    args.quoting_warmup = args.quoting_warmup or (2.0 if quick else 3.0)
    if args.profile and _py_spy() is None:
        print("--profile: py-spy is not installed (.venv/bin/py-spy or on the PATH); running without it", flush=True)
        args.profile = False
    try:
        code, p1, p2 = 0, None, None
        if args.events or args.venue_events:
            code = asyncio.run(main_async(args))
            p1, p2 = args.result
        p3 = None
        if args.quoting_rounds:
            p3 = uvloop.run(main_part3(args))  # the venue runs here: on uvloop, as bench_quoting runs it
            if p3["problems"]:
                code = 1
        report(p1, p2, p3)
        print(f"\nmachine at the end: {machine_summary()}")
    except KeyboardInterrupt:  # everything started was stopped and removed on the way out
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
