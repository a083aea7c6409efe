"""The Grafana dashboards, as code: ``.venv/bin/python grafana/dashboards.py`` writes
grafana/dashboards/*.json, which Grafana provisions (grafana/provisioning/dashboards/).

Built with grafana-foundation-sdk, pinned in setup.cfg to the schema of the Grafana version
docker-compose.yml runs. Panels read two datasources, both provisioned with fixed uids
(grafana/provisioning/datasources/): TimescaleDB through the read-only role (the history the
sink persisted: candles, fills, markouts, per-minute PnL and quote quality) and Prometheus
(what the workers count now: risk state, pipeline counters, latency histograms).

Template variables: ``instrument`` (from the ``instruments`` table; several at once) and
``account`` (the ``account`` label Prometheus puts on every target of a stack; a database holds
one account, so the SQL panels of a stack need no filter of their own). What each dashboard
shows, panel by panel: docs/operations.md#dashboards.

The test suite regenerates the JSON and requires the committed files to match, and runs every
panel's query against real data (tests/integration/test_dashboards.py).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from grafana_foundation_sdk.builders import (
    barchart,
    candlestick,
    dashboard as dash,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder, variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueTextMode, VisibilityMode
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, GridPos, VariableRefresh

OUT = Path(__file__).resolve().parent / "dashboards"

TIMESCALEDB = DataSourceRef(type_val="grafana-postgresql-datasource", uid="cryptics-timescaledb")
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="cryptics-prometheus")

#: Grafana's custom units (a suffix after the number): it has no unit of its own for these.
BPS = "suffix: bp"
ROWS_PER_SECOND = "suffix: rows/s"

#: The label matchers every Prometheus query carries.
ACCOUNT = 'account=~"$account"'
INSTRUMENT = 'instrument=~"$instrument"'
#: SQL filter of the instrument variable (Grafana expands a multi-value variable to a quoted list).
IN_INSTRUMENTS = "instrument_name IN ($instrument)"


# -- the PostgreSQL query: the SDK has no builder for it ---------------------------------------


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL datasource, as its query editor saves one in
    code mode."""

    def __init__(self, raw_sql: str, ref_id: str, fmt: str) -> None:
        self.raw_sql, self.ref_id, self.format = raw_sql, ref_id, fmt

    def to_json(self) -> dict[str, Any]:
        return {"datasource": TIMESCALEDB.to_json(), "editorMode": "code", "format": self.format,
                "rawQuery": True, "rawSql": self.raw_sql, "refId": self.ref_id}


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, ref_id: str = "A", fmt: str = "time_series") -> None:
        self._internal = SqlQuery(" ".join(raw_sql.split()), ref_id, fmt)

    def build(self) -> SqlQuery:
        return self._internal


def sql(raw_sql: str, ref_id: str = "A") -> Sql:
    """A time series query: a ``time`` column, then numeric columns (and ``metric``, a text
    column naming the series)."""
    return Sql(raw_sql, ref_id)


def sql_table(raw_sql: str, ref_id: str = "A") -> Sql:
    return Sql(raw_sql, ref_id, "table")


def prom(expr: str, legend: str, ref_id: str = "A", fmt: Optional[str] = None) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(PROMETHEUS)
    return query.format(fmt) if fmt else query.range()


# -- panels ---------------------------------------------------------------------------------------


@dataclass
class Grid:
    """Lays panels out left to right, 24 columns wide, a new row when one is full."""

    x: int = 0
    y: int = 0
    row_height: int = 0

    def place(self, panel: Any, width: int, height: int) -> Any:
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel = panel.grid_pos(GridPos(h=height, w=width, x=self.x, y=self.y))
        self.x += width
        self.row_height = max(self.row_height, height)
        return panel


def series(title: str, unit: str, *targets: Any, description: str) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .line_width(1).fill_opacity(8).show_points(VisibilityMode.NEVER))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def _datasource_of(targets: tuple[Any, ...]) -> DataSourceRef:
    kinds = {isinstance(t, prometheus.Dataquery) for t in targets}
    return PROMETHEUS if kinds == {True} else TIMESCALEDB


