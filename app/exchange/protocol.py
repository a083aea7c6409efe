"""Thalex's protocol facts that both ends of the wire need, written once.

The Thalex client and the order gateway read these; the simulated venue (app/venue/)
answers with them. Nothing here is configuration: each name is a fact of the exchange's
API, with its section of docs/thalex-protocol.md.

- error codes (docs/thalex-protocol.md §6.1) and the groups the gateway acts on;
- order statuses (docs/thalex-protocol.md §4.10);
- label and client_order_id rules (docs/thalex-protocol.md §5.5);
- the channel grammar (docs/thalex-protocol.md §1.5, §3, §4.9): delays, private channels, and the names of the
  market-data channels the source subscribes.
"""
from __future__ import annotations

import re

# -- error codes (docs/thalex-protocol.md §6.1: codes 1 and 4 are confirmed by Thalex's own examples, the names of
#    the rest come from a community table, the best description there is) ---------------------

ORDER_NOT_FOUND = 1
DUPLICATE_ORDER_ID = 2
TOO_MANY_PENDING_REQUESTS = 3
THROTTLE_EXCEEDED = 4
UNKNOWN_INSTRUMENT = 5
INVALID_REQUEST = 6
NOT_LOGGED_IN = 7
INVALID_PRICE = 13
INVALID_QUANTITY = 14
PRICE_NOT_ALIGNED = 15
UNKNOWN_PRODUCT = 17
AUTHENTICATION_FAILED = 19
#: A mass quote on a product whose MM protection is used up (INVALID_PROT_GROUP), or was
#: never set (PROT_NOT_SET) (docs/thalex-protocol.md §4.7).
INVALID_PROT_GROUP = 22
PROT_NOT_SET = 23
INSUFFICIENT_MARGIN = 24
INVALID_TIME_IN_FORCE = 25
INSUFFICIENT_FUNDS = 27
UNKNOWN_METHOD = 31
UNKNOWN_UNDERLYING = 40
PRICE_COLLAR_BREACH = 43
QUOTE_EXCEEDS_PROT_GROUP_SIZE = 44
TOO_MANY_OPEN_ORDERS = 49
TOTAL_ORDER_SIZE_TOO_LARGE = 50
PERSISTENT_SESSION = 52
REDUCE_ONLY_MODE = 57
REJECTED_ON_VOLUME_QUOTA = 58

#: Too many pending requests, throttle exceeded: the venue wants us to slow down.
SLOW_DOWN_CODES = frozenset({TOO_MANY_PENDING_REQUESTS, THROTTLE_EXCEEDED})
#: Errors caused by what the request says (unknown instrument, invalid request, price,
#: size, tick, margin, funds, collar, open-order limits, reduce-only mode, volume quota):
#: sending the same request again gets the same answer.
REQUEST_CONTENT_CODES = frozenset({
    UNKNOWN_INSTRUMENT, INVALID_REQUEST, INVALID_PRICE, INVALID_QUANTITY, PRICE_NOT_ALIGNED,
    INSUFFICIENT_MARGIN, INSUFFICIENT_FUNDS, PRICE_COLLAR_BREACH, TOO_MANY_OPEN_ORDERS,
    TOTAL_ORDER_SIZE_TOO_LARGE, REDUCE_ONLY_MODE, REJECTED_ON_VOLUME_QUOTA,
})

# -- order statuses (docs/thalex-protocol.md §4.10) -----------------------------------------------

OPEN = "open"
PARTIALLY_FILLED = "partially_filled"
FILLED = "filled"
CANCELLED = "cancelled"
CANCELLED_PARTIALLY_FILLED = "cancelled_partially_filled"
LIVE_STATUSES = frozenset({OPEN, PARTIALLY_FILLED})
FINAL_STATUSES = frozenset({FILLED, CANCELLED, CANCELLED_PARTIALLY_FILLED})
#: The delete_reason of a post-only order the venue cancels instead of resting it
#: (reject_post_only, or a reprice to a price <= 0, docs/thalex-protocol.md §4.2).
POST_ONLY_CANCEL = "immediate_cancel"

# -- labels and ids (docs/thalex-protocol.md §5.5) ------------------------------------------------

#: What the venue accepts: up to 64 characters from this set (the documented rule).
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9<>|_-]{1,64}$")
#: What we send: the subset both of the documentation's readings allow (32 characters).
SAFE_LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: client_order_id: the API schema allows 0 … 2^64 - 1; the trading docs say below 2^32.
MAX_CLIENT_ORDER_ID = 2**64 - 1
SAFE_MAX_CLIENT_ORDER_ID = 2**32 - 1

# -- channels (docs/thalex-protocol.md §1.5, §3, §4.9) --------------------------------------------

#: Allowed ``<delay>`` values of public channels and their minimum interval in seconds (docs/thalex-protocol.md §3).
DELAYS = {"raw": 0.0, "100ms": 0.1, "200ms": 0.2, "500ms": 0.5, "1000ms": 1.0, "5000ms": 5.0, "60000ms": 60.0}
#: Channel names that need a login and go through private/subscribe start with these (docs/thalex-protocol.md §4.9).
PRIVATE_PREFIXES = ("session.", "account.", "mm.", "user.")
#: The private channels the simulated venue serves.
PRIVATE_CHANNELS = frozenset({
    "session.orders", "account.orders", "account.portfolio", "account.trade_history", "account.summary",
    "session.mm_protection",
})
#: Private channels whose first message carries ``snapshot: true`` (docs/thalex-protocol.md §1.4).
SNAPSHOT_CHANNELS = frozenset({"session.orders", "account.orders", "account.portfolio"})


def is_private(channel: str) -> bool:
    """Whether ``channel`` needs a login (private/subscribe)."""
    return channel.startswith(PRIVATE_PREFIXES)


def ticker_channel(instrument: str, delay: str = "raw") -> str:
    """``ticker.<instrument>.<delay>`` (docs/thalex-protocol.md §3.1)."""
    return f"ticker.{instrument}.{delay}"


def book_channel(instrument: str, grouping: str = "none", levels: str = "all", delay: str = "raw") -> str:
    """``book.<instrument>.<grouping>.<nlevels>.<delay>`` (docs/thalex-protocol.md §3.3); the defaults are the full book, unthrottled."""
    return f"book.{instrument}.{grouping}.{levels}.{delay}"


def price_index_channel(underlying: str) -> str:
    """``price_index.<underlying>`` (docs/thalex-protocol.md §3.5)."""
    return f"price_index.{underlying}"
