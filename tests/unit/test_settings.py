"""Settings: environment parsing, defaults, derived values (pure logic)."""
from pathlib import Path

import pytest

from app.settings import Settings


def test_defaults_use_the_embedded_stack():
    s = Settings.from_env({})
    assert s.broker_url is None and s.database_url is None and s.schema_registry_url is None
    assert s.topic_partitions == 3
    assert s.postgres_dir == Path(".cryptics") / "postgres"
    assert s.session_timeout == 6.0  # the embedded broker joins groups after session_timeout/2


def test_environment_overrides_and_types():
    s = Settings.from_env({
        "CRYPTICS_BROKER_URL": "kafka://k1:9092;k2:9092",
        "CRYPTICS_TOPIC_PARTITIONS": "6",
        "CRYPTICS_PURE_PYTHON": "yes",
        "CRYPTICS_HEARTBEAT_INTERVAL": "0.5",
        "CRYPTICS_PG_DATA_DIR": "/srv/pg",
        "CRYPTICS_WEB_PORT": "",  # empty means unset
    })
    assert s.broker_url == "kafka://k1:9092;k2:9092"
    assert not s.broker_is_embedded
    assert s.session_timeout == 30.0
    assert s.topic_partitions == 6 and s.pure_python is True and s.heartbeat_interval == 0.5
    assert s.postgres_dir == Path("/srv/pg")
    assert s.web_port == 6066


def test_tansu_url_marks_the_embedded_broker():
    assert Settings.from_env({"CRYPTICS_BROKER_URL": "tansu://127.0.0.1:1234"}).broker_is_embedded


