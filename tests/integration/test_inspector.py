"""The HTML inspector (agents/inspector.py, app/web/static/) in a real browser.

Real parts, as in tests/integration/test_analytics.py: the simulated venue in this process with
its market running (two perpetuals), Tansu, the schema registry, PostgreSQL and one `cryptics
worker` that quotes, persists and runs the analytics. The browser is Debian's headless Chromium
(/usr/bin/chromium, driven through /usr/bin/chromedriver by the pinned selenium of setup.cfg's
test extra: nothing is downloaded), with a fresh profile, and every host but 127.0.0.1 made
unresolvable.

- Content negotiation: curl's ``*/*``, ``application/json`` and no ``Accept`` get the JSON
  (``/`` answers Faust's ``{"status": "OK"}``), a browser's ``Accept`` gets the page,
  ``?format=json`` the JSON again; both say ``Vary: Accept``. plotly.min.js comes from the
  installed plotly package.
- Each page, loaded and checked on what it draws, and saved as a screenshot (the folder
  ``$CRYPTICS_TEST_ARTIFACTS/inspector/``, else ``.artifacts/inspector/`` in the checkout):
  the home (quoting state, tables), the table list (every table, its kind and keys), a table's
  keys (a value shown equals the JSON view's value for the key, and the mark shown changes
  from one refresh to a later one while the market moves), a windowed key (a candlestick chart
  of the 1-second mark candles with a drawn box per window; the latency percentiles of a stage
  as three drawn traces), the analytics (markout curves drawn per instrument and side, the
  values in the table equal to GET /analytics/, the PnL and position charts, latency
  percentiles), the quoting state (state, kill switch, positions on the volume step, the ladder
  on the tick).
- No number on any page shows float noise (``0.17200000000000001``, ``3.19999999999998``).
- The browser asks nothing of any host but the worker (its own chrome:// and data: URLs aside).
"""
from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from .conftest import ROOT
from .analytics_stack import INSTRUMENTS, NotYet
from .observers import chromium, quit_chromium

#: A browser's navigation Accept header (Chromium's own).
BROWSER_ACCEPT = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                  "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7")
#: Digits no formatted number shows: a run of zeros or nines before a last digit is float noise.
NOISE = re.compile(r"\d\.\d*(?:0{6,}[1-9]|9{6,}\d)")


def artifacts_dir() -> Path:
    base = os.environ.get("CRYPTICS_TEST_ARTIFACTS")
    folder = (Path(base) if base else ROOT / ".artifacts") / "inspector"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _http(port: int, path: str, accept: Optional[str]) -> tuple[int, dict, bytes]:
    headers = {} if accept is None else {"Accept": accept}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _json(port: int, path: str) -> Any:
    status, _, body = _http(port, path, "application/json")
    assert status == 200, (path, status, body[:300])
    return json.loads(body)




@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "chromium")
    try:
        yield driver
    finally:
        quit_chromium(driver, tmp_path / "chromium")


