"""The dashboards as code (grafana/dashboards.py): the committed JSON is what the generator
writes, every panel has a unit and a provisioned datasource, every query names only what the
read-only role may read and only variables the dashboard defines, the docs list every panel,
(tests/integration/test_dashboards.py parses the PromQL with promtool and runs every query). Grafana's macro expansion, which the
integration test uses to run the SQL, is checked here on its own."""
from __future__ import annotations

import importlib.util
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tests.grafana_queries import ROOT, dashboards, expand_promql, expand_sql, interval_seconds, targets

GRAFANA = ROOT / "grafana"
BUILT_IN = {"__timeFilter", "__timeGroupAlias", "__timeGroup", "__interval", "__rate_interval", "__timeFrom",
            "__timeTo", "__unixEpochFilter", "__interval_ms"}


def _generator():
    spec = importlib.util.spec_from_file_location("cryptics_dashboards", GRAFANA / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboards_are_what_the_generator_writes():
    rendered = _generator().render()
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(rendered) == set(committed), "run .venv/bin/python grafana/dashboards.py and commit the result"
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} differs from the generator's: run grafana/dashboards.py"
    assert {"trading.json", "quote-quality.json", "latency.json", "pipeline.json", "market.json"} <= set(rendered)


def _provisioned_datasources() -> dict[str, str]:
    out = {}
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yaml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            out[source["uid"]] = source["type"]
    return out


def test_every_panel_has_a_unit_a_description_and_a_provisioned_datasource():
    sources = _provisioned_datasources()
    assert set(sources) == {"cryptics-timescaledb", "cryptics-prometheus"}
    custom_unit = re.compile(r"^suffix: \S.*$")
    known_units = {"currencyUSD", "none", "bool_on_off", "ops", "percentunit", "s", "µs", "short"}
    for name, board in dashboards().items():
        uids = [p["id"] for p in board["panels"]]
        assert len(set(uids)) == len(uids), name
        for panel in board["panels"]:
            where = f"{name}: {panel['title']}"
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit in known_units or (unit and custom_unit.match(unit)), (where, unit)
            assert len(panel.get("description", "")) > 20, where
            assert panel["datasource"]["uid"] in sources, where
            assert sources[panel["datasource"]["uid"]] == panel["datasource"]["type"], where
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs), where
            for target in panel["targets"]:
                assert sources[target["datasource"]["uid"]] == target["datasource"]["type"], where


def test_every_dashboard_has_the_instrument_and_account_variables_and_uses_no_other():
    for name, board in dashboards().items():
        defined = {v["name"] for v in board["templating"]["list"]}
        assert defined == {"instrument", "account"}, name
        for panel in board["panels"]:
            for target in panel["targets"]:
                query = target.get("rawSql") or target["expr"]
                used = set(re.findall(r"\$\{?(\w+)", query))
                assert used - BUILT_IN <= defined, (name, panel["title"], used - BUILT_IN - defined)
                if target["datasource"]["uid"] == "cryptics-prometheus":
                    assert 'account=~"$account"' in query, (name, panel["title"])
        instrument = next(v for v in board["templating"]["list"] if v["name"] == "instrument")
        assert instrument["multi"] and instrument["includeAll"]


def _granted() -> set[str]:
    """The reader's grants, as the newest migration that defines cryptics_grant_reader() lists them."""
    defining = [p for p in sorted((ROOT / "timescale").glob("*.sql")) if "FUNCTION cryptics_grant_reader()" in p.read_text()]
    sql = defining[-1].read_text()
    listed = re.search(r"GRANT SELECT ON(.*?)TO cryptics_reader", sql, re.S).group(1).replace("'", " ")
    return {name.strip() for name in listed.split(",")}


