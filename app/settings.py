"""The one settings module (design D10).

Every knob of the project is a field here, read from a ``CRYPTICS_*`` environment
variable with a documented default. Nothing else in the code base reads the
environment for configuration.

An external service is used when its URL is given; otherwise ``cryptics up``
starts the embedded one (design D5, D6, D7) and hands its URL to the worker
through these same variables.

Secrets (the database password of an external database, Thalex keys) never have
defaults in code: they come from the environment or from files the user names.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

PREFIX = "CRYPTICS_"

VENUES = ("simulated", "testnet", "production")
TRADING_STATES = ("active", "reducing", "halted")
#: Thalex's websocket endpoints (thalex_api.md §1.1); the simulated venue's URL is set by `cryptics up`.
THALEX_URLS = {
    "testnet": "wss://testnet.thalex.com/ws/api/v2",
    "production": "wss://thalex.com/ws/api/v2",
}


def documented(default: Any, doc: str) -> Any:
    """A dataclass field with its default and a one-line doc (``metadata["doc"]``): the config
    classes that Settings fills from ``CRYPTICS_*`` variables declare their fields this way,
    and the README's parameter tables are made from these docs."""
    return field(default=default, metadata={"doc": doc})


def _env(environ: Mapping[str, str], name: str) -> Optional[str]:
    value = environ.get(PREFIX + name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false, yes/no, on/off), got {text!r}")