class Pages:
    """The browser on the worker's pages: load, wait, read, screenshot, and watch the requests."""

    def __init__(self, driver, port: int, folder: Path) -> None:
        self.driver, self.port, self.folder = driver, port, folder
        self.origin = f"http://127.0.0.1:{port}"
        self.requested: set[str] = set()
        self.shots: list[Path] = []

    def load(self, path: str) -> None:
        self.driver.get(self.origin + path)
        self.wait(lambda: self.js("return Number(document.body.dataset.refreshes || 0)") >= 1,
                  f"{path} to draw its first refresh")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except AssertionError as exc:
                last = NotYet(str(exc))
            if last:
                return last
            time.sleep(0.25)
        error = self.js("return document.body.dataset.error || null")
        raise AssertionError(f"timed out waiting for {what} (last: {last!r}; page error: {error!r})")

    def refreshes(self) -> int:
        return int(self.js("return Number(document.body.dataset.refreshes || 0)"))

    def after_refresh(self) -> None:
        """Wait until the page has drawn one more refresh than now."""
        seen = self.refreshes()
        self.wait(lambda: self.refreshes() > seen, "the next refresh", 10)

    def text(self, css: str) -> Optional[str]:
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null", css)

    def texts(self, css: str) -> list[str]:
        return self.js("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)

    def screenshot(self, name: str) -> Path:
        """The whole page (up to 6000 px tall) as a PNG in the artifacts folder."""
        height = int(self.js("return Math.min(document.documentElement.scrollHeight, 6000)"))
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": 1400, "height": max(height, 800), "deviceScaleFactor": 1, "mobile": False})
        try:
            time.sleep(0.6)  # plotly's responsive charts re-layout on the resize
            data = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        path = self.folder / f"{len(self.shots) + 1:02d}-{name}.png"
        path.write_bytes(base64.b64decode(data))
        assert path.stat().st_size > 10_000, f"{path}: an empty screenshot?"
        self.shots.append(path)
        return path

    def check_page(self) -> None:
        """No float noise in any number shown; no script error; every request went to the worker."""
        numbers = self.texts(".num")
        assert numbers, "no number on the page"
        noisy = [t for t in numbers if NOISE.search(t)]
        assert not noisy, f"float noise on screen: {noisy[:10]}"
        errors = [e for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requested.add(message["params"]["request"]["url"])
        outside = [url for url in self.requested
                   if urllib.parse.urlsplit(url).scheme in ("http", "https", "ws", "wss", "ftp")
                   and not url.startswith(self.origin + "/")]
        assert not outside, f"requests outside the worker: {sorted(outside)}"


def displayed(value: float) -> float:
    """``value`` to the digits the page writes a number without steps with (inspector.js
    ``fmt``): 12 significant digits and at most 6 decimals from 1 up, 8 significant below."""
    if isinstance(value, int) or value == int(value):
        return float(value)
    if abs(value) >= 1:
        digits = math.floor(math.log10(abs(value))) + 1
        return round(value, max(0, min(6, 12 - digits)))
    return float(f"{value:.8g}")


def _close(shown: Optional[str], value: Any) -> bool:
    """The text shown reads as the JSON number, to the digits the page writes."""
    if shown is None or not isinstance(value, (int, float)):
        return False
    try:
        number = float(shown)
    except ValueError:
        return False
    return math.isclose(number, displayed(value), rel_tol=1e-12, abs_tol=1e-15)


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _step_decimals(step: float) -> int:
    text = repr(step)
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


async def test_the_inspector_in_chromium(analytics_stack, browser):
    analytics_stack.spawn("a")
    port = analytics_stack.workers["a"][1]

    def ready() -> Any:
        """Fills on both instruments, markouts at two horizons per instrument, a few 1-second
        candles and a latency histogram of the quote stage."""
        analytics = analytics_stack.view("a")
        if analytics is None:
            return NotYet("web views not up")
        markouts = analytics.get("markouts", {})
        counted = {name: sum(1 for side in ("buy", "sell") for hz in ("1", "5")
                             if ((markouts.get(name) or {}).get("aggregates", {}).get(side, {}).get(hz) or {}).get("count"))
                   for name in INSTRUMENTS}
        candles = analytics_stack.view("a", "/tables/mark_candles_1s/BTC-PERPETUAL/?window=series") or {}
        latency = analytics_stack.view("a", "/tables/stage_latency_1m/?prefix=BTC-PERPETUAL%7Creceived_to_quoted&window=now") or {}
        done = (all(n >= 3 for n in counted.values()) and len(candles.get("windows") or ()) >= 8
                and bool(latency.get("items")))
        return done or NotYet((counted, len(candles.get("windows") or ()), bool(latency.get("items"))))

    await analytics_stack.poll(ready, "fills, markouts, candles and latency", 90, interval=1.0)

    # -- content negotiation, without the browser ---------------------------------------------
    for accept in (None, "*/*", "application/json", "application/json, text/html"):
        status, headers, body = _http(port, "/", accept)
        assert status == 200 and headers["Content-Type"].startswith("application/json"), (accept, headers)
        assert json.loads(body) == {"status": "OK"}, accept  # Faust's own index for anyone but a browser
        status, headers, body = _http(port, "/tables/", accept)
        assert headers["Content-Type"].startswith("application/json") and "Accept" in headers.get("Vary", "")
        assert {t["name"] for t in json.loads(body)["tables"]} >= {"position_pnl", "stage_latency_1m"}
    for path in ("/", "/tables/", "/tables/position_pnl/", "/tables/position_pnl/BTC-PERPETUAL/", "/analytics/",
                 "/quoting/", "/sink/"):
        status, headers, body = _http(port, path, BROWSER_ACCEPT)
        assert status == 200 and headers["Content-Type"].startswith("text/html"), (path, headers)
        assert b"/static/plotly.min.js" in body and b"/static/inspector.js" in body and b"//cdn" not in body
        assert "Accept" in headers["Vary"]
    status, headers, body = _http(port, "/quoting/?format=json", BROWSER_ACCEPT)
    assert headers["Content-Type"].startswith("application/json") and "state" in json.loads(body)
    status, headers, body = _http(port, "/metrics", BROWSER_ACCEPT)  # no page for the scraper's text
    assert not headers.get("Content-Type", "").startswith("text/html")
    import plotly
    installed = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    status, headers, body = _http(port, "/static/plotly.min.js", None)
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and body == installed.read_bytes()
    assert _http(port, "/static/nothing.js", None)[0] == 404
    assert _http(port, "/static/..%2Fauth.py", None)[0] == 404

    pages = Pages(browser, port, artifacts_dir())
    loop = asyncio.get_running_loop()

    def in_browser() -> None:
        # -- the home --------------------------------------------------------------------------
        pages.load("/")
        quoting = _json(port, "/quoting/")
        pages.wait(lambda: pages.texts("#home-quoting [data-key]") and pages.texts("#home-tables [data-table]"),
                   "the home's quoting and tables cards")
        assert pages.text("#home-quoting .badge") == quoting["state"]
        assert {row for row in pages.js(
            "return [...document.querySelectorAll('#home-quoting [data-key]')].map(e => e.dataset.key)")} == set(INSTRUMENTS)
        assert "position_pnl" in pages.texts("#home-tables [data-table] a")
        assert "127.0.0.1:" in (pages.text("#worker") or "")
        pages.check_page()
        pages.screenshot("home")

        # -- the table list --------------------------------------------------------------------
        pages.load("/tables/")
        overview = _json(port, "/tables/")
        names = pages.js("return [...document.querySelectorAll('#tables [data-table]')].map(e => e.dataset.table)")
        assert names == [t["name"] for t in overview["tables"]]
        for table in overview["tables"]:
            row = f"#tables [data-table='{table['name']}']"
            assert pages.text(f"{row} .badge") == table["kind"]
            if table["name"] in ("position_pnl", "markouts"):
                assert pages.text(f"{row} [data-field=keys]") == str(table["keys"]) == "2"
        assert "127.0.0.1:" in pages.text("#tables [data-table=position_pnl]") and "0, 1, 2" in pages.text(
            "#tables [data-table=position_pnl]")
        pages.check_page()
        pages.screenshot("tables")

        # -- a table's keys: a value shown is the JSON view's, and it moves with the market ------
        pages.load("/tables/position_pnl/")
        row = "#entries [data-key='BTC-PERPETUAL']"

        def same_as_the_view() -> Any:
            value = _json(port, "/tables/position_pnl/BTC-PERPETUAL/")["value"]
            shown = {field: pages.text(f"{row} [data-field={field}]")
                     for field in ("position", "trades", "volume", "realized_pnl", "average_price")}
            same = all(_close(shown[field], value[field]) for field in shown)
            return same or NotYet((shown, {field: value[field] for field in shown}))

        pages.wait(same_as_the_view, "the shown position_pnl values to equal the JSON view's", 20)
        mark = pages.text(f"{row} [data-field=mark_price]")
        assert _close(mark, float(mark))
        pages.wait(lambda: pages.text(f"{row} [data-field=mark_price]") != mark, "the shown mark to move", 15)
        assert {r for r in pages.js("return [...document.querySelectorAll('#entries [data-key]')].map(e => e.dataset.key)")} \
            == set(INSTRUMENTS)
        pages.check_page()
        pages.screenshot("table-position_pnl")

        # -- a windowed key: candles drawn, one box per window ------------------------------------
        pages.load("/tables/mark_candles_1s/BTC-PERPETUAL/?window=series")
        boxes = pages.wait(lambda: pages.js(
            "return [...document.querySelectorAll('#chart g.trace.boxes path.box')]"
            ".filter(p => /^M[\\d.]+,[\\d.]+H/.test(p.getAttribute('d') || '')).length") >= 8, "candles drawn")
        assert boxes
        series = _json(port, "/tables/mark_candles_1s/BTC-PERPETUAL/?window=series")["windows"]
        drawn = pages.js("return document.querySelectorAll('#chart g.trace.boxes path.box').length")
        assert drawn >= min(len(series), 8), (drawn, len(series))
        assert "OHLC" in (pages.text("#chart .gtitle") or "")
        shown_windows = pages.js("return [...document.querySelectorAll('#windows [data-window]')].map(e => e.dataset.window)")
        assert 8 <= len(shown_windows) <= 30 and shown_windows == sorted(shown_windows, reverse=True), shown_windows
        pages.check_page()
        pages.screenshot("key-mark_candles_1s")

        # -- a stage's latency percentiles, from the histograms' summaries ------------------------
        key = urllib.parse.quote("BTC-PERPETUAL|received_to_quoted", safe="")
        pages.load(f"/tables/stage_latency_1m/{key}/?window=series")
        pages.wait(lambda: pages.js("return document.querySelectorAll('#chart g.scatterlayer g.trace').length") == 3,
                   "three percentile traces")
        assert pages.texts("#chart g.legend text.legendtext") == ["p50", "p90", "p99"]
        points = pages.js("return [...document.querySelectorAll('#chart g.scatterlayer g.trace')]"
                          ".map(t => t.querySelectorAll('path.point').length)")
        assert all(n >= 1 for n in points), points
        body = _json(port, f"/tables/stage_latency_1m/{key}/?window=series")
        summary = body["windows"][-1]["value"]["summary"]
        assert 0 < summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]
        pages.check_page()
        pages.screenshot("key-stage_latency_1m")

        # -- the analytics: markout curves, PnL and position, latency ----------------------------
        pages.load("/analytics/")
        traces = pages.wait(lambda: pages.js(
            "return [...document.querySelectorAll('#markout-chart g.scatterlayer g.trace')]"
            ".map(t => { const l = t.querySelector('path.js-line'); return l ? (l.getAttribute('d').match(/L/g) || []).length + 1 : 0 })")
            if pages.js("return document.querySelectorAll('#markout-chart g.scatterlayer g.trace').length") == 4 else None,
            "four markout curves")
        assert sum(1 for n in traces if n >= 2) >= 2, traces  # lines through at least two horizons
        legend = pages.texts("#markout-chart g.legend text.legendtext")
        assert sorted(legend) == sorted(f"{i} {s}" for i in INSTRUMENTS for s in ("buy", "sell"))

        def markouts_as_the_view() -> Any:
            """Every 1 s markout shown (per instrument and side) is GET /analytics/'s, to 2 decimals."""
            markouts = _json(port, "/analytics/")["markouts"]
            compared = []
            for name in INSTRUMENTS:
                for side in ("buy", "sell"):
                    expected = markouts[name]["aggregates"][side]["1"]["markout_bps"]
                    shown = pages.text(f"#markout-table [data-key='{name}|{side}'] [data-field='1s']")
                    if expected is None:
                        continue
                    if shown is None or _decimals(shown) != 2 or abs(float(shown) - expected) > 0.005 + 1e-9:
                        return NotYet((name, side, shown, expected))
                    compared.append((name, side))
            return len(compared) >= 2 or NotYet(compared)

        pages.wait(markouts_as_the_view, "the 1 s markouts shown to be GET /analytics/'s", 20)
        for _ in range(2):
            pages.after_refresh()
        history = pages.js("return [...document.querySelectorAll('#pnl-chart g.scatterlayer g.trace path.js-line')]"
                           ".map(p => (p.getAttribute('d').match(/L/g) || []).length)")
        assert len(history) == len(INSTRUMENTS) + 1 and max(history) >= 1, history  # instruments and the account
        assert pages.js("return document.querySelectorAll('#position-chart g.scatterlayer g.trace').length") == 2
        # The table shows this minute's window of each stage (?window=now): the rows the JSON view
        # has now, no more, no fewer. At the start of a minute only the stages sampled since are
        # there, so the quote stage is looked for among the live windows, not in this minute.
        def latency_rows_as_the_view() -> Any:
            view = _json(port, "/tables/stage_latency_1m/?window=now&limit=1000")
            wanted = {i["key"] for i in view["items"] if i.get("value") and i["value"].get("summary")}
            shown = set(pages.texts("#latency-table [data-key] a"))
            return (wanted and shown == wanted) or NotYet({"shown": sorted(shown), "view": sorted(wanted)})

        pages.wait(latency_rows_as_the_view, "the latency table's rows to be the view's", 60)
        quote_stage = urllib.parse.quote("BTC-PERPETUAL|received_to_quoted", safe="")
        assert _json(port, f"/tables/stage_latency_1m/{quote_stage}/?window=series")["windows"]
        assert pages.js("return document.querySelectorAll('#latency-chart g.trace.bars path').length") >= 3

        def positions_as_the_view() -> Any:
            value = _json(port, "/analytics/")["positions"]["BTC-PERPETUAL"]
            shown = {field: pages.text(f"#positions-table [data-key='BTC-PERPETUAL'] [data-field={field}]")
                     for field in ("position", "trades")}
            same = _close(shown["position"], round(value["position"], 9)) and _close(shown["trades"], value["trades"])
            return same or NotYet((shown, value["position"], value["trades"]))

        pages.wait(positions_as_the_view, "the BTC-PERPETUAL position shown as GET /analytics/'s", 20)
        shown_position = pages.text("#positions-table [data-key='BTC-PERPETUAL'] [data-field=position]")
        assert _decimals(shown_position) == 3, shown_position  # on BTC-PERPETUAL's volume step, 0.001
        pages.check_page()
        pages.screenshot("analytics")

        # -- the quoting state -----------------------------------------------------------------
        pages.load("/quoting/")
        quoting = _json(port, "/quoting/")
        pages.wait(lambda: pages.texts("#instruments [data-key]"), "the instruments")
        assert pages.text("#quoting-state .badge") == quoting["state"] == "active"
        assert pages.text("#quoting-state [data-field=kill_switch]") == "off"
        for name in INSTRUMENTS:
            s = quoting["instruments"][name]
            card = f"#instruments [data-key='{name}']"

            def position_as_the_view() -> Any:
                shown = pages.text(f"{card} [data-field=position]")
                value = _json(port, "/quoting/")["instruments"][name]["position"]
                return (_close(shown, round(value, 9)) and _decimals(shown) == _step_decimals(s["size_step"])) \
                    or NotYet((shown, value))

            pages.wait(position_as_the_view, f"{name}'s position shown as GET /quoting/'s", 20)
            prices = pages.texts(f"{card} [data-field=bid_price]") + pages.texts(f"{card} [data-field=ask_price]")
            assert prices and all(_decimals(p) == _step_decimals(s["tick_size"]) for p in prices), prices
            sizes = pages.texts(f"{card} [data-field=bid_size]") + pages.texts(f"{card} [data-field=ask_size]")
            assert sizes and all(_decimals(x) == _step_decimals(s["size_step"]) for x in sizes), sizes
        pages.check_page()
        pages.screenshot("quoting")

        # Every request of every page went to the worker: its page, its files, its JSON views.
        paths = {urllib.parse.urlsplit(url).path for url in pages.requested if url.startswith(pages.origin)}
        assert {"/static/plotly.min.js", "/static/inspector.js", "/static/inspector.css", "/quoting/",
                "/analytics/", "/tables/"} <= paths, paths

    # The browser is driven synchronously; the venue's market runs on this test's loop meanwhile.
    await loop.run_in_executor(None, in_browser)
    assert len(pages.shots) == 7 and all(p.is_file() for p in pages.shots)
