"""The backtest report: a summary, ``report.json`` and ``report.html`` (plots that work offline).

Contract
- ``summary(result)``: net PnL, the Sharpe ratio of 1-minute PnL changes (annualised, ×√525600;
  the per-minute mean over the standard deviation also given), max drawdown of the net PnL
  curve, fills and volume (counted from the report's fills list), uptime (share of the range
  with both sides quoted, app/analytics/quality.py), and the mean markout at 1/5/30/60 s
  (bps, buys and sells together, mid-based where the ticker had both sides, else mark-based).
- ``write(result, out_dir, meta)``: ``report.json`` (summary, PnL split, markouts, quality,
  counters, gaps, fills and the plotted series) and ``report.html``: price with our quotes and
  fills, PnL split, inventory, markout curves and drawdown, drawn by plotly.js that is copied
  next to it from the installed ``plotly`` package (as the inspector serves it,
  app/web/inspector.py): the page loads nothing from the network.
"""
from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from app.analytics.markouts import HORIZONS
from app.backtest.replay import Result
from app.web.inspector import plotly_js

MINUTES_PER_YEAR = 525_600


def _equity_per_minute(result: Result) -> list[float]:
    """The net PnL at the end of each minute of the range (the last value known then)."""
    points = [(t, net) for t, _pos, net, *_ in result.equity if net is not None]
    out, j, last = [], 0, 0.0
    minute = result.start + 60.0
    while minute <= result.end + 1e-9:
        while j < len(points) and points[j][0] <= minute:
            last = points[j][1]
            j += 1
        out.append(last)
        minute += 60.0
    return out


def _drawdown(values: list[float]) -> tuple[float, list[float]]:
    peak, worst, curve = -math.inf, 0.0, []
    for v in values:
        peak = max(peak, v)
        curve.append(v - peak)
        worst = min(worst, v - peak)
    return -worst, curve


def _mean_markouts(markouts: dict) -> dict[str, Optional[float]]:
    out = {}
    for h in HORIZONS:
        count = total = 0.0
        for side in ("buy", "sell"):
            s = markouts.get(side, {}).get(str(h))
            if not s:
                continue
            if s["count"]:
                count += s["count"]
                total += s["markout_bps"] * s["count"]
            elif s["count_mark"]:
                count += s["count_mark"]
                total += s["markout_bps_mark"] * s["count_mark"]
        out[f"{h}s"] = total / count if count else None
    return out


