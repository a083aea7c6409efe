"""The quote core's properties over random inputs: the Cython module equals its pure-Python twin
(ladders, Avellaneda-Stoikov helpers, the volatility estimator; skipped without the compiled
extension), and on each implementation present the ladder keeps its promises (tick grid,
ordering, no crossing, the position limit, skew direction, the A-S formulas). Examples and
parameter checks: tests/unit/test_quote_core.py.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from app.trading import _quote_py as twin
from app.trading import quote
from app.trading._ticks_py import is_aligned
from app.trading.quote_params import QuoteParams
from tests.unit.test_quote_core import IMPLEMENTATIONS, NAN, TICKS, call, compiled, finite, ladder

SIZE_STEPS = [0.001, 0.01, 0.1, 1.0]


sizes = st.lists(st.floats(min_value=0.0, max_value=3.0, **finite), min_size=0, max_size=6).map(tuple)


def _side_ok(prices, amounts, tick, step, decreasing):
    assert len(prices) == len(amounts)
    for price, amount in zip(prices, amounts):
        assert price > 0 and is_aligned(price, tick), price
        assert amount > 0 and is_aligned(amount, step), amount
    # Counted in whole ticks: a float difference of two large prices is off by an ulp or so.
    ticks = [round(price / tick) for price in prices]
    for near, far in zip(ticks, ticks[1:]):
        assert (near - far if decreasing else far - near) >= 1, prices


@st.composite
def cases(draw, mode=None, post_only=None):
    """One random call: market inputs, instrument and parameters, as compute_ladder's kwargs."""
    tick = draw(st.sampled_from(TICKS))
    fair = draw(st.floats(min_value=1.0, max_value=2e5, **finite))
    limit = draw(st.floats(min_value=0.01, max_value=10.0, **finite))

    def near_book():
        # Absent, or a few hundred ticks around the fair value on the tick grid (crossed books too).
        if draw(st.booleans()):
            return NAN
        return round(fair / tick + draw(st.integers(-300, 300))) * tick

    return dict(
        index=fair,
        mark=fair * draw(st.floats(min_value=0.99, max_value=1.01)),
        best_bid=near_book(),
        best_ask=near_book(),
        position=draw(st.floats(min_value=-1.5, max_value=1.5)) * limit,
        sigma=draw(st.floats(min_value=0.0, max_value=2e-4, **finite)),
        tick_size=tick,
        size_step=draw(st.sampled_from(SIZE_STEPS)),
        bid_sizes=draw(sizes),
        ask_sizes=draw(sizes),
        fair_value_source=draw(st.sampled_from([0, 1, 2])),
        mode=draw(st.sampled_from([0, 1])) if mode is None else mode,
        spread_unit=draw(st.sampled_from([0, 1])),
        half_spread=draw(st.floats(min_value=0.0, max_value=100.0, **finite)),
        level_step=draw(st.floats(min_value=0.0, max_value=50.0, **finite)),
        target_position=draw(st.floats(min_value=-1.0, max_value=1.0)) * limit,
        position_limit=limit,
        price_skew=draw(st.floats(min_value=0.0, max_value=100.0, **finite)),
        size_skew=draw(st.floats(min_value=0.0, max_value=1.0)),
        as_gamma=draw(st.floats(min_value=1e-4, max_value=1.0)),
        as_kappa=draw(st.floats(min_value=1e-3, max_value=10.0)),
        as_horizon=draw(st.floats(min_value=0.0, max_value=600.0)),
        as_inventory_lot=draw(st.floats(min_value=1e-3, max_value=10.0)),
        post_only=draw(st.booleans()) if post_only is None else post_only,
    )


needs_compiled = pytest.mark.skipif(compiled is None, reason="Cython extension not built (no compiler at install time)")


@needs_compiled
@pytest.mark.parametrize("mode", [0, 1], ids=["linear", "avellaneda_stoikov"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_twin_equals_compiled(mode, data):
    case = data.draw(cases(mode=mode))
    assert compiled.compute_ladder is not twin.compute_ladder
    assert call(compiled, case) == call(twin, case)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1.0, max_value=1e6), st.floats(min_value=-10, max_value=10),
       st.floats(min_value=0, max_value=1e-3), st.floats(min_value=1e-4, max_value=1),
       st.floats(min_value=1e-3, max_value=10), st.floats(min_value=0, max_value=3600))
