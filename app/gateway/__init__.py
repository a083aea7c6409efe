"""The order gateway: the quote agent's desired ladders as orders on one venue session.

``OrderGateway`` (gateway.py) is the public face; its contract is in gateway.py's docstring.
"""
from app.gateway.gateway import Actions, GatewayParams, OrderGateway, QuoteStamps, TrackedOrder, ack_record

__all__ = ["Actions", "GatewayParams", "OrderGateway", "QuoteStamps", "TrackedOrder", "ack_record"]
