"""The dashboards' queries as Grafana would send them: every panel's targets read from the
committed JSON (grafana/dashboards/*.json), with Grafana's PostgreSQL macros and the template
variables expanded the way Grafana 11 expands them.

PostgreSQL macros (Grafana's postgres datasource, its ``macros.go``):
- ``$__timeFilter(c)`` → ``c BETWEEN '<from>' AND '<to>'`` (RFC 3339, UTC);
- ``$__timeFrom()`` / ``$__timeTo()`` → ``'<from>'`` / ``'<to>'``;
- ``$__unixEpochFilter(c)`` → ``c >= <from s> AND c <= <to s>``;
- ``$__timeGroup(c, 1m)`` → ``floor(extract(epoch from c)/60)*60``, or, on a datasource with
  TimescaleDB on, ``time_bucket('60s', c)``; ``$__timeGroupAlias`` adds ``AS "time"``;
- ``$__interval`` → the panel's interval (``1m``), substituted before the macros.
Template variables: a multi-value variable in SQL becomes a comma-separated list of quoted
literals; in PromQL a regex alternation ``(a|b)`` of the regex-escaped values.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "grafana" / "dashboards"


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    panel_type: str
    ref_id: str
    datasource: str  # the datasource's uid
    query: str  # rawSql or expr
    format: str

    @property
    def name(self) -> str:
        return f"{self.dashboard}/{self.panel}/{self.ref_id}"


def dashboards() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def targets() -> Iterator[Target]:
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                uid = (target.get("datasource") or panel["datasource"])["uid"]
                yield Target(name, panel["title"], panel["type"], target["refId"], uid,
                             target.get("rawSql") or target.get("expr") or "", target.get("format", "time_series"))


# -- expansion ---------------------------------------------------------------------------------------


_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(text: str) -> float:
    match = _DURATION.match(text.strip().strip("'\""))
    if not match:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _arguments(text: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose '(' is at ``start``, and the index after
    its ')'. Nested parentheses stay inside their argument."""
    depth, current, out = 0, "", []
    for i in range(start + 1, len(text)):
        char = text[i]
        if char == ")" and depth == 0:
            out.append(current.strip())
            return [a for a in out if a], i + 1
        if char == "," and depth == 0:
            out.append(current.strip())
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    raise ValueError(f"unclosed macro call: {text[start:start + 40]!r}")


def expand_sql(sql: str, start: datetime, end: datetime, variables: dict[str, list[str]],
               interval: str = "1m", timescaledb: bool = False) -> str:
    """``sql`` with the macros and variables expanded, as Grafana's PostgreSQL datasource does."""
    text = sql.replace("$__interval_ms", str(int(interval_seconds(interval) * 1000)))
    text = text.replace("$__interval", interval)
    for name in sorted(variables, key=len, reverse=True):
        listed = ",".join("'" + value.replace("'", "''") + "'" for value in variables[name])
        text = text.replace("${" + name + "}", listed).replace("$" + name, listed)
    out, i = [], 0
    macro = re.compile(r"\$__(timeFilter|timeFrom|timeTo|unixEpochFilter|timeGroupAlias|timeGroup)\(")
    while True:
        match = macro.search(text, i)
        if not match:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:match.start()])
        args, i = _arguments(text, match.end() - 1)
        name = match.group(1)
        if name == "timeFilter":
            out.append(f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'")
        elif name == "timeFrom":
            out.append(f"'{_rfc3339(start)}'")
        elif name == "timeTo":
            out.append(f"'{_rfc3339(end)}'")
        elif name == "unixEpochFilter":
            out.append(f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}")
        else:
            if len(args) < 2:
                raise ValueError(f"$__{name} needs a column and an interval: {args}")
            seconds = interval_seconds(args[1])
            group = (f"time_bucket('{seconds:g}s', {args[0]})" if timescaledb
                     else f"floor(extract(epoch from {args[0]})/{seconds:g})*{seconds:g}")
            out.append(group + (' AS "time"' if name == "timeGroupAlias" else ""))


#: What Grafana escapes in a value put into a PromQL regex (two backslashes: one for the regex,
#: one for the PromQL string).
_PROMQL_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}])")


def expand_promql(expr: str, variables: dict[str, list[str]], rate_interval: str) -> str:
    text = expr.replace("$__rate_interval", rate_interval)
    for name in sorted(variables, key=len, reverse=True):
        values = variables[name]
        escaped = [_PROMQL_REGEX_SPECIAL.sub(r"\\\\\1", v) for v in values]
        regex = escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        text = text.replace("${" + name + "}", regex).replace("$" + name, regex)
    if "$" in text:
        raise ValueError(f"an unexpanded variable is left in {text!r}")
    return text
