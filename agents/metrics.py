"""Prometheus metrics: ``GET /metrics`` on every worker (docs/architecture.md#d13-metrics).

Contract
- consumes: nothing from Kafka. At scrape time it reads what the worker counts already: Faust's
  monitor (``app.monitor``: messages, events per stream, tables, commits, rebalances), its
  consumer (assigned partitions, high watermarks, committed offsets) and its tables
  (``stage_latency_1m`` and ``position_pnl`` of agents/analytics.py, key counts of every
  table); the quote agent (trading state, kill switch, denials, decisions, the tick → order
  histogram, the order gateway's ``stats``: agents/quoting.py); the market-data source (the
  Thalex client's counters, notifications, book gaps, the quoting lease:
  agents/market_data.py); the persistence sinks' counters and the persistence consumer's
  commits (agents/persistence.py); the deferred producer (app/pipeline/producer.py); the
  heartbeat's last round trip (agents/heartbeat.py); the analytics engine's counters.
- produces: the Prometheus text exposition format, version 0.0.4 (prometheus-client's
  ``generate_latest`` over a registry of its own): every metric named ``cryptics_*`` in base
  units (seconds, ``_total`` for counters), with HELP text; plus prometheus-client's
  ``process_*`` and ``python_*`` collectors. The list: docs/operations.md, "Metrics".
- tables: none of its own; it reads tables' stores directly, so a scrape adds nothing to
  Faust's table counters.
- web view: ``GET /metrics`` (and ``/metrics/``), open like every read-only view.

Nothing here runs per event (docs/architecture.md#d1-the-hot-path-stays-in-one-process): the
agents count as they did, and the collectors turn those counts into metric families when
Prometheus asks. A scrape shares the event loop with the hot path, so it reads the windowed
latency table in slices of at most ``SLICE_SECONDS`` and converts only the windows that grew.
Latency histograms come from ``LogHistogram``s converted to fixed buckets (app/metrics.py);
Faust's bundled Prometheus sensor is not used: it observes milliseconds into seconds-scale
buckets and names counters against the conventions.

Counters stay monotonic over the process: the order gateway and the Thalex client are new
objects on every venue session, so the counts of the previous one are carried
(``CarriedCounters``), and windows that leave ``stage_latency_1m`` keep counting
(``WindowedHistograms``). A section that fails is logged once, counted in
``cryptics_metrics_errors_total{section}`` and left out; the other sections are served.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from agents import analytics, heartbeat, market_data, persistence, quoting
from app.analytics.positions import PositionState
from app.faust_app import app, deferred_producer, settings
from app.metrics import (
    LATENCY_BUCKETS,
    BucketCounts,
    CarriedCounters,
    LabelSet,
    WindowedHistograms,
    bucket_counts,
    flatten_counts,
    label_value,
    lag,
    split_stage_key,
)
from app.trading.risk import TradingState

log = logging.getLogger(__name__)

Family = Any  # a prometheus_client metric family


# -- building families ------------------------------------------------------------------------


def counter(name: str, doc: str, value: Optional[float] = None) -> CounterMetricFamily:
    """An unlabelled counter (``name`` ends in ``_total``, as exposed)."""
    return CounterMetricFamily(name, doc, value=0.0 if value is None else float(value))


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def labelled(kind: str, name: str, doc: str, samples: LabelSet) -> Family:
    """A counter or gauge family with one sample per label set of ``samples``."""
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    family = cls(name, doc, labels=list(samples.names))
    for sample in samples:
        family.add_metric(list(sample.labels), sample.value)
    return family


def histogram(name: str, doc: str, names: Sequence[str], series: dict[tuple, BucketCounts]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(names))
    for labels in sorted(series):
        counts = series[labels]
        family.add_metric([label_value(v) for v in labels], counts.cumulative(LATENCY_BUCKETS), counts.sum)
    return family


def _store_items(table: Any) -> Iterable[tuple[Any, Any]]:
    """A Faust table's keys and values from its store, without Faust's per-key sensors."""
    store = table.data
    raw = getattr(store, "data", None)  # the memory store's dictionary
    return list((raw if isinstance(raw, dict) else store).items())


def _analytics_items(name: str) -> list[tuple[Any, Any]]:
    """The analytics table ``name``'s keys and values; none where the analytics are off (no table)."""
    table = analytics.TABLE_OF.get(name)
    return _store_items(table) if table is not None else []


