"""The pure analytics computations: positions and P&L, candles, latency histograms, markouts
and quote quality, each as a small per-key state with its Avro record (schemas/<state>/).

Shared by the Faust analytics agents (agents/analytics.py) and the backtest
(docs/architecture.md#d15-backtests-run-the-live-strategy-code), so both compute the same
numbers. No Faust, no asyncio, no I/O here: inputs are records as fastavro decodes them
(plain dicts), outputs are dicts of the published records.
"""