def _finish(panel: Any, targets: tuple[Any, ...]) -> Any:
    return panel.datasource(_datasource_of(targets))


def stat_panel(title: str, unit: str, target: Any, description: str) -> stat.Panel:
    return stat.Panel().title(title).description(description).unit(unit).with_target(target)


# -- the dashboards ----------------------------------------------------------------------------------


def variables() -> list[Any]:
    # From the mark's per-minute candles: small (a continuous aggregate on TimescaleDB), and every
    # instrument the stack streamed in the time range is there.
    instrument = (dash.QueryVariable("instrument").label("Instrument").datasource(TIMESCALEDB)
                  .query("SELECT DISTINCT instrument_name FROM ticker_candles_1m WHERE $__timeFilter(bucket) ORDER BY 1")
                  .multi(True).include_all(True).refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                  .description("The instruments the stack streamed in the time range (ticker_candles_1m)."))
    account = (dash.QueryVariable("account").label("Account").datasource(PROMETHEUS)
               .query({"query": "label_values(cryptics_trading_state, account)", "refId": "account"})
               .multi(False).include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
               .description("The stack: Prometheus labels each stack's targets with its account "
                            "(grafana/prometheus/prometheus.yml)."))
    return [account, instrument]


@dataclass
class Board:
    uid: str
    title: str
    description: str
    panels: list[tuple[Any, int, int]]  # (panel builder, width, height)

    def build(self) -> dict[str, Any]:
        board = (dash.Dashboard(self.title).uid(self.uid).description(self.description)
                 .tags(["cryptics"]).refresh("10s").time("now-1h", "now").timezone("utc")
                 .tooltip(DashboardCursorSync.CROSSHAIR).readonly())
        for variable in variables():
            board = board.with_variable(variable)
        grid = Grid()
        for number, (panel, width, height) in enumerate(self.panels, start=1):
            board = board.with_panel(grid.place(panel.id(number), width, height))
        return json.loads(json.dumps(board.build(), cls=JSONEncoder, sort_keys=True))


def _place(*items: tuple[Any, int, int]) -> list[tuple[Any, int, int]]:
    return list(items)