def _store_len(table: Any) -> int:
    store = table.data
    raw = getattr(store, "data", None)
    return len(raw if isinstance(raw, dict) else store)


# -- Faust: the monitor, the tables, the consumer --------------------------------------------------


class _StreamLabels:
    """The agent name of each stream the monitor counts (its ``prefix``), remembered once seen:
    the monitor keeps streams by weak reference, their counts by ``str(stream)``."""

    def __init__(self) -> None:
        self._labels: dict[str, str] = {}

    def label(self, monitor: Any, key: str) -> str:
        found = self._labels.get(key)
        if found is None:
            for stream, name in list(monitor.stream_lookup.items()):
                if name not in self._labels:
                    self._labels[name] = getattr(stream, "prefix", "") or name
            found = self._labels.setdefault(key, key)
        return found


_stream_labels = _StreamLabels()


def _median(values: Sequence[float]) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def faust_metrics() -> Iterator[Family]:
    m = app.monitor
    received = LabelSet(("topic",))
    for topic, n in m.messages_received_by_topic.items():
        received.add(n, topic)
    yield labelled("counter", "cryptics_faust_messages_received_total",
                   "Messages Faust's consumer delivered to streams and tables, per topic.", received)
    sent = LabelSet(("topic",))
    for topic, n in m.messages_sent_by_topic.items():
        sent.add(n, topic)
    yield labelled("counter", "cryptics_faust_messages_sent_total",
                   "Messages sent through Faust's own producer (table changelogs, Faust's internal topics), per "
                   "topic. What the agents publish goes through the deferred producer: cryptics_producer_*.", sent)
    yield counter("cryptics_faust_send_errors_total", "Sends through Faust's own producer that failed.", m.send_errors)
    yield gauge("cryptics_faust_messages_active", "Messages received and not yet acknowledged.", m.messages_active)
    yield counter("cryptics_faust_events_total", "Events Faust's streams started processing, all streams.",
                  m.events_total)
    streams = LabelSet(("stream",))
    for key, n in m.events_by_stream.items():
        streams.add(n, _stream_labels.label(m, key))
    yield labelled("counter", "cryptics_faust_stream_events_total",
                   "Events per Faust stream; the label is the agent's name.", streams)
    # Not exposed: the monitor's events_active and events_runtime, which a batched stream
    # (take_events, the analytics agent) never closes: they would count every event as active.
    for name, values, doc in (
        ("cryptics_faust_commit_latency_seconds", m.commit_latency,
         "Median time an offset commit of Faust's consumer took, over the last 30 commits."),
        ("cryptics_faust_send_latency_seconds", m.send_latency,
         "Median time a send through Faust's own producer took, over the last 30 sends."),
        ("cryptics_faust_rebalance_latency_seconds", m.rebalance_end_latency,
         "Median time a rebalance took to complete (recovery included), over the last 100."),
    ):
        median = _median(list(values))
        if median is not None:  # nothing measured yet: no sample rather than a made-up 0
            yield gauge(name, doc, median)
    yield counter("cryptics_faust_rebalances_total", "Rebalances this worker has taken part in.", m.rebalances)
    yield counter("cryptics_faust_assignments_completed_total", "Partition assignments completed.",
                  m.assignments_completed)
    yield counter("cryptics_faust_assignments_failed_total", "Partition assignments that failed.",
                  m.assignments_failed)
    full = LabelSet(("topic", "partition"))
    for tp, n in m.topic_buffer_full.items():
        full.add(n, tp.topic, tp.partition)
    yield labelled("counter", "cryptics_faust_topic_buffer_full_total",
                   "Times a partition's buffer was full and the consumer had to wait (since the last rebalance).",
                   full)
    http = LabelSet(("code",))
    for code, n in m.http_response_codes.items():
        http.add(n, int(code))
    yield labelled("counter", "cryptics_web_responses_total",
                   "Responses of this worker's web server (views and /metrics), per HTTP status code.", http)
    retrieved, updated, deleted = LabelSet(("table",)), LabelSet(("table",)), LabelSet(("table",))
    for name, state in m.tables.items():
        retrieved.add(state.keys_retrieved, name)
        updated.add(state.keys_updated, name)
        deleted.add(state.keys_deleted, name)
    yield labelled("counter", "cryptics_faust_table_keys_retrieved_total",
                   "Reads of a key from a Faust table, per table.", retrieved)
    yield labelled("counter", "cryptics_faust_table_keys_updated_total",
                   "Writes of a key to a Faust table (each one a changelog record), per table.", updated)
    yield labelled("counter", "cryptics_faust_table_keys_deleted_total",
                   "Deletions of a key from a Faust table, per table.", deleted)
    keys = LabelSet(("table",))
    for name, table in app.tables.items():
        keys.add(_store_len(table), name)
    yield labelled("gauge", "cryptics_faust_table_keys",
                   "Keys a Faust table holds on this worker (its partitions' keys; a windowed key is one per window).",
                   keys)


