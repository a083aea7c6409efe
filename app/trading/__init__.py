"""The trading logic: numbers in, decisions out; no socket, no Kafka, no clock of its own.

- quote.py, _quote.pyx, _quote_py.py  the quote core (Cython, and its pure-Python twin)
- quote_params.py                     QuoteParams: every knob of the strategy
- risk.py                             RiskGate: trading state, limits, kill switch
- position.py                         PositionKeeper: the one position per instrument
- ticks.py, _ticks.pyx, _ticks_py.py  tick and size rounding

The quote agent (agents/quoting.py) calls these on the hot path; the backtest calls the
same code (docs/architecture.md#the-hot-path).
"""
