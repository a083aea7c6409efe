"""Static checks of the container files: docker-compose.yml, compose/venue-*.env, the Dockerfile,
.dockerignore, grafana/prometheus/prometheus.yml (no container engine on the build machines,
docs/deployment.md).

What "it would start and trade" comes down to without an engine:
- the file is valid Compose (the Compose Specification's JSON schema, vendored in
  tests/unit/data/compose-spec.json, with the pinned ``jsonschema``), after interpolation as
  Compose does it;
- every ``CRYPTICS_*`` variable it, its env files and the Dockerfile set is a setting, and each
  project service's environment parses into Settings (with the secrets it mounts as files) to
  the venue, keys and URLs the other services provide;
- images pinned by tag, TimescaleDB at the version its SQL is tested on, a valid KRaft cluster
  id and replication, waits on health or completion, restart policies, named volumes, no fixed
  host port on a scaled service, every secret declared, no password inline;
- the Dockerfile's stages, layer order, compiled-extension check, user and HEALTHCHECK;
- the prepare job (app/stack/prepare.py) writes what asyncpg and the venue read.

promtool's check of the Prometheus config starts a process: tests/integration/test_container_tools.py.
"""
from __future__ import annotations

import base64
import copy
import functools
import json
import re
import stat
import tarfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import jsonschema
import pytest
import yaml
from asyncpg import connect_utils
from cryptography.hazmat.primitives import serialization

from app.config import SettingsErrors
from app.settings import THALEX_URLS, Settings
from app.stack import prepare
from tests.unit.test_docs import variables as settings_variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
PGLITE = ROOT / "tests" / "integration" / "pglite"
SECRETS_DIR = "/run/secrets/"
#: The services meant to run as several replicas (`docker compose up --scale worker=3`).
SCALED = {"worker"}


# -- reading the files as Compose and Docker do --------------------------------------------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                       r"|(?P<bare>[A-Za-z_]\w*))")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``,
    ``${NAME:?error}``, ``${NAME:+replacement}`` and ``$$`` resolved from ``env``."""

    def one(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg, value = match.group("op"), match.group("arg"), env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op is None:
            return value or ""
        if op.endswith("-"):
            return arg if missing else value
        if op.endswith("?"):
            if missing:
                raise KeyError(f"{name}: {arg}")
            return value
        return "" if missing else arg  # "+"

    return _VARIABLE.sub(one, text)


def _interpolated(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


@functools.cache
def _compose_yaml() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose(env: Optional[Mapping[str, str]] = None) -> dict:
    """docker-compose.yml as Compose sees it with ``env`` as the user's environment (none by
    default): YAML anchors and merge keys resolved, variables interpolated. A fresh copy."""
    return _interpolated(_compose_yaml(), env or {})


def services(env: Optional[Mapping[str, str]] = None) -> dict[str, dict]:
    return compose(env)["services"]


def env_file(path: Path) -> dict[str, str]:
    """A Compose env file: ``NAME=value`` lines; blank lines and ``#`` comments skipped."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            out[name.strip()] = value
    return out


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def stages(path: Path = DOCKERFILE) -> dict[str, list[tuple[str, str]]]:
    """Each build stage's instructions, by stage name (the last stage is the image), in order."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in dockerfile_instructions(path):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert match, args
            current = match.group(2) or f"stage{len(out)}"
            out[current] = []
        assert current is not None, f"{keyword} before any FROM"
        out[current].append((keyword, args))
    return out


def image_env() -> dict[str, str]:
    """The ENV of the image's last stage: what every container of the project's image starts with."""
    out = {}
    for keyword, args in list(stages().values())[-1]:
        if keyword == "ENV":
            for pair in args.split():
                name, _, value = pair.partition("=")
                out[name] = value
    return out


def image_healthcheck() -> Optional[str]:
    return next((args for keyword, args in list(stages().values())[-1] if keyword == "HEALTHCHECK"), None)


def environment(service: dict) -> dict[str, str]:
    """A service's environment as its container gets it: the image's ENV (project image), then
    its env files, then its ``environment`` (each overriding the one before, as Compose does)."""
    env = dict(image_env()) if "build" in service else {}
    for name in service.get("env_file", []):
        env.update(env_file(ROOT / name))
    given = service.get("environment", {})
    assert isinstance(given, dict), "environment as a mapping, so that anchors merge"
    env.update({name: "" if value is None else str(value) for name, value in given.items()})
    return env


def has_healthcheck(service: dict) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable") and bool(check.get("test"))
    return "build" in service and image_healthcheck() is not None


def is_job(service: dict) -> bool:
    """A one-shot job: restarted only on failure, no healthcheck (it exits when done)."""
    return service.get("restart") == "on-failure" and service.get("healthcheck", {}).get("disable") is True


def mounts(service: dict) -> dict[str, str]:
    """target → source of the service's volumes (short syntax)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        out[target] = source
    return out