def consumer_metrics() -> Iterator[Family]:
    """Lag per partition: of Faust's consumer (the app's group: agents) and the persistence consumer."""
    lags = LabelSet(("group", "topic", "partition"))
    assigned = 0
    consumer = app._consumer  # None until the worker has started it (app.consumer would create it)
    if consumer is not None:
        try:
            assignment = consumer.assignment()
        except Exception:  # not started yet, or stopping
            assignment = set()
        assigned = len(assignment)
        changelogs = set(app.tables.changelog_topics)
        committed = getattr(consumer, "_committed_offset", {})  # what Faust committed, next offset to read
        for tp in assignment:
            if tp.topic in changelogs:  # read only to recover tables: no committed offset to lag behind
                continue
            try:
                # The high watermark of the last fetch response: right on Tansu too, where
                # ListOffsets under-reports (app/pipeline/tansu_compat.py corrects it from the same).
                highwater = consumer.highwater(tp)
            except Exception:
                continue
            behind = lag(highwater, committed.get(tp))
            if behind is not None:
                lags.add(behind, settings.app_id, tp.topic, tp.partition)
    yield gauge("cryptics_faust_assigned_partitions",
                "Partitions assigned to Faust's consumer on this worker (agent topics and table changelogs).", assigned)
    service = persistence.service
    sink_consumer = getattr(service, "consumer", None)
    if sink_consumer is not None:
        committed = getattr(service, "committed", {})
        try:
            assignment = sink_consumer.assignment()
        except Exception:
            assignment = set()
        for tp in assignment:
            try:
                highwater = sink_consumer.highwater(tp)
            except Exception:
                continue
            behind = lag(highwater, committed.get(tp))
            if behind is not None:
                lags.add(behind, f"{settings.app_id}-persistence", tp.topic, tp.partition)
    yield labelled("gauge", "cryptics_consumer_lag_records",
                   "Records of an assigned partition not yet committed by the group: the high watermark of the "
                   "last fetch minus the committed offset. A partition appears once the group has committed on "
                   "it; changelog partitions are left out.", lags)


# -- latency histograms -----------------------------------------------------------------------------

_stage_windows: WindowedHistograms = WindowedHistograms()
_stage_series: dict[str, tuple[str, str]] = {}
#: The longest the event loop is held at a time while a scrape reads the windowed table (s).
SLICE_SECONDS = 0.001
_refreshing = asyncio.Lock()


async def refresh_stage_latency() -> None:
    """Take in what ``stage_latency_1m`` has grown by since the last scrape, yielding to the
    event loop every SLICE_SECONDS: the table holds a window per key and minute for hours, and
    a restarted worker's first scrape converts every recovered window."""
    items = _analytics_items("stage_latency_1m")
    deadline = time.perf_counter() + SLICE_SECONDS
    for n, (key, record) in enumerate(items):
        if record is not None:
            series = _stage_series.get(key[0])
            if series is None:
                series = _stage_series[key[0]] = split_stage_key(key[0])
            _stage_windows.observe(key, series, record)
        if n % 64 == 63 and time.perf_counter() > deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + SLICE_SECONDS
    _stage_windows.forget_except(key for key, _ in items)


