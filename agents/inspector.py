"""The HTML inspector: the worker's JSON views drawn for a browser (docs/architecture.md#d12-web-views).

Contract
- consumes: HTTP requests to the worker's web port. A GET of ``/`` or of a JSON view that has
  a page (``/tables/``, ``/tables/{name}/``, ``/tables/{name}/{key}/``, ``/analytics/``,
  ``/quoting/``, ``/sink/``, ``/market-data/``, ``/heartbeat/``) from a client that ranks
  ``text/html`` above ``application/json`` in its ``Accept`` header (a browser) gets the
  inspector's page instead of the JSON; every other request goes on to the view unchanged
  (app/web/inspector.py ``wants_page``: ``*/*``, ``application/json``, no ``Accept``,
  ``?format=json`` and ``?local=1`` keep the JSON). Those answers say ``Vary: Accept``.
- produces: nothing on Kafka; no view of its own beyond the page and its files. The page is
  one static HTML file whose script (``app/web/static/inspector.js``) reads the same URL as
  JSON (``Accept: application/json``) once a second and draws it: tables, keys with their
  values, charts of the windowed series, PnL and position, markout curves, latency
  percentiles, the quoting state.
- web views (read-only, no token):
  - ``GET /`` → the inspector's home for a browser; ``{"status": "OK"}`` (Faust's own index)
    for anyone else.
  - ``GET /static/{name}`` → ``inspector.js``, ``inspector.css``, and ``plotly.min.js`` from the
    installed ``plotly`` package (setup.cfg pins it): no file from any other place, no CDN.
    Unknown names are 404.
- tables: none.

The page costs the worker one small file per page load, and then only the JSON views the page
polls (one to three per second per open page); the chart library is cached by the browser
(its URL carries plotly's version).
"""
from __future__ import annotations

import logging

import faust
from aiohttp import web as aiohttp_web

from app.faust_app import app
from app.web.inspector import is_page, page_html, static_files, wants_page

log = logging.getLogger(__name__)

_FILES = static_files()
if "plotly.min.js" not in _FILES:
    log.warning("inspector: the plotly package is not installed; the inspector's charts are off "
                "(pip install -e . installs it)")


class _Page:
    """The page's HTML, read once (it is the same for every path: the script routes)."""

    html: bytes = b""

    @classmethod
    def body(cls) -> bytes:
        if not cls.html:
            cls.html = page_html().encode("utf-8")
        return cls.html


@aiohttp_web.middleware
async def inspector_middleware(request: aiohttp_web.Request, handler):
    """The page for a browser's GET of a page path; the view's own answer for everyone else."""
    path = request.rel_url.raw_path  # as sent: a key's %2F stays one path segment
    if wants_page(request.method, path, request.headers.get("Accept"), request.query):
        return aiohttp_web.Response(body=_Page.body(), content_type="text/html", charset="utf-8",
                                    headers={"Vary": "Accept", "Cache-Control": "no-cache"})
    response = await handler(request)
    if is_page(path) and not response.prepared:
        response.headers["Vary"] = "Accept"
    return response


# Faust's aiohttp driver builds its aiohttp Application when app.web is first touched (as every
# @app.page does at import); middlewares can be added until the server starts.
app.web.web_app.middlewares.append(inspector_middleware)


@app.page("/static/{name}")
class StaticView(faust.web.View):
    async def get(self, request: faust.web.Request, name: str) -> faust.web.Response:
        found = _FILES.get(name)
        if found is None or not found.path.is_file():
            return self.json({"error": f"no file {name!r}", "status": 404}, status=404)
        response = aiohttp_web.FileResponse(found.path, headers={"Cache-Control": found.cache_control,
                                                                "Content-Type": found.content_type})
        return response  # type: ignore[return-value]
