"""The order gateway's numbers: one frozen config, filled from ``CRYPTICS_GATEWAY_*`` by
app/settings.py. Each field's one-line doc is in its ``metadata["doc"]``."""
from __future__ import annotations

from dataclasses import dataclass

from app.config import SettingError, documented
from app.exchange.protocol import SAFE_LABEL_PATTERN, SAFE_MAX_CLIENT_ORDER_ID


@dataclass(frozen=True)
class GatewayParams:
    """Every number of the order gateway, with its default (``metadata["doc"]`` says what it is)."""

    label: str = documented("P", "label on every order (≤ 32 characters from [A-Za-z0-9_-]); the reference quoter's")
    amend_threshold_ticks: float = documented(5.0, "amend a resting order only when its target moved more than this many ticks")
    order_rate: float = documented(10.0, "venue limit on inserts and amends per second, before cancel-on-disconnect (docs/thalex-protocol.md §6.2)")
    order_rate_cod: float = documented(50.0, "the same limit once cancel-on-disconnect is set (docs/thalex-protocol.md §6.2)")
    cancel_rate: float = documented(1000.0, "venue limit on cancel requests per second (docs/thalex-protocol.md §6.2)")
    rate_headroom: float = documented(0.8, "local buckets run at this fraction of the venue's limits (rate and burst): network jitter can bunch requests up")
    cod_timeout_s: float = documented(6.0, "set_cancel_on_disconnect timeout_secs; the client pings every 5 s (docs/thalex-protocol.md §4.1)")
    reject_post_only: bool = documented(False, "False: the venue moves a crossing post-only order one tick inside the book; True: it cancels it")
    throttle_backoff_s: float = documented(0.1, "pause after the first throttle error (code 3/4); doubles with each further one")
    throttle_backoff_max_s: float = documented(2.0, "longest pause after throttle errors")
    request_timeout_s: float = documented(5.0, "a request unanswered this long counts as failed (its order is resolved on the next reconcile)")
    mass_quote: bool = documented(False, "quote with private/mass_quote: one request per instrument and decision for both sides (an approved market-making account only, docs/thalex-protocol.md §4.7); False: an insert, amend or cancel per order")
    mm_trade_amount: float = documented(1.0, "mass quoting: MM protection's trade_amount per product; once this much has traded on the session's quotes, the venue pulls them all (docs/thalex-protocol.md §4.7)")
    mm_quote_amount: float = documented(1.0, "mass quoting: MM protection's quote_amount, the largest single quote; at least mm_trade_amount")
    mm_refill_delay_s: float = documented(1.0, "mass quoting: after the venue pulled the quotes (protection used up), wait this long before refilling it and quoting again")
    first_client_order_id: int = documented(1, "first client_order_id of the counter")
    finished_orders_kept: int = documented(10_000, "final orders kept for late updates (their acks still get stamps)")
    fills_remembered: int = documented(100_000, "(trade_id, order_id) pairs remembered to drop fills reported twice")

    def __post_init__(self) -> None:
        if not SAFE_LABEL_PATTERN.match(self.label):
            raise SettingError("label", f"gateway label must be 1-32 characters from [A-Za-z0-9_-], got {self.label!r}")
        for name in ("order_rate", "order_rate_cod", "cancel_rate", "cod_timeout_s", "throttle_backoff_s",
                     "throttle_backoff_max_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise SettingError(name, f"gateway {name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.rate_headroom <= 1:
            raise SettingError("rate_headroom", f"gateway rate_headroom must be in (0, 1], got {self.rate_headroom!r}")
        if not 0 < self.mm_trade_amount <= self.mm_quote_amount or self.mm_refill_delay_s < 0:
            raise SettingError("mm_trade_amount", "gateway mm_trade_amount must be in (0, mm_quote_amount] and mm_refill_delay_s >= 0, got "
                             f"{self.mm_trade_amount!r}, {self.mm_quote_amount!r}, {self.mm_refill_delay_s!r}")
        if self.amend_threshold_ticks < 0:
            raise SettingError("amend_threshold_ticks", f"gateway amend_threshold_ticks must be >= 0, got {self.amend_threshold_ticks!r}")
        if not 0 <= self.first_client_order_id <= SAFE_MAX_CLIENT_ORDER_ID:
            raise SettingError("first_client_order_id", "gateway first_client_order_id must be in [0, 2^32)")
        if self.finished_orders_kept < 0 or self.fills_remembered < 1:
            raise SettingError("finished_orders_kept", "gateway finished_orders_kept must be >= 0 and fills_remembered >= 1")
