"""Every parameter of the simulated Thalex venue, with its default, in one frozen dataclass.

The venue (server, engine, market) reads nothing else: the CLI builds a
``VenueConfig`` from ``CRYPTICS_VENUE_*`` settings, tests and benchmarks build one
directly (usually with ``dataclasses.replace`` on the defaults). Defaults follow
docs/thalex-protocol.md where it gives a number (§5.4 fees, §6.2 message rates, §6.3 ten
seconds' reconnect notice); the market parameters are chosen so that a quoter a few ticks
off the index sees a fill every few seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.config import SettingError


@dataclass(frozen=True)
class VenueConfig:
    """Configuration of one simulated venue.

    Network
        host, port: where the websocket listens (``ws://host:port/ws/api/v2``);
        port 0 picks a free port (``Venue.url`` tells which).

    Authentication
        trusted_keys_dir: folder of PEM public keys named ``<kid>.pem``; a login
        token must be signed by the private half of one of them.
        login_iat_window: how far (s) a token's ``iat`` may be from the venue clock.

    Market (all in simulated seconds; the server advances it every ``tick_interval``)
        seed: seeds every random draw of the market; same seed, same index path.
        tick_interval: length of one market step (s).
        volatility: annualised volatility of the index (0.6 = 60 %/yr).
        jump_rate: index jumps per hour, on average.
        jump_size: standard deviation of a jump, as a fraction of the index.
        noise_rate: uninformed takers per second per instrument, on average.
        informed_rate: informed takers per second per instrument, on average;
            they know the index ``informed_horizon`` seconds ahead and take only
            quotes on the wrong side of it (adverse selection).
        informed_horizon: how far ahead (s) informed takers see the index.
        basis_bps: standard deviation of the perpetual's basis over the index
            (a mean-reverting process the house centres its ladder on); the
            basis is what makes the mark, hence funding, differ from the index.
        basis_halflife: half-life (s) of the basis' mean reversion.
        taker_size_usd: mean notional of one taker order (exponentially distributed).
        house_levels: levels per side the house liquidity account quotes (0: none).
        house_spread_bps: distance of the house's best level from the index.
        house_step_bps: distance between consecutive house levels.
        house_level_usd: notional of each house level.
        house_requote_bps: the house re-quotes when its centre moved this much
            since its last quotes (a real market maker does not chase every tick).
        market_running: advance the market on a timer; False leaves it to
            ``Venue.step_market()`` (tests that want a still market).

    Exchange rules
        maker_fee_rate, taker_fee_rate: fee rates (1 bp / 5 bp, docs/thalex-protocol.md §5.4).
        order_rate, order_rate_cod: matching-engine messages per second per
            connection, before and after ``set_cancel_on_disconnect`` (docs/thalex-protocol.md §6.2).
        cancel_rate: cancel requests per second per connection (docs/thalex-protocol.md §6.2).
        collar_fraction: price collars at mark × (1 ± this) (checks limit prices;
            bounds market orders).
        mark_ema_seconds: time constant of the premium EMA in the mark price (docs/thalex-protocol.md §5.3).
        funding_dampener_bps: premium band counted as zero in the funding rate;
            0 is the documented 24 h basis with no dampener (docs/thalex-protocol.md §5.3, §10).
        margin_rate: required margin as a fraction of position notional (reported,
            not enforced).
        initial_balance: USD cash every new account starts with.
        stp_enabled: honour ``stp_level``/``stp_action`` (off, as for a customer
            without STP configuration, docs/thalex-protocol.md §4.2).

    Sessions and shutdown
        announce_shutdown: on SIGTERM/SIGINT (and ``Venue.stop()``), send the
            ``system`` reconnect notice and wait ``reconnect_lead`` before closing.
        reconnect_lead: seconds between the reconnect notice and the close (docs/thalex-protocol.md §3.7).
        summary_interval: period of ``account.summary`` notifications (s).
        max_outbox: notifications queued for one connection before the venue
            closes it as a slow consumer.
    """

    host: str = "127.0.0.1"
    port: int = 0

    trusted_keys_dir: Path = Path(".cryptics/venue/trusted_keys")
    login_iat_window: float = 30.0

    seed: int = 1
    tick_interval: float = 0.1
    volatility: float = 0.6
    jump_rate: float = 2.0
    jump_size: float = 0.002
    noise_rate: float = 1.0
    informed_rate: float = 0.2
    informed_horizon: float = 5.0
    basis_bps: float = 3.0
    basis_halflife: float = 1800.0
    taker_size_usd: float = 5_000.0
    house_levels: int = 10
    house_spread_bps: float = 3.0
    house_step_bps: float = 1.0
    house_level_usd: float = 50_000.0
    house_requote_bps: float = 0.5
    market_running: bool = True

    maker_fee_rate: float = 0.0001
    taker_fee_rate: float = 0.0005
    order_rate: float = 10.0
    order_rate_cod: float = 50.0
    cancel_rate: float = 1000.0
    collar_fraction: float = 0.05
    mark_ema_seconds: float = 30.0
    funding_dampener_bps: float = 0.0
    margin_rate: float = 0.01
    initial_balance: float = 1_000_000.0
    stp_enabled: bool = False

    announce_shutdown: bool = False
    reconnect_lead: float = 10.0
    summary_interval: float = 1.0
    max_outbox: int = 100_000

    def validate(self) -> None:
        """Raise ValueError naming the first parameter that makes no sense."""
        positive = ("tick_interval", "basis_halflife", "order_rate", "order_rate_cod", "cancel_rate",
                    "taker_size_usd", "house_level_usd", "mark_ema_seconds", "summary_interval",
                    "login_iat_window", "collar_fraction")
        for name in positive:
            if not getattr(self, name) > 0:
                raise SettingError(name, f"venue {name} must be > 0, got {getattr(self, name)!r}")
        non_negative = ("volatility", "jump_rate", "jump_size", "noise_rate", "informed_rate",
                        "informed_horizon", "basis_bps", "house_levels", "house_spread_bps", "house_step_bps",
                        "house_requote_bps", "maker_fee_rate", "taker_fee_rate", "funding_dampener_bps",
                        "margin_rate", "initial_balance", "reconnect_lead", "port")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise SettingError(name, f"venue {name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_outbox < 1:
            raise SettingError("max_outbox", f"venue max_outbox must be >= 1, got {self.max_outbox}")