def trading() -> Board:
    pnl_sql = sql(f"""
        SELECT time, sum(realized_pnl) AS realized, sum(unrealized_pnl) AS unrealized,
               -sum(fees_maker + fees_taker) AS fees, sum(funding_pnl) AS funding, sum(net_pnl) AS net
        FROM pnl_snapshots WHERE $__timeFilter(time) AND {IN_INSTRUMENTS}
        GROUP BY time ORDER BY time""")
    position_sql = sql(f"""
        SELECT time, instrument_name AS metric, position FROM pnl_snapshots
        WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} ORDER BY time""")
    inventory_sql = sql(f"""
        SELECT $__timeGroupAlias(time, $__interval), instrument_name AS metric,
               avg(position * fair_value) AS inventory_value
        FROM quote_decisions WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} AND fair_value IS NOT NULL
        GROUP BY 1, 2 ORDER BY 1""")
    quotes_sql = sql(f"""
        SELECT $__timeGroupAlias(time, $__interval), avg(best_bid_price) AS book_bid, avg(best_ask_price) AS book_ask,
               avg(bid_prices[1]) AS our_bid, avg(ask_prices[1]) AS our_ask, avg(fair_value) AS fair_value
        FROM quote_decisions WHERE $__timeFilter(time) AND {IN_INSTRUMENTS}
        GROUP BY 1 ORDER BY 1""")
    mark_sql = sql(f"""
        SELECT $__timeGroupAlias(time, $__interval), avg(mark_price) AS mark
        FROM tickers WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} GROUP BY 1 ORDER BY 1""", "A")
    fills_sql = sql(f"""
        SELECT time, price AS fill_buy, NULL::double precision AS fill_sell FROM fills
        WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} AND direction = 'buy'
        UNION ALL
        SELECT time, NULL, price FROM fills
        WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} AND direction = 'sell' ORDER BY 1""", "B")
    net = prom(f"sum(cryptics_pnl_net{{{ACCOUNT},{INSTRUMENT}}})", "net", fmt="time_series")
    fees = prom(f"sum by (liquidity) (cryptics_fees{{{ACCOUNT},{INSTRUMENT}}})", "{{liquidity}}")
    positions = prom(f"sum by (instrument) (cryptics_position_contracts{{{ACCOUNT},{INSTRUMENT}}})", "{{instrument}}")
    limit = prom(f"max(cryptics_risk_max_position_contracts{{{ACCOUNT}}})", "limit", "B")
    lower = prom(f"-max(cryptics_risk_max_position_contracts{{{ACCOUNT}}})", "-limit", "C")
    state = prom(f"max by (state) (cryptics_trading_state{{{ACCOUNT}}}) == 1", "{{state}}", fmt="table")
    kill = prom(f"max(cryptics_kill_switch_tripped{{{ACCOUNT}}})", "kill switch", fmt="time_series")
    denials = prom(f"sum by (reason) (rate(cryptics_risk_denials_total{{{ACCOUNT}}}[$__rate_interval]))", "{{reason}}")
    return Board("cryptics-trading", "CrypticsLab · Trading",
                 "PnL, position against its limit, our quotes and fills against the market, and the risk gate.", _place(
        (_finish(stat_panel("Net PnL now", "currencyUSD", net, "Realized + unrealized + funding − fees, over the "
                            "selected instruments (Prometheus, summed over the workers holding them)."), (net,)), 6, 4),
        (_finish(stat_panel("Trading state", "none", state,
                            "The state the operator set: active, reducing (only position-reducing orders) or halted.")
                 .text_mode(BigValueTextMode.NAME), (state,)), 6, 4),
        (_finish(stat_panel("Kill switch", "bool_on_off", kill,
                            "On while the kill switch is latched (session PnL below −CRYPTICS_RISK_MAX_DRAWDOWN), "
                            "until the operator resumes trading."), (kill,)), 6, 4),
        (_finish(series("Fees", "currencyUSD", fees, description="Fees paid so far per liquidity (maker, taker), "
                        "negative for rebates (Prometheus)."), (fees,)), 6, 4),
        (_finish(series("PnL split", "currencyUSD", pnl_sql, description="Per-minute snapshots of the analytics "
                        "(pnl_snapshots), summed over the selected instruments: realized, unrealized at mark, fees "
                        "(as a cost), funding and net."), (pnl_sql,)), 12, 8),
        (_finish(series("Position against its limit", "none", positions, limit, lower,
                        description="Position per instrument in contracts (Prometheus), between ±"
                        "CRYPTICS_RISK_MAX_POSITION."), (positions, limit, lower)), 12, 8),
        (_finish(series("Position (history)", "none", position_sql, description="Position per instrument at "
                        "the end of each minute (pnl_snapshots), in contracts."), (position_sql,)), 12, 8),
        (_finish(series("Inventory at fair value", "currencyUSD", inventory_sql, description="Position times "
                        "the fair value the quote core priced from (quote_decisions)."), (inventory_sql,)), 12, 8),
        (_finish(series("Our quotes against the book", "currencyUSD", quotes_sql, description="Our best bid and "
                        "ask against the book's and the fair value, averaged per interval (quote_decisions)."),
                 (quotes_sql,)), 12, 8),
        (_finish(series("Fills on the mark", "currencyUSD", mark_sql, fills_sql,
                        description="The mark price (tickers) with our fills as points, buys and sells apart "
                        "(fills).")
                 .override_by_regexp("fill_.*", [{"id": "custom.drawStyle", "value": "points"},
                                                  {"id": "custom.pointSize", "value": 6}]), (mark_sql, fills_sql)),
         12, 8),
        (_finish(series("Risk denials", "ops", denials, description="Levels the risk gate denied per second, by "
                        "reason."), (denials,)), 24, 6),
    ))