@pytest.mark.parametrize("name,value,message", [
    ("TOPIC_PARTITIONS", "zero", "CRYPTICS_TOPIC_PARTITIONS"),
    ("TOPIC_PARTITIONS", "0", ">= 1"),
    ("PURE_PYTHON", "maybe", "boolean"),
    ("BROKER_URL", "localhost:9092", "must be a URL"),
])
def test_bad_values_are_clear_errors(name, value, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({f"CRYPTICS_{name}": value})


def test_to_env_round_trips():
    s = Settings.from_env({"CRYPTICS_BROKER_URL": "tansu://127.0.0.1:1", "CRYPTICS_PURE_PYTHON": "1",
                           "CRYPTICS_STATE_DIR": "/tmp/x"})
    assert Settings.from_env(s.to_env()) == s


def test_venue_choice_and_urls():
    assert Settings.from_env({}).venue == "simulated"
    assert Settings.from_env({}).venue_ws_url is None  # `cryptics up` starts the simulated venue and sets it
    assert Settings.from_env({"CRYPTICS_VENUE": "production"}).venue_ws_url == "wss://thalex.com/ws/api/v2"
    explicit = Settings.from_env({"CRYPTICS_VENUE": "testnet", "CRYPTICS_VENUE_URL": "ws://127.0.0.1:9/ws/api/v2"})
    assert explicit.venue_ws_url == "ws://127.0.0.1:9/ws/api/v2"
    with pytest.raises(ValueError, match="CRYPTICS_VENUE must be one of"):
        Settings.from_env({"CRYPTICS_VENUE": "mainnet"})


def test_instruments_list():
    s = Settings.from_env({"CRYPTICS_INSTRUMENTS": " BTC-PERPETUAL, ETH-PERPETUAL ,"})
    assert s.instrument_names == ("BTC-PERPETUAL", "ETH-PERPETUAL")
    with pytest.raises(ValueError, match="names no instrument"):
        Settings.from_env({"CRYPTICS_INSTRUMENTS": " , "})


def test_quoting_parameters_come_from_the_environment():
    s = Settings.from_env({})
    assert s.quote.bid_sizes == (0.2, 0.4) and s.trading_state == "active"
    params = Settings.from_env({"CRYPTICS_QUOTE_BID_SIZES": "0.1, 0.3,0.5", "CRYPTICS_QUOTE_HALF_SPREAD": "30"}).quote
    assert (params.bid_sizes, params.half_spread) == ((0.1, 0.3, 0.5), 30.0)
    # one amend threshold: the gateway's own
    assert s.gateway.amend_threshold_ticks == 5.0
    assert Settings.from_env({"CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS": "2"}).gateway.amend_threshold_ticks == 2.0
    with pytest.raises(ValueError, match="amend_threshold_ticks"):
        Settings.from_env({"CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS": "-1"})
    # one position limit: the risk gate's, which the quote core sizes against too
    assert Settings.from_env({"CRYPTICS_RISK_MAX_POSITION": "2.5"}).risk.max_position == 2.5
    assert Settings.from_env({"CRYPTICS_QUOTE_TARGET_POSITION": "-2.5",
                              "CRYPTICS_RISK_MAX_POSITION": "2.5"}).quote.target_position == -2.5
    outside = "CRYPTICS_QUOTE_TARGET_POSITION 1.5 is outside ±CRYPTICS_RISK_MAX_POSITION 1.0"  # the default limit
    with pytest.raises(ValueError, match=outside):
        Settings.from_env({"CRYPTICS_QUOTE_TARGET_POSITION": "1.5"})
    for unusable in ("0", "inf"):
        with pytest.raises(ValueError, match="CRYPTICS_RISK_MAX_POSITION"):
            Settings.from_env({"CRYPTICS_RISK_MAX_POSITION": unusable})
    with pytest.raises(ValueError, match="CRYPTICS_QUOTE_BID_SIZES"):
        Settings.from_env({"CRYPTICS_QUOTE_BID_SIZES": "0.1,lots"})
    with pytest.raises(ValueError, match="CRYPTICS_TRADING_STATE"):
        Settings.from_env({"CRYPTICS_TRADING_STATE": "yolo"})


@pytest.mark.parametrize("variable,hint", [
    ("CRYPTICS_QUOTE_POSITION_LIMIT", "CRYPTICS_RISK_MAX_POSITION"),
    ("CRYPTICS_QUOTE_AMEND_THRESHOLD_TICKS", "CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS"),
    ("CRYPTICS_RISK_MAXPOSITION", "no RiskLimits field"),
    ("CRYPTICS_GATEWAY_LABELS", "no GatewayParams field"),
])
def test_an_unknown_or_retired_component_variable_is_refused(variable, hint):
    with pytest.raises(ValueError, match=rf"^{variable}: unknown setting \(.*{hint}"):
        Settings.from_env({variable: "1"})


def test_the_process_wide_variables_that_share_a_prefix_are_not_components():
    s = Settings.from_env({"CRYPTICS_VENUE": "testnet", "CRYPTICS_VENUE_URL": "ws://127.0.0.1:9/ws/api/v2",
                           "CRYPTICS_VENUE_SEED": "7"})
    assert (s.venue, s.venue_url, s.simulated_venue.seed) == ("testnet", "ws://127.0.0.1:9/ws/api/v2", 7)


def test_a_component_error_names_the_variable():
    with pytest.raises(ValueError, match=r"^CRYPTICS_QUOTE_MODE: mode must be one of"):
        Settings.from_env({"CRYPTICS_QUOTE_MODE": "yolo"})
    with pytest.raises(ValueError, match=r"^CRYPTICS_RISK_MAX_ORDER_NOTIONAL: "):
        Settings.from_env({"CRYPTICS_RISK_MAX_ORDER_NOTIONAL": "-1"})


def test_a_component_checked_after_construction_names_the_variable_too():
    with pytest.raises(ValueError, match=r"^CRYPTICS_VENUE_TICK_INTERVAL: "):
        Settings.from_env({"CRYPTICS_VENUE_TICK_INTERVAL": "0"})
    with pytest.raises(ValueError, match=r"^CRYPTICS_SINK_BATCH_SIZE: batch_size must be >= 1"):
        Settings.from_env({"CRYPTICS_SINK_BATCH_SIZE": "0"})


def test_every_bad_variable_is_reported_at_once():
    from app.config import SettingsErrors

    with pytest.raises(SettingsErrors) as refused:
        Settings.from_env({"CRYPTICS_QUOTE_BID_SIZES": "0.1,x", "CRYPTICS_TOPIC_PARTITIONS": "many",
                           "CRYPTICS_SINK_BATCH_SIZ": "10", "CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS": "-1",
                           "CRYPTICS_HEARTBEAT_INTERVAL": "1"})
    lines = refused.value.lines
    named = [line.split(":")[0].split("=")[0] for line in lines]
    # one line per bad variable, none for the good one
    assert sorted(named) == ["CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS", "CRYPTICS_QUOTE_BID_SIZES",
                             "CRYPTICS_SINK_BATCH_SIZ", "CRYPTICS_TOPIC_PARTITIONS"], lines
    assert str(refused.value) == "\n".join(lines)


def test_checks_across_settings_are_reported_together():
    from app.config import SettingsErrors

    with pytest.raises(SettingsErrors) as refused:
        Settings.from_env({"CRYPTICS_TOPIC_PARTITIONS": "0", "CRYPTICS_HEARTBEAT_INTERVAL": "-1"})
    assert [line.split(" ")[0] for line in refused.value.lines] == ["CRYPTICS_TOPIC_PARTITIONS",
                                                                   "CRYPTICS_HEARTBEAT_INTERVAL"]


def test_a_url_without_its_password():
    from app.config import without_password

    assert without_password("postgresql://postgres:s3cr:et@127.0.0.1:5432/cryptics") == \
        "postgresql://postgres:***@127.0.0.1:5432/cryptics"
    assert without_password("postgresql://reader@db:5432/x") == "postgresql://reader@db:5432/x"  # no password
    assert without_password("tansu://127.0.0.1:9092") == "tansu://127.0.0.1:9092"
    assert without_password("http://127.0.0.1:8081/a@b") == "http://127.0.0.1:8081/a@b"  # an @ in the path
