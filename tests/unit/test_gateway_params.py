"""GatewayParams: defaults, validation, and overrides at construction."""
from __future__ import annotations

import pytest

from app.exchange.client import ThalexClient
from app.gateway import GatewayParams, OrderGateway


def test_params_are_validated_and_overridable():
    params = GatewayParams()
    assert (params.label, params.amend_threshold_ticks, params.order_rate, params.order_rate_cod,
            params.cancel_rate, params.cod_timeout_s) == ("P", 5.0, 10.0, 50.0, 1000.0, 6.0)
    with pytest.raises(ValueError, match="label"):
        GatewayParams(label="no spaces")
    with pytest.raises(ValueError, match="rate_headroom"):
        GatewayParams(rate_headroom=1.5)
    assert params.mass_quote is False  # single orders unless the account may mass quote
    with pytest.raises(ValueError, match="mm_trade_amount"):
        GatewayParams(mm_trade_amount=2.0, mm_quote_amount=1.0)  # docs/thalex-protocol.md §4.7: quote_amount >= trade_amount
    gateway = OrderGateway(ThalexClient("ws://127.0.0.1:1/ws/api/v2"), label="Q", amend_threshold_ticks=3)
    assert (gateway.params.label, gateway.params.amend_threshold_ticks, gateway.params.order_rate_cod) \
        == ("Q", 3, 50.0)
    with pytest.raises(TypeError):
        OrderGateway(ThalexClient("ws://127.0.0.1:1/ws/api/v2"), no_such_setting=1)