def test_avellaneda_stoikov_helpers_twin_equal(s, q, sigma, gamma, kappa, tau):
    assert compiled.reservation_price(s, q, sigma, gamma, tau) == twin.reservation_price(s, q, sigma, gamma, tau)
    assert compiled.optimal_spread(s, sigma, gamma, kappa, tau) == twin.optimal_spread(s, sigma, gamma, kappa, tau)


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=-1.0, max_value=2e5), st.floats(min_value=0.0, max_value=5.0)),
                min_size=1, max_size=60),
       st.floats(min_value=0.5, max_value=1e4))
@example(steps=[(2.0, 0.5), (5e-324, 1.5)], half_life=1.0)  # the ratio underflows to 0: log would fail
def test_volatility_estimator_twin_equal(steps, half_life):
    # Prices may be non-positive and times may repeat or go back: both must ignore the same samples.
    c, p = compiled.VolatilityEstimator(half_life), twin.VolatilityEstimator(half_life)
    time = 0.0
    for price, dt in steps:
        time += dt - 0.5  # sometimes backwards
        out_c, out_p = c.update(price, time), p.update(price, time)
        assert (out_c == out_p) or (math.isnan(out_c) and math.isnan(out_p))
        assert c.count == p.count


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@given(cents=st.integers(min_value=100_000, max_value=100_000_000))
def test_reference_defaults_give_the_perp_quoter_ladder(impl, cents):
    index = cents / 100
    expected = ((float(math.floor(index - 25)), float(math.floor(index - 30))), (0.2, 0.4),
                (float(math.ceil(index + 25)), float(math.ceil(index + 30))), (0.2, 0.4))
    assert ladder(impl, index=index) == expected
    # A realistic book near the index does not move it, and neither do the mark or sigma.
    assert ladder(impl, index=index, mark=index + 3, best_bid=math.floor(index) - 1,
                  best_ask=math.floor(index) + 1, sigma=1e-4) == expected
    assert quote.Quoter(QuoteParams(), tick_size=1.0, size_step=0.001, position_limit=1.0).ladder(index) \
        == expected  # the live one


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=400, deadline=None)
@given(case=cases())
def test_ladder_invariants(impl, case):
    bids, bid_amounts, asks, ask_amounts = call(impl, case)
    tick, step, limit, position = case["tick_size"], case["size_step"], case["position_limit"], case["position"]
    _side_ok(bids, bid_amounts, tick, step, decreasing=True)
    _side_ok(asks, ask_amounts, tick, step, decreasing=False)
    assert len(bids) <= len(case["bid_sizes"]) and len(asks) <= len(case["ask_sizes"])
    if bids and asks:
        assert bids[0] < asks[0]
    if case["post_only"]:
        if not math.isnan(case["best_ask"]):
            assert all(round(b / tick) <= round(case["best_ask"] / tick) - 1 for b in bids)
        if not math.isnan(case["best_bid"]):
            assert all(round(a / tick) >= round(case["best_bid"] / tick) + 1 for a in asks)
    # Filling a whole side never takes the position past the limit (up to float noise of one
    # addition); a position already past it gets no quotes on that side at all.
    if bid_amounts:
        assert position + sum(bid_amounts) <= limit + 1e-9 * max(1.0, limit)
    if ask_amounts:
        assert position - sum(ask_amounts) >= -limit - 1e-9 * max(1.0, limit)
    if position >= limit:
        assert not bids
    if position <= -limit:
        assert not asks
    # Sizes are never larger than asked, beyond the size skew's factor.
    for amounts, nominal in ((bid_amounts, case["bid_sizes"]), (ask_amounts, case["ask_sizes"])):
        assert sum(amounts) <= sum(nominal) * (1 + case["size_skew"]) + 1e-9


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=200, deadline=None)
@given(case=cases(), beyond=st.floats(min_value=0.0, max_value=2.0))
def test_side_is_empty_at_the_position_limit(impl, case, beyond):
    limit = case["position_limit"]
    long_case = dict(case, position=limit * (1 + beyond))
    short_case = dict(case, position=-limit * (1 + beyond))
    assert call(impl, long_case)[0] == () and call(impl, long_case)[1] == ()
    assert call(impl, short_case)[2] == () and call(impl, short_case)[3] == ()


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("mode", [0, 1], ids=["linear", "avellaneda_stoikov"])
@settings(max_examples=200, deadline=None)
@given(case=cases(post_only=False), a=st.floats(min_value=-0.9, max_value=0.9), b=st.floats(min_value=-0.9, max_value=0.9))
def test_skew_moves_prices_against_the_inventory(impl, mode, case, a, b):
    low, high = sorted((a, b))
    limit = case["position_limit"]
    case = dict(case, mode=mode, target_position=0.0, size_skew=0.0, bid_sizes=(1e-9 + limit,), ask_sizes=(1e-9 + limit,),
                size_step=limit / 20, sigma=max(case["sigma"], 2e-5), price_skew=max(case["price_skew"], 1.0))
    fair = twin.fair_value(case["index"], case["mark"], case["best_bid"], case["best_ask"], case["fair_value_source"])
    assume(math.isfinite(fair))
    short, long = call(impl, dict(case, position=low * limit)), call(impl, dict(case, position=high * limit))
    # At |x| <= 0.9 each side has room for two size steps, but a wide spread on a small price,
    # or a huge Avellaneda-Stoikov shift, can push a side's prices to zero or below.
    assume(short[0] and short[2] and long[0] and long[2])
    # Long -> lower (or equal) prices on both sides.
    assert long[0][0] <= short[0][0] and long[2][0] <= short[2][0]
    # And strictly lower once the centre moves by two ticks or more.
    if mode == 0:
        unit = case["tick_size"] if case["spread_unit"] == 0 else fair * 1e-4
        moved = case["price_skew"] * (high - low) * unit
    else:
        moved = (twin.reservation_price(fair, low * limit / case["as_inventory_lot"], case["sigma"], case["as_gamma"], case["as_horizon"])
                 - twin.reservation_price(fair, high * limit / case["as_inventory_lot"], case["sigma"], case["as_gamma"], case["as_horizon"]))
    if moved >= 2 * case["tick_size"]:
        assert long[0][0] < short[0][0] and long[2][0] < short[2][0]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=300, deadline=None)