def with_secrets_as_files(env: dict[str, str], service: dict, folder: Path,
                          contents: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """``env`` with every ``/run/secrets/<name>`` value moved to a file in ``folder``, as if
    the secret were mounted there; each such secret must be one the service mounts."""
    out = dict(env)
    for name, value in env.items():
        if value.startswith(SECRETS_DIR):
            secret = value[len(SECRETS_DIR):]
            assert secret in service.get("secrets", []), f"{name}={value}, but the service does not mount {secret}"
            path = folder / secret
            path.write_text((contents or {}).get(secret, f"{secret}-value\n"))
            out[name] = str(path)
    return out


# -- 1. valid Compose --------------------------------------------------------------------------------

def compose_schema_errors(model: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
            for error in validator.iter_errors(model)]


def test_the_compose_file_validates_against_the_compose_specification():
    assert compose_schema_errors(compose()) == []
    # With a venue chosen too: the env file's name and the secret's path are interpolated.
    assert compose_schema_errors(compose({"CRYPTICS_VENUE": "testnet", "THALEX_PRIVATE_KEY_FILE": "k.pem"})) == []


def test_the_schema_check_refuses_what_compose_refuses():
    model = compose()
    broken = copy.deepcopy(model)
    broken["services"]["worker"]["depends_on"]["migrate"]["condition"] = "service_done"
    broken["services"]["grafana"]["restart_policy"] = "always"
    errors = compose_schema_errors(broken)
    assert any("service_done" in e for e in errors) and any("restart_policy" in e for e in errors), errors


def test_interpolation_follows_compose():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$SET", env) == "x d d  d $SET"
    assert interpolate("${SET:+r}${EMPTY:+r}${UNSET+r}", env) == "r"
    with pytest.raises(KeyError):
        interpolate("${EMPTY:?needed}", env)


# -- 2. the settings it sets ---------------------------------------------------------------------

def _set_variables() -> Iterator[tuple[str, str]]:
    """(where, CRYPTICS_ variable) for every variable set or interpolated by the container files."""
    for name, service in _compose_yaml()["services"].items():
        for variable in (service.get("environment") or {}):
            yield f"docker-compose.yml services.{name}.environment", variable
    for path in sorted((ROOT / "compose").glob("venue-*.env")):
        for variable in env_file(path):
            yield f"compose/{path.name}", variable
    for variable in re.findall(r"\$\{(CRYPTICS_\w+)", COMPOSE_FILE.read_text()):
        yield "docker-compose.yml interpolation", variable
    for variable in image_env():
        yield "Dockerfile ENV", variable


def test_every_cryptics_variable_the_containers_set_is_a_setting():
    known = set(settings_variables())
    found = [(where, v) for where, v in _set_variables() if v.startswith("CRYPTICS_")]
    assert len(found) > 10, found  # the walk finds the variables at all
    unknown = sorted({f"{where}: {v}" for where, v in found if v not in known})
    assert not unknown, "not a setting (app/settings.py, docs/operations.md):\n" + "\n".join(unknown)


def _prepare_arguments() -> dict[str, str]:
    command = services()["prepare"]["command"]
    return {flag: value for flag, value in zip(command, command[1:]) if flag.startswith("--")}


@pytest.mark.parametrize("venue", ["simulated", "testnet", "production"])
def test_the_worker_of_each_venue_gets_settings_that_parse_and_lead_to_the_venue(venue, tmp_path):
    user_env = {"CRYPTICS_VENUE": venue}
    if venue != "simulated":
        user_env |= {"CRYPTICS_THALEX_KEY_ID": "K123456789", "THALEX_PRIVATE_KEY_FILE": "./thalex.pem"}
    model = compose(user_env)
    worker = model["services"]["worker"]
    env = with_secrets_as_files(environment(worker), worker, tmp_path, {"web_token": "  the-token \n"})
    settings = Settings.from_env(env)

    assert settings.venue == venue
    assert settings.web_token == "the-token"
    assert not settings.analytics.enabled  # the analytics run in a worker of their own
    assert settings.broker_url and settings.database_url and settings.schema_registry_url
    if venue == "simulated":
        # The compose stack's venue, with the throwaway key of the prepare job.
        venue_service = model["services"]["venue"]
        port = environment(venue_service)["CRYPTICS_VENUE_PORT"]
        assert settings.venue_ws_url == f"ws://venue:{port}/ws/api/v2"
        key_id, private_keys = _prepare_arguments()["--key-id"], _prepare_arguments()["--private-keys"]
        assert settings.thalex_key_id == key_id
        assert settings.thalex_private_key_file == Path(private_keys) / f"{key_id}.private.pem"
        assert mounts(worker)[private_keys] == mounts(model["services"]["prepare"])[private_keys]
    else:
        assert settings.venue_ws_url == THALEX_URLS[venue]
        assert settings.thalex_key_id == "K123456789"
        # Your key, as a secret file: the path is inside the container, the file is yours.
        assert str(settings.thalex_private_key_file).startswith(str(tmp_path))
        assert model["secrets"]["thalex_private_key"]["file"] == "./thalex.pem"


def test_a_venue_without_its_env_file_is_refused_by_compose():
    # Compose fails on an env file that does not exist: a misspelt venue stops before anything starts.
    names = {p.name for p in (ROOT / "compose").glob("venue-*.env")}
    assert names == {"venue-simulated.env", "venue-testnet.env", "venue-production.env"}
    assert services({"CRYPTICS_VENUE": "tesnet"})["worker"]["env_file"] == ["compose/venue-tesnet.env"]


def test_every_project_service_gets_settings_that_parse(tmp_path):
    model = compose()
    project = {name: s for name, s in model["services"].items() if "build" in s}
    assert {"prepare", "migrate", "topics", "venue", "worker", "analytics"} <= set(project)
    parsed = {}
    for name, service in project.items():
        folder = tmp_path / name
        folder.mkdir()
        try:
            parsed[name] = Settings.from_env(with_secrets_as_files(environment(service), service, folder))
        except SettingsErrors as exc:
            pytest.fail(f"{name}: {exc}")
    # The analytics worker: the analytics, no venue session (so no lease to compete for).
    assert parsed["analytics"].analytics.enabled and parsed["analytics"].venue_ws_url is None
    # The venue trusts the public half the prepare job writes, from the volume they share.
    trusted = _prepare_arguments()["--trusted-keys"]
    assert parsed["venue"].simulated_venue.trusted_keys_dir == Path(trusted)
    assert mounts(project["venue"])[trusted] == mounts(project["prepare"])[trusted]
    assert parsed["venue"].simulated_venue.host == "0.0.0.0"
    # The dashboards' login gets the password Grafana reads (grafana/provisioning/datasources/).
    assert parsed["migrate"].database_reader_password_file is not None
    assert environment(project["migrate"])["CRYPTICS_DATABASE_READER_PASSWORD_FILE"] == \
        SECRETS_DIR + "grafana_db_password"
    assert "grafana_db_password" in model["services"]["grafana"]["secrets"]


def test_the_workers_read_the_database_password_from_the_prepare_jobs_file():
    model = compose()
    pgpass = Path(_prepare_arguments()["--pgpass"])
    assert _prepare_arguments()["--database-password-file"] == SECRETS_DIR + "postgres_password"
    assert environment(model["services"]["timescaledb"])["POSTGRES_PASSWORD_FILE"] == SECRETS_DIR + "postgres_password"
    for name in ("migrate", "worker", "analytics"):
        service = model["services"][name]
        assert environment(service)["PGPASSFILE"] == str(pgpass), name
        assert mounts(service)[str(pgpass.parent)] == mounts(model["services"]["prepare"])[str(pgpass.parent)], name
        assert "@" in environment(service)["CRYPTICS_DATABASE_URL"]  # a user, and no password (below)


# -- 3. images, Kafka, TimescaleDB -------------------------------------------------------------

def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and bool(re.search(r"\d", tag))


def test_every_image_is_pinned_by_tag():
    assert not _pinned("grafana/grafana") and not _pinned("grafana/grafana:latest") and _pinned("prom/prometheus:v2.42.0")
    loose = [f"{name}: {s.get('image')}" for name, s in services().items()
             if not ("build" in s and s.get("image", "").endswith(":local")) and not _pinned(s.get("image", ""))]
    assert not loose, f"images not pinned to a version: {loose}"
    built = {s["image"] for s in services().values() if "build" in s}
    assert len(built) == 1 and not built.pop().endswith(":latest")  # one project image, built once
    bases = [args.split()[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    external = [b for b in bases if b not in stages()]
    assert external and all(_pinned(b) for b in external), bases


def test_the_kraft_cluster_is_three_brokers_with_a_valid_id_and_replication():
    brokers = {name: s for name, s in services().items() if s.get("image", "").startswith("apache/kafka:")}
    assert len(brokers) == 3
    envs = {name: environment(s) for name, s in brokers.items()}
    ids = {env["CLUSTER_ID"] for env in envs.values()}
    assert len(ids) == 1, ids  # one cluster
    cluster_id = ids.pop()
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id), cluster_id
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    node_ids = {env["KAFKA_NODE_ID"] for env in envs.values()}
    assert node_ids == {"1", "2", "3"}
    for name, env in envs.items():
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(v.split("@")[1].split(":")[0] for v in voters) == sorted(brokers), voters
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert {"CONTROLLER", "PLAINTEXT"} <= {p.split(":")[0] for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    # Each broker's log dirs on a named volume of its own.
    volumes = [mounts(s)[envs[name]["KAFKA_LOG_DIRS"]] for name, s in brokers.items()]
    assert len(set(volumes)) == 3 and set(volumes) <= set(compose()["volumes"]), volumes
    # The project creates topics and workers with the same replication.
    assert environment(services()["topics"])["CRYPTICS_TOPIC_REPLICATION"] == "3"
    assert environment(services()["worker"])["CRYPTICS_TOPIC_REPLICATION"] == "3"


def _tested_timescaledb() -> tuple[str, str]:
    """(TimescaleDB major.minor, PostgreSQL major) of the PGlite build the TimescaleDB SQL is
    tested on, as tests/integration/pglite/package.json states it next to the exact pin."""
    description = json.loads((PGLITE / "package.json").read_text())["description"]
    timescaledb = re.search(r"TimescaleDB (\d+\.\d+)", description)
    postgres = re.search(r"PostgreSQL (\d+)", description)
    assert timescaledb and postgres, description
    return timescaledb.group(1), postgres.group(1)


def test_the_timescaledb_image_is_the_version_the_tests_cover():
    image = services()["timescaledb"]["image"]
    match = re.fullmatch(r"timescale/timescaledb:(\d+\.\d+)\.\d+-pg(\d+)", image)
    assert match, image
    assert (match.group(1), match.group(2)) == _tested_timescaledb()


def test_the_pinned_pglite_build_carries_the_timescaledb_its_package_names():
    bundle = PGLITE / "node_modules" / "@unni-craftsman" / "pglite" / "dist" / "timescaledb.tar.gz"
    if not bundle.is_file():
        pytest.skip("PGlite is not installed (tests/integration/test_timescale_pglite.py runs npm ci)")
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("extension/timescaledb.control"))
        control = tar.extractfile(member).read().decode()
    version = re.search(r"default_version\s*=\s*'(\d+\.\d+)", control)
    assert version and version.group(1) == _tested_timescaledb()[0], control


# -- 4. start order, restarts, volumes, ports --------------------------------------------------

def test_every_wait_is_on_health_or_on_a_finished_job():
    model = services()
    wrong = []
    for name, service in model.items():
        depends = service.get("depends_on", {})
        if not isinstance(depends, dict):
            wrong.append(f"{name}: depends_on as a list waits only for 'started'")
            continue
        for other, how in depends.items():
            condition = how.get("condition")
            if other not in model:
                wrong.append(f"{name} waits for {other}, which is no service")
            elif condition == "service_healthy" and not has_healthcheck(model[other]):
                wrong.append(f"{name} waits for {other} to be healthy, but it has no healthcheck")
            elif condition == "service_completed_successfully" and not is_job(model[other]):
                wrong.append(f"{name} waits for {other} to complete, but it is no one-shot job")
            elif condition not in ("service_healthy", "service_completed_successfully"):
                wrong.append(f"{name} waits for {other} with {condition}")
    assert not wrong, "\n".join(wrong)
    worker_waits = set(model["worker"]["depends_on"])
    assert {"migrate", "topics", "schema-registry", "venue"} <= worker_waits


def test_services_restart_jobs_retry_and_every_service_has_a_healthcheck():
    model = services()
    jobs = {name for name, s in model.items() if is_job(s)}
    assert jobs == {"prepare", "migrate", "topics"}
    for name, service in model.items():
        if name in jobs:
            continue
        assert service.get("restart") == "unless-stopped", name
        assert has_healthcheck(service), f"{name} has no healthcheck"


def test_the_data_lives_on_named_volumes():
    model = compose()
    declared = set(model["volumes"])
    data_dirs = {"timescaledb": "/var/lib/postgresql/data", "grafana": "/var/lib/grafana", "prometheus": "/prometheus"}
    for name, folder in data_dirs.items():
        assert mounts(model["services"][name]).get(folder) in declared, f"{name}: {folder} on no named volume"
    for name, service in model["services"].items():
        for target, source in mounts(service).items():
            assert source.startswith("./") or source in declared, f"{name}: volume {source} is not declared"


def _published(port: Any) -> tuple[Optional[str], Optional[str]]:
    """(host ip, host port) of a ports entry, short or long syntax."""
    if isinstance(port, dict):
        published = port.get("published")
        return port.get("host_ip"), None if published in (None, "") else str(published)
    parts = str(port).split(":")
    if len(parts) == 1:
        return None, None
    if len(parts) == 2:
        return None, parts[0] or None
    return parts[0], parts[1] or None


def test_scaled_services_take_any_free_host_port_and_fixed_ones_stay_on_loopback():
    assert _published("127.0.0.1:3000:3000") == ("127.0.0.1", "3000")
    assert _published({"target": 6066, "host_ip": "127.0.0.1"}) == ("127.0.0.1", None)
    for name, service in services().items():
        for port in service.get("ports", []):
            host_ip, host_port = _published(port)
            assert host_ip == "127.0.0.1", f"{name}: {port} is reachable from other machines"
            if name in SCALED:
                assert host_port is None, f"{name} is scaled: a fixed host port {host_port} fails the second replica"
    assert services()["worker"]["ports"], "the workers' web views reachable from the host"


# -- 5. secrets ----------------------------------------------------------------------------------

def test_every_secret_is_a_declared_file():
    model = compose()
    declared = model["secrets"]
    for name, secret in declared.items():
        assert set(secret) == {"file"}, f"{name}: a secret comes from a file, never from the environment"
    for name, service in model["services"].items():
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name} mounts the undeclared secret {secret}"
        for variable, value in environment(service).items():
            if value.startswith(SECRETS_DIR):
                assert value[len(SECRETS_DIR):] in service.get("secrets", []), f"{name}: {variable}={value}"
    raw = _compose_yaml()["secrets"]
    assert raw["thalex_private_key"]["file"].startswith("${THALEX_PRIVATE_KEY_FILE")  # chosen by you
    assert "thalex_private_key" in model["services"]["worker"]["secrets"]


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"://[^/\s@:]+:[^/\s@]*@")


