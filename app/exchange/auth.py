"""Thalex credentials and login tokens (docs/thalex-protocol.md §2).

An API key is a key name (the JWT ``kid``) plus an RSA private key. Every login
gets a fresh RS512 token whose only claim is a float ``iat``, strictly later than
any token made before with the same key: the exchange refuses a repeated or
earlier ``iat``, which fast reconnects could otherwise produce.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import jwt


class CredentialsError(RuntimeError):
    """Credentials are missing or unreadable; the text says which setting to fix."""


@dataclass(frozen=True)
class Credentials:
    key_id: str
    private_key_pem: bytes = field(repr=False)
    #: Sub-account number for the session; None selects the key's default account.
    account: Optional[str] = None

    @classmethod
    def from_file(cls, key_id: Optional[str], private_key_file: Optional[Path],
                  account: Optional[str] = None) -> "Credentials":
        if not key_id:
            raise CredentialsError("no Thalex key id: set CRYPTICS_THALEX_KEY_ID")
        if private_key_file is None:
            raise CredentialsError("no private key file: set CRYPTICS_THALEX_PRIVATE_KEY_FILE")
        try:
            pem = Path(private_key_file).expanduser().read_bytes()
        except OSError as exc:
            raise CredentialsError(f"cannot read the private key file {private_key_file}: {exc}") from None
        if b"PRIVATE KEY" not in pem:
            raise CredentialsError(f"{private_key_file} does not hold a PEM private key")
        return cls(key_id=key_id, private_key_pem=pem, account=account)


class TokenFactory:
    """Makes login tokens with strictly increasing ``iat`` per key id."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last_iat: dict[str, float] = {}
        self._lock = threading.Lock()

    def token(self, credentials: Credentials) -> str:
        with self._lock:
            iat = self._clock()
            last = self._last_iat.get(credentials.key_id)
            if last is not None and iat <= last:
                iat = last + 1e-3  # same clock reading twice: still strictly later
            self._last_iat[credentials.key_id] = iat
        return jwt.encode({"iat": iat}, credentials.private_key_pem, algorithm="RS512",
                          headers={"kid": credentials.key_id})


#: One factory per process, so every client on the same key keeps iat increasing.
tokens = TokenFactory()