def summary(result: Result) -> dict[str, Any]:
    per_minute = [0.0] + _equity_per_minute(result)
    changes = [b - a for a, b in zip(per_minute, per_minute[1:])]
    mean = sum(changes) / len(changes) if changes else 0.0
    std = math.sqrt(sum((c - mean) ** 2 for c in changes) / (len(changes) - 1)) if len(changes) > 1 else 0.0
    sharpe_minute = mean / std if std > 0 else None
    curve = [net for _t, _p, net, *_ in result.equity if net is not None]
    max_dd, _ = _drawdown(curve)
    return {
        "instrument": result.instrument,
        "net_pnl": result.pnl.get("net") or 0.0,
        "sharpe_1min": None if sharpe_minute is None else sharpe_minute * math.sqrt(MINUTES_PER_YEAR),
        "sharpe_1min_per_minute": sharpe_minute,
        "max_drawdown": max_dd,
        "fills": len(result.fills),
        "volume": round(sum(f["amount"] for f in result.fills), 10),
        "notional": sum(f["amount"] * f["price"] for f in result.fills),
        "uptime": result.quality.get("uptime"),
        "mean_markout_bps": _mean_markouts(result.markouts),
        "events": result.events,
        "gaps": len(result.gaps),
    }


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def to_json(result: Result, meta: dict) -> dict[str, Any]:
    return {
        "meta": meta,
        "summary": summary(result),
        "pnl": result.pnl,
        "markouts": result.markouts,
        "quality": result.quality,
        "counters": result.counters,
        "book_depth": result.book_depth,
        "gaps": [{"from": iso(a), "to": iso(b), "seconds": b - a} for a, b in result.gaps],
        "fills": result.fills,
        "series": {"prices": result.prices, "quotes": result.quotes, "equity": result.equity},
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


def strict_json(value: Any) -> Any:
    """NaN and infinities become null: report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write(result: Result, out_dir: Path, meta: dict) -> dict[str, Any]:
    """Both report files into ``out_dir`` (created); returns the JSON document."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    document = strict_json(to_json(result, meta))
    (out_dir / "report.json").write_text(json.dumps(document, indent=1, default=_json_default))
    script = plotly_js()
    if script is not None:
        shutil.copyfile(script, out_dir / "plotly.min.js")
    (out_dir / "report.html").write_text(html(document))
    return document


def _series(rows: list, index: int) -> list:
    return [row[index] for row in rows]


def html(document: dict) -> str:
    """The report page: the summary table and five plots, from ``plotly.min.js`` beside it."""
    s, series = document["summary"], document["series"]
    times = lambda rows: [iso(r[0]) for r in rows]  # noqa: E731
    prices, quotes, equity, fills = series["prices"], series["quotes"], series["equity"], document["fills"]
    buys = [f for f in fills if f["direction"] == "buy"]
    sells = [f for f in fills if f["direction"] == "sell"]
    nets = [e[2] if e[2] is not None else 0.0 for e in equity]
    _, drawdown = _drawdown(nets)
    markouts = document["markouts"]
    plots = {
        "price": [
            {"x": times(prices), "y": _series(prices, 1), "name": "mark", "mode": "lines"},
            {"x": times(prices), "y": _series(prices, 2), "name": "mid", "mode": "lines"},
            {"x": times(quotes), "y": _series(quotes, 1), "name": "our bid", "mode": "lines", "line": {"dash": "dot"}},
            {"x": times(quotes), "y": _series(quotes, 2), "name": "our ask", "mode": "lines", "line": {"dash": "dot"}},
            {"x": [iso(f["time"]) for f in buys], "y": [f["price"] for f in buys], "name": "buy fills",
             "mode": "markers", "marker": {"symbol": "triangle-up", "size": 9}},
            {"x": [iso(f["time"]) for f in sells], "y": [f["price"] for f in sells], "name": "sell fills",
             "mode": "markers", "marker": {"symbol": "triangle-down", "size": 9}},
        ],
        "pnl": [{"x": times(equity), "y": [e[i] for e in equity], "name": name, "mode": "lines"}
                for i, name in ((2, "net"), (3, "realized"), (4, "unrealized"), (5, "fees (paid)"), (6, "funding"))],
        "inventory": [{"x": times(equity), "y": _series(equity, 1), "name": "position", "mode": "lines",
                       "line": {"shape": "hv"}}],
        "markouts": [{"x": list(HORIZONS), "y": [(markouts.get(side, {}).get(str(h)) or {}).get("markout_bps")
                                                 for h in HORIZONS], "name": side, "mode": "lines+markers"}
                     for side in ("buy", "sell")],
        "drawdown": [{"x": times(equity), "y": drawdown, "name": "drawdown", "mode": "lines", "fill": "tozeroy"}],
    }
    titles = {"price": "Price, our quotes and fills", "pnl": "PnL split", "inventory": "Inventory",
              "markouts": "Markouts (bps) by horizon (s)", "drawdown": "Drawdown of net PnL"}
    rows = "".join(f"<tr><th>{k}</th><td>{_cell(v)}</td></tr>" for k, v in s.items())
    gaps = document["gaps"]
    gap_note = (f"<p class=warn>{len(gaps)} gap(s) in the recording (no market data for longer than the "
                f"threshold); not filled in: {', '.join(g['from'] + ' → ' + g['to'] for g in gaps[:10])}</p>"
                if gaps else "")
    depth_note = ("<p class=warn>The recording has the top of the book only (book_tops): queue positions are "
                  "approximate.</p>" if document.get("book_depth") == "top" else "")
    divs = "".join(f"<h2>{titles[k]}</h2><div id='{k}' class=plot></div>" for k in plots)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cryptics backtest: {s['instrument']}</title>
<script src="plotly.min.js"></script>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} .plot{{height:380px}} .warn{{color:#a40}}</style>
</head><body>
<h1>Backtest {s['instrument']}</h1>
<p>{document['meta'].get('from', '')} → {document['meta'].get('to', '')}; queue model
{document['meta'].get('queue_model', '')}; latency {document['meta'].get('latency', '')}</p>
{gap_note}{depth_note}
<table>{rows}</table>
{divs}
<script>
const plots = {json.dumps(plots, default=_json_default)};
for (const [id, traces] of Object.entries(plots)) {{
  if (window.Plotly) Plotly.newPlot(id, traces, {{margin: {{t: 10}}}}, {{responsive: true}});
  else document.getElementById(id).textContent = "plotly.min.js is missing next to this page";
}}
</script>
</body></html>
"""


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)
