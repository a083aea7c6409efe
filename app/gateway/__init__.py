"""The order gateway: the quote agent's desired ladders as orders on one venue session.

``OrderGateway`` (gateway.py) is the public face; gateway.py's docstring gives the contract's
overview and the map of the package, each module its own part.
"""
from app.gateway.gateway import OrderGateway
from app.gateway.params import GatewayParams
from app.gateway.records import Actions, QuoteStamps, ack_record
from app.gateway.tracker import TrackedOrder

__all__ = ["Actions", "GatewayParams", "OrderGateway", "QuoteStamps", "TrackedOrder", "ack_record"]
