"""Secured connections: the one place where settings become TLS contexts and credentials for
Kafka, the schema registry and PostgreSQL (docs/operations.md#secured-connections).

- Kafka: ``kafka_client_kwargs`` gives the keyword arguments every aiokafka client of the
  project takes (producer, consumer, admin: ``security_protocol``, ``ssl_context``,
  ``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``);
  ``faust_broker_credentials`` gives the same as Faust's ``broker_credentials``, built from
  those keyword arguments. Nothing else in the code base builds Kafka security.
- The schema registry: ``registry_client_kwargs`` (HTTP basic auth, the CA file of an https
  URL) for python-schema-registry-client; ``registry_basic_auth`` the user and password the
  embedded registry asks for.
- PostgreSQL: ``database_dsn`` puts ``sslmode`` and ``sslrootcert`` on the URL, which asyncpg
  reads as libpq does (verify-full checks the chain against the CA file and the host name).

Secrets come from files the settings name and are read when a client is built; they are never
kept in a setting that is printed, in a URL, in up.json or in an error message: a file that
cannot be read is named, its contents never. ``None`` for the settings means the process's own
(app/settings.py ``load``).
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from app.config import PREFIX

if TYPE_CHECKING:
    from app.settings import Settings

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DATABASE_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class SecretUnreadable(ValueError):
    """A file named for a secret cannot be read or is empty. The message names the variable and
    the file, never what the file holds."""


def read_secret(variable: str, path: Path) -> str:
    """The text of the secret file ``path`` (stripped), for ``CRYPTICS_<variable>``."""
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretUnreadable(
            f"{PREFIX}{variable}={str(path)!r}: cannot read it ({getattr(exc, 'strerror', None) or type(exc).__name__})"
        ) from None
    if not text:
        raise SecretUnreadable(f"{PREFIX}{variable}={str(path)!r}: the file is empty")
    return text


def _settings(s: Optional["Settings"]) -> "Settings":
    if s is not None:
        return s
    from app.settings import load

    return load()


# -- Kafka ---------------------------------------------------------------------------------------

def kafka_ssl_context(s: Optional["Settings"] = None) -> Optional[ssl.SSLContext]:
    """The TLS context of the Kafka clients (SSL and SASL_SSL): the broker's chain checked against
    CRYPTICS_KAFKA_SSL_CAFILE (the system's CAs without it) and its host name against the
    certificate; a client certificate when CRYPTICS_KAFKA_SSL_CERTFILE is set. None for
    PLAINTEXT and SASL_PLAINTEXT."""
    s = _settings(s)
    if s.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)
    if s.kafka_ssl_certfile is not None:
        context.load_cert_chain(str(s.kafka_ssl_certfile),
                                str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None)
    return context


def kafka_client_kwargs(s: Optional["Settings"] = None) -> dict[str, Any]:
    """The security keyword arguments of every aiokafka client (AIOKafkaProducer,
    AIOKafkaConsumer, AIOKafkaAdminClient), from the CRYPTICS_KAFKA_* settings. The SASL
    password is read from CRYPTICS_KAFKA_SASL_PASSWORD_FILE now (SecretUnreadable if it cannot
    be). PLAINTEXT gives ``{"security_protocol": "PLAINTEXT"}``, aiokafka's default."""
    s = _settings(s)
    protocol = s.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(s)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = s.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = s.kafka_sasl_username
        kwargs["sasl_plain_password"] = (
            read_secret("KAFKA_SASL_PASSWORD_FILE", s.kafka_sasl_password_file)
            if s.kafka_sasl_password_file is not None else None)
    return kwargs


def faust_broker_credentials(s: Optional["Settings"] = None) -> Any:
    """Faust's ``broker_credentials`` for the same settings: SASLCredentials (with the TLS
    context for SASL_SSL), SSLCredentials, or None for PLAINTEXT. Built from
    ``kafka_client_kwargs``, so Faust's clients and ours cannot differ."""
    kwargs = kafka_client_kwargs(s)
    protocol = kwargs["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    import faust

    if protocol == "SSL":
        return faust.SSLCredentials(kwargs["ssl_context"])
    return faust.SASLCredentials(username=kwargs["sasl_plain_username"], password=kwargs["sasl_plain_password"],
                                 ssl_context=kwargs.get("ssl_context"), mechanism=kwargs["sasl_mechanism"])


# -- the schema registry -------------------------------------------------------------------------

def registry_basic_auth(s: Optional["Settings"] = None) -> Optional[tuple[str, str]]:
    """(user, password) of the schema registry's basic auth, or None: what the clients send and
    what the embedded registry asks for (CRYPTICS_SCHEMA_REGISTRY_USERNAME and
    CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE, read now)."""
    s = _settings(s)
    if s.schema_registry_username is None:
        return None
    password = read_secret("SCHEMA_REGISTRY_PASSWORD_FILE", s.schema_registry_password_file)  # type: ignore[arg-type]
    return s.schema_registry_username, password


def registry_client_kwargs(s: Optional["Settings"] = None) -> dict[str, Any]:
    """Keyword arguments of the registry client (app/pipeline/codec.py ``RegistryClient``):
    ``auth`` (httpx basic auth) and ``verify``, a TLS context that checks an https registry's
    chain against CRYPTICS_SCHEMA_REGISTRY_CAFILE and its host name (without the file,
    httpx's default: the system's CAs)."""
    s = _settings(s)
    kwargs: dict[str, Any] = {}
    credentials = registry_basic_auth(s)
    if credentials is not None:
        import httpx

        kwargs["auth"] = httpx.BasicAuth(*credentials)
    if s.schema_registry_cafile is not None:
        kwargs["verify"] = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(s.schema_registry_cafile))
    return kwargs


# -- PostgreSQL ----------------------------------------------------------------------------------

def database_dsn(url: Optional[str], sslmode: Optional[str], sslrootcert: Optional[Path]) -> Optional[str]:
    """``url`` with ``sslmode`` and ``sslrootcert`` in its query, as asyncpg and libpq read them;
    a value the URL carries already is kept. None stays None."""
    if url is None or (sslmode is None and sslrootcert is None):
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if sslmode is not None:
        query.setdefault("sslmode", sslmode)
    if sslrootcert is not None:
        query.setdefault("sslrootcert", str(sslrootcert))
    return urlunsplit(parts._replace(query=urlencode(query)))
