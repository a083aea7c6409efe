"""The mass-quote mode's pre-trade check holds the position limit whatever the order of
events: decisions, the venue reading them, the gateway reading answers and reports, and
takers filling resting quotes, interleaved at random over the model venue of
tests/mass_quote_model.py. The venue's position (the truth, not the gateway's view of it)
never passes the limit."""
from __future__ import annotations

import asyncio

from hypothesis import example, given, settings, strategies as st

from tests.mass_quote_model import LIMIT, market

levels = st.lists(st.tuples(st.integers(90, 110), st.sampled_from([0.1, 0.2, 0.3, 0.4, 0.5])), min_size=0,
                  max_size=3, unique_by=lambda level: level[0])
steps = st.lists(st.one_of(
    st.tuples(st.just("decide"), levels),
    st.tuples(st.just("venue_reads"), st.none()),
    st.tuples(st.just("gateway_reads"), st.none()),
    st.tuples(st.just("taker"), st.tuples(st.integers(0, 5), st.sampled_from([0.25, 0.5, 1.0]))),
), min_size=1, max_size=60)


async def run(start: float, plan: list) -> list[float]:
    venue, harness = market(start)
    positions = []
    for kind, arg in plan:
        if kind == "decide":
            harness.quote(sorted(([float(p), a] for p, a in arg), reverse=True))
        elif kind == "venue_reads" and venue.inbox:
            venue.read_request()
        elif kind == "gateway_reads" and venue.lane:
            await venue.deliver()
        elif kind == "taker":
            venue.fill(*arg)
            positions.append(venue.position)
    return positions + await venue.run_out()


@settings(max_examples=2000, deadline=None, derandomize=True)
@given(st.sampled_from([0.0, 0.2, 0.5, 0.8]), steps)
# A level sent again is kept by the venue unless it filled in part first (then replaced in full).
@example(0.0, [("decide", [(90, 0.3)]), ("venue_reads", None), ("venue_reads", None), ("gateway_reads", None),
               ("gateway_reads", None), ("gateway_reads", None), ("decide", [(90, 0.3), (91, 0.1), (92, 0.5)]),
               ("taker", (0, 0.25)), ("taker", (0, 0.25))])
# The old side fills while the new one is on its way; the next decision comes between the
# answer and the report of the new side's quotes.
@example(0.2, [("decide", [(100, 0.4)]), ("venue_reads", None), ("venue_reads", None), ("gateway_reads", None),
               ("gateway_reads", None), ("gateway_reads", None), ("decide", [(110, 0.4)]), ("taker", (0, 0.25)),
               ("gateway_reads", None), ("venue_reads", None), ("gateway_reads", None), ("decide", [(120, 0.4)]),
               ("taker", (0, 1.0))])
def test_the_venues_position_never_passes_the_limit(start, plan):
    positions = asyncio.run(run(start, plan))
    assert all(position <= LIMIT + 1e-9 for position in positions), positions