@given(s=st.floats(min_value=100.0, max_value=2e5), position=st.floats(min_value=-0.9, max_value=0.9),
       target=st.floats(min_value=-0.5, max_value=0.5), sigma=st.floats(min_value=0.0, max_value=2e-4),
       gamma=st.floats(min_value=1e-3, max_value=1.0), kappa=st.floats(min_value=1e-3, max_value=10.0),
       tau=st.floats(min_value=0.0, max_value=600.0), lot=st.floats(min_value=0.01, max_value=10.0),
       tick=st.sampled_from(TICKS))
def test_avellaneda_stoikov_matches_the_formulas(impl, s, position, target, sigma, gamma, kappa, tau, lot, tick):
    q = (position - target) / lot
    sigma_price = sigma * s
    r = s - q * gamma * sigma_price ** 2 * tau
    delta = gamma * sigma_price ** 2 * tau + 2 / gamma * math.log(1 + gamma / kappa)
    assert impl.reservation_price(s, q, sigma, gamma, tau) == pytest.approx(r, rel=1e-12, abs=1e-9)
    assert impl.optimal_spread(s, sigma, gamma, kappa, tau) == pytest.approx(delta, rel=1e-12)
    bids, _, asks, _ = ladder(impl, index=s, position=position, target_position=target, sigma=sigma, mode=1,
                              as_gamma=gamma, as_kappa=kappa, as_horizon=tau, as_inventory_lot=lot,
                              tick_size=tick, position_limit=10.0)
    assume(r - delta / 2 > 10 * tick)  # both bid levels are above zero
    slack = 1e-9 * max(1.0, abs(r) + delta)
    # Bid = r - delta/2 rounded down to the tick, ask = r + delta/2 rounded up.
    assert r - delta / 2 - tick - slack <= bids[0] <= r - delta / 2 + slack
    assert r + delta / 2 - slack <= asks[0] <= r + delta / 2 + tick + slack
    assert bids[1] <= bids[0] - 5 * tick + slack and asks[1] >= asks[0] + 5 * tick - slack