def quote_quality() -> Board:
    curve = sql_table(f"""
        SELECT horizon_seconds::text || ' s' AS horizon,
               avg(markout_bps) FILTER (WHERE direction = 'buy') AS buy,
               avg(markout_bps) FILTER (WHERE direction = 'sell') AS sell
        FROM markouts WHERE $__timeFilter(time) AND {IN_INSTRUMENTS}
        GROUP BY horizon_seconds ORDER BY horizon_seconds""")
    over_time = sql(f"""
        SELECT bucket AS time, direction || ' ' || horizon_seconds || ' s' AS metric,
               sum(avg_markout_bps * mid_markouts) / nullif(sum(mid_markouts), 0) AS markout_bps
        FROM markouts_1m WHERE $__timeFilter(bucket) AND {IN_INSTRUMENTS}
        GROUP BY 1, 2 ORDER BY 1""")
    spreads = sql(f"""
        SELECT $__timeGroupAlias(f.time, $__interval),
               avg(2e4 * CASE f.direction WHEN 'buy' THEN b.mid - f.price ELSE f.price - b.mid END / b.mid)
                   AS effective_spread_bps,
               avg(2 * m.markout_bps) AS realized_spread_5s_bps
        FROM fills f
        CROSS JOIN LATERAL (SELECT (best_bid_price + best_ask_price) / 2 AS mid FROM book_tops t
                            WHERE t.instrument_name = f.instrument_name AND t.time <= f.time
                              AND best_bid_price IS NOT NULL AND best_ask_price IS NOT NULL
                            ORDER BY t.time DESC LIMIT 1) b
        JOIN markouts m ON m.trade_id = f.trade_id AND m.order_id = f.order_id AND m.time = f.time
                       AND m.horizon_seconds = 5
        WHERE $__timeFilter(f.time) AND f.{IN_INSTRUMENTS}
        GROUP BY 1 ORDER BY 1""")
    quality = {
        "uptime": ("Two-sided uptime", "percentunit", "Share of each minute with both sides resting within the "
                   "configured spread."),
        "fill_ratio": ("Fill ratio", "percentunit", "Filled over quoted amount, per minute."),
        "order_to_trade": ("Order-to-trade ratio", "none", "Order actions (inserts, amends, cancels) per fill."),
        "inventory_turnover": ("Inventory turnover", "none", "Traded volume over the mean absolute position."),
    }
    quality_panels = []
    for column, (title, unit, description) in quality.items():
        query = sql(f"""
            SELECT time, instrument_name AS metric, {column} FROM quote_quality_1m
            WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} AND {column} IS NOT NULL ORDER BY time""")
        quality_panels.append((_finish(series(title, unit, query, description=description + " (quote_quality_1m)"),
                                       (query,)), 12, 7))
    distances = sql(f"""
        SELECT time, avg(mean_spread) AS quoted_spread, avg(mean_bid_distance) AS bid_distance,
               avg(mean_ask_distance) AS ask_distance
        FROM quote_quality_1m WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} GROUP BY time ORDER BY time""")
    return Board("cryptics-quote-quality", "CrypticsLab · Quote quality",
                 "Markouts, spreads captured, uptime and the ratios a venue's market-maker programme looks at.", _place(
        (_finish(barchart.Panel().title("Markout curve by side").unit(BPS).description(
            "Mean mid markout of our fills at 1, 5, 30 and 60 s, buys and sells apart; positive is good for us "
            "(markouts).").x_field("horizon").with_target(curve), (curve,)), 12, 8),
        (_finish(series("Markouts per minute", BPS, over_time, description="Mean mid markout per minute, by side "
                        "and horizon (markouts_1m)."), (over_time,)), 12, 8),
        (_finish(series("Effective against realized spread", BPS, spreads, description="Effective spread: twice "
                        "the fill's distance from the mid of the book at the fill. Realized spread: twice the 5 s "
                        "markout. Their gap is what adverse selection took."), (spreads,)), 12, 8),
        (_finish(series("Quoted spread and distance from fair value", "currencyUSD", distances,
                        description="Mean quoted spread and each side's distance from the fair value "
                        "(quote_quality_1m)."), (distances,)), 12, 8),
        *quality_panels,
    ))


