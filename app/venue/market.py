"""A market that moves: a seeded index, house liquidity around it, and takers who trade.

Every ``step`` advances simulated time by ``tick_interval``:
1. informed takers, who see the index ``informed_horizon`` seconds ahead, take
   whatever quotes are on the wrong side of that future price (they send IOC limit
   orders at it, so they never pay more than it);
2. the index moves to its next value (geometric Brownian motion plus Poisson
   jumps), the basis (perpetual over index, an Ornstein-Uhlenbeck process) too,
   and the engine recomputes mark and funding;
3. the house account re-quotes its ladder around index × (1 + basis), post-only;
4. noise takers send market orders of random side.
Quotes of any account, a client's included, are in the same book, so a quoter
inside the house ladder gets the noise flow and gets picked off by the informed.

Determinism: all random draws come from one ``random.Random(seed)`` and are made
in a fixed order that never depends on the book, so the index path is a function
of the seed alone and, with no outside orders, so are the public trades.
"""
from __future__ import annotations

import math
import random
from collections import deque

from app.trading.ticks import round_price, round_size
from app.venue.engine import Engine
from app.venue.orders import BUY, SELL

YEAR = 365.25 * 86_400.0
HOUR = 3_600.0

HOUSE_ACCOUNT = "HOUSE"
NOISE_ACCOUNT = "NOISE"
INFORMED_ACCOUNT = "INFORMED"
#: Engine session ids of the simulated participants; client sessions count up from 1.
HOUSE_SESSION = -1
NOISE_SESSION = -2
INFORMED_SESSION = -3


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; the means here are well below 1 per step)."""
    if mean <= 0:
        return 0
    limit = math.exp(-mean)
    count, product = 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class Market:
    """The simulated participants, driving ``engine`` one step at a time."""

    def __init__(self, engine: Engine, now: float = 0.0) -> None:
        self.engine = engine
        self.config = config = engine.config
        self.rng = random.Random(config.seed)
        self.dt = config.tick_interval
        self.underlyings = sorted(engine.underlyings)
        #: (index, basis) from now on: [0] is now, [horizon_steps] what the informed see.
        self.horizon_steps = max(1, round(config.informed_horizon / self.dt))
        self.path: dict[str, deque[tuple[float, float]]] = {
            u: deque([(engine.underlyings[u][0].initial_index, 0.0)]) for u in self.underlyings
        }
        self.steps = 0
        #: Centre of the house's last quotes per instrument (re-quote threshold, side order).
        self.house_index: dict[str, float] = {}
        for account, session in ((HOUSE_ACCOUNT, HOUSE_SESSION), (NOISE_ACCOUNT, NOISE_SESSION),
                                 (INFORMED_ACCOUNT, INFORMED_SESSION)):
            engine.open_session(session, account, quiet=True)
        #: House level size per instrument, fixed at start so unchanged levels keep their place.
        self.house_units = {
            name: max(ins.min_units, round(round_size(config.house_level_usd / ins.initial_index,
                                                      ins.volume_tick_size) / ins.volume_tick_size))
            for name, ins in engine.instruments.items()
        }
        self._extend_path()
        engine.advance(self.index, self.dt, now)
        self._quote_house(now)

    @property
    def index(self) -> dict[str, float]:
        return {u: self.path[u][0][0] for u in self.underlyings}

    def fair_price(self, underlying: str, step: int = 0) -> float:
        """Index × (1 + basis) ``step`` steps from now: where the house centres its quotes."""
        index, basis = self.path[underlying][step]
        return index * (1.0 + basis)

    def _extend_path(self) -> None:
        """Draw (index, basis) values until every path reaches the informed takers' horizon."""
        config = self.config
        sigma = config.volatility * math.sqrt(self.dt / YEAR)
        jump_mean = config.jump_rate * self.dt / HOUR
        decay = 0.5 ** (self.dt / config.basis_halflife)
        basis_shock = config.basis_bps / 10_000.0 * math.sqrt(1.0 - decay * decay)
        for underlying in self.underlyings:
            path = self.path[underlying]
            while len(path) <= self.horizon_steps:
                index, basis = path[-1]
                log_move = sigma * self.rng.gauss(0.0, 1.0) - 0.5 * sigma * sigma
                for _ in range(poisson(self.rng, jump_mean)):
                    log_move += self.rng.gauss(0.0, config.jump_size)
                basis = basis * decay + basis_shock * self.rng.gauss(0.0, 1.0)
                path.append((index * math.exp(log_move), basis))

    def _taker_units(self, ins_name: str, index: float) -> int:
        ins = self.engine.instruments[ins_name]
        amount = self.rng.expovariate(1.0) * self.config.taker_size_usd / index
        return max(ins.min_units, round(round_size(amount, ins.volume_tick_size) / ins.volume_tick_size))

    def step(self, now: float) -> None:
        """Advance the market by one ``tick_interval``; ``now`` stamps what happens."""
        engine = self.engine
        config = self.config
        # Every draw of this step, in a fixed order, before the book is looked at.
        informed: list[tuple[str, int]] = []
        noise: list[tuple[str, int, int]] = []
        for name, ins in engine.instruments.items():
            current = self.path[ins.underlying][0][0]
            for _ in range(poisson(self.rng, config.informed_rate * self.dt)):
                informed.append((name, self._taker_units(name, current)))
            for _ in range(poisson(self.rng, config.noise_rate * self.dt)):
                side = BUY if self.rng.random() < 0.5 else SELL
                noise.append((name, side, self._taker_units(name, current)))

        for name, units in informed:
            ins = engine.instruments[name]
            now_price = self.fair_price(ins.underlying)
            future = self.fair_price(ins.underlying, self.horizon_steps)
            if future == now_price:
                continue
            side = BUY if future > now_price else SELL
            limit = round_price(future, ins.tick_size, -side)  # buy below, sell above the future price
            self._take(INFORMED_ACCOUNT, INFORMED_SESSION, name, side, units, limit, now)

        for underlying in self.underlyings:
            self.path[underlying].popleft()
        self._extend_path()
        self.steps += 1
        engine.advance(self.index, self.dt, now)
        self._quote_house(now)

        for name, side, units in noise:
            self._take(NOISE_ACCOUNT, NOISE_SESSION, name, side, units, None, now)

    def _take(self, account: str, session: int, name: str, side: int, units: int, limit: float | None,
              now: float) -> None:
        ins = self.engine.instruments[name]
        amount = ins.amount(units)
        direction = "buy" if side == BUY else "sell"
        if limit is None:
            self.engine.insert(account, session, instrument_name=name, direction=direction, amount=amount,
                               order_type="market", now=now)
        elif limit > 0:
            self.engine.insert(account, session, instrument_name=name, direction=direction, amount=amount,
                               price=limit, time_in_force="immediate_or_cancel", collar="clamp", now=now)

    def _quote_house(self, now: float) -> None:
        config = self.config
        if config.house_levels <= 0:
            return
        engine = self.engine
        for name, ins in engine.instruments.items():
            index = self.fair_price(ins.underlying)
            units = self.house_units[name]
            last = self.house_index.get(name)
            if last is not None and abs(index - last) < last * config.house_requote_bps / 10_000.0 \
                    and not self._house_level_missing(name):
                continue
            # Move the side the index moves away from first, so the other side's new
            # levels do not meet the house's own stale quotes (post-only would reprice them).
            rising = index >= (last if last is not None else index)
            self.house_index[name] = index
            for side in ((SELL, BUY) if rising else (BUY, SELL)):
                levels = []
                for k in range(config.house_levels):
                    offset = (config.house_spread_bps + k * config.house_step_bps) / 10_000.0
                    price = round_price(index * (1 - side * offset), ins.tick_size, -side)
                    ticks = round(price / ins.tick_size)
                    if ticks > 0 and all(t != ticks for t, _ in levels):
                        levels.append((ticks, units))
                engine.replace_quotes(HOUSE_ACCOUNT, HOUSE_SESSION, ins, side, levels, now=now, post_only=True)

    def _house_level_missing(self, name: str) -> bool:
        """True when a house quote was taken (fully or partly): the house refills at once."""
        units = self.house_units[name]
        quotes = [o for o in self.engine.session_orders.get(HOUSE_SESSION, {}).values()
                  if o.instrument.instrument_name == name]
        return len(quotes) < 2 * self.config.house_levels or any(o.remaining != units for o in quotes)
