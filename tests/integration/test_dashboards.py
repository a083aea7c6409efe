"""Every dashboard query (grafana/dashboards/*.json) runs on data from a real run and returns
rows of the shape its panel needs (docs/operations.md#dashboards).

One run: the simulated venue's market, a worker quoting, persisting and running the analytics,
and Prometheus on loopback scraping it with the stack's ``account`` label, as the compose
stack's Prometheus does. Past a minute boundary (so the per-minute PnL and quote-quality
snapshots exist) the run is cut short: a poison record (a dead letter), a spell in ``reducing``
(risk denials), then halted. Then:
- every SQL target, its macros and variables expanded as Grafana does (tests/grafana_queries.py),
  runs as ``cryptics_grafana``, the dashboards' read-only login: on the embedded PostgreSQL
  (plain, ``$__timeGroup`` as epoch arithmetic) and on TimescaleDB 2.23 (PGlite, the same
  rows copied over; ``$__timeGroup`` as ``time_bucket``);
- that login can read nothing else and write nothing;
- every PromQL target parses (promtool) and returns series from the test Prometheus;
- both variables' queries list what the run had.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from models.registry import record
from app.stack import migrate
from tests.grafana_queries import Target, dashboards, expand_promql, expand_sql, targets

from .analytics_stack import INSTRUMENTS, NotYet, post_json
from .observers import PROMETHEUS, PROMTOOL, Prometheus
from .test_timescale_pglite import _close, _connect, pglite  # noqa: F401 (pglite: the fixture)

pytestmark = pytest.mark.skipif(PROMTOOL is None or PROMETHEUS is None,
                                reason="no prometheus/promtool: ./dev.sh installs Debian's prometheus package")

ACCOUNT = "simulated"
READER_PASSWORD = "reader-password-for-this-test"
#: The tables copied to TimescaleDB, parents first (order_acks fills orders through its trigger).
COPIED = ("instruments", "tickers", "book_tops", "index_prices", "public_trades", "quote_decisions", "order_acks",
          "fills", "positions", "latency_samples", "markouts", "pnl_snapshots", "quote_quality_1m")
NUMBERS = (int, float, Decimal)


def _as_reader(dsn: str) -> str:
    """The DSN with the dashboards' login instead of the superuser."""
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{migrate.READER_LOGIN}:{READER_PASSWORD}@{rest.split('@', 1)[1]}"


async def _count(dsn: str, query: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def _shape_problem(target: Target, rows: list[asyncpg.Record]) -> str | None:
    """Why these rows cannot feed the panel, or None."""
    if not rows:
        return "no rows"
    columns = list(rows[0].keys())
    numeric = [c for c in columns if c not in ("time", "metric")
               and any(isinstance(r[c], NUMBERS) for r in rows)]
    if not numeric:
        return f"no numeric column with a value among {columns}"
    if target.format == "time_series":
        if "time" not in columns:
            return f"a time series needs a time column: {columns}"
        if not all(isinstance(r["time"], (datetime, *NUMBERS)) for r in rows):
            return "time is not a timestamp or an epoch"
        extra = [c for c in columns if c != "time" and c not in numeric and c != "metric"]
        if extra:
            return f"columns that are neither numbers nor metric: {extra}"
    if target.panel_type == "candlestick" and not {"open", "high", "low", "close"} <= set(columns):
        return f"a candlestick needs open, high, low, close: {columns}"
    if target.panel_type == "barchart":
        x_field = next(p for p in dashboards()[target.dashboard]["panels"]
                       if p["title"] == target.panel)["options"]["xField"]
        if x_field not in columns:
            return f"the bar chart's x field {x_field} is not a column: {columns}"
    return None


async def _run_sql(conn: asyncpg.Connection, start: datetime, end: datetime, timescaledb: bool) -> dict[str, str]:
    problems = {}
    variables = {"instrument": list(INSTRUMENTS)}
    for target in targets():
        if target.datasource != "cryptics-timescaledb":
            continue
        query = expand_sql(target.query, start, end, variables, interval="1m", timescaledb=timescaledb)
        try:
            rows = await conn.fetch(query)
        except asyncpg.PostgresError as exc:
            problems[target.name] = f"{type(exc).__name__}: {exc}"
            continue
        problem = _shape_problem(target, rows)
        if problem:
            problems[target.name] = problem
    return problems


async def _copy_to(source_dsn: str, pglite_dsn: str) -> dict[str, int]:
    """The run's rows into TimescaleDB, one statement per table (PGlite has no COPY over its
    socket): the rows as JSON, back into rows with ``json_populate_recordset``."""
    source = await asyncpg.connect(source_dsn)
    target = await _connect(pglite_dsn)
    copied = {}
    try:
        for table in COPIED:
            rows = await source.fetchval(f"SELECT coalesce(json_agg(t), '[]')::text FROM {table} t")
            await target.execute(f"INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, $1::json) "
                                 "ON CONFLICT DO NOTHING", rows)
            copied[table] = await target.fetchval(f"SELECT count(*) FROM {table}")
        return copied
    finally:
        await source.close()
        _close(target)


async def _dead_letter_one(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(record("fill").topic, b"\x00\x00\x00\x00\x01 not avro", key=b"BTC-PERPETUAL")
    finally:
        await producer.stop()


def _check_promtool(tmp_path: Path, exprs: dict[str, str]) -> None:
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"cryptics:panel_{n}", "expr": expr} for n, expr in enumerate(exprs.values())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(exprs)} rules found" in check.stdout, check.stdout