def latency_metrics() -> Iterator[Family]:
    yield histogram("cryptics_stage_latency_seconds",
                    "Latency of each D9 stage per instrument, from the analytics' stage_latency_1m histograms "
                    "(1% relative error) of this worker's partitions, all windows since the worker started.",
                    ("instrument", "stage"), _stage_windows.totals())
    tick = {(name,): bucket_counts(h) for name, h in list(quoting.quoting.tick_to_order.items())}
    yield histogram("cryptics_tick_to_order_seconds",
                    "Tick to order: from reading the market-data notification (received_at) to writing the order "
                    "request it set off (order_sent_at), per request an ack answered, per instrument.",
                    ("instrument",), tick)


# -- trading: quote agent, risk gate, order gateway -------------------------------------------------

_gateway_counts = CarriedCounters()
_decision_counts = CarriedCounters()

#: Gateway stats keys → (metric, label value) for the families with labels; the rest are below.
_GATEWAY_REQUESTS = {"inserts": "insert", "amends": "amend", "cancels": "cancel", "mass_quotes": "mass_quote"}
_GATEWAY_THROTTLED = {"throttled_local": "local", "throttled_venue": "venue"}
_GATEWAY_SKIPPED = {"skipped_in_flight": "in_flight", "skipped_failed": "failed", "skipped_exposure": "exposure",
                    "skipped_protection": "protection"}
_GATEWAY_SINGLE = {
    "request_failures": ("cryptics_gateway_request_failures_total",
                         "Gateway requests that timed out or lost their connection."),
    "acks": ("cryptics_gateway_acks_total", "Order updates (replies and session.orders) the gateway recorded."),
    "fills": ("cryptics_gateway_fills_total", "Fills of our orders the gateway recorded."),
    "duplicate_fills": ("cryptics_gateway_duplicate_fills_total", "Fills the venue reported again (skipped)."),
}


