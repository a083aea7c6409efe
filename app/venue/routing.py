"""The venue's JSON-RPC: the method table and the handlers behind it (docs/thalex-protocol.md §1, §4).

``Routing`` builds on publishing.py (subscriptions are handled there) and server.py builds
on it. ``_handle`` takes one request off a connection, in arrival order:
1. parse it; find the method (UNKNOWN_METHOD otherwise); params must be an object;
2. private methods need a login (NOT_LOGGED_IN);
3. orders and their cancels are timed by the latency probe (latency.py), from the read
   that brought them in, and take a token from the connection's order or cancel bucket
   (THROTTLE_EXCEEDED, docs/thalex-protocol.md §6.2);
4. the handler turns the params into an engine call; its result is the reply, a
   ``VenueError`` the error reply;
5. work queued for after the reply (subscription snapshots) runs, then the venue
   publishes what the engine did.
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional

import orjson

from app.exchange.protocol import INVALID_REQUEST, NOT_LOGGED_IN, PERSISTENT_SESSION, THROTTLE_EXCEEDED, UNKNOWN_METHOD
from app.venue.auth import Authenticator, default_account
from app.venue.config import VenueConfig
from app.venue.engine import Engine
from app.venue.errors import VenueError
from app.venue.latency import LatencyProbe
from app.venue.publishing import Publishing
from app.venue.transport import Connection

API_VERSION = "2.55.0"
ACCOUNT_PATTERN = re.compile(r"^A[0-9]{9}$")
#: Parameters an order entry passes on to the engine (docs/thalex-protocol.md §4.2); others are ignored.
INSERT_PARAMS = ("instrument_name", "direction", "amount", "price", "order_type", "time_in_force", "post_only",
                 "reject_post_only", "reduce_only", "collar", "label", "client_order_id", "stp_level", "stp_action")


def _channels(params: dict) -> list:
    channels = params.get("channels")
    if not isinstance(channels, list):
        raise VenueError(INVALID_REQUEST, "channels must be a list of channel names")
    return channels


class Routing(Publishing):
    """JSON-RPC requests to engine calls, replies and errors."""

    def __init__(self, engine: Engine, config: VenueConfig, auth: Authenticator, latency: LatencyProbe) -> None:
        super().__init__(engine)
        self.config = config
        self.auth = auth
        self.latency = latency
        self.methods: dict[str, tuple[Callable[[Connection, dict], Any], bool, Optional[str]]] = {
            # name: (handler, needs login, rate bucket)
            "public/login": (self._login, False, None),
            "public/instruments": (self._instruments, False, None),
            "public/instrument": (self._instrument, False, None),
            "public/ticker": (self._ticker, False, None),
            "public/index": (self._index, False, None),
            "public/book": (self._book, False, None),
            "public/system_info": (self._system_info, False, None),
            "public/subscribe": (self._public_subscribe, False, None),
            "private/subscribe": (self._private_subscribe, True, None),
            "unsubscribe": (self._unsubscribe, False, None),
            "public/unsubscribe": (self._unsubscribe, False, None),
            "private/unsubscribe": (self._unsubscribe, False, None),
            "private/insert": (self._insert, True, "order"),
            "private/buy": (self._buy, True, "order"),
            "private/sell": (self._sell, True, "order"),
            "private/amend": (self._amend, True, "order"),
            "private/mass_quote": (self._mass_quote, True, "order"),
            "private/cancel": (self._cancel, True, "cancel"),
            "private/cancel_all": (self._cancel_all, True, "cancel"),
            "private/cancel_session": (self._cancel_session, True, "cancel"),
            "private/cancel_mass_quote": (self._cancel_mass_quote, True, "cancel"),
            "private/set_cancel_on_disconnect": (self._set_cancel_on_disconnect, True, None),
            "private/set_mm_protection": (self._set_mm_protection, True, None),
            "private/open_orders": (self._open_orders, True, None),
            "private/portfolio": (self._portfolio, True, None),
            "private/account_summary": (self._account_summary, True, None),
            "private/trade_history": (self._trade_history, True, None),
            "venue/latency": (self._latency, False, None),
        }
        #: Methods whose arrival the latency probe times (orders and their cancels).
        self.probed = {"private/insert", "private/buy", "private/sell", "private/amend", "private/mass_quote",
                       "private/cancel"}

    def _handle(self, conn: Connection, data: bytes, received: float) -> None:
        """Answer one request that arrived (was read from the socket) at ``received``."""
        try:
            request = orjson.loads(data)
        except orjson.JSONDecodeError:
            conn.fail(None, VenueError(INVALID_REQUEST, "message is not valid JSON"))
            return
        if not isinstance(request, dict):
            conn.fail(None, VenueError(INVALID_REQUEST, "a request is a JSON object"))
            return
        request_id = request.get("id")
        method = request.get("method")
        try:
            if not isinstance(method, str):
                raise VenueError(INVALID_REQUEST, "method must be a string")
            entry = self.methods.get(method)
            if entry is None:
                raise VenueError(UNKNOWN_METHOD, f"unknown method {method!r}")
            handler, private, bucket = entry
            params = request.get("params")
            if not isinstance(params, dict):
                raise VenueError(INVALID_REQUEST, "params is required and must be an object ({} for none)")
            if private and conn.account is None:
                raise VenueError(NOT_LOGGED_IN, "log in first (public/login)")
            if method in self.probed and conn.last_md_sent is not None:
                self.latency.record(method, received - conn.last_md_sent)
            if bucket == "order" and not conn.order_bucket.take(received):
                raise VenueError(THROTTLE_EXCEEDED, "matching-engine message rate exceeded")
            if bucket == "cancel" and not conn.cancel_bucket.take(received):
                raise VenueError(THROTTLE_EXCEEDED, "cancel rate exceeded")
            result = handler(conn, params)
        except VenueError as exc:
            conn.fail(request_id, exc)
        else:
            conn.reply(request_id, result)
        finally:
            conn.after_reply, after = [], conn.after_reply
            for work in after:
                work()
            self.publish()

    # -- subscriptions -----------------------------------------------------------------------

    def _public_subscribe(self, conn: Connection, params: dict) -> list[str]:
        return self.subscribe(conn, _channels(params), private_allowed=False)

    def _private_subscribe(self, conn: Connection, params: dict) -> list[str]:
        return self.subscribe(conn, _channels(params), private_allowed=True)

    def _unsubscribe(self, conn: Connection, params: dict) -> list[str]:
        return self.unsubscribe(conn, _channels(params))

    # -- public methods ----------------------------------------------------------------------

    def _login(self, conn: Connection, params: dict) -> dict:
        if conn.account is not None:
            raise VenueError(INVALID_REQUEST, "this connection is already logged in")
        kid = self.auth.verify(params.get("token"), time.time())
        account = params.get("account")
        if account is None:
            account = default_account(kid)
        elif not isinstance(account, str) or not ACCOUNT_PATTERN.match(account):
            raise VenueError(INVALID_REQUEST, "account must be an account number such as A123456789")
        conn.account = account
        conn.kid = kid
        self.engine.open_session(conn.session, account, customer=kid)
        self.account_connections[account].add(conn)
        return {"account_number": account}

    def _instruments(self, conn: Connection, params: dict) -> list[dict]:
        underlying = params.get("underlying")
        kind = params.get("instrument_type")
        if kind is not None and kind not in ("futures", "options", "future_rolls"):
            raise VenueError(INVALID_REQUEST, "instrument_type must be futures, options or future_rolls")
        out = []
        for ins in self.engine.instruments.values():
            if underlying is not None and ins.underlying != underlying:
                continue
            if kind is not None and kind != "futures":
                continue  # only perpetuals are listed; they count as futures
            if params.get("expiry_date") is not None:
                continue  # perpetuals have no expiry date
            out.append(ins.to_json())
        return out

    def _instrument(self, conn: Connection, params: dict) -> dict:
        return self.engine.instrument(params.get("instrument_name")).to_json()

    def _ticker(self, conn: Connection, params: dict) -> dict:
        return self.engine.ticker(self.engine.instrument(params.get("instrument_name")).instrument_name)

    def _index(self, conn: Connection, params: dict) -> dict:
        return self.engine.index(params.get("underlying"))

    def _book(self, conn: Connection, params: dict) -> dict:
        return self.engine.public_book(self.engine.instrument(params.get("instrument_name")).instrument_name)

    def _system_info(self, conn: Connection, params: dict) -> dict:
        # "testnet": the closest of the two documented environments; "venue" says what it really is.
        return {"environment": "testnet", "api_version": API_VERSION, "banners": [], "venue": "cryptics-simulated"}

    def _latency(self, conn: Connection, params: dict) -> dict:
        return self.latency_report(reset=params.get("reset") is True)

    def latency_report(self, reset: bool) -> dict:
        """The probe's statistics (latency.py); with ``reset``, it starts over afterwards."""
        stats = self.latency.stats()
        if reset:
            self.latency.reset()
        return stats

    # -- private methods ---------------------------------------------------------------------

    def _order_fields(self, params: dict) -> dict:
        if "legs" in params:
            raise VenueError(INVALID_REQUEST, "combination orders are not supported: no combinations are listed")
        return {name: params[name] for name in INSERT_PARAMS if name in params}

    def _insert(self, conn: Connection, params: dict) -> dict:
        fields = self._order_fields(params)
        if "direction" not in fields:
            raise VenueError(INVALID_REQUEST, "direction is required")
        if "amount" not in fields:
            raise VenueError(INVALID_REQUEST, "amount is required")
        return self.engine.insert(conn.account, conn.session, now=time.time(), **fields)  # type: ignore[arg-type]

    def _buy(self, conn: Connection, params: dict) -> dict:
        return self._insert(conn, {**params, "direction": "buy"})

    def _sell(self, conn: Connection, params: dict) -> dict:
        return self._insert(conn, {**params, "direction": "sell"})

    def _amend(self, conn: Connection, params: dict) -> dict:
        return self.engine.amend(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                 order_id=params.get("order_id"), client_order_id=params.get("client_order_id"),
                                 price=params.get("price"), amount=params.get("amount"),
                                 collar=params.get("collar"))

    def _cancel(self, conn: Connection, params: dict) -> dict:
        return self.engine.cancel(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                  order_id=params.get("order_id"), client_order_id=params.get("client_order_id"))

    def _cancel_all(self, conn: Connection, params: dict) -> int:
        return self.engine.cancel_all(conn.account, time.time())  # type: ignore[arg-type]

    def _cancel_session(self, conn: Connection, params: dict) -> None:
        if conn.cod_timeout is None:
            raise VenueError(PERSISTENT_SESSION, "cancel_session needs set_cancel_on_disconnect first")
        self.engine.cancel_session(conn.session, time.time())
        return None

    def _set_cancel_on_disconnect(self, conn: Connection, params: dict) -> dict:
        timeout = params.get("timeout_secs")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise VenueError(INVALID_REQUEST, "timeout_secs must be a positive number")
        conn.cod_timeout = float(timeout)
        self.engine.set_cancel_on_disconnect(conn.session)
        rate = self.config.order_rate_cod
        # Assigned, not set_rate(): the venue counts the time since the last take at the new
        # rate (set_rate refills at the old rate first); the tokens already there stay.
        conn.order_bucket.rate = rate
        return {"message_rate": int(rate) if float(rate).is_integer() else rate}

    def _set_mm_protection(self, conn: Connection, params: dict) -> None:
        self.engine.set_mm_protection(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                      product=params.get("product"), trade_amount=params.get("trade_amount"),
                                      quote_amount=params.get("quote_amount"), amount=params.get("amount"))
        return None

    def _mass_quote(self, conn: Connection, params: dict) -> dict:
        return self.engine.mass_quote(conn.account, conn.session, now=time.time(),  # type: ignore[arg-type]
                                      quotes=params.get("quotes"), label=params.get("label"),
                                      post_only=params.get("post_only", False),
                                      reject_post_only=params.get("reject_post_only", False))

    def _cancel_mass_quote(self, conn: Connection, params: dict) -> None:
        self.engine.cancel_mass_quote(conn.account, time.time(),  # type: ignore[arg-type]
                                      product=params.get("product"))
        return None

    def _open_orders(self, conn: Connection, params: dict) -> list[dict]:
        return self.engine.open_orders(conn.account)  # type: ignore[arg-type]

    def _portfolio(self, conn: Connection, params: dict) -> list[dict]:
        return self.engine.portfolio(conn.account)  # type: ignore[arg-type]

    def _account_summary(self, conn: Connection, params: dict) -> dict:
        return self.engine.account_summary(conn.account)  # type: ignore[arg-type]

    def _trade_history(self, conn: Connection, params: dict) -> dict:
        return self.engine.trade_history(conn.account, params)  # type: ignore[arg-type]