async def test_every_panel_query_returns_rows_of_its_shape(analytics_stack, broker, database, pglite, tmp_path):
    stack = analytics_stack
    started = datetime.now(timezone.utc)
    stack.env["CRYPTICS_HEARTBEAT_INTERVAL"] = "1"  # for the heartbeat-age panel
    stack.spawn("a")
    port = stack.workers["a"][1]
    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{port}", labels={"account": ACCOUNT})
    prometheus.start()
    try:
        # -- a run past a minute boundary, with a dead letter and risk denials ----------------------
        await stack.poll(lambda: stack.fills_per_instrument(2), "fills on both instruments", 90)

        async def minute_rows() -> object:
            counts = [await _count(database, f"SELECT count(*) FROM {t}") for t in ("pnl_snapshots", "quote_quality_1m")]
            return min(counts) >= len(INSTRUMENTS) or NotYet(counts)

        # a minute must close for both instruments and its snapshots reach the database: up to
        # 60 s, plus the grace, plus a loaded machine's lag
        deadline = asyncio.get_running_loop().time() + 180
        while not await minute_rows():
            assert asyncio.get_running_loop().time() < deadline, "no per-minute snapshots within 180 s"
            await asyncio.sleep(1.0)
        await _dead_letter_one(broker.bootstrap)
        post_json(port, "/quoting/state/", {"state": "reducing", "reason": "the dashboards' denials panel"})
        await stack.poll(lambda: prometheus.query(f'sum(cryptics_risk_denials_total{{account="{ACCOUNT}"}})')
                         or NotYet("no denials scraped"), "risk denials in Prometheus", 30)
        await stack.poll(lambda: prometheus.query('sum(cryptics_sink_dead_letters_total)') or NotYet("none"),
                         "the dead letter in Prometheus", 30)

        # -- every PromQL target: it parses, and returns series -------------------------------------
        variables = {"account": [ACCOUNT], "instrument": list(INSTRUMENTS)}
        exprs = {t.name: expand_promql(t.query, variables, "15s") for t in targets()
                 if t.datasource == "cryptics-prometheus"}
        assert len(exprs) >= 15
        _check_promtool(tmp_path, exprs)

        def every_panel_has_series() -> object:
            # a rate or increase needs two samples of a series in its range: the counters that
            # appeared just now (the dead letter, the denials) take a scrape or two
            empty = {name: expr for name, expr in exprs.items() if not prometheus.query(expr)}
            return not empty or NotYet(json.dumps(empty, indent=1))

        await stack.poll(every_panel_has_series, "series for every Prometheus panel", 20, interval=1.0)
        accounts = prometheus.api("label/account/values", **{"match[]": "cryptics_trading_state"})
        assert accounts == [ACCOUNT], accounts
    finally:
        prometheus.stop()

    await stack.halt_and_settle()
    end = datetime.now(timezone.utc) + timedelta(minutes=1)
    start = started - timedelta(minutes=1)

    # -- the SQL targets, as the read-only login, on PostgreSQL ------------------------------------------
    await migrate.migrate(database, reader_password=READER_PASSWORD)
    reader = await asyncpg.connect(_as_reader(database))
    try:
        assert await reader.fetchval("SELECT current_user") == migrate.READER_LOGIN
        problems = await _run_sql(reader, start, end, timescaledb=False)
        assert not problems, f"on PostgreSQL: {json.dumps(problems, indent=1)}"
        variable = next(v for v in dashboards()["trading"]["templating"]["list"] if v["name"] == "instrument")
        listed = {r[0] for r in await reader.fetch(expand_sql(variable["query"], start, end, {}))}
        assert set(INSTRUMENTS) <= listed, listed  # the instrument variable's own query
        for forbidden in ("SELECT count(*) FROM cryptics_migrations", "DELETE FROM fills",
                          "INSERT INTO instruments (instrument_name) VALUES ('X')", "CREATE TABLE grafana_was_here (x int)"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute(forbidden)
    finally:
        await reader.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(_as_reader(database).replace(READER_PASSWORD, "a wrong one"))

    # -- and on TimescaleDB (PGlite), the same rows ---------------------------------------------------------
    copied = await _copy_to(database, pglite)
    assert all(copied[t] > 0 for t in ("tickers", "fills", "markouts", "pnl_snapshots", "quote_quality_1m")), copied
    conn = await _connect(pglite)
    try:
        await migrate.migrate(pglite, conn=conn, reader_password=READER_PASSWORD)
        await conn.execute(f"SET ROLE {migrate.READER_LOGIN}")  # PGlite serves one session: the role, not a login
        problems = await _run_sql(conn, start, end, timescaledb=True)
        assert not problems, f"on TimescaleDB: {json.dumps(problems, indent=1)}"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM fills")
        await conn.execute("RESET ROLE")
    finally:
        _close(conn)
