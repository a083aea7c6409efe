"""The error codes the venue answers with, and the exception that carries one.

Codes and names follow the table in thalex_api.md §6.1 (codes 1 and 4 are
confirmed by the official examples; the rest come from a community table, which
is the best available description). Only the codes the venue actually raises are
listed here.
"""
from __future__ import annotations

ORDER_NOT_FOUND = 1
DUPLICATE_ORDER_ID = 2
THROTTLE_EXCEEDED = 4
UNKNOWN_INSTRUMENT = 5
INVALID_REQUEST = 6
NOT_LOGGED_IN = 7
INVALID_PRICE = 13
INVALID_QUANTITY = 14
PRICE_NOT_ALIGNED = 15
UNKNOWN_PRODUCT = 17
AUTHENTICATION_FAILED = 19
INVALID_PROT_GROUP = 22
PROT_NOT_SET = 23
INVALID_TIME_IN_FORCE = 25
UNKNOWN_METHOD = 31
UNKNOWN_UNDERLYING = 40
PRICE_COLLAR_BREACH = 43
QUOTE_EXCEEDS_PROT_GROUP_SIZE = 44
PERSISTENT_SESSION = 52


class VenueError(Exception):
    """A request the venue refuses; becomes ``{"error": {"code", "message"}}`` on the wire."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message}

    def __repr__(self) -> str:
        return f"VenueError({self.code}, {self.message!r})"