def trading_metrics() -> Iterator[Family]:
    q = quoting.quoting
    gateway = q.gateway
    yield gauge("cryptics_quoting_active", "1 while this worker holds a venue session with credentials and quotes.",
                gateway is not None)
    states = LabelSet(("state",))
    for state in TradingState:
        states.add(1.0 if q.risk.state is state else 0.0, state.value)
    yield labelled("gauge", "cryptics_trading_state",
                   "The trading state set by the operator (1 for the current one): active, reducing or halted.",
                   states)
    yield gauge("cryptics_kill_switch_tripped",
                "1 while the kill switch is latched (session PnL below -CRYPTICS_RISK_MAX_DRAWDOWN), until the "
                "operator resumes trading.", q.risk.kill_switch is not None)
    yield gauge("cryptics_risk_max_position_contracts",
                "The position limit per instrument (CRYPTICS_RISK_MAX_POSITION), in contracts.",
                q.risk.limits.max_position)
    denials = LabelSet(("reason",))
    for reason, n in q.risk.denials.items():
        denials.add(n, reason)
    yield labelled("counter", "cryptics_risk_denials_total", "Levels the risk gate denied, per reason.", denials)
    yield counter("cryptics_quote_errors_total", "Quote decisions or re-checks that failed (every order pulled).",
                  q.errors)
    decisions = LabelSet(("instrument",))
    for (name,), n in _decision_counts.totals(
            q.instruments, lambda states: {(name,): s.decisions for name, s in list(states.items())}).items():
        decisions.add(n, name)
    yield labelled("counter", "cryptics_quote_decisions_total", "Quote decisions (ladders computed), per instrument.",
                   decisions)
    position, pnl, age, open_orders = (LabelSet(("instrument",)) for _ in range(4))
    now = time.time()
    for name, state in list(q.instruments.items()):
        if state.last_data_at is not None:
            age.add(now - state.last_data_at, name)
        if gateway is not None:
            position.add(q.positions.position(name), name)
            session_pnl = q.positions.pnl(name, state.mark)
            if session_pnl is not None and math.isfinite(session_pnl):
                pnl.add(session_pnl, name)
            open_orders.add(len(gateway.open_orders(name)), name)
    yield labelled("gauge", "cryptics_quoting_position_contracts",
                   "The quoting session's position per instrument (the position keeper: the portfolio read at "
                   "session start plus the fills since), in contracts; long is positive.", position)
    yield labelled("gauge", "cryptics_quoting_session_pnl",
                   "Mark-to-market PnL of this quoting session's fills per instrument, fees left out (what the "
                   "kill switch watches), in the quote currency.", pnl)
    yield labelled("gauge", "cryptics_market_data_age_seconds",
                   "Seconds since the quote agent last had market data for the instrument (the stale-data halt "
                   "trips past CRYPTICS_RISK_STALE_AFTER_S).", age)
    yield labelled("gauge", "cryptics_gateway_open_orders", "Our orders not known to be final, per instrument.",
                   open_orders)

    counts = _gateway_counts.totals(gateway, lambda g: flatten_counts(g.stats))
    requests, errors = LabelSet(("kind",)), LabelSet(("code",))
    throttled, skipped, other = LabelSet(("by",)), LabelSet(("reason",)), LabelSet(("event",))
    single = {key: 0.0 for key in _GATEWAY_SINGLE}
    for kind in _GATEWAY_REQUESTS.values():
        requests.add(0, kind)
    for path, n in counts.items():
        key = path[0]
        if key == "errors_by_code" and len(path) == 2:
            errors.add(n, path[1])
        elif key in _GATEWAY_REQUESTS:
            requests.add(n, _GATEWAY_REQUESTS[key])
        elif key in _GATEWAY_THROTTLED:
            throttled.add(n, _GATEWAY_THROTTLED[key])
        elif key in _GATEWAY_SKIPPED:
            skipped.add(n, _GATEWAY_SKIPPED[key])
        elif key in single:
            single[key] += n
        elif len(path) == 1:
            other.add(n, key)
    yield labelled("counter", "cryptics_gateway_requests_total",
                   "Order requests the gateway wrote, per kind: insert, amend, cancel, mass_quote.", requests)
    yield labelled("counter", "cryptics_gateway_errors_total",
                   "Error replies of the venue to the gateway's requests, per Thalex error code.", errors)
    yield labelled("counter", "cryptics_gateway_throttled_total",
                   "Actions held back by rate limits: by the local token bucket (local) or by the venue's slow-down "
                   "replies (venue).", throttled)
    yield labelled("counter", "cryptics_gateway_skipped_total",
                   "Actions the gateway skipped, per reason: in_flight (the order's request is outstanding), failed "
                   "(refused before at this price and amount), exposure (pre-trade check), protection (mass-quote "
                   "protection pulled).", skipped)
    for key, (name, doc) in _GATEWAY_SINGLE.items():
        yield counter(name, doc, single[key])
    yield labelled("counter", "cryptics_gateway_events_total",
                   "Other things the gateway met, per event: post_only_cancelled, unknown_orders, "
                   "unrecordable_updates, orphans_cancelled, orphans_gone, callback_errors, quote_levels_failed, "
                   "protection_pulls, protection_refills.", other)


# -- positions and PnL (the analytics' position_pnl table) ------------------------------------------------


