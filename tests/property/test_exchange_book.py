"""The local L2 book (app/exchange/book.py): whatever sequence of states the venue's book goes
through, a snapshot and the deltas between them rebuild each state exactly. Gap checks and
examples: tests/unit/test_exchange_book.py.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.exchange.book import LocalBook
from tests.unit.test_exchange_book import levels, snapshot


@settings(max_examples=300)
@given(st.lists(st.tuples(levels, levels), min_size=1, max_size=8))
def test_replaying_diffs_between_states_rebuilds_each_state(states):
    """Whatever sequence of book states the venue goes through, deltas between them
    (the levels that changed, 0 for removed) rebuild each state exactly."""
    book = LocalBook("X", full_depth=True)
    previous_bids: dict = {}
    previous_asks: dict = {}
    for i, (bids, asks) in enumerate(states):
        # keep the two sides apart: bids below 100, asks above
        bids = {p: a for p, a in bids.items()}
        asks = {p + 100: a for p, a in asks.items()}
        def diff(old, new):
            return [[p, new.get(p, 0), new.get(p, 0)] for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]
        payload = {"bid_changes": diff(previous_bids, bids), "ask_changes": diff(previous_asks, asks),
                   "total_bid_amount": sum(bids.values()), "total_ask_amount": sum(asks.values())}
        if i == 0:
            payload = snapshot(list(bids.items()), list(asks.items()))
        book.apply(payload, snapshot=(i == 0))
        assert book.bids == {float(p): a for p, a in bids.items()}
        assert book.asks == {float(p): a for p, a in asks.items()}
        previous_bids, previous_asks = bids, asks
