"""Quote core by example: the reference ladder, the parameters' validation, and where the position
limit is checked; each case on every implementation present. Twin equality and the ladder's
invariants over random inputs: tests/property/test_quote_core.py.
"""
from __future__ import annotations

import dataclasses
import math
import random

import pytest

from app.trading import _quote_py as twin
from app.trading import quote
from app.trading.quote_params import QuoteParams, parse_sizes

try:
    from app.trading import _quote as compiled
except ImportError:  # no compiler at install time
    compiled = None

IMPLEMENTATIONS = [pytest.param(twin, id="python")] + (
    [pytest.param(compiled, id="cython")] if compiled is not None else [])

NAN = math.nan
TICKS = [0.01, 0.1, 0.5, 1.0, 5.0]
# Argument order of compute_ladder after the six market inputs (see app/quote.core_arguments).
PARAM_NAMES = ("tick_size", "size_step", "bid_sizes", "ask_sizes", "fair_value_source", "mode",
               "spread_unit", "half_spread", "level_step", "target_position", "position_limit",
               "price_skew", "size_skew", "as_gamma", "as_kappa", "as_horizon", "as_inventory_lot",
               "post_only")


def ladder(impl, *, index=NAN, mark=NAN, best_bid=NAN, best_ask=NAN, position=0.0, sigma=NAN, **overrides):
    """compute_ladder with the reference defaults (tick 1, step 0.001) and keyword overrides."""
    params = dict(tick_size=1.0, size_step=0.001, bid_sizes=(0.2, 0.4), ask_sizes=(0.2, 0.4),
                  fair_value_source=0, mode=0, spread_unit=0, half_spread=25.0, level_step=5.0,
                  target_position=0.0, position_limit=1.0, price_skew=0.0, size_skew=0.0,
                  as_gamma=0.03, as_kappa=0.1, as_horizon=60.0, as_inventory_lot=1.0, post_only=True)
    unknown = set(overrides) - set(params)
    assert not unknown, unknown
    params.update(overrides)
    return impl.compute_ladder(index, mark, best_bid, best_ask, position, sigma,
                               *(params[name] for name in PARAM_NAMES))


# --- random inputs -------------------------------------------------------------------------

finite = dict(allow_nan=False, allow_infinity=False)


def call(impl, case):
    return ladder(impl, **case)


# --- twin == Cython -------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_volatility_estimator_skips_returns_outside_the_double_range(impl):
    estimator = impl.VolatilityEstimator(1.0)
    estimator.update(2.0, 0.0)
    assert math.isnan(estimator.update(5e-324, 1.0)) and estimator.count == 0  # ratio underflows to 0
    assert estimator.update(2.2, 3.0) > 0 and estimator.count == 1  # a usable return still counts
    tiny = impl.VolatilityEstimator(1.0)
    tiny.update(1e-300, 0.0)
    assert math.isnan(tiny.update(1e10, 1.0)) and tiny.count == 0  # ratio overflows to inf


# --- the reference quoter (docs/thalex-protocol.md §7.1) -------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_reference_ladder_literal(impl):
    assert ladder(impl, index=104916.49) == ((104891.0, 104886.0), (0.2, 0.4), (104942.0, 104947.0), (0.2, 0.4))
    assert ladder(impl, index=95000.0) == ((94975.0, 94970.0), (0.2, 0.4), (95025.0, 95030.0), (0.2, 0.4))
    # ETH: tick 0.1, volume tick 0.01. Bids round down, asks up.
    bids, bid_sizes, asks, ask_sizes = ladder(impl, index=3456.78, tick_size=0.1, size_step=0.01)
    assert bids == pytest.approx((3454.2, 3453.7), abs=1e-9) and asks == pytest.approx((3459.3, 3459.8), abs=1e-9)
    assert bid_sizes == ask_sizes == pytest.approx((0.2, 0.4), abs=1e-12)


def test_wrapper_passes_every_parameter():
    params = QuoteParams(fair_value_source="mark", mode="avellaneda_stoikov", spread_unit="bps",
                         half_spread=3.0, level_step=1.5, bid_sizes=(0.1, 0.2, 0.3), ask_sizes=(0.4,),
                         target_position=0.1, price_skew=2.0, size_skew=0.5,
                         as_gamma=0.05, as_kappa=0.2, as_horizon_seconds=30.0, as_inventory_lot=0.5,
                         post_only=False)
    market = dict(index=50000.0, mark=50010.0, best_bid=49990.0, best_ask=50020.0, position=0.7, sigma=6e-5)
    expected = ladder(quote, tick_size=0.5, size_step=0.01, bid_sizes=(0.1, 0.2, 0.3), ask_sizes=(0.4,),
                      fair_value_source=1, mode=1, spread_unit=1, half_spread=3.0, level_step=1.5,
                      target_position=0.1, position_limit=2.0, price_skew=2.0, size_skew=0.5,
                      as_gamma=0.05, as_kappa=0.2, as_horizon=30.0, as_inventory_lot=0.5, post_only=False,
                      **market)
    got = quote.compute(params, tick_size=0.5, size_step=0.01, position_limit=2.0, **market)
    assert got == expected and got.bid_prices == expected[0] and got.ask_sizes == expected[3]
    assert len(quote.core_arguments(params, 0.5, 0.01, 2.0)) == len(PARAM_NAMES)
    assert quote.Quoter(params, 0.5, 0.01, 2.0).ladder(50000.0, 50010.0, 49990.0, 50020.0, 0.7, 6e-5) == expected
    assert set(quote.FAIR_VALUE_CODES) == {"index", "mark", "mid"}
    assert set(quote.MODE_CODES) == {"linear", "avellaneda_stoikov"} and set(quote.UNIT_CODES) == {"ticks", "bps"}


