"""What the engine reports: one record per thing that happened during a call.

The engine's roles (matching.py, mass_quotes.py) append these to ``Engine.events``; after
every request and every market step the server's publishing (publishing.py) drains them
with ``Engine.take_events()`` and turns them into notifications: order updates and trades
on the private channels, prints on the public ones (docs/thalex-protocol.md §3, §4.9).
"""
from __future__ import annotations

from typing import NamedTuple


class OrderEvent(NamedTuple):
    """An order changed; ``status`` is the OrderStatus to publish."""
    account: str
    session: int
    status: dict


class TradeEvent(NamedTuple):
    """A public print. ``direction`` is the taker's side."""
    instrument: str
    price: float
    amount: float
    direction: str
    time: float


class AccountTradeEvent(NamedTuple):
    """A Trade record (docs/thalex-protocol.md §4.11) for one account's side of a print."""
    account: str
    trade: dict


class PositionEvent(NamedTuple):
    """An account's position in an instrument changed (a new account.portfolio line)."""
    account: str
    instrument: str


class ProtectionEvent(NamedTuple):
    """A session.mm_protection item (docs/thalex-protocol.md §4.7)."""
    account: str
    session: int
    product: str
    remaining_amount: float
    reason: str
