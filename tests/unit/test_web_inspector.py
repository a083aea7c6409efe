"""The HTML inspector's pure parts (app/web/inspector.py): who gets the page, and its files."""
from __future__ import annotations

import pytest

from app.web import inspector as i

CHROMIUM = ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
            "application/signed-exchange;v=b3;q=0.7")
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize("accept", [CHROMIUM, FIREFOX, "text/html", "application/json;q=0.5, text/html",
                                    "TEXT/HTML; charset=utf-8", "application/xhtml+xml"])
def test_a_browser_gets_the_page(accept):
    assert i.prefers_html(accept)


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "text/*", "text/plain",
                                    "application/json, text/html", "text/html, application/json",
                                    "text/html;q=0.5, application/json", "text/html;q=0", "text/html;q=abc",
                                    "text/html;q=2", ",,;"])
def test_everyone_else_keeps_the_json(accept):
    assert not i.prefers_html(accept)


@pytest.mark.parametrize("path", ["/", "/tables/", "/tables/position_pnl/", "/tables/stage_latency_1m/BTC-PERPETUAL%7Cx/",
                                  "/analytics/", "/quoting/", "/sink/", "/market-data/", "/heartbeat/"])
def test_pages(path):
    assert i.is_page(path)
    assert i.wants_page("GET", path, CHROMIUM, {})
    assert i.wants_page("HEAD", path, CHROMIUM, {})


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "/quoting/state/", "/router/", "/table/", "/static/inspector.js",
                                  "/tables", "/tables/a/b/c/", "/venue/latency", "//", "/analytics"])
def test_not_pages(path):
    assert not i.is_page(path)
    assert not i.wants_page("GET", path, CHROMIUM, {})


def test_the_json_from_a_browser_and_between_workers():
    assert not i.wants_page("GET", "/tables/", CHROMIUM, {"format": "json"})
    assert not i.wants_page("GET", "/tables/", CHROMIUM, {"format": "JSON"})
    assert not i.wants_page("GET", "/tables/", CHROMIUM, {"local": "1"})
    assert not i.wants_page("POST", "/quoting/", CHROMIUM, {})
    assert i.wants_page("GET", "/tables/x/", CHROMIUM, {"prefix": "BTC", "format": "html"})


def test_the_files():
    files = i.static_files()
    assert set(files) == {"inspector.js", "inspector.css", "plotly.min.js"}
    for f in files.values():
        assert f.path.is_file() and f.content_type.startswith("text/")
    plotly = files["plotly.min.js"]
    assert plotly.path.parts[-3:] == ("plotly", "package_data", "plotly.min.js")  # the installed package's own
    assert "max-age" in plotly.cache_control and files["inspector.js"].cache_control == "no-cache"


def test_the_page_loads_nothing_from_elsewhere():
    html = i.page_html()
    assert f"/static/plotly.min.js?v={i.plotly_version()}" in html and "{{" not in html
    assert "/static/inspector.js" in html and "/static/inspector.css" in html
    for text in (html, (i.STATIC_DIR / "inspector.js").read_text(), (i.STATIC_DIR / "inspector.css").read_text()):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
