"""The local L2 book: snapshot + deltas, and the checks that reveal a gap (random state
sequences: tests/property/test_exchange_book.py).
"""
from __future__ import annotations

import pytest
from hypothesis import strategies as st

from app.exchange.book import BookGap, LocalBook


def snapshot(bids, asks, **extra):
    return {"bid_changes": [[p, a, a] for p, a in bids], "ask_changes": [[p, a, a] for p, a in asks],
            "total_bid_amount": sum(a for _, a in bids), "total_ask_amount": sum(a for _, a in asks),
            "trades": [], "time": 1.0, **extra}


def test_snapshot_then_deltas():
    book = LocalBook("BTC-PERPETUAL")
    book.apply(snapshot([(100, 1.0), (99, 2.0)], [(101, 0.5)]), snapshot=True)
    assert book.best_bid() == (100, 1.0) and book.best_ask() == (101, 0.5)
    book.apply({"bid_changes": [[100, 0, 0], [98, 0.3, 0.3]], "ask_changes": [[101, 0.7, 0.7]],
                "total_bid_amount": 2.3, "total_ask_amount": 0.7, "time": 2.0}, snapshot=False)
    assert book.levels() == ([(99, 2.0), (98, 0.3)], [(101, 0.7)])
    assert book.time == 2.0


def test_a_new_snapshot_replaces_everything():
    book = LocalBook("X")
    book.apply(snapshot([(100, 1.0)], [(101, 1.0)]), snapshot=True)
    book.apply(snapshot([(90, 1.0)], [(95, 2.0)]), snapshot=True)
    assert book.levels() == ([(90, 1.0)], [(95, 2.0)])


def test_a_delta_before_any_snapshot_is_a_gap():
    with pytest.raises(BookGap, match="before any snapshot"):
        LocalBook("X").apply({"bid_changes": [[1, 1, 1]]}, snapshot=False)


def test_a_lost_delta_shows_in_the_totals():
    book = LocalBook("X")
    book.apply(snapshot([(100, 1.0)], [(101, 1.0)]), snapshot=True)
    # the venue added 2.0 at 99 in a message we never saw; this one says the total is 3.5
    with pytest.raises(BookGap, match="bid total"):
        book.apply({"bid_changes": [[98, 0.5, 0.5]], "ask_changes": [], "total_bid_amount": 3.5,
                    "total_ask_amount": 1.0}, snapshot=False)
    assert not book.synced


def test_a_crossed_book_is_a_gap_even_without_totals():
    book = LocalBook("X", full_depth=False)
    book.apply({"bid_changes": [[100, 1, 1]], "ask_changes": [[101, 1, 1]]}, snapshot=True)
    with pytest.raises(BookGap, match="crossed"):
        book.apply({"bid_changes": [[102, 1, 1]], "ask_changes": []}, snapshot=False)


@pytest.mark.parametrize("payload", [
    {"bid_changes": "x"}, {"bid_changes": [[1]]}, {"ask_changes": [["1", 2]]}, {"ask_changes": [[1, -2]]},
    {"bid_changes": [[float("nan"), 1]]}, [1, 2],
])
def test_malformed_payloads_are_type_or_value_errors(payload):
    with pytest.raises((TypeError, ValueError)):
        LocalBook("X").apply(payload, snapshot=True)


levels = st.dictionaries(st.integers(1, 50), st.integers(1, 1000).map(lambda n: n / 1000), max_size=10)


