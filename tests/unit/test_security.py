"""Secured connections: the settings, the Kafka client keyword arguments and Faust credentials
built from them, the registry client's, the database URL (app/security.py, app/settings.py).
No socket: what the clients do with these is tests/integration/test_secured_connections.py."""
from __future__ import annotations

import ssl
from pathlib import Path

import faust
import httpx
import pytest

from app.config import SettingsErrors
from app.security import (SecretUnreadable, database_dsn, faust_broker_credentials, kafka_client_kwargs,
                          registry_basic_auth, registry_client_kwargs)
from app.settings import Settings
from app.stack.supervisor import embedded_conflicts
from tests.throwaway_ca import make_authority

PASSWORD = "pw-Very-Secret-123"


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return make_authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka.password"
    path.write_text(PASSWORD + "\n")
    return path


def _sasl(password_file: Path, ca: Path, protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512") -> Settings:
    return Settings.from_env({
        "CRYPTICS_BROKER_URL": "kafka://k1:9093", "CRYPTICS_KAFKA_SECURITY_PROTOCOL": protocol,
        "CRYPTICS_KAFKA_SASL_MECHANISM": mechanism, "CRYPTICS_KAFKA_SASL_USERNAME": "worker",
        "CRYPTICS_KAFKA_SASL_PASSWORD_FILE": str(password_file), "CRYPTICS_KAFKA_SSL_CAFILE": str(ca)})


def test_plaintext_is_the_default_and_needs_nothing():
    s = Settings.from_env({})
    assert kafka_client_kwargs(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(s) is None
    assert registry_client_kwargs(s) == {} and registry_basic_auth(s) is None
    assert s.database_dsn is None


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN", "SCRAM-SHA-256"])
def test_sasl_ssl_gives_every_client_the_same_credentials(password_file, authority, mechanism):
    s = _sasl(password_file, authority.ca_file, mechanism=mechanism)
    kwargs = kafka_client_kwargs(s)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("worker", PASSWORD)
    context = kwargs["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any("cryptics test CA" in str(c["subject"]) for c in context.get_ca_certs())
    # Faust's credentials are the same, and aiokafka gets the same from them.
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    credentials = faust_broker_credentials(s)
    assert isinstance(credentials, faust.SASLCredentials)
    faust_kwargs = credentials_to_aiokafka_auth(credentials)
    assert {k: v for k, v in faust_kwargs.items() if k != "ssl_context"} == \
           {k: v for k, v in kwargs.items() if k != "ssl_context"}
    assert faust_kwargs["ssl_context"].check_hostname
    assert PASSWORD not in repr(credentials) and PASSWORD not in repr(s)


def test_sasl_without_tls_and_tls_without_sasl(password_file, authority):
    plain = kafka_client_kwargs(_sasl(password_file, authority.ca_file, protocol="SASL_PLAINTEXT"))
    assert plain["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in plain
    assert faust_broker_credentials(_sasl(password_file, authority.ca_file, protocol="SASL_PLAINTEXT")).protocol.value \
        == "SASL_PLAINTEXT"
    tls = Settings.from_env({"CRYPTICS_KAFKA_SECURITY_PROTOCOL": "SSL", "CRYPTICS_KAFKA_SSL_CAFILE": str(authority.ca_file),
                             "CRYPTICS_KAFKA_SSL_CERTFILE": str(authority.cert_file),
                             "CRYPTICS_KAFKA_SSL_KEYFILE": str(authority.key_file)})
    kwargs = kafka_client_kwargs(tls)
    assert set(kwargs) == {"security_protocol", "ssl_context"} and kwargs["security_protocol"] == "SSL"
    assert isinstance(faust_broker_credentials(tls), faust.SSLCredentials)


def test_the_password_is_read_when_a_client_is_built(password_file, authority):
    s = _sasl(password_file, authority.ca_file)
    password_file.write_text("rotated-Password\n")
    assert kafka_client_kwargs(s)["sasl_plain_password"] == "rotated-Password"
    password_file.unlink()
    with pytest.raises(SecretUnreadable, match=r"^CRYPTICS_KAFKA_SASL_PASSWORD_FILE='.*': cannot read it"):
        kafka_client_kwargs(s)


def test_bad_secured_settings_get_a_line_each_and_never_show_a_secret(tmp_path, password_file):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsErrors) as refused:
        Settings.from_env({
            "CRYPTICS_KAFKA_SECURITY_PROTOCOL": "SASL_TLS",
            "CRYPTICS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1",
            "CRYPTICS_KAFKA_SSL_CAFILE": str(tmp_path / "missing.pem"),
            "CRYPTICS_KAFKA_SSL_KEYFILE": str(password_file),
            "CRYPTICS_SCHEMA_REGISTRY_USERNAME": "reg",
            "CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE": str(empty),
            "CRYPTICS_DATABASE_SSLMODE": "verify_full",
        })
    lines = refused.value.lines
    named = [line.split(" ")[0].split("=")[0].rstrip(":") for line in lines]
    assert sorted(named) == sorted([
        "CRYPTICS_KAFKA_SECURITY_PROTOCOL", "CRYPTICS_KAFKA_SASL_MECHANISM", "CRYPTICS_KAFKA_SSL_CAFILE",
        "CRYPTICS_KAFKA_SSL_KEYFILE", "CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE", "CRYPTICS_DATABASE_SSLMODE"]), lines
    assert all("\n" not in line for line in lines)
    assert not [line for line in lines if PASSWORD in line]


def test_sasl_needs_its_mechanism_user_and_password_file():
    with pytest.raises(SettingsErrors) as refused:
        Settings.from_env({"CRYPTICS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert [line.split(" ")[0] for line in refused.value.lines] == [
        "CRYPTICS_KAFKA_SASL_MECHANISM", "CRYPTICS_KAFKA_SASL_USERNAME", "CRYPTICS_KAFKA_SASL_PASSWORD_FILE"]
    with pytest.raises(SettingsErrors, match="CRYPTICS_SCHEMA_REGISTRY_USERNAME must be set"):
        Settings.from_env({"CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE": "/dev/null"})


def test_a_secured_setting_passes_to_a_child_as_a_file_name(password_file, authority):
    s = _sasl(password_file, authority.ca_file)
    env = s.to_env()
    assert env["CRYPTICS_KAFKA_SASL_PASSWORD_FILE"] == str(password_file)
    assert PASSWORD not in "".join(env.values())
    assert Settings.from_env(env) == s


def test_registry_client_basic_auth_and_ca(tmp_path, authority):
    password = tmp_path / "registry.password"
    password.write_text("reg-Secret\n")
    s = Settings.from_env({"CRYPTICS_SCHEMA_REGISTRY_URL": "https://registry:8081",
                           "CRYPTICS_SCHEMA_REGISTRY_USERNAME": "reg",
                           "CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE": str(password),
                           "CRYPTICS_SCHEMA_REGISTRY_CAFILE": str(authority.ca_file)})
    assert registry_basic_auth(s) == ("reg", "reg-Secret")
    kwargs = registry_client_kwargs(s)
    assert isinstance(kwargs["auth"], httpx.BasicAuth)
    assert kwargs["verify"].check_hostname and kwargs["verify"].verify_mode == ssl.CERT_REQUIRED
    from app.pipeline.codec import RegistryClient

    client = RegistryClient("https://registry:8081", **kwargs)
    assert client._get_client_kwargs()["verify"] is kwargs["verify"]  # the library would drop a lone CA file


def test_database_ssl_goes_on_the_url(authority):
    s = Settings.from_env({"CRYPTICS_DATABASE_URL": "postgresql://app@db:5432/cryptics",
                           "CRYPTICS_DATABASE_SSLMODE": "verify-full",
                           "CRYPTICS_DATABASE_SSLROOTCERT": str(authority.ca_file)})
    assert s.database_url == "postgresql://app@db:5432/cryptics"  # what is shown stays as given
    assert s.database_dsn == ("postgresql://app@db:5432/cryptics?sslmode=verify-full&sslrootcert="
                              + str(authority.ca_file).replace("/", "%2F"))
    # A value the URL carries already wins; other query parameters stay.
    assert database_dsn("postgresql://a:b@h/d?sslmode=disable&application_name=x", "verify-full", None) == \
        "postgresql://a:b@h/d?sslmode=disable&application_name=x"
    assert database_dsn("postgresql://a@h/d", None, None) == "postgresql://a@h/d"


def test_up_refuses_tls_settings_the_embedded_services_cannot_honour(password_file, authority):
    assert embedded_conflicts(Settings.from_env({})) == []
    s = Settings.from_env({"CRYPTICS_KAFKA_SECURITY_PROTOCOL": "SSL", "CRYPTICS_DATABASE_SSLMODE": "verify-full"})
    lines = embedded_conflicts(s)
    assert [line.split("=")[0] for line in lines] == ["CRYPTICS_KAFKA_SECURITY_PROTOCOL", "CRYPTICS_DATABASE_SSLMODE"]
    external = Settings.from_env({"CRYPTICS_BROKER_URL": "kafka://k:9093", "CRYPTICS_KAFKA_SECURITY_PROTOCOL": "SSL",
                                  "CRYPTICS_DATABASE_URL": "postgresql://a@db/x",
                                  "CRYPTICS_DATABASE_SSLMODE": "verify-full"})
    assert embedded_conflicts(external) == []