def inline_secrets(env: Mapping[str, str]) -> list[str]:
    """The variables of ``env`` that carry a secret's value instead of naming a file: a
    password-like name whose value is no file path, or a URL with a password."""
    found = []
    for name, value in env.items():
        if _URL_PASSWORD.search(value):
            found.append(f"{name}: a password in a URL")
        elif _SECRET_NAME.search(name) and not (name.endswith("_FILE") and value.startswith("/")):
            found.append(f"{name}: a secret's value")
    return found


def test_no_password_is_inline():
    assert inline_secrets({"A_URL": "postgresql://u:p@h/db", "GF_SECURITY_ADMIN_PASSWORD": "x",
                           "CRYPTICS_WEB_TOKEN": "t", "POSTGRES_PASSWORD_FILE": "/run/secrets/p"}) == \
        ["A_URL: a password in a URL", "GF_SECURITY_ADMIN_PASSWORD: a secret's value", "CRYPTICS_WEB_TOKEN: a secret's value"]
    found = []
    for name, service in services().items():
        found += [f"{name}: {line}" for line in inline_secrets(environment(service))]
    for path in sorted((ROOT / "compose").glob("venue-*.env")):
        found += [f"{path.name}: {line}" for line in inline_secrets(env_file(path))]
    assert not found, found
    # Nor a password taken from the user's environment by interpolation.
    assert not re.findall(r"\$\{[^}]*(?:PASSWORD|TOKEN)[^}]*\}", COMPOSE_FILE.read_text())


