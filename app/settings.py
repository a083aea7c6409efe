"""The one settings module: every knob of the project, composed once per process.

Each component owns its config class, next to the code it configures:

| component | class | variables |
|---|---|---|
| quote core | app/trading/quote_params.py ``QuoteParams`` | ``CRYPTICS_QUOTE_*`` |
| risk gate | app/trading/risk.py ``RiskLimits`` | ``CRYPTICS_RISK_*`` |
| order gateway | app/gateway/params.py ``GatewayParams`` | ``CRYPTICS_GATEWAY_*`` |
| persistence sink | app/pipeline/sink/config.py ``SinkConfig`` | ``CRYPTICS_SINK_*`` |
| analytics agents | app/analytics/config.py ``AnalyticsConfig`` | ``CRYPTICS_ANALYTICS_*`` |
| simulated venue | app/venue/config.py ``VenueConfig`` | ``CRYPTICS_VENUE_*`` |

``Settings`` holds the process-wide fields below and one instance of each of these, all
read from ``CRYPTICS_*`` environment variables by ``Settings.from_env`` (the parsers are in
app/config.py, which every component imports instead of this module: no import circle).
``load()`` reads them once per process. Nothing else in the code base reads the
environment for configuration, except ``CRYPTICS_PURE_PYTHON``, which picks the code
that is imported (app/config.py ``pure_python``).

An external service is used when its URL is given; otherwise ``cryptics up`` starts the
embedded one (docs/architecture.md#d5-schema-registry, #d6-embedded-broker-tansu,
#d7-database) and hands its URL to the worker through these same variables.

Secrets (the database password of an external database, Thalex keys) never have defaults
in code: they come from the environment or from files the user names.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from app.analytics.config import AnalyticsConfig
from app.config import PREFIX, SettingError, SettingsErrors, fields_from_env
from app.gateway.params import GatewayParams
from app.pipeline.sink.config import SinkConfig
from app.trading.quote_params import QuoteParams
from app.trading.risk import RiskLimits
from app.venue.config import VenueConfig

VENUES = ("simulated", "testnet", "production")
TRADING_STATES = ("active", "reducing", "halted")
#: Thalex's websocket endpoints (docs/thalex-protocol.md §1.1); the simulated venue's URL is set by `cryptics up`.
THALEX_URLS = {
    "testnet": "wss://testnet.thalex.com/ws/api/v2",
    "production": "wss://thalex.com/ws/api/v2",
}
#: The component configs: Settings field → (variable infix, class).
COMPONENTS: dict[str, tuple[str, type]] = {
    "quote": ("QUOTE_", QuoteParams),
    "risk": ("RISK_", RiskLimits),
    "gateway": ("GATEWAY_", GatewayParams),
    "sink": ("SINK_", SinkConfig),
    "analytics": ("ANALYTICS_", AnalyticsConfig),
    "simulated_venue": ("VENUE_", VenueConfig),
}


@dataclass(frozen=True)
class Settings:
    """All configuration, with its environment variable and default.

    | field | variable | default |
    |---|---|---|
    | state_dir | CRYPTICS_STATE_DIR | ./.cryptics |
    | broker_url | CRYPTICS_BROKER_URL | embedded Tansu |
    | database_url | CRYPTICS_DATABASE_URL | embedded PostgreSQL |
    | database_reader_password_file | CRYPTICS_DATABASE_READER_PASSWORD_FILE | none: `cryptics db migrate` makes no login for the dashboards |
    | database_sslmode | CRYPTICS_DATABASE_SSLMODE | none: asyncpg's default (prefer); verify-full checks the server's chain and host name |
    | database_sslrootcert | CRYPTICS_DATABASE_SSLROOTCERT | none: the CA file the server's certificate is checked against |
    | schema_registry_url | CRYPTICS_SCHEMA_REGISTRY_URL | embedded registry |
    | schema_registry_username | CRYPTICS_SCHEMA_REGISTRY_USERNAME | none: no basic auth |
    | schema_registry_password_file | CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE | none: the file holding the registry's basic-auth password |
    | schema_registry_cafile | CRYPTICS_SCHEMA_REGISTRY_CAFILE | none: the system's CAs check an https registry |
    | kafka_security_protocol | CRYPTICS_KAFKA_SECURITY_PROTOCOL | PLAINTEXT (or SSL, SASL_PLAINTEXT, SASL_SSL) |
    | kafka_sasl_mechanism | CRYPTICS_KAFKA_SASL_MECHANISM | none (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with SASL_*) |
    | kafka_sasl_username | CRYPTICS_KAFKA_SASL_USERNAME | none |
    | kafka_sasl_password_file | CRYPTICS_KAFKA_SASL_PASSWORD_FILE | none: the file holding the SASL password |
    | kafka_ssl_cafile | CRYPTICS_KAFKA_SSL_CAFILE | none: the system's CAs check the brokers |
    | kafka_ssl_certfile | CRYPTICS_KAFKA_SSL_CERTFILE | none: no client certificate |
    | kafka_ssl_keyfile | CRYPTICS_KAFKA_SSL_KEYFILE | none: the client certificate's key is in its file |
    | pg_data_dir | CRYPTICS_PG_DATA_DIR | <state_dir>/postgres |
    | topic_partitions | CRYPTICS_TOPIC_PARTITIONS | 3 |
    | topic_replication | CRYPTICS_TOPIC_REPLICATION | 1 |
    | web_host | CRYPTICS_WEB_HOST | 127.0.0.1 |
    | web_port | CRYPTICS_WEB_PORT | 6066 |
    | web_token | CRYPTICS_WEB_TOKEN | none (`cryptics up` makes one in <state_dir>/web_token): the bearer token state-changing endpoints ask for |
    | web_token_file | CRYPTICS_WEB_TOKEN_FILE | none: a file holding the web token, read when CRYPTICS_WEB_TOKEN is unset |
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
    #: The password of cryptics_grafana, the dashboards' read-only login (timescale/0008): a file,
    #: never a value in the environment.
    database_reader_password_file: Optional[Path] = None
    #: TLS to PostgreSQL (docs/operations.md#secured-connections): libpq's sslmode and CA file, put
    #: on the URL the clients connect with (``database_dsn``).
    database_sslmode: Optional[str] = None
    database_sslrootcert: Optional[Path] = None
    schema_registry_url: Optional[str] = None
    #: The registry's basic auth: the user here, the password in a file, never in the environment
    #: or the URL; the embedded registry asks for the same (app/security.py).
    schema_registry_username: Optional[str] = None
    schema_registry_password_file: Optional[Path] = None
    schema_registry_cafile: Optional[Path] = None
    #: Kafka's TLS and SASL, for every Kafka client of the project (app/security.py
    #: ``kafka_client_kwargs``); the SASL password in a file.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: Optional[str] = None
    kafka_sasl_username: Optional[str] = None
    kafka_sasl_password_file: Optional[Path] = None
    kafka_ssl_cafile: Optional[Path] = None
    kafka_ssl_certfile: Optional[Path] = None
    kafka_ssl_keyfile: Optional[Path] = None
    pg_data_dir: Optional[Path] = None
    topic_partitions: int = 3
    topic_replication: int = 1
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: A secret: from the environment or CRYPTICS_WEB_TOKEN_FILE, never printed (app/web/auth.py).
    web_token: Optional[str] = field(default=None, repr=False)
    #: The web token in a file (a compose secret, docs/deployment.md): read by ``from_env`` when
    #: CRYPTICS_WEB_TOKEN is unset, so the token need not sit in the environment.
    web_token_file: Optional[Path] = None
    registry_port: int = 0
    broker_session_timeout: Optional[float] = None
    heartbeat_interval: float = 1.0
    #: Produces to Kafka are off the hot path (docs/architecture.md#d1-the-hot-path-stays-in-one-process), so a few ms of batching
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
    # -- the components' own configs (COMPONENTS), each from CRYPTICS_<INFIX><FIELD> -------
    quote: QuoteParams = field(default_factory=QuoteParams)
    risk: RiskLimits = field(default_factory=RiskLimits)
    gateway: GatewayParams = field(default_factory=GatewayParams)
    sink: SinkConfig = field(default_factory=SinkConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    #: The simulated venue's; its trusted keys folder defaults to <state_dir>/venue/trusted_keys.
    simulated_venue: VenueConfig = field(default_factory=VenueConfig)

    # -- derived values ---------------------------------------------------

    @property
    def broker_is_embedded(self) -> bool:
        """True when the broker is the embedded Tansu (URL scheme ``tansu://``).

        The embedded stack hands the worker a ``tansu://`` URL; that scheme is
        what switches on the Tansu compatibility layer (app/pipeline/tansu_compat.py).
        """
        return self.broker_url is not None and self.broker_url.startswith("tansu://")

    @property
    def postgres_dir(self) -> Path:
        return self.pg_data_dir if self.pg_data_dir is not None else self.state_dir / "postgres"

    @property
    def session_timeout(self) -> float:
        if self.broker_session_timeout is not None:
            return self.broker_session_timeout
        # Tansu completes a group join only after session_timeout/2 (docs/architecture.md#d6-embedded-broker-tansu).
        return 6.0 if self.broker_url is None or self.broker_is_embedded else 30.0

    @property
    def database_dsn(self) -> Optional[str]:
        """What the database clients connect with: CRYPTICS_DATABASE_URL with
        CRYPTICS_DATABASE_SSLMODE and CRYPTICS_DATABASE_SSLROOTCERT in its query."""
        from app.security import database_dsn

        return database_dsn(self.database_url, self.database_sslmode, self.database_sslrootcert)

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
        """The environment variables that reproduce the process-wide fields in a child process.

        The components' variables are the user's own and reach a child with the rest of the
        environment (app/stack/process.py ``environ_for_child``)."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in COMPONENTS:
                continue
            if isinstance(value, bool):
                value = "1" if value else "0"
            env[PREFIX + f.name.upper()] = str(value)
        return env

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        """Every field and every component from ``environ`` (default: the process environment).
        Refused values raise SettingsErrors (a ValueError) with a line for each variable: every
        unknown variable and every value that does not parse or that its component refuses;
        the checks across settings (``validate``) once each variable is valid by itself."""
        errors: list[str] = []
        process = {f.name for f in dataclasses.fields(cls)} - set(COMPONENTS)
        values: dict[str, Any] = {}
        try:
            values = {k: v for k, v in fields_from_env(cls, environ, "").items() if k in process}
        except SettingsErrors as exc:
            errors += exc.lines
        state_dir = values.get("state_dir", cls.state_dir)
        own = {PREFIX + name.upper() for name in process}
        for name, (infix, config_class) in COMPONENTS.items():
            errors += _unknown(environ, infix, config_class, own)
            try:
                component = fields_from_env(config_class, environ, infix)
            except SettingsErrors as exc:
                errors += exc.lines
                continue
            if config_class is VenueConfig:
                component.setdefault("trusted_keys_dir", state_dir / "venue" / "trusted_keys")
            try:
                values[name] = config_class(**component)
            except ValueError as exc:  # the component names its field: say which variable that is
                errors.append(str(_with_variable(exc, infix)))
        if values.get("web_token") is None and values.get("web_token_file") is not None:
            errors += _token_from_file(values)
        if errors:
            raise SettingsErrors(errors)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """The checks across settings; SettingsErrors with a line for each that fails."""
        errors: list[str] = []
        if self.trading_state not in TRADING_STATES:
            errors.append(f"{PREFIX}TRADING_STATE must be one of {', '.join(TRADING_STATES)}, "
                          f"got {self.trading_state!r}")
        if self.topic_partitions < 1:
            errors.append(f"{PREFIX}TOPIC_PARTITIONS must be >= 1, got {self.topic_partitions}")
        if self.producer_linger < 0:
            errors.append(f"{PREFIX}PRODUCER_LINGER must be >= 0, got {self.producer_linger}")
        if self.heartbeat_interval < 0:
            errors.append(f"{PREFIX}HEARTBEAT_INTERVAL must be >= 0, got {self.heartbeat_interval}")
        if self.venue not in VENUES:
            errors.append(f"{PREFIX}VENUE must be one of {', '.join(VENUES)}, got {self.venue!r}")
        if not self.instrument_names:
            errors.append(f"{PREFIX}INSTRUMENTS names no instrument")
        if self.broker_url is not None and "://" not in self.broker_url:
            errors.append(f"{PREFIX}BROKER_URL must be a URL such as kafka://host:9092, got {self.broker_url!r}")
        errors += self._secured_connection_errors()
        # One position limit, the risk gate's: the quote core sizes its ladder against it too,
        # so it must be a limit the core can size against, and hold the target position.
        if not 0 < self.risk.max_position < float("inf"):
            errors.append(f"{PREFIX}RISK_MAX_POSITION must be > 0 and finite (the quote core sizes against "
                          f"it), got {self.risk.max_position}")
        if abs(self.quote.target_position) > self.risk.max_position:
            errors.append(f"{PREFIX}QUOTE_TARGET_POSITION {self.quote.target_position} is outside "
                          f"±{PREFIX}RISK_MAX_POSITION {self.risk.max_position}")
        for name, (infix, config_class) in COMPONENTS.items():
            check = getattr(getattr(self, name), "validate", None)
            if check is not None:
                try:
                    check()
                except ValueError as exc:
                    errors.append(str(_with_variable(exc, infix)))
        if errors:
            raise SettingsErrors(errors)

    def _secured_connection_errors(self) -> list[str]:
        """A line for each secured-connection setting that is refused: an unknown protocol,
        mechanism or sslmode, SASL without its user or password file, a file that cannot be
        read (a secret's contents are never shown), a key without its certificate."""
        from app.security import (DATABASE_SSLMODES, KAFKA_SASL_MECHANISMS, KAFKA_SECURITY_PROTOCOLS,
                                  SecretUnreadable, read_secret)

        errors: list[str] = []
        protocol = self.kafka_security_protocol
        sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            errors.append(f"{PREFIX}KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, "
                          f"got {protocol!r}")
        if self.kafka_sasl_mechanism is not None and self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            errors.append(f"{PREFIX}KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, "
                          f"got {self.kafka_sasl_mechanism!r}")
        elif sasl and self.kafka_sasl_mechanism is None:
            errors.append(f"{PREFIX}KAFKA_SASL_MECHANISM must be set with {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} "
                          f"(one of {', '.join(KAFKA_SASL_MECHANISMS)})")
        if sasl and self.kafka_sasl_username is None:
            errors.append(f"{PREFIX}KAFKA_SASL_USERNAME must be set with {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}")
        if sasl and self.kafka_sasl_password_file is None:
            errors.append(f"{PREFIX}KAFKA_SASL_PASSWORD_FILE must be set with {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}")
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            errors.append(f"{PREFIX}KAFKA_SSL_KEYFILE needs {PREFIX}KAFKA_SSL_CERTFILE (the client certificate)")
        if self.schema_registry_username is not None and self.schema_registry_password_file is None:
            errors.append(f"{PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE must be set with {PREFIX}SCHEMA_REGISTRY_USERNAME")
        if self.schema_registry_password_file is not None and self.schema_registry_username is None:
            errors.append(f"{PREFIX}SCHEMA_REGISTRY_USERNAME must be set with {PREFIX}SCHEMA_REGISTRY_PASSWORD_FILE")
        if self.database_sslmode is not None and self.database_sslmode not in DATABASE_SSLMODES:
            errors.append(f"{PREFIX}DATABASE_SSLMODE must be one of {', '.join(DATABASE_SSLMODES)}, "
                          f"got {self.database_sslmode!r}")
        for variable, path in (("KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file),
                               ("SCHEMA_REGISTRY_PASSWORD_FILE", self.schema_registry_password_file)):
            if path is not None:
                try:
                    read_secret(variable, path)
                except SecretUnreadable as exc:
                    errors.append(str(exc))
        for variable, path in (("KAFKA_SSL_CAFILE", self.kafka_ssl_cafile),
                               ("KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile),
                               ("KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile),
                               ("SCHEMA_REGISTRY_CAFILE", self.schema_registry_cafile),
                               ("DATABASE_SSLROOTCERT", self.database_sslrootcert)):
            if path is not None and not path.is_file():
                errors.append(f"{PREFIX}{variable}={str(path)!r}: no such file")
        return errors


#: Variables that no longer exist, and where their setting went.
RETIRED = {
    "CRYPTICS_QUOTE_POSITION_LIMIT": "the one position limit is CRYPTICS_RISK_MAX_POSITION",
    "CRYPTICS_QUOTE_AMEND_THRESHOLD_TICKS": "it is CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS now",
}


def _unknown(environ: Optional[Mapping[str, str]], infix: str, config_class: type, own: set[str]) -> list[str]:
    """A line for each ``CRYPTICS_<INFIX>*`` variable that is no field of the component: a typo
    or a retired name, refused rather than silently ignored (the user would run with the default)."""
    environ = os.environ if environ is None else environ
    known = {PREFIX + infix + f.name.upper() for f in dataclasses.fields(config_class)} | own
    return [f"{variable}: unknown setting ({RETIRED.get(variable, f'no {config_class.__name__} field is called that')})"
            for variable in sorted(environ) if variable.startswith(PREFIX + infix) and variable not in known]


def _token_from_file(values: dict[str, Any]) -> list[str]:
    """Fill ``values["web_token"]`` from CRYPTICS_WEB_TOKEN_FILE: the file's text, stripped. A line
    if it cannot be read or holds nothing."""
    path = values["web_token_file"]
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{PREFIX}WEB_TOKEN_FILE={str(path)!r}: cannot read it ({getattr(exc, 'strerror', None) or exc})"]
    if not token:
        return [f"{PREFIX}WEB_TOKEN_FILE={str(path)!r}: the file is empty"]
    values["web_token"] = token
    return []


def _with_variable(exc: ValueError, infix: str) -> ValueError:
    """A component's refusal, led by the variable of the field it refuses (a SettingError names
    the field), as every other setting error is."""
    if isinstance(exc, SettingError):
        return ValueError(f"{PREFIX}{infix}{exc.field.upper()}: {exc}")
    return exc


@functools.lru_cache(maxsize=1)
def load() -> Settings:
    """Settings from the process environment, read once per process."""
    return Settings.from_env()
