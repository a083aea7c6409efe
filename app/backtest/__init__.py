"""Backtests: recorded market data replayed through the live strategy code against an in-process venue.

docs/architecture.md#d15-backtests-run-the-live-strategy-code. The parts, by role:

- ``data``: a recorded range (PostgreSQL or a Parquet dataset) as time-ordered market events, gaps found;
- ``matching``: the in-process venue: the recorded book, our orders' queue positions, fills;
- ``latency``: feed and order latency models (constant, or drawn from recorded D9 samples);
- ``replay``: the replay clock driving the quote core, risk gate and gateway planning; the analytics;
- ``report``: the summary, report.json and report.html;
- ``run``: one backtest or a parameter grid on local cores (or a Dask cluster);
- ``fidelity``: a recorded live session's own orders replayed without the strategy, fills compared.
"""