# -- 6. Prometheus and Grafana -------------------------------------------------------------------

def test_prometheus_scrapes_every_worker_by_its_service_name():
    config = yaml.safe_load((ROOT / "grafana" / "prometheus" / "prometheus.yml").read_text())
    model = services()
    scraped = {}
    for job in config["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            assert sd["type"] == "A"  # a compose service name answers with every replica's address
            for name in sd["names"]:
                scraped[name] = sd["port"]
    workers = {name for name, s in model.items() if "build" in s and s.get("command") == ["cryptics", "worker"]}
    assert workers == {"worker", "analytics"} and set(scraped) == workers, scraped
    for name in workers:
        port = int(environment(model[name]).get("CRYPTICS_WEB_PORT") or settings_variables()["CRYPTICS_WEB_PORT"].default)
        assert scraped[name] == port, name
        assert any(p.get("target") == port for p in model[name]["ports"]), name
    prometheus = model["prometheus"]
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == "./grafana/prometheus/prometheus.yml"


def test_grafana_is_provisioned_and_reads_its_passwords_from_secrets():
    model = compose()
    grafana = model["services"]["grafana"]
    assert re.fullmatch(r"grafana/grafana:11\.6\.\d+", grafana["image"])
    assert mounts(grafana)["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert mounts(grafana)["/var/lib/grafana"] in model["volumes"]
    env = environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == SECRETS_DIR + "grafana_admin_password"
    # What the provisioning files read must be what compose mounts: the secret files and the
    # dashboards' folder, and the Prometheus they name.
    provisioning = "\n".join(p.read_text() for p in sorted((ROOT / "grafana" / "provisioning").rglob("*.yaml")))
    for secret_path in re.findall(r"\$__file\{([^}]+)\}", provisioning):
        assert secret_path.startswith(SECRETS_DIR) and secret_path[len(SECRETS_DIR):] in grafana["secrets"], secret_path
    for folder in re.findall(r"^\s*path:\s*(\S+)", provisioning, re.M):
        assert folder in mounts(grafana), f"the dashboards' folder {folder} is not mounted"
    for host, port in re.findall(r"url:\s*http://([\w-]+):(\d+)", provisioning):
        assert host in model["services"], host
    assert "timescaledb" in grafana["depends_on"] and "migrate" in grafana["depends_on"]


# -- 7. the Dockerfile ---------------------------------------------------------------------------

def _runs(stage: list[tuple[str, str]]) -> list[str]:
    return [args for keyword, args in stage if keyword == "RUN"]


def test_the_image_is_built_in_stages_and_the_runtime_has_no_compiler():
    built = stages()
    assert len(built) >= 2
    names = list(built)
    runtime = built[names[-1]]
    assert not runtime[0][1].split()[0] in built, "the runtime stage starts from a clean base image"
    assert any(re.search(r"apt-get install .*\bgcc\b", run) for stage in names[:-1] for run in _runs(built[stage]))
    compiler = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|libc6-dev|python3-dev)\b")
    assert not [run for run in _runs(runtime) if compiler.search(run)], "a compiler in the runtime image"
    # The runtime installs wheels only: from the build stages, without an index, no source tree.
    installs = [run for run in _runs(runtime) if "pip install" in run]
    assert len(installs) >= 2 and all("--no-index" in run and "from=" in run for run in installs), installs
    copied = [args.split()[0] for keyword, args in runtime if keyword == "COPY"]
    assert not {"app", "agents", "models", "."} & set(copied), copied


def test_the_dependencies_are_a_layer_before_the_code():
    flat = [(stage, keyword, args) for stage, instructions in stages().items() for keyword, args in instructions]
    code_copy = next(i for i, (_, keyword, args) in enumerate(flat) if keyword == "COPY" and args.split()[0] == "app")
    deps_install = next(i for i, (_, keyword, args) in enumerate(flat)
                        if keyword == "RUN" and "pip wheel" in args and "requirements" in args)
    setup_copy = next(i for i, (_, keyword, args) in enumerate(flat) if keyword == "COPY" and "setup.cfg" in args.split())
    assert setup_copy < deps_install < code_copy
    # The runtime too: dependencies installed in their own layer before the project's wheel.
    runtime = _runs(list(stages().values())[-1])
    deps_layer = next(i for i, run in enumerate(runtime) if "requirements" in run)
    project_layer = next(i for i, run in enumerate(runtime) if "--no-deps" in run)
    assert deps_layer < project_layer


def test_the_build_fails_unless_the_cython_extensions_compiled():
    extensions = re.findall(r'Extension\("([\w.]+)"', (ROOT / "setup.py").read_text())
    assert extensions, "setup.py lists its extensions"
    build_runs = [run for stage in list(stages().values())[:-1] for run in _runs(stage)]
    check = [run for run in build_runs if "import" in run and all(e in run for e in extensions)]
    assert check, f"no build step imports {extensions}"
    assert "cd /" in check[0], "imported from outside the source tree, or the source's modules would answer"
    runtime = " ".join(_runs(list(stages().values())[-1]))
    assert "IMPLEMENTATION" in runtime and "'cython'" in runtime


def test_the_image_finds_its_schemas_and_migrations_beside_its_packages():
    base = next(args.split()[0] for keyword, args in list(stages().values())[-1] if keyword == "FROM")
    python = re.match(r"python:(\d+\.\d+)", base)
    assert python, base
    site = f"/opt/venv/lib/python{python.group(1)}/site-packages"
    copies = {tuple(args.split()) for keyword, args in list(stages().values())[-1] if keyword == "COPY"}
    assert ("schemas", f"{site}/schemas") in copies and ("timescale", f"{site}/timescale") in copies, copies


def test_the_image_runs_as_a_fixed_non_root_user_with_a_heartbeat_healthcheck():
    runtime = list(stages().values())[-1]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users and re.fullmatch(r"(\d+):(\d+)", users[-1]), users
    uid, gid = users[-1].split(":")
    assert uid != "0" and any(f"--uid {uid}" in run and f"--gid {gid}" in run for run in _runs(runtime))
    last_user = max(i for i, (keyword, _) in enumerate(runtime) if keyword == "USER")
    assert all(keyword != "RUN" for keyword, _ in runtime[last_user:]), "RUN as root after USER"
    check = image_healthcheck()
    assert check and "/heartbeat/" in check and "urllib" in check and "curl" not in check, check
    assert "6066" in check and "CRYPTICS_WEB_PORT" in check
    assert image_env()["CRYPTICS_WEB_HOST"] == "0.0.0.0"
    cmd = [json.loads(args) for keyword, args in runtime if keyword == "CMD"]
    assert cmd == [["cryptics", "worker"]]


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker's .dockerignore ``patterns`` keep ``path`` (relative to the context) out:
    a pattern matches the path or one of its parent folders; ``**`` spans folders."""
    def regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        pattern = pattern.rstrip("/")
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(regex(p).fullmatch(prefix) for p in patterns for prefix in prefixes)


def test_the_build_context_leaves_out_state_secrets_builds_and_the_local_venv():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "no exceptions: every pattern excludes"
    assert _dockerignore_excludes(["*.so"], "x.so") and not _dockerignore_excludes(["*.so"], "app/trading/x.so")
    left_out = [".venv/bin/python", ".cryptics/venue/cryptics-simulated.private.pem", ".cryptics/web_token",
                ".git/HEAD", ".env", "secrets/postgres_password", ".artifacts/inspector.png",
                "app/trading/__pycache__/quote.cpython-311.pyc", "app/trading/_quote.c",
                "app/trading/_quote.cpython-311-x86_64-linux-gnu.so", "agents/_x.c", "build/lib/app/x.py",
                "cryptics_lab.egg-info/PKG-INFO", "tests/integration/pglite/node_modules/x/package.json"]
    kept = ["setup.cfg", "setup.py", "pyproject.toml", "README.md", "app/trading/_quote.pyx", "app/cli.py",
            "agents/quoting.py", "models/base.py", "schemas/heartbeat/v1.avsc", "timescale/0001_instruments.sql"]
    assert [p for p in left_out if not _dockerignore_excludes(patterns, p)] == []
    assert [p for p in kept if _dockerignore_excludes(patterns, p)] == []
    # The files the Dockerfile copies are in the context.
    copied = [args.split()[:-1] for keyword, args in dockerfile_instructions() if keyword == "COPY"]
    for sources in copied:
        for source in sources:
            if not source.startswith("--"):
                assert (ROOT / source).exists() and not _dockerignore_excludes(patterns, source), source
    gitignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in gitignored and "/secrets/" in gitignored


# -- 8. the prepare job (app/stack/prepare.py) --------------------------------------------------

def test_prepare_writes_a_password_file_asyncpg_reads(tmp_path):
    password_file = tmp_path / "postgres_password"
    password_file.write_text("s3cret+/=word\n")
    pgpass = tmp_path / "volume" / "pgpass"
    prepare.write_pgpass(password_file, pgpass)
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600  # asyncpg ignores a file others may read
    found = connect_utils._read_password_from_pgpass(passfile=pgpass, hosts=["timescaledb"], ports=[5432],
                                                     database="cryptics", user="postgres")
    assert found == "s3cret+/=word"
    password_file.write_text("changed\n")
    prepare.write_pgpass(password_file, pgpass)  # written again: a new password reaches the workers
    assert pgpass.read_text() == "*:*:*:*:changed\n"
    assert sorted(p.name for p in pgpass.parent.iterdir()) == ["pgpass"]


@pytest.mark.parametrize("content, why", [("", "empty"), ("\n", "empty"), ("a:b", "':'"), ("a\\b", "'\\\\'"),
                                          ("one\ntwo", "'\\n'")])
def test_prepare_refuses_a_password_a_password_file_cannot_carry(tmp_path, content, why):
    password_file = tmp_path / "postgres_password"
    password_file.write_text(content)
    with pytest.raises(prepare.PrepareError, match=re.escape(why)):
        prepare.write_pgpass(password_file, tmp_path / "pgpass")
    assert not (tmp_path / "pgpass").exists()


def test_prepare_makes_the_venue_key_once_and_keeps_it(tmp_path):
    private_keys, trusted_keys = tmp_path / "venue-key", tmp_path / "trusted-keys"
    assert prepare.ensure_venue_key("cryptics-simulated", private_keys, trusted_keys) is True
    private_pem = (private_keys / "cryptics-simulated.private.pem").read_bytes()
    public_pem = (trusted_keys / "cryptics-simulated.pem").read_bytes()
    assert sorted(p.name for p in private_keys.iterdir()) == ["cryptics-simulated.private.pem"]  # no public half here
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) == public_pem
    assert prepare.ensure_venue_key("cryptics-simulated", private_keys, trusted_keys) is False
    assert (private_keys / "cryptics-simulated.private.pem").read_bytes() == private_pem


def test_prepare_says_what_it_did_and_fails_with_a_line(tmp_path, capsys):
    password_file = tmp_path / "pw"
    password_file.write_text("pw\n")
    args = ["--key-id", "k1", "--private-keys", str(tmp_path / "a"), "--trusted-keys", str(tmp_path / "b"),
            "--database-password-file", str(password_file), "--pgpass", str(tmp_path / "c" / "pgpass")]
    assert prepare.main(args) == 0
    assert "venue key k1 created" in capsys.readouterr().out
    assert prepare.main(args) == 0
    assert "venue key k1 kept" in capsys.readouterr().out
    missing = args[:-3] + [str(tmp_path / "nope"), "--pgpass", str(tmp_path / "c" / "pgpass")]
    assert prepare.main(missing) == 1
    assert "cannot read the database password file" in capsys.readouterr().err


# -- 9. the web token from a file (CRYPTICS_WEB_TOKEN_FILE), as the workers take it ---------------

def test_the_web_token_comes_from_its_file_unless_given(tmp_path):
    token_file = tmp_path / "web_token"
    token_file.write_text("  from-the-file\n")
    assert Settings.from_env({"CRYPTICS_WEB_TOKEN_FILE": str(token_file)}).web_token == "from-the-file"
    assert Settings.from_env({"CRYPTICS_WEB_TOKEN_FILE": str(token_file),
                              "CRYPTICS_WEB_TOKEN": "given"}).web_token == "given"
    assert Settings.from_env({}).web_token is None
    token_file.write_text("\n")
    with pytest.raises(SettingsErrors) as empty:
        Settings.from_env({"CRYPTICS_WEB_TOKEN_FILE": str(token_file)})
    with pytest.raises(SettingsErrors) as missing:
        Settings.from_env({"CRYPTICS_WEB_TOKEN_FILE": str(tmp_path / "nope")})
    assert empty.value.lines[0].startswith("CRYPTICS_WEB_TOKEN_FILE=") and "empty" in empty.value.lines[0]
    assert missing.value.lines[0].startswith("CRYPTICS_WEB_TOKEN_FILE=") and "cannot read" in missing.value.lines[0]