def position_metrics() -> Iterator[Family]:
    position, average, mark, realized, unrealized, net, funding, volume, trades = (
        LabelSet(("instrument",)) for _ in range(9))
    fees = LabelSet(("instrument", "liquidity"))
    for _key, record in _analytics_items("position_pnl"):
        if record is None:
            continue
        s = PositionState.from_record(record)
        name = s.instrument_name
        position.add(s.position, name)
        average.add(s.average_price, name)
        realized.add(s.realized_pnl, name)
        fees.add(s.fees_maker, name, "maker")
        fees.add(s.fees_taker, name, "taker")
        volume.add(s.volume, name)
        trades.add(s.trades, name)
        if s.mark_price is not None:
            mark.add(s.mark_price, name)
            unrealized.add(s.unrealized_pnl, name)
            net.add(s.net_pnl, name)
        if s.funding_pnl is not None:
            funding.add(s.funding_pnl, name)
    where = "from the analytics' position_pnl table (the instruments of this worker's partitions)"
    yield labelled("gauge", "cryptics_position_contracts",
                   f"Position per instrument in contracts, long positive, {where}.", position)
    yield labelled("gauge", "cryptics_position_average_price",
                   f"Average entry price of the open position (0 when flat), {where}.", average)
    yield labelled("gauge", "cryptics_mark_price", f"Latest mark price per instrument, {where}.", mark)
    yield labelled("gauge", "cryptics_pnl_realized",
                   f"Realized PnL per instrument in the quote currency, fees and funding excluded, {where}.", realized)
    yield labelled("gauge", "cryptics_pnl_unrealized",
                   f"Unrealized PnL at the mark per instrument in the quote currency, {where}.", unrealized)
    yield labelled("gauge", "cryptics_pnl_net",
                   f"Net PnL per instrument in the quote currency: realized + unrealized + funding - fees, {where}.",
                   net)
    yield labelled("gauge", "cryptics_pnl_funding",
                   f"The venue's unrealised perpetual funding per instrument, in the quote currency, {where}.", funding)
    yield labelled("gauge", "cryptics_fees",
                   f"Fees paid per instrument and liquidity (maker, taker) in the quote currency, rebates negative, "
                   f"{where}.", fees)
    yield labelled("gauge", "cryptics_traded_volume_contracts",
                   f"Contracts filled per instrument, {where}.", volume)
    yield labelled("gauge", "cryptics_trades", f"Our fills per instrument, {where}.", trades)


# -- analytics engine ---------------------------------------------------------------------------


def analytics_metrics() -> Iterator[Family]:
    stats = analytics.engine.stats
    yield counter("cryptics_analytics_batches_total", "Batches the analytics agent applied.", stats.batches)
    yield counter("cryptics_analytics_events_total", "Input records the analytics agent took (dead letters included).",
                  stats.events)
    for name, values, doc in (
        ("cryptics_analytics_applied_total", stats.applied, "Input records applied, per record."),
        ("cryptics_analytics_redelivered_total", stats.redelivered,
         "Input records a state skipped because it had applied them already (redeliveries), per record."),
        ("cryptics_analytics_published_total", stats.published,
         "Records the analytics published (markout, pnl_snapshot, quote_quality), per record."),
    ):
        samples = LabelSet(("record",))
        for record, n in values.items():
            samples.add(n, record)
        yield labelled("counter", name, doc, samples)
    refused = LabelSet(("reason",))
    for reason, n in stats.refused.items():
        refused.add(n, reason)
    yield labelled("counter", "cryptics_analytics_dead_letters_total",
                   "Input records the analytics could not use, sent to the dead-letter topic, per reason.", refused)
    yield counter("cryptics_analytics_keys_written_total", "Table keys the analytics wrote (one per key and batch).",
                  stats.keys_written)


# -- persistence --------------------------------------------------------------------------------

_SINK_COUNTERS = (
    ("records", "cryptics_sink_records_total", "Records the sink received (redeliveries too), per table."),
    ("rows_written", "cryptics_sink_rows_written_total", "Rows newly inserted, per table."),
    ("duplicates", "cryptics_sink_duplicate_rows_total",
     "Rows skipped because their natural key was there already (redeliveries), per table."),
    ("batches", "cryptics_sink_batches_total", "Batches fully handled (written and dead-lettered), per table."),
    ("transactions", "cryptics_sink_transactions_total",
     "Transactions committed, per table (more than batches when a batch was bisected)."),
    ("retries", "cryptics_sink_retries_total",
     "Waits after an error that was not the rows' fault (connection, server, registry, broker), per table."),
    ("write_seconds", "cryptics_sink_write_seconds_total",
     "Seconds spent writing, connection waits and retries included, per table."),
)


