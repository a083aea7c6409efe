"""The HTML inspector's pure parts: which requests get the page, and the files it is made of. No Faust.

agents/inspector.py serves the inspector (docs/architecture.md#d12-web-views): a browser that
asks for one of the worker's JSON views (``/tables/…``, ``/analytics/``, ``/quoting/``, …) or
for ``/`` gets one static page (``static/index.html``) whose script reads the same URL as JSON
and draws it, refreshing every second. Everything here is decided without a request object,
so that it is tested on its own (tests/unit/test_web_inspector.py).

Content negotiation (``prefers_html``): the page goes to a client whose ``Accept`` header ranks
``text/html`` (or ``application/xhtml+xml``) above ``application/json``, as every browser's
navigation does (``text/html,application/xhtml+xml,…,*/*;q=0.8``). ``application/json``,
``*/*`` alone, anything else and no ``Accept`` at all keep the JSON: curl, the workers asking
each other, scrapers and the tests' HTTP clients see no change. ``?format=json`` asks for the
JSON from a browser (the page's "JSON" link).

Files: the page, its script and its style sheet are in ``app/web/static/``; the chart library
is plotly.js as the ``plotly`` package (a pinned dependency in setup.cfg) installs it,
``plotly/package_data/plotly.min.js``: the page loads nothing from anywhere but the worker.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

#: The project's own files of the page.
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: The paths whose views have a page: the worker's JSON views and the inspector's home.
_PAGE = re.compile(r"^/(?:tables/(?:[^/]+/(?:[^/]+/)?)?|analytics/|quoting/|sink/|market-data/|heartbeat/)?$")

_HTML_TYPES = ("text/html", "application/xhtml+xml")


def is_page(path: str) -> bool:
    """True for a path the inspector draws: ``/``, ``/tables/``, ``/tables/{name}/``,
    ``/tables/{name}/{key}/``, ``/analytics/``, ``/quoting/``, ``/sink/``, ``/market-data/``,
    ``/heartbeat/``."""
    return bool(_PAGE.match(path))


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """``Accept`` as (media range in lower case, q) pairs; a malformed q counts as 0."""
    out = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        out.append((media, q))
    return out


def prefers_html(accept: Optional[str]) -> bool:
    """True when ``accept`` ranks an HTML type above JSON (see the module docstring).

    Only explicit types count: ``*/*`` and ``text/*`` rank nothing, so ``*/*`` alone keeps the
    JSON; a tie between HTML and JSON keeps the JSON too."""
    if not accept:
        return False
    ranges = _media_ranges(accept)
    html = max((q for media, q in ranges if media in _HTML_TYPES), default=0.0)
    json = max((q for media, q in ranges if media == "application/json"), default=0.0)
    return html > 0.0 and html > json


def wants_page(method: str, path: str, accept: Optional[str], query: Mapping[str, str]) -> bool:
    """True when a request gets the inspector's page instead of the view's JSON: a GET (or
    HEAD) of a page path from a client that prefers HTML, without ``?format=json`` or
    ``?local=1`` (the workers' own questions to each other)."""
    if method not in ("GET", "HEAD") or not is_page(path):
        return False
    if query.get("format", "").lower() == "json" or query.get("local") is not None:
        return False
    return prefers_html(accept)


# -- the files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaticFile:
    """One file the worker serves under ``/static/``: where it is, its type, how long to cache it."""

    path: Path
    content_type: str
    #: Cache-Control: the chart library is versioned in its URL; the project's files revalidate.
    cache_control: str


def plotly_js() -> Optional[Path]:
    """plotly.min.js from the installed ``plotly`` package, or None when it is not installed."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def plotly_version() -> Optional[str]:
    """The installed plotly's version (the page's URL for the library carries it)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("plotly")
    except PackageNotFoundError:
        return None


_REVALIDATE = "no-cache"
_A_DAY = "public, max-age=86400, immutable"


def static_files() -> dict[str, StaticFile]:
    """name → file, every file under ``/static/`` (nothing else is served there)."""
    files = {
        "inspector.js": StaticFile(STATIC_DIR / "inspector.js", "text/javascript", _REVALIDATE),
        "inspector.css": StaticFile(STATIC_DIR / "inspector.css", "text/css", _REVALIDATE),
    }
    plotly = plotly_js()
    if plotly is not None:
        files["plotly.min.js"] = StaticFile(plotly, "text/javascript", _A_DAY)
    return files


def page_html() -> str:
    """The inspector's page (``static/index.html``) with the chart library's version filled in."""
    text = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return text.replace("{{plotly_version}}", plotly_version() or "missing")
