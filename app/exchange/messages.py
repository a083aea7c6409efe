"""One websocket message from Thalex → a typed message, or a ProtocolError saying why not.

Thalex frames three kinds of message (docs/thalex-protocol.md §1.3–1.4):
- notification: ``{"channel_name": str, "notification": any, "snapshot": true?}``
- result:       ``{"id": id, "result": any}``
- error:        ``{"id": id|null, "error": {"code": int, "message": str}}``
and routes them in that order: a message with ``channel_name`` is a notification,
else one with ``result`` is a result, else it is an error.

Pure: no I/O. Everything the venue sends goes through ``parse``, so it is what the
fuzz test drives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import orjson


class ProtocolError(ValueError):
    """A message that is not valid Thalex JSON-RPC; the text says what is wrong."""


@dataclass(frozen=True, slots=True)
class Notification:
    channel: str
    payload: Any
    snapshot: bool


@dataclass(frozen=True, slots=True)
class Result:
    id: Any
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReply:
    id: Any
    code: int
    message: str


Message = Union[Notification, Result, ErrorReply]


def _preview(raw: Union[str, bytes], limit: int = 120) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "…"


def parse(raw: Union[str, bytes]) -> Message:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON ({exc}): {_preview(raw)!r}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"expected a JSON object, got {type(msg).__name__}: {_preview(raw)!r}")

    if "channel_name" in msg:
        channel = msg["channel_name"]
        if not isinstance(channel, str) or not channel:
            raise ProtocolError(f"channel_name must be a non-empty string: {_preview(raw)!r}")
        if "notification" not in msg:
            raise ProtocolError(f"notification on {channel} has no 'notification' field")
        # `snapshot` is present only when true (docs/thalex-protocol.md §1.4); anything else is not a snapshot.
        return Notification(channel, msg["notification"], msg.get("snapshot") is True)

    if "result" in msg:
        return Result(msg.get("id"), msg["result"])

    if "error" in msg:
        error = msg["error"]
        if not isinstance(error, dict):
            raise ProtocolError(f"'error' must be an object: {_preview(raw)!r}")
        code = error.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            raise ProtocolError(f"error code must be an integer: {_preview(raw)!r}")
        message = error.get("message")
        return ErrorReply(msg.get("id"), code, message if isinstance(message, str) else "")

    raise ProtocolError(f"neither notification, result nor error: {_preview(raw)!r}")


def request(method: str, params: Optional[dict], request_id: int) -> bytes:
    """A request frame. ``params`` is mandatory on the wire: ``{}`` when there are none (docs/thalex-protocol.md §1.2)."""
    return orjson.dumps({"method": method, "params": params if params is not None else {}, "id": request_id})