def sink_metrics() -> Iterator[Family]:
    # Per table: the book topic's sink writes two (book_tops, book_updates), each with its counters.
    tables = [table for sink in persistence.SINKS.values() for table in sink.tables]
    for attribute, name, doc in _SINK_COUNTERS:
        samples = LabelSet(("table",))
        for table in tables:
            samples.add(getattr(table.stats, attribute), table.spec.table)
        yield labelled("counter", name, doc, samples)
    letters, waiting, flushed = LabelSet(("table", "stage")), LabelSet(("table",)), LabelSet(("table",))
    for table in tables:
        stats = table.stats
        for stage, n in stats.dead_letters_by_stage.items():
            letters.add(n, table.spec.table, stage)
        waiting.add(stats.waiting, table.spec.table)
        if stats.last_flush_at is not None:
            flushed.add(stats.last_flush_at.timestamp(), table.spec.table)
    yield labelled("counter", "cryptics_sink_dead_letters_total",
                   "Records sent to the dead-letter topic instead of the table, per table and stage (decode, row, "
                   "database).", letters)
    yield labelled("gauge", "cryptics_sink_waiting",
                   "1 while the table's batch in hand waits for the database (or registry, or broker).", waiting)
    yield labelled("gauge", "cryptics_sink_last_flush_timestamp_seconds",
                   "Unix time of the table's last batch written.", flushed)


# -- the producer, the venue connection, the heartbeat -----------------------------------------------

_client_counts = CarriedCounters()

_CLIENT_COUNTERS = (
    ("reconnects", "cryptics_venue_reconnects_total", "Reconnects of the websocket to the venue after a drop."),
    ("disconnects", "cryptics_venue_disconnects_total", "Drops of the websocket to the venue."),
    ("reconnect_notices", "cryptics_venue_reconnect_notices_total",
     "Planned-shutdown notices of the venue (the client reconnects ahead of time)."),
    ("messages", "cryptics_venue_messages_total", "Websocket messages read from the venue."),
    ("notifications", "cryptics_venue_notifications_total", "Subscription notifications read from the venue."),
    ("resubscribe_rejected", "cryptics_venue_resubscribes_rejected_total",
     "Channels the venue did not resubscribe after a reconnect."),
)
_CLIENT_BAD = ("malformed", "unknown_channel", "bad_notifications", "unmatched_replies")


def io_metrics() -> Iterator[Family]:
    depth = LabelSet(("stage",))
    for stage, n in deferred_producer.queue_depth().items():
        depth.add(n, stage)
    yield labelled("gauge", "cryptics_producer_queue_records",
                   "Records the deferred producer holds now: encode (queued, not yet built and encoded), send "
                   "(encoded, not yet handed to Kafka's producer).", depth)
    stats = deferred_producer.stats
    yield counter("cryptics_producer_records_total", "Records the deferred producer encoded for Kafka.",
                  stats["records"])
    yield counter("cryptics_producer_batches_total", "Batches the deferred producer handed to Kafka's producer.",
                  stats["batches"])
    yield counter("cryptics_producer_encode_errors_total", "Records that could not be built or encoded (dropped).",
                  stats["encode_errors"])
    yield counter("cryptics_producer_delivery_errors_total",
                  "Batches (or records too large for one) that did not reach Kafka.", stats["delivery_errors"])

    source = market_data.source
    yield gauge("cryptics_venue_session_open", "1 while this worker has a venue session open.",
                source.client is not None)
    client = _client_counts.totals(source.client, lambda c: {key: n for key, n in dict(c.stats).items()})
    for key, name, doc in _CLIENT_COUNTERS:
        yield counter(name, doc, client.get(key, 0))
    bad = LabelSet(("kind",))
    for kind in _CLIENT_BAD:
        bad.add(client.get(kind, 0), kind)
    yield labelled("counter", "cryptics_venue_bad_messages_total",
                   "Messages from the venue that could not be used, per kind: malformed, unknown_channel, "
                   "bad_notifications (a handler or a record refused the payload), unmatched_replies.", bad)
    channels = LabelSet(("channel",))
    for channel, n in source.received.items():
        channels.add(n, channel)
    yield labelled("counter", "cryptics_market_data_notifications_total",
                   "Notifications the market-data source handled, per channel.", channels)
    gaps = LabelSet(("instrument",))
    for name, n in source.gaps.items():
        gaps.add(n, name)
    yield labelled("counter", "cryptics_book_gaps_total",
                   "Local book gaps (a book that stopped adding up, or a dropped connection), per instrument.", gaps)
    lease = source.lease
    yield gauge("cryptics_quoting_lease_held", "1 while this worker holds the quoting lease (with a database).",
                lease is not None and lease.held)
    yield counter("cryptics_quoting_lease_acquisitions_total", "Times this worker acquired the quoting lease.",
                  0 if lease is None else lease.acquisitions)
    yield counter("cryptics_quoting_lease_losses_total", "Times this worker lost the quoting lease.",
                  0 if lease is None else lease.losses)

    trip = heartbeat._RoundTrip
    if trip.last_at is not None:
        yield gauge("cryptics_heartbeat_age_seconds",
                    "Seconds since this worker's own last heartbeat came back through the broker.",
                    time.monotonic() - trip.last_at)
    if trip.last_ms is not None:
        yield gauge("cryptics_heartbeat_round_trip_seconds",
                    "Produce to consume time of this worker's own last heartbeat through the broker.",
                    trip.last_ms / 1000.0)


