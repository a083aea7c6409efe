"""One backtest or a grid of them: the settings in, a report out.

Contract
- ``Backtest``: the strategy settings (the live ``Settings``' ``quote``, ``risk``, ``gateway``,
  ``trading_state``: the same composition, app/settings.py), the queue model's name, the
  latency model and the fees (the command line passes the live analytics' rates,
  ``CRYPTICS_ANALYTICS_*_FEE_RATE``; the default is the simulated venue's, app/venue/config.py).
- ``run_one(data, backtest, overrides)`` replays ``data`` with ``overrides`` (field name →
  value of ``QuoteParams``, ``RiskLimits`` or ``GatewayParams``) and returns the ``Result``.
- ``parse_grid(["half_spread=10,25,50", "size_skew=0,0.5"])`` → the grid's points (every
  combination, in order); an unknown parameter or a value that is not a number is a
  ``ValueError`` with one line.
- ``run_grid(data, backtest, points, workers)`` runs the points on ``workers`` processes
  (concurrent.futures; the data goes to each worker once) and returns one summary per point,
  in the grid's order. ``run_grid_dask(..., client)`` does the same on a dask.distributed
  cluster (the optional extra ``dask``).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from app.analytics.positions import FeeSchedule
from app.backtest.data import MarketData
from app.backtest.latency import ConstantLatency
from app.backtest.matching import queue_model
from app.backtest.replay import Replay, Result
from app.backtest.report import summary
from app.gateway.params import GatewayParams
from app.trading.quote_params import QuoteParams, parse_sizes
from app.trading.risk import RiskLimits, TradingState
from app.venue.config import VenueConfig

_COMPONENTS = (("quote", QuoteParams), ("risk", RiskLimits), ("gateway", GatewayParams))


def default_fees() -> FeeSchedule:
    venue = VenueConfig()
    return FeeSchedule(venue.maker_fee_rate, venue.taker_fee_rate)


@dataclass(frozen=True)
class Backtest:
    quote: QuoteParams = field(default_factory=QuoteParams)
    risk: RiskLimits = field(default_factory=RiskLimits)
    gateway: GatewayParams = field(default_factory=GatewayParams)
    trading_state: str = "active"
    queue_model: str = "conservative"
    latency: Any = field(default_factory=ConstantLatency)
    fees: FeeSchedule = field(default_factory=default_fees)

    def with_overrides(self, overrides: dict[str, Any]) -> "Backtest":
        changes: dict[str, dict] = {"quote": {}, "risk": {}, "gateway": {}}
        for name, value in overrides.items():
            component = parameter_component(name)
            changes[component][name] = value
        return dataclasses.replace(self, **{c: dataclasses.replace(getattr(self, c), **v)
                                            for c, v in changes.items() if v})


def parameter_component(name: str) -> str:
    for component, cls in _COMPONENTS:
        if name in {f.name for f in dataclasses.fields(cls)}:
            return component
    known = sorted(f.name for _, cls in _COMPONENTS for f in dataclasses.fields(cls))
    raise ValueError(f"unknown grid parameter {name!r}: one of {', '.join(known)}")


def _value(name: str, text: str) -> Any:
    component = parameter_component(name)
    cls = dict(_COMPONENTS)[component]
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    if "Tuple" in str(kind):
        return parse_sizes(text.replace("/", ","))
    if kind in (bool, "bool"):
        return text.lower() in ("1", "true", "yes", "on")
    if kind in (int, "int"):
        return int(text)
    if kind in (str, "str"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"grid parameter {name}: {text!r} is not a number") from None


def parse_grid(specs: Sequence[str]) -> list[dict[str, Any]]:
    axes = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid takes NAME=V1,V2,...; got {spec!r}")
        name = name.strip()
        axes.append([(name, _value(name, v.strip())) for v in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)]


def run_one(data: MarketData, backtest: Backtest, overrides: Optional[dict] = None) -> Result:
    if overrides:
        backtest = backtest.with_overrides(overrides)
    return Replay(data, backtest.quote, backtest.risk, backtest.gateway, queue_model(backtest.queue_model),
                  backtest.latency, backtest.fees, trading_state=TradingState(backtest.trading_state)).run()


# -- grids on local cores: the data is sent to each worker once --------------------------------

_worker_data: Optional[MarketData] = None
_worker_backtest: Optional[Backtest] = None


def _init_worker(data: MarketData, backtest: Backtest) -> None:
    global _worker_data, _worker_backtest
    _worker_data, _worker_backtest = data, backtest


def _run_point(point: dict) -> dict:
    return point_summary(point, run_one(_worker_data, _worker_backtest, point))


def point_summary(point: dict, result: Result) -> dict:
    return {"parameters": point, **summary(result)}


def run_grid(data: MarketData, backtest: Backtest, points: list[dict], workers: Optional[int] = None) -> list[dict]:
    workers = max(1, min(workers or os.cpu_count() or 1, len(points)))
    if workers == 1:
        return [point_summary(p, run_one(data, backtest, p)) for p in points]
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(data, backtest)) as pool:
        return list(pool.map(_run_point, points))


def _dask_point(data: MarketData, backtest: Backtest, point: dict) -> dict:
    return point_summary(point, run_one(data, backtest, point))


def run_grid_dask(data: MarketData, backtest: Backtest, points: list[dict], client) -> list[dict]:
    """The grid on a dask.distributed ``client``'s cluster (the data scattered once)."""
    data_future = client.scatter(data, broadcast=True)
    futures = [client.submit(_dask_point, data_future, backtest, point, pure=False) for point in points]
    return client.gather(futures)
