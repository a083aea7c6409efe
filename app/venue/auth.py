"""API-key authentication as Thalex does it (docs/thalex-protocol.md §2): an RS256/384/512 JWT per login.

A key is a key id (``kid``, e.g. ``K123456789``) plus an RSA key pair. The venue
trusts the public keys in a folder, one PEM file per key named ``<kid>.pem``, and
accepts a token when:
- its header names a known ``kid`` and an RS256, RS384 or RS512 ``alg``;
- its signature verifies against that key;
- its ``iat`` is within ``login_iat_window`` (30 s) of the venue clock; and
- its ``iat`` is strictly later than every ``iat`` accepted before for that key.

``create_keypair`` makes a throwaway key for the simulated venue (``cryptics up``
creates one on first run); ``sign_token`` is the client side, as the official
connector does it: ``jwt.encode({"iat": time.time()}, key, "RS512", headers={"kid": kid})``.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Optional, Union

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.exchange.protocol import AUTHENTICATION_FAILED
from app.venue.errors import VenueError

ALGORITHMS = ("RS256", "RS384", "RS512")
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def default_account(kid: str) -> str:
    """The account number a key logs in to when the login names none: stable per key."""
    digits = int(hashlib.sha256(kid.encode()).hexdigest(), 16) % 10**9
    return f"A{digits:09d}"


def create_keypair(folder: Union[str, Path], kid: str,
                   trusted_keys_dir: Optional[Union[str, Path]] = None) -> tuple[Path, Path]:
    """Create an RSA key pair for ``kid``; returns (private key path, public key path).

    The private key goes to ``folder/<kid>.private.pem`` with mode 0600; the public key to
    ``trusted_keys_dir/<kid>.pem`` (default ``folder/trusted_keys``), where a venue
    configured with that ``trusted_keys_dir`` finds it. Existing files are replaced.
    """
    if not KID_PATTERN.match(kid):
        raise ValueError(f"key id must be 1-64 characters from [A-Za-z0-9_-], got {kid!r}")
    folder = Path(folder)
    trusted = Path(trusted_keys_dir) if trusted_keys_dir is not None else folder / "trusted_keys"
    folder.mkdir(parents=True, exist_ok=True)
    trusted.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path = folder / f"{kid}.private.pem"
    public_path = trusted / f"{kid}.pem"
    if private_path.resolve() == public_path.resolve():
        raise ValueError("the private key and the trusted public key would be the same file")
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    # Created 0600 from the start: the private key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path, public_path


def sign_token(private_key: Union[str, bytes, Path], kid: str, iat: Optional[float] = None,
               algorithm: str = "RS512") -> str:
    """A login token: ``private_key`` is PEM text/bytes or the path of a PEM file."""
    if isinstance(private_key, Path):
        private_key = private_key.read_bytes()
    return jwt.encode({"iat": time.time() if iat is None else iat}, private_key, algorithm=algorithm,
                      headers={"kid": kid})


class Authenticator:
    """Verifies login tokens against the trusted keys folder; remembers the last ``iat`` per key."""

    def __init__(self, trusted_keys_dir: Union[str, Path], iat_window: float = 30.0) -> None:
        self.trusted_keys_dir = Path(trusted_keys_dir)
        self.iat_window = iat_window
        self.last_iat: dict[str, float] = {}
        #: kid → (file mtime, public key): keys added or replaced while running are picked up.
        self._keys: dict[str, tuple[float, object]] = {}

    def _public_key(self, kid: str) -> object:
        path = self.trusted_keys_dir / f"{kid}.pem"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise VenueError(AUTHENTICATION_FAILED, f"unknown key id {kid!r}") from None
        cached = self._keys.get(kid)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError):
            raise VenueError(AUTHENTICATION_FAILED, f"key {kid!r} is not a readable PEM public key") from None
        self._keys[kid] = (mtime, key)
        return key

    def verify(self, token: object, now: float) -> str:
        """The key id of a valid token; VenueError 19 otherwise."""
        if not isinstance(token, str):
            raise VenueError(AUTHENTICATION_FAILED, "token must be a string")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise VenueError(AUTHENTICATION_FAILED, "token is not a JWT") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID_PATTERN.match(kid):
            raise VenueError(AUTHENTICATION_FAILED, "token header has no valid kid")
        if header.get("alg") not in ALGORITHMS:
            raise VenueError(AUTHENTICATION_FAILED, "token alg must be RS256, RS384 or RS512")
        key = self._public_key(kid)
        try:
            # iat is checked below, by the exchange's own rules, not PyJWT's.
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS),
                                options={"verify_iat": False, "verify_exp": False, "verify_nbf": False,
                                         "verify_aud": False, "verify_iss": False})
        except jwt.PyJWTError:
            raise VenueError(AUTHENTICATION_FAILED, "token signature does not verify") from None
        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, (int, float)):
            raise VenueError(AUTHENTICATION_FAILED, "token has no numeric iat")
        if abs(iat - now) > self.iat_window:
            raise VenueError(AUTHENTICATION_FAILED, f"token iat is more than {self.iat_window:g} s from server time")
        last = self.last_iat.get(kid)
        if last is not None and iat <= last:
            raise VenueError(AUTHENTICATION_FAILED, "token iat must be later than that of the previous token")
        self.last_iat[kid] = iat
        return kid