# -- the registry and the view ---------------------------------------------------------------------------

SECTIONS: dict[str, Callable[[], Iterable[Family]]] = {
    "faust": faust_metrics,
    "consumer": consumer_metrics,
    "latency": latency_metrics,
    "trading": trading_metrics,
    "positions": position_metrics,
    "analytics": analytics_metrics,
    "sink": sink_metrics,
    "io": io_metrics,
}


class WorkerCollector:
    """Every section's families at scrape time; a failing section is left out and counted."""

    def __init__(self) -> None:
        self.errors = {name: 0 for name in SECTIONS}
        self._logged: set[str] = set()

    def sections(self) -> Iterator[list[Family]]:
        """The families a section at a time (the errors' family last), so that a scrape can give
        the event loop back between them."""
        for name, section in SECTIONS.items():
            try:
                families = list(section())
            except Exception:
                self.errors[name] += 1
                if name not in self._logged:
                    self._logged.add(name)
                    log.exception("metrics: section %s failed; it is left out (counted in "
                                  "cryptics_metrics_errors_total, logged once)", name)
                continue
            yield families
        errors = LabelSet(("section",))
        for name, n in self.errors.items():
            errors.add(n, name)
        yield [labelled("counter", "cryptics_metrics_errors_total",
                        "Scrapes in which a section of /metrics failed and was left out, per section.", errors)]

    def collect(self) -> Iterator[Family]:
        for families in self.sections():
            yield from families


class _Families:
    """Families already collected, in the shape prometheus-client's ``generate_latest`` renders."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> list[Family]:
        return self.families


REGISTRY = CollectorRegistry(auto_describe=False)
#: prometheus-client's process_*, python_* and gc collectors.
STANDARD = (ProcessCollector(registry=REGISTRY), PlatformCollector(registry=REGISTRY), GCCollector(registry=REGISTRY))
collector = WorkerCollector()
REGISTRY.register(collector)


def exposition() -> bytes:
    """The text exposition (format 0.0.4) of every metric, as GET /metrics serves it."""
    return generate_latest(REGISTRY)


async def exposition_in_slices() -> bytes:
    """``exposition()``, rendered a section at a time with the event loop given back in between:
    a whole scrape holds the loop ~6 ms on this project's build machine, which an order whose
    tick arrives meanwhile would wait for; a section holds it a fraction of that."""
    pieces = []
    for source in STANDARD:
        pieces.append(generate_latest(_Families(list(source.collect()))))
    await asyncio.sleep(0)
    for families in collector.sections():
        pieces.append(generate_latest(_Families(families)))
        await asyncio.sleep(0)
    return b"".join(pieces)


async def _metrics_view(web, request):
    async with _refreshing:  # one refresh at a time: each window's growth is taken in once
        await refresh_stage_latency()
        body = await exposition_in_slices()
    return web.bytes(body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


app.page("/metrics", name="metrics")(_metrics_view)
app.page("/metrics/", name="metrics_slash")(_metrics_view)
