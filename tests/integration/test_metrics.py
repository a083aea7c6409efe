"""GET /metrics of a quoting worker, checked by promtool and scraped by a real Prometheus.

Real parts: the simulated venue in this process with its market running, Tansu, the schema
registry, PostgreSQL (migrated), one ``cryptics worker`` child process that quotes, persists
and runs the analytics, and Debian's ``prometheus`` and ``promtool`` (dev.sh installs them).

- the worker's exposition passes ``promtool check metrics`` while it quotes, and carries the
  tick → order and D9 stage histograms, the heartbeat's age and the gateway's requests;
- Prometheus on loopback (a temporary config scraping the worker every second, its TSDB in
  the test's folder) reads back, through ``/api/v1/query``: the position and fee gauges of
  every instrument, equal to the worker's ``GET /analytics/``; a counter (notifications from
  the venue) that grew between two queries and ends equal to the worker's ``GET /market-data/``;
  and a quantile of the tick → order histogram, computed by PromQL from the buckets.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.stack import migrate
from app.stack.process import Child, environ_for_child, free_port, spawn
from app.venue import Venue, VenueConfig, create_keypair

from .analytics_stack import NotYet
from .observers import PROMETHEUS, PROMTOOL, Prometheus
from .conftest import ROOT, cryptics

KID = "metrics"
INSTRUMENTS = ("BTC-PERPETUAL", "ETH-PERPETUAL")

pytestmark = pytest.mark.skipif(PROMTOOL is None or PROMETHEUS is None,
                                reason="needs Debian's prometheus package (promtool, prometheus): ./dev.sh installs it")


def _get(port: int, path: str, raw: bool = False) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            body = response.read()
            return (body, response.headers.get("Content-Type")) if raw else json.loads(body)
    except OSError:
        return None


async def _poll(predicate: Callable[[], Any], what: str, timeout: float, worker: Optional[Child] = None,
                interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if worker is not None:
            assert worker.alive(), f"the worker died:\n{worker.log_tail(60)}"
        last = predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    tail = f"\n{worker.log_tail(40)}" if worker is not None else ""
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}){tail}")


#: The D9 stages a quoting worker times before anything is persisted.
D9_STAGES = {"exchange_to_received", "received_to_quoted", "quoted_to_order_sent", "order_sent_to_ack_received"}


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(family: Any, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


async def test_promtool_passes_and_prometheus_reads_position_and_a_counter_back(broker, registry_url, database,
                                                                                tmp_path):
    keys = tmp_path / "keys"
    private_key, _ = create_keypair(keys, KID, keys / "trusted")
    # A busy market (takers every few hundred ms): a short run has fills.
    venue = Venue(dataclasses.replace(VenueConfig(), port=0, trusted_keys_dir=keys / "trusted",
                                      tick_interval=0.05, noise_rate=4.0, informed_rate=0.5))
    await migrate.migrate(database)
    await venue.start()
    web_port = free_port()
    env = {
        "CRYPTICS_BROKER_URL": broker.url, "CRYPTICS_SCHEMA_REGISTRY_URL": registry_url,
        "CRYPTICS_DATABASE_URL": database, "CRYPTICS_HEARTBEAT_INTERVAL": "1",
        "CRYPTICS_THALEX_KEY_ID": KID, "CRYPTICS_THALEX_PRIVATE_KEY_FILE": str(private_key),
        "CRYPTICS_INSTRUMENTS": ",".join(INSTRUMENTS), "CRYPTICS_VENUE_URL": venue.url,
        "CRYPTICS_WEB_PORT": str(web_port), "CRYPTICS_STATE_DIR": str(tmp_path / "state"),
        "CRYPTICS_ANALYTICS_BATCH_AGE": "0.2", "CRYPTICS_SINK_BATCH_AGE": "0.2",
        "CRYPTICS_QUOTE_BID_SIZES": "0.01", "CRYPTICS_QUOTE_ASK_SIZES": "0.01",
        # Inside the house's 3 bps, so that the takers fill us.
        "CRYPTICS_QUOTE_SPREAD_UNIT": "bps", "CRYPTICS_QUOTE_HALF_SPREAD": "2", "CRYPTICS_QUOTE_LEVEL_STEP": "2",
    }
    worker = spawn("worker", cryptics("worker"), log_path=tmp_path / "worker.log", env=environ_for_child(env),
                   cwd=ROOT)
    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{web_port}")
    try:
        prometheus.start()  # scraping a worker that is not up yet is harmless: it starts meanwhile

        def filled() -> Any:
            view = _get(web_port, "/analytics/")
            if not view:
                return None
            trades = {name: p["trades"] for name, p in view["positions"].items()}
            return any(n >= 2 for n in trades.values()) or NotYet(trades)
        await _poll(filled, "fills booked by the analytics", 60, worker)

        # (a) promtool on the exposition of a worker that quotes.
        def scraped() -> Any:
            got = _get(web_port, "/metrics", raw=True)
            if got is None:
                return None
            text = got[0].decode()
            families = _families(text)
            tick = families.get("cryptics_tick_to_order_seconds")
            counts = _samples(tick, "cryptics_tick_to_order_seconds_count") if tick else {}
            if not counts or min(counts.values()) == 0 or "cryptics_heartbeat_age_seconds" not in families:
                return NotYet(sorted(families))
            # The stage histograms come from the analytics' stage_latency_1m table, which the
            # latency topic feeds a batch behind the gateway's own counters.
            stages = {dict(k)["stage"] for k in _samples(families["cryptics_stage_latency_seconds"],
                                                         "cryptics_stage_latency_seconds_count")}
            if not D9_STAGES <= stages:
                return NotYet(sorted(stages))
            return text, got[1], families
        text, content_type, families = await _poll(scraped, "tick → order samples, every D9 stage before the ack "
                                                   "and the heartbeat in /metrics", 30, worker)
        (tmp_path / "metrics.txt").write_text(text)  # for a look after a failure
        assert content_type.startswith("text/plain; version=0.0.4")
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert check.returncode == 0, (check.stdout + check.stderr).decode()
        assert not (check.stdout + check.stderr).strip(), (check.stdout + check.stderr).decode()

        for (labels, count) in _samples(families["cryptics_stage_latency_seconds"],
                                        "cryptics_stage_latency_seconds_count").items():
            assert count > 0, labels
        for key, buckets in _by_series(families["cryptics_tick_to_order_seconds"]).items():
            values = [v for _, v in sorted(buckets.items())]
            assert values == sorted(values), key  # cumulative
        requests = _samples(families["cryptics_gateway_requests"], "cryptics_gateway_requests_total")
        assert requests[(("kind", "insert"),)] > 0
        assert _samples(families["cryptics_quoting_active"], "cryptics_quoting_active") == {(): 1.0}
        age = _samples(families["cryptics_heartbeat_age_seconds"], "cryptics_heartbeat_age_seconds")[()]
        assert 0 <= age < 5

        # (b) Prometheus scrapes the worker; a counter read back grows.
        await _poll(prometheus.target_up, "Prometheus to scrape the worker", 20)
        notifications = "cryptics_venue_notifications_total"
        first = await _poll(lambda: prometheus.query(notifications).get(()), "a first scraped sample", 10)
        await asyncio.sleep(2.5)

        def grown() -> Any:
            value = prometheus.query(notifications).get(())
            return value if value is not None and value > first else NotYet(value)
        later = await _poll(grown, "the counter to grow in Prometheus", 10)
        assert later > first > 0

        # The market stops: every count settles; Prometheus ends on the worker's own numbers.
        await venue.stop()

        last: list = []

        def settled() -> Any:
            """The views, once nothing moved over the last second of polling."""
            now = (_get(web_port, "/analytics/"), _get(web_port, "/sink/"), _get(web_port, "/market-data/"))
            if None in now:
                return None
            key = (now[0]["counters"]["events"], now[1]["totals"]["records"], now[2]["client"].get("notifications"))
            previous = last[-1] if last else None
            last.append(key)
            return key == previous and now
        analytics_view, _sink, market = await _poll(settled, "the worker to settle", 30, worker, interval=1.0)

        expected_notifications = float(market["client"]["notifications"])
        await _poll(lambda: prometheus.query(notifications).get(()) == expected_notifications
                    or NotYet(prometheus.query(notifications)),
                    f"Prometheus to read the worker's {expected_notifications} notifications", 10)

        # Positions and fees as the worker's /analytics/ has them, to the last bit (Prometheus keeps
        # float64 and answers with the shortest text that reads back as the same number).
        rows = analytics_view["positions"]
        positions = {name: row["position"] for name, row in rows.items()}
        fees = {(name, side): row[f"fees_{side}"] for name, row in rows.items() for side in ("maker", "taker")}
        assert set(positions) == set(INSTRUMENTS) and any(fees.values()), rows  # we traded

        def read_back() -> Any:
            got = {dict(k)["instrument"]: v for k, v in prometheus.query("cryptics_position_contracts").items()}
            got_fees = {(dict(k)["instrument"], dict(k)["liquidity"]): v
                        for k, v in prometheus.query("cryptics_fees").items()}
            return (got == positions and got_fees == fees) or NotYet(f"{got}, {got_fees} != {positions}, {fees}")
        await _poll(read_back, "Prometheus' positions and fees to equal /analytics/", 10)

        # PromQL understands the histograms: a median of tick → order from the buckets.
        median = prometheus.query("histogram_quantile(0.5, sum by (le) (cryptics_tick_to_order_seconds_bucket))")
        assert 1e-5 <= median[()] < 1.0, median
        counts = prometheus.query('cryptics_stage_latency_seconds_count{stage="received_to_quoted"}')
        assert counts and min(counts.values()) > 0, counts
    finally:
        prometheus.stop()
        if worker.alive():
            worker.stop(timeout=30)
        await venue.stop()
    assert worker.popen.returncode in (0, -signal.SIGTERM), worker.log_tail(60)


def _by_series(family: Any) -> dict[tuple, dict[float, float]]:
    """A histogram family's buckets: series labels → {le: cumulative count}."""
    out: dict[tuple, dict[float, float]] = {}
    for s in family.samples:
        if s.name.endswith("_bucket"):
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            out.setdefault(labels, {})[float(s.labels["le"])] = s.value
    return out
