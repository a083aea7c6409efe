"""``python -m app.stack.prepare``: the one-shot ``prepare`` job of docker-compose.yml.

It makes, in shared volumes, what ``cryptics up`` makes for itself in ``.cryptics/``
(docs/deployment.md#what-the-prepare-job-makes):

- the simulated venue's throwaway key pair: the private half in the folder the workers
  read (``--private-keys``), the public half in the venue's trusted keys folder
  (``--trusted-keys``). Made once and then kept, so a restart of the job never changes the
  key under a running worker.
- the database password in libpq's password-file format (``--pgpass``, mode 0600), which
  asyncpg reads through ``PGPASSFILE``: made from the plain password file the TimescaleDB
  image reads (``POSTGRES_PASSWORD_FILE``), so the user writes the password once and no
  database URL carries it. Written again on every run, so a changed password reaches the
  workers at their next start.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from app.venue.auth import create_keypair


class PrepareError(ValueError):
    """What the job refuses, in a line the user can act on."""


def read_password(password_file: Path) -> str:
    """The password in ``password_file``, as the TimescaleDB image reads it: the whole file
    less its trailing line breaks (the shell's ``$(< file)``)."""
    try:
        password = password_file.read_text().rstrip("\n")
    except OSError as exc:
        raise PrepareError(f"cannot read the database password file {password_file}: {exc.strerror}") from None
    if not password:
        raise PrepareError(f"the database password file {password_file} is empty")
    # libpq unescapes "\:" and "\\" in a password file and asyncpg keeps them as written,
    # so a password holding either would mean two different things; a line break ends the entry.
    bad = sorted({ch for ch in password if ch in ":\\\r\n"})
    if bad:
        raise PrepareError(f"the database password may not contain {' '.join(repr(ch) for ch in bad)} "
                           "(a password file cannot carry it for every client): choose another, "
                           "e.g. `openssl rand -hex 32`")
    return password


def pgpass_entry(password: str) -> str:
    """One libpq password-file line that gives ``password`` for every host, port, database and user."""
    return f"*:*:*:*:{password}\n"


def write_pgpass(password_file: Path, pgpass: Path) -> None:
    """Write ``pgpass`` from ``password_file``, readable by its owner only from the start
    (asyncpg ignores a password file that others may read)."""
    entry = pgpass_entry(read_password(password_file))
    pgpass.parent.mkdir(parents=True, exist_ok=True)
    partial = pgpass.with_name(pgpass.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(entry)
    os.chmod(partial, 0o600)
    # Renamed into place: a worker starting meanwhile reads the old file or the new one, never half of one.
    os.replace(partial, pgpass)


def ensure_venue_key(key_id: str, private_keys: Path, trusted_keys: Path) -> bool:
    """Make the key pair ``key_id`` unless both halves are there already; True if it made one."""
    if (private_keys / f"{key_id}.private.pem").is_file() and (trusted_keys / f"{key_id}.pem").is_file():
        return False
    create_keypair(private_keys, key_id, trusted_keys)
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.stack.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--key-id", required=True, help="key id (kid) of the simulated venue's throwaway key")
    parser.add_argument("--private-keys", type=Path, required=True, help="folder of the private key (the workers')")
    parser.add_argument("--trusted-keys", type=Path, required=True, help="the venue's trusted public keys folder")
    parser.add_argument("--database-password-file", type=Path, required=True,
                        help="the plain database password (the TimescaleDB image's POSTGRES_PASSWORD_FILE)")
    parser.add_argument("--pgpass", type=Path, required=True, help="where to write the libpq password file")
    args = parser.parse_args(argv)
    try:
        made = ensure_venue_key(args.key_id, args.private_keys, args.trusted_keys)
        write_pgpass(args.database_password_file, args.pgpass)
    except (PrepareError, ValueError, OSError) as exc:
        print(f"prepare: {exc}", file=sys.stderr)
        return 1
    print(f"prepare: venue key {args.key_id} {'created' if made else 'kept'} "
          f"({args.private_keys}, {args.trusted_keys}); database password file {args.pgpass} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