def test_sql_panels_read_only_what_the_reader_role_is_granted():
    granted = _granted()
    assert "cryptics_migrations" not in granted
    read = set()
    for target in targets():
        if target.datasource != "cryptics-timescaledb":
            continue
        names = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)", target.query))
        assert names, target.name
        assert names <= granted, (target.name, names - granted)
        read |= names
    # what the dashboards need: candles, fills, markouts, PnL and quality snapshots, latency
    assert {"pnl_snapshots", "quote_quality_1m", "markouts", "fills", "trade_candles_1m", "ticker_candles_1m",
            "stage_latency_1m", "book_tops", "tickers", "quote_decisions"} <= read


def test_the_docs_list_every_dashboard_and_panel():
    docs = (ROOT / "docs" / "operations.md").read_text()
    section = docs[docs.index("## Dashboards"):]
    section = section[:section.find("\n## ", 5)] if "\n## " in section[5:] else section
    for name, board in dashboards().items():
        assert board["title"] in section, board["title"]
        for panel in board["panels"]:
            assert panel["title"] in section, (name, panel["title"])


def test_the_provisioned_dashboard_folder_is_the_one_compose_mounts():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cryptics.yaml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = [str(v) for v in compose["services"]["grafana"].get("volumes", [])]
    assert any(m.startswith("./grafana/dashboards:" + provider["options"]["path"]) for m in mounts), mounts


# -- the macro expansion --------------------------------------------------------------------------------


START = datetime(2026, 12, 3, 11, 0, tzinfo=timezone.utc)
END = START + timedelta(hours=1)


def test_time_filter_and_bounds_expand_to_rfc3339_literals():
    out = expand_sql("SELECT 1 WHERE $__timeFilter(f.time) AND x > $__timeFrom() AND x < $__timeTo()", START, END, {})
    assert out == ("SELECT 1 WHERE f.time BETWEEN '2026-12-03T11:00:00Z' AND '2026-12-03T12:00:00Z' "
                   "AND x > '2026-12-03T11:00:00Z' AND x < '2026-12-03T12:00:00Z'")


def test_time_group_is_time_bucket_on_timescaledb_and_epoch_arithmetic_elsewhere():
    sql = "SELECT $__timeGroupAlias(time, $__interval), $__timeGroup(t.x, '5m') FROM y"
    assert expand_sql(sql, START, END, {}, interval="30s", timescaledb=True) == \
        "SELECT time_bucket('30s', time) AS \"time\", time_bucket('300s', t.x) FROM y"
    assert expand_sql(sql, START, END, {}, interval="30s") == \
        "SELECT floor(extract(epoch from time)/30)*30 AS \"time\", floor(extract(epoch from t.x)/300)*300 FROM y"


def test_unix_epoch_filter_and_interval_ms():
    out = expand_sql("WHERE $__unixEpochFilter(ts) AND d > $__interval_ms", START, END, {}, interval="2m")
    assert out == f"WHERE ts >= {int(START.timestamp())} AND ts <= {int(END.timestamp())} AND d > 120000"


def test_variables_become_quoted_lists_in_sql_and_escaped_alternations_in_promql():
    assert expand_sql("x IN ($instrument)", START, END, {"instrument": ["A-1", "O'B"]}) == "x IN ('A-1','O''B')"
    assert expand_promql('m{i=~"$instrument"}[$__rate_interval]', {"instrument": ["A.1", "B-2"]}, "15s") == \
        'm{i=~"(A\\\\.1|B-2)"}[15s]'
    with pytest.raises(ValueError, match="unexpanded"):
        expand_promql('m{a=~"$other"}', {"instrument": ["A"]}, "15s")


def test_bad_macro_calls_are_refused():
    with pytest.raises(ValueError, match="unclosed"):
        expand_sql("SELECT $__timeFilter(time", START, END, {})
    with pytest.raises(ValueError, match="needs a column and an interval"):
        expand_sql("SELECT $__timeGroup(time)", START, END, {})
    with pytest.raises(ValueError, match="not a Grafana interval"):
        interval_seconds("five minutes")
