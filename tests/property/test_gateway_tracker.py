"""The order tracker's live orders (app/gateway/tracker.py ``live``), read from the level slots,
are exactly the tracked orders not known to be final, whatever the venue reports in whatever
order: fills, cancels, stale reports, refusals, lost sessions. Examples of each rule:
tests/unit/test_gateway_tracker.py."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.gateway.tracker import GONE, REJECTED
from tests.unit.test_gateway_tracker import BTC, Setup, status

steps = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(["buy", "sell"]), st.integers(0, 2)),
    st.tuples(st.just("report"), st.integers(1, 12),
              st.sampled_from(["open", "partially_filled", "filled", "cancelled", "cancelled_partially_filled"]),
              st.sampled_from([0.0, 0.1, 0.2])),
    st.tuples(st.just("give_up"), st.integers(1, 12), st.sampled_from([GONE, REJECTED])),
    st.tuples(st.just("lose_session")),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_live_orders_are_the_slots(script):
    s = Setup(finished_orders_kept=3)  # a small memory, so finished orders are also dropped
    coids = iter(range(1, 1000))
    for step in script:
        if step[0] == "insert":
            _, direction, level = step
            if level not in s.tracker.slots.get((BTC, direction), {}):  # the gateway inserts only there
                s.order(next(coids), direction=direction, level=level)
        elif step[0] == "report":
            _, coid, state, filled = step
            order = s.tracker.orders.get(coid)
            if order is not None:
                s.tracker.on_status(status(coid, order_id=f"o{coid}", status=state, direction=order.direction,
                                           filled=filled, fills=[(f"t{coid}-{filled}", filled)] if filled else ()))
        elif step[0] == "give_up":
            _, coid, final_state = step
            order = s.tracker.orders.get(coid)
            if order is not None:
                s.tracker.finish(order, final_state)
        else:
            s.tracker.session_lost()
        scanned = {id(o) for o in s.tracker.orders.values() if o.instrument == BTC and o.live}
        assert {id(o) for o in s.tracker.live(BTC)} == scanned
