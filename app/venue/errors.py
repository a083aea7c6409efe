"""The exception a venue call raises to refuse a request.

The codes it carries are Thalex's, written once in app/exchange/protocol.py (the table of
docs/thalex-protocol.md §6.1), where the client and the order gateway read them too.
"""
from __future__ import annotations


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