# --- invariants on random inputs -------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_sizes_are_cut_to_the_room_left(impl):
    # Limit 1.0, long 0.7: 0.3 left to buy -> 0.2 then 0.1; asks may sell 1.7 -> both full.
    assert ladder(impl, index=1000.0, position=0.7)[1] == pytest.approx((0.2, 0.1), abs=1e-12)
    assert ladder(impl, index=1000.0, position=0.7)[3] == (0.2, 0.4)
    # Short 0.95: 0.05 left to sell, on the first level only; less than one step left -> empty.
    assert ladder(impl, index=1000.0, position=-0.95)[3] == pytest.approx((0.05,), abs=1e-12)
    assert ladder(impl, index=1000.0, position=-0.9995)[2:] == ((), ())


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_size_skew_leans_against_the_inventory(impl):
    bids, bid_amounts, asks, ask_amounts = ladder(impl, index=1000.0, position=0.5, size_skew=0.5, position_limit=2.0)
    # x = 0.25: bids x0.875, asks x1.125, rounded down to 0.001.
    assert bid_amounts == pytest.approx((0.175, 0.35), abs=1e-12)
    assert ask_amounts == pytest.approx((0.225, 0.45), abs=1e-12)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_missing_data_pulls_the_quotes(impl):
    empty = ((), (), (), ())
    assert ladder(impl, index=NAN) == empty
    assert ladder(impl, index=0.0) == empty
    assert ladder(impl, index=1000.0, position=NAN) == empty
    assert ladder(impl, index=1000.0, fair_value_source=2, best_bid=999.0) == empty  # mid needs both sides
    assert ladder(impl, index=1000.0, mode=1, sigma=NAN) == empty
    assert ladder(impl, index=1000.0, mode=0, sigma=NAN) != empty  # linear mode does not use sigma
    assert ladder(impl, index=NAN, fair_value_source=2, best_bid=999.0, best_ask=1001.0)[0] == (975.0, 970.0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_post_only_clamps_to_the_book(impl):
    # Index 1000 but the book trades at 960/961: bids stay below 961, one tick apart when squeezed.
    bids, _, asks, _ = ladder(impl, index=1000.0, best_bid=960.0, best_ask=961.0, half_spread=2.0, level_step=0.5)
    assert bids == (960.0, 959.0) and asks == (1002.0, 1003.0)
    bids, _, asks, _ = ladder(impl, index=1000.0, best_bid=960.0, best_ask=961.0, half_spread=2.0, post_only=False)
    assert bids == (998.0, 993.0)
    # A zero spread on a price on the grid: own bid and ask still one tick apart.
    bids, _, asks, _ = ladder(impl, index=1000.0, half_spread=0.0, level_step=0.0)
    assert bids == (1000.0, 999.0) and asks == (1001.0, 1002.0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bps_unit(impl):
    # 10 bps of 20000 = 20 ticks of 1.0; step 2.5 bps = 5 ticks.
    assert ladder(impl, index=20000.0, spread_unit=1, half_spread=10.0, level_step=2.5)[0::2] == (
        (19980.0, 19975.0), (20020.0, 20025.0))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_core_rejects_bad_numbers(impl):
    for bad in (dict(tick_size=0.0), dict(size_step=-1.0), dict(position_limit=0.0), dict(position_limit=math.inf),
                dict(fair_value_source=7), dict(mode=5), dict(spread_unit=9), dict(mode=1, as_gamma=0.0),
                dict(mode=1, as_inventory_lot=0.0), dict(bid_sizes=(0.1,) * (twin.MAX_LEVELS_PER_SIDE + 1))):
        with pytest.raises(ValueError):
            ladder(impl, index=1000.0, sigma=1e-5, **bad)


# --- volatility estimator ------------------------------------------------------------------

def gbm_path(sigma, seconds, dt, seed, drift=0.0, irregular=False):
    rng = random.Random(seed)
    price, time = 50000.0, 0.0
    out = [(time, price)]
    while time < seconds:
        step = rng.expovariate(1 / dt) if irregular else dt
        time += step
        price *= math.exp((drift - sigma ** 2 / 2) * step + sigma * math.sqrt(step) * rng.gauss(0, 1))
        out.append((time, price))
    return out


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("sigma,irregular", [(5e-5, False), (3e-4, False), (1e-4, True)])
def test_volatility_estimator_converges_on_gbm(impl, sigma, irregular):
    estimator = impl.VolatilityEstimator(600.0)
    estimate = NAN
    for time, price in gbm_path(sigma, 20_000, 1.0, seed=11, drift=1e-6, irregular=irregular):
        estimate = estimator.update(price, time)
    # ~1,700 effective samples: relative error of sigma about 2%; 10% is several standard errors.
    assert estimate == pytest.approx(sigma, rel=0.10)
    assert estimator.sigma == estimate and estimator.count > 15_000


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_volatility_estimator_edges(impl):
    estimator = impl.VolatilityEstimator(60.0)
    assert math.isnan(estimator.update(100.0, 0.0))  # one price: no return yet
    assert math.isnan(estimator.update(101.0, 0.0))  # same time: ignored
    assert math.isnan(estimator.update(-5.0, 1.0)) and math.isnan(estimator.update(NAN, 1.0))
    first = estimator.update(101.0, 2.0)
    assert first == pytest.approx(abs(math.log(1.01)) / math.sqrt(2.0), rel=1e-12)  # bias-corrected: no pull to 0
    assert estimator.count == 1 and estimator.last_price == 101.0 and estimator.last_time == 2.0
    assert estimator.update(101.0, 3.0) < first  # a flat second lowers it
    with pytest.raises(ValueError):
        impl.VolatilityEstimator(0.0)
    assert quote.volatility_estimator(QuoteParams(volatility_half_life_seconds=12.0)).half_life_seconds == 12.0


# --- parameters ----------------------------------------------------------------------------

def test_params_defaults_document_every_field():
    params = QuoteParams()
    assert (params.half_spread, params.level_step, params.bid_sizes, params.ask_sizes) == (25.0, 5.0, (0.2, 0.4), (0.2, 0.4))
    assert params.fair_value_source == "index"
    # Owned elsewhere: the position limit by the risk limits, the amend threshold by the gateway.
    assert {"position_limit", "amend_threshold_ticks"}.isdisjoint(f.name for f in dataclasses.fields(QuoteParams))
    assert params.price_skew == 0.0 and params.size_skew == 0.0
    for f in dataclasses.fields(QuoteParams):
        assert f.metadata.get("doc"), f"{f.name} has no doc"
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.half_spread = 1.0  # type: ignore[misc]
    assert QuoteParams(bid_sizes=[0.1, 0.2]).bid_sizes == (0.1, 0.2)
    assert parse_sizes("0.2, 0.4") == (0.2, 0.4) and parse_sizes("") == ()
    with pytest.raises(ValueError, match="comma-separated"):
        parse_sizes("0.2;0.4")


@pytest.mark.parametrize("overrides,message", [
    (dict(fair_value_source="last"), "fair_value_source"),
    (dict(mode="as"), "mode"),
    (dict(spread_unit="pips"), "spread_unit"),
    (dict(half_spread=-1.0), "half_spread"),
    (dict(level_step=math.nan), "level_step"),
    (dict(bid_sizes=(0.2, 0.0)), "bid_sizes"),
    (dict(ask_sizes="0.2,0.4"), "ask_sizes"),
    (dict(bid_sizes=(), ask_sizes=()), "both empty"),
    (dict(bid_sizes=(0.1,) * 65), "at most 64"),
    (dict(target_position=math.nan), "target_position"),
    (dict(price_skew=-1.0), "price_skew"),
    (dict(size_skew=1.5), "size_skew"),
    (dict(post_only=1), "post_only"),
    (dict(as_gamma=0.0), "as_gamma"),
    (dict(as_kappa=-1.0), "as_kappa"),
    (dict(as_horizon_seconds=-1.0), "as_horizon_seconds"),
    (dict(as_inventory_lot=0.0), "as_inventory_lot"),
    (dict(volatility_half_life_seconds=0.0), "volatility_half_life_seconds"),
])
def test_params_validation_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        QuoteParams(**overrides)


@pytest.mark.parametrize("params,limit,message", [
    (QuoteParams(), 0.0, "position_limit"),
    (QuoteParams(), -1.0, "position_limit"),
    (QuoteParams(), math.inf, "position_limit"),
    (QuoteParams(), True, "position_limit"),
    (QuoteParams(target_position=2.0), 1.0, "target_position"),
    (QuoteParams(target_position=-1.5), 1.0, "target_position"),
])
def test_the_position_limit_is_checked_where_the_core_gets_it(params, limit, message):
    # The limit is the risk gate's (RiskLimits.max_position), handed in by whoever builds the Quoter.
    with pytest.raises(ValueError, match=message):
        quote.Quoter(params, 1.0, 0.001, limit)
    with pytest.raises(ValueError, match=message):
        quote.compute(params, tick_size=1.0, size_step=0.001, position_limit=limit, index=1000.0)


def test_a_target_on_the_limit_is_within_it():
    quoter = quote.Quoter(QuoteParams(target_position=-1.0), 1.0, 0.001, 1.0)
    assert quoter.position_limit == 1.0 and quoter.ladder(1000.0)[0]