@dataclass(frozen=True)
class Settings:
    """All configuration, with its environment variable and default.

    | field | variable | default |
    |---|---|---|
    | state_dir | CRYPTICS_STATE_DIR | ./.cryptics |
    | broker_url | CRYPTICS_BROKER_URL | embedded Tansu |
    | database_url | CRYPTICS_DATABASE_URL | embedded PostgreSQL |
    | schema_registry_url | CRYPTICS_SCHEMA_REGISTRY_URL | embedded registry |
    | pg_data_dir | CRYPTICS_PG_DATA_DIR | <state_dir>/postgres |
    | topic_partitions | CRYPTICS_TOPIC_PARTITIONS | 3 |
    | topic_replication | CRYPTICS_TOPIC_REPLICATION | 1 |
    | web_host | CRYPTICS_WEB_HOST | 127.0.0.1 |
    | web_port | CRYPTICS_WEB_PORT | 6066 |
    | registry_port | CRYPTICS_REGISTRY_PORT | 0 (a free port) |
    | broker_session_timeout | CRYPTICS_BROKER_SESSION_TIMEOUT | 6.0 s embedded, 30.0 s external |
    | heartbeat_interval | CRYPTICS_HEARTBEAT_INTERVAL | 1.0 s (0 turns the wiring heartbeat off) |
    | producer_linger | CRYPTICS_PRODUCER_LINGER | 0.005 s: how long Kafka produces wait to fill a batch |
    | venue | CRYPTICS_VENUE | simulated (or testnet, production) |
    | venue_url | CRYPTICS_VENUE_URL | the simulated venue `cryptics up` starts; Thalex's URL for testnet/production |
    | thalex_key_id | CRYPTICS_THALEX_KEY_ID | none (the simulated venue's throwaway key under `cryptics up`) |
    | thalex_private_key_file | CRYPTICS_THALEX_PRIVATE_KEY_FILE | none |
    | thalex_account | CRYPTICS_THALEX_ACCOUNT | none: the key's default account |
    | instruments | CRYPTICS_INSTRUMENTS | BTC-PERPETUAL (comma-separated) |
    | trading_state | CRYPTICS_TRADING_STATE | active (or reducing, halted) |
    | pure_python | CRYPTICS_PURE_PYTHON | false (true forces the pure-Python twins of Cython code) |
    | log_level | CRYPTICS_LOG_LEVEL | info |
    """

    state_dir: Path = Path(".cryptics")
    broker_url: Optional[str] = None
    database_url: Optional[str] = None
    schema_registry_url: Optional[str] = None
    pg_data_dir: Optional[Path] = None
    topic_partitions: int = 3
    topic_replication: int = 1
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    registry_port: int = 0
    broker_session_timeout: Optional[float] = None
    heartbeat_interval: float = 1.0
    #: Produces to Kafka are off the hot path (design D1), so a few ms of batching
    #: costs no order latency and saves per-record overhead.
    producer_linger: float = 0.005
    venue: str = "simulated"
    venue_url: Optional[str] = None
    thalex_key_id: Optional[str] = None
    thalex_private_key_file: Optional[Path] = None
    thalex_account: Optional[str] = None
    instruments: str = "BTC-PERPETUAL"
    #: Trading state at start: active, reducing (only position-reducing orders) or halted
    #: (no orders); switched at run time with POST /quoting/state/.
    trading_state: str = "active"
    pure_python: bool = False
    log_level: str = "info"
    #: Name of the Faust app, hence of its consumer group and changelog topics.
    app_id: str = field(default="cryptics")

    # -- derived values ---------------------------------------------------

    @property
    def broker_is_embedded(self) -> bool:
        """True when the broker is the embedded Tansu (URL scheme ``tansu://``).

        The embedded stack hands the worker a ``tansu://`` URL; that scheme is
        what switches on the Tansu compatibility layer (app/tansu_compat.py).
        """
        return self.broker_url is not None and self.broker_url.startswith("tansu://")

    @property
    def postgres_dir(self) -> Path:
        return self.pg_data_dir if self.pg_data_dir is not None else self.state_dir / "postgres"

    @property
    def session_timeout(self) -> float:
        if self.broker_session_timeout is not None:
            return self.broker_session_timeout
        # Tansu completes a group join only after session_timeout/2 (design D6).
        return 6.0 if self.broker_url is None or self.broker_is_embedded else 30.0

    @property
    def instrument_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.instruments.split(",") if name.strip())

    @property
    def venue_ws_url(self) -> Optional[str]:
        """Where the exchange client connects: the explicit URL, else Thalex's for testnet/production."""
        if self.venue_url is not None:
            return self.venue_url
        return THALEX_URLS.get(self.venue)

    def with_services(self, **values: Any) -> "Settings":
        """A copy with the given service URLs (and credentials) filled in, as the embedded stack starts them."""
        return dataclasses.replace(self, **values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "1" if value else "0"
            env[PREFIX + f.name.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        settings = cls(**_fields_from_env(cls, environ, ""))  # type: ignore[arg-type]
        settings.validate()
        return settings

    def venue_config(self, environ: Optional[Mapping[str, str]] = None) -> Any:
        """The simulated venue's configuration (app/venue/config.py), from ``CRYPTICS_VENUE_<FIELD>``.

        Every field of VenueConfig can be set that way, e.g. CRYPTICS_VENUE_SEED=7 or
        CRYPTICS_VENUE_PORT=8765; the keys folder defaults to ``<state_dir>/venue/trusted_keys``.
        """
        from app.venue.config import VenueConfig

        values = _fields_from_env(VenueConfig, environ, "VENUE_")
        values.setdefault("trusted_keys_dir", self.state_dir / "venue" / "trusted_keys")
        config = VenueConfig(**values)
        config.validate()
        return config

    def sink_config(self, environ: Optional[Mapping[str, str]] = None) -> Any:
        """The persistence agents' configuration (app/sink/config.py), from ``CRYPTICS_SINK_<FIELD>``.

        E.g. CRYPTICS_SINK_BATCH_SIZE=10000 or CRYPTICS_SINK_BATCH_AGE=0.2.
        """
        from app.sink.config import SinkConfig

        config = SinkConfig(**_fields_from_env(SinkConfig, environ, "SINK_"))
        config.validate()
        return config

    def quote_params(self, environ: Optional[Mapping[str, str]] = None) -> Any:
        """The quoting strategy's parameters (app/quote_params.py), from ``CRYPTICS_QUOTE_<FIELD>``.

        E.g. CRYPTICS_QUOTE_HALF_SPREAD=30 or CRYPTICS_QUOTE_BID_SIZES=0.1,0.2,0.3; the README
        has the table. Defaults reproduce Thalex's perp_quoter example.
        """
        from app.quote_params import QuoteParams

        return QuoteParams(**_fields_from_env(QuoteParams, environ, "QUOTE_"))

    def risk_limits(self, environ: Optional[Mapping[str, str]] = None) -> Any:
        """The risk limits (app/risk.py), from ``CRYPTICS_RISK_<FIELD>``, e.g. CRYPTICS_RISK_MAX_POSITION=2."""
        from app.risk import RiskLimits

        return RiskLimits(**_fields_from_env(RiskLimits, environ, "RISK_"))

    def gateway_params(self, environ: Optional[Mapping[str, str]] = None) -> Any:
        """The order gateway's numbers (app/exchange/gateway.py), from ``CRYPTICS_GATEWAY_<FIELD>``.

        The amend threshold is the strategy's (CRYPTICS_QUOTE_AMEND_THRESHOLD_TICKS), so that
        every quoting parameter is in one object.
        """
        from app.exchange.gateway import GatewayParams

        values = _fields_from_env(GatewayParams, environ, "GATEWAY_")
        values["amend_threshold_ticks"] = self.quote_params(environ).amend_threshold_ticks
        return GatewayParams(**values)

    def validate(self) -> None:
        if self.trading_state not in TRADING_STATES:
            raise ValueError(f"{PREFIX}TRADING_STATE must be one of {', '.join(TRADING_STATES)}, "
                             f"got {self.trading_state!r}")
        if self.topic_partitions < 1:
            raise ValueError(f"{PREFIX}TOPIC_PARTITIONS must be >= 1, got {self.topic_partitions}")
        if self.producer_linger < 0:
            raise ValueError(f"{PREFIX}PRODUCER_LINGER must be >= 0, got {self.producer_linger}")
        if self.heartbeat_interval < 0:
            raise ValueError(f"{PREFIX}HEARTBEAT_INTERVAL must be >= 0, got {self.heartbeat_interval}")
        if self.venue not in VENUES:
            raise ValueError(f"{PREFIX}VENUE must be one of {', '.join(VENUES)}, got {self.venue!r}")
        if not self.instrument_names:
            raise ValueError(f"{PREFIX}INSTRUMENTS names no instrument")
        if self.broker_url is not None and "://" not in self.broker_url:
            raise ValueError(
                f"{PREFIX}BROKER_URL must be a URL such as kafka://host:9092, got {self.broker_url!r}"
            )


def _fields_from_env(cls: type, environ: Optional[Mapping[str, str]], infix: str) -> dict[str, Any]:
    """Values for the dataclass ``cls`` from ``CRYPTICS_<infix><FIELD>`` variables, typed by the fields."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f"{infix}{f.name.upper()}"
        raw = _env(environ, name)
        if raw is None:
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            if "Tuple" in kind or "tuple" in kind:  # numbers, comma-separated: "0.2,0.4"
                values[f.name] = tuple(float(part) for part in raw.split(",") if part.strip())
            elif "Path" in kind:
                values[f.name] = Path(raw).expanduser()
            elif "bool" in kind:
                values[f.name] = _flag(raw)
            elif "int" in kind:
                values[f.name] = int(raw)
            elif "float" in kind:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ValueError(f"{PREFIX}{name}={raw!r}: {exc}") from None
    return values


def load() -> Settings:
    """Settings from the current environment."""
    return Settings.from_env()