def latency() -> Board:
    percentiles = []
    for column, name in (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99")):
        query = sql(f"""
            SELECT bucket AS time, stage AS metric, max({column}) AS {name}
            FROM stage_latency_1m WHERE $__timeFilter(bucket) AND {IN_INSTRUMENTS}
            GROUP BY 1, 2 ORDER BY 1""")
        percentiles.append((_finish(series(f"Stage latency {name}", "µs", query, description=f"Each D9 stage's "
                                           f"{name} per minute (stage_latency_1m; the worst selected instrument)."),
                                    (query,)), 8, 8))
    live = prom(f"histogram_quantile(0.99, sum by (le, stage) (rate(cryptics_stage_latency_seconds_bucket"
                f"{{{ACCOUNT},{INSTRUMENT}}}[$__rate_interval])))", "{{stage}}")
    tick_heatmap = prom(f"sum by (le) (increase(cryptics_tick_to_order_seconds_bucket{{{ACCOUNT},{INSTRUMENT}}}"
                        f"[$__rate_interval]))", "{{le}}", fmt="heatmap")
    tick_quantiles = [prom(f"histogram_quantile({q}, sum by (le) (rate(cryptics_tick_to_order_seconds_bucket"
                           f"{{{ACCOUNT},{INSTRUMENT}}}[$__rate_interval])))", f"p{round(q * 100)}", ref)
                      for q, ref in ((0.5, "A"), (0.99, "B"))]
    ack_sql = sql(f"""
        SELECT bucket AS time, instrument_name AS metric, max(p50_us) AS p50, max(p99_us) AS p99
        FROM stage_latency_1m WHERE $__timeFilter(bucket) AND {IN_INSTRUMENTS}
          AND stage = 'order_sent_to_ack_received' GROUP BY 1, 2 ORDER BY 1""")
    return Board("cryptics-latency", "CrypticsLab · Latency",
                 "The D9 stages from the exchange's timestamp to the row in the database, and tick → order.", _place(
        *percentiles,
        (_finish(series("Stage latency p99 (live)", "s", live, description="p99 of each stage over the rate interval, "
                        "from the workers' histograms (Prometheus)."), (live,)), 12, 8),
        (_finish(heatmap.Panel().title("Tick → order").description(
            "Time from the tick's arrival to the order request on the wire, as a heatmap of the histogram's "
            "buckets (Prometheus).").unit("s").with_target(tick_heatmap).calculate(False), (tick_heatmap,)), 12, 8),
        (_finish(series("Tick → order p50 and p99", "s", *tick_quantiles,
                        description="From the quote agent's histogram (Prometheus)."), tuple(tick_quantiles)), 12, 8),
        (_finish(series("Ack latency", "µs", ack_sql, description="Order sent → ack received per minute, p50 and "
                        "p99 per instrument (stage_latency_1m)."), (ack_sql,)), 12, 8),
    ))


def pipeline() -> Board:
    def by(expr: str, legend: str, title: str, unit: str, description: str, width: int = 12) -> tuple[Any, int, int]:
        target = prom(expr, legend)
        return _finish(series(title, unit, target, description=description), (target,)), width, 7

    return Board("cryptics-pipeline", "CrypticsLab · Pipeline",
                 "What flows from the venue through Kafka into the database, and what got stuck.", _place(
        by(f"sum by (table) (rate(cryptics_sink_rows_written_total{{{ACCOUNT}}}[$__rate_interval]))", "{{table}}",
           "Rows written per second", ROWS_PER_SECOND, "Rows newly inserted per table (redeliveries skipped)."),
        by(f"sum by (table, stage) (increase(cryptics_sink_dead_letters_total{{{ACCOUNT}}}[$__rate_interval]))",
           "{{table}} {{stage}}", "Dead letters", "short", "Records sent to the dead-letter topic, by table and "
           "stage (decode, row, database): `cryptics deadletter list` shows them."),
        by(f"sum by (table) (increase(cryptics_sink_retries_total{{{ACCOUNT}}}[$__rate_interval]))", "{{table}}",
           "Sink retries", "short", "Waits after errors that were not the rows' fault (connection, server)."),
        by(f"sum by (topic) (cryptics_consumer_lag_records{{{ACCOUNT}}})", "{{topic}}", "Consumer lag", "short",
           "Records not yet committed by the persistence group, per topic."),
        by(f"sum by (stage) (cryptics_producer_queue_records{{{ACCOUNT}}})", "{{stage}}", "Producer queue", "short",
           "Records the deferred producer holds: waiting to be encoded, or to be handed to Kafka."),
        by(f"sum(increase(cryptics_venue_reconnects_total{{{ACCOUNT}}}[$__rate_interval]))", "reconnects",
           "Venue reconnects", "short", "Reconnects of the websocket to the venue after a drop."),
        by(f"max by (instance) (cryptics_heartbeat_age_seconds{{{ACCOUNT}}})", "{{instance}}", "Heartbeat age", "s",
           "Seconds since each worker's wiring heartbeat last went round the broker.", 24),
    ))


def market() -> Board:
    candles = sql(f"""
        SELECT bucket AS time, open, high, low, close, volume FROM trade_candles_1m
        WHERE $__timeFilter(bucket) AND instrument_name IN ($instrument) ORDER BY 1""")
    mark_candles = sql(f"""
        SELECT bucket AS time, open, high, low, close FROM ticker_candles_1m
        WHERE $__timeFilter(bucket) AND instrument_name IN ($instrument) ORDER BY 1""")
    spread = sql(f"""
        SELECT $__timeGroupAlias(time, $__interval), instrument_name AS metric,
               avg(1e4 * (best_ask_price - best_bid_price) / ((best_ask_price + best_bid_price) / 2)) AS spread_bps
        FROM book_tops WHERE $__timeFilter(time) AND {IN_INSTRUMENTS}
          AND best_bid_price IS NOT NULL AND best_ask_price IS NOT NULL
        GROUP BY 1, 2 ORDER BY 1""")
    depth = sql(f"""
        SELECT $__timeGroupAlias(time, $__interval), avg(best_bid_amount) AS best_bid, avg(best_ask_amount) AS best_ask,
               avg(total_bid_amount) AS all_bids, avg(total_ask_amount) AS all_asks
        FROM book_tops WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} GROUP BY 1 ORDER BY 1""")
    basis = sql(f"""
        SELECT $__timeGroupAlias(time, $__interval), instrument_name AS metric,
               avg(1e4 * (mark_price - index_price) / index_price) AS mark_over_index_bps
        FROM tickers WHERE $__timeFilter(time) AND {IN_INSTRUMENTS} GROUP BY 1, 2 ORDER BY 1""")
    return Board("cryptics-market", "CrypticsLab · Market",
                 "The market we quote: candles, the book's spread and depth, the mark against the index.", _place(
        (_finish(candlestick.Panel().title("Trades: candles ($instrument)").description(
            "OHLCV of public trades per minute (trade_candles_1m), one panel per selected instrument.")
            .unit("currencyUSD").repeat("instrument").repeat_direction("h").with_target(candles)
            .include_all_fields(True), (candles,)), 12, 9),
        (_finish(candlestick.Panel().title("Mark: candles ($instrument)").description(
            "OHLC of the mark price per minute (ticker_candles_1m), one panel per selected instrument.")
            .unit("currencyUSD").repeat("instrument").repeat_direction("h").with_target(mark_candles),
            (mark_candles,)), 12, 9),
        (_finish(series("Spread", BPS, spread, description="The book's best ask minus best bid over the mid, "
                        "averaged per interval (book_tops)."), (spread,)), 12, 8),
        (_finish(series("Depth at the top", "none", depth, description="Contracts at the best bid and ask, and in "
                        "the whole book per side (book_tops)."), (depth,)), 12, 8),
        (_finish(series("Mark against index", BPS, basis, description="The mark's premium over the index, "
                        "averaged per interval (tickers)."), (basis,)), 24, 7),
    ))


BOARDS = {"trading": trading, "quote-quality": quote_quality, "latency": latency, "pipeline": pipeline,
          "market": market}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{name}.json": json.dumps(make().build(), indent=2, sort_keys=True) + "\n" for name, make in BOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    rendered = render()
    for stale in set(p.name for p in OUT.glob("*.json")) - set(rendered):
        (OUT / stale).unlink()
    for name, text in rendered.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(rendered)} dashboards to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
