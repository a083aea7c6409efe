"""The bearer token every state-changing endpoint asks for (docs/operations.md, "Web token").

Read-only views stay open. A request that changes something (``POST /quoting/state/``, and any
endpoint like it) must carry ``Authorization: Bearer <CRYPTICS_WEB_TOKEN>``; without it, or
with another token, it gets 401 and changes nothing. A worker with no token refuses every
such request, and one whose web host is not loopback refuses to start without one: the
token is what stands between the port and the trading switch.
"""
from __future__ import annotations

import hmac
import ipaddress
import secrets
from pathlib import Path
from typing import Mapping, Optional

SCHEME = "Bearer"
#: The file ``cryptics up`` keeps the token in, under the state folder.
TOKEN_FILE = "web_token"


class Unauthorized(Exception):
    """Why a request may not change anything (the 401's message)."""


def check_bearer(headers: Mapping[str, str], token: Optional[str]) -> None:
    """Raise ``Unauthorized`` unless ``headers`` carry ``token`` as a bearer token."""
    if not token:
        raise Unauthorized("this worker has no web token (CRYPTICS_WEB_TOKEN), so it changes nothing over the web")
    given = headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme != SCHEME or not value:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>' (CRYPTICS_WEB_TOKEN)")
    # Constant time: how long the comparison takes says nothing about how much of it matched.
    # aiohttp decodes a header's bytes that are not UTF-8 as surrogate escapes: encoded back
    # the same way they are only a wrong token, not an error.
    if not hmac.compare_digest(value.strip().encode("utf-8", "surrogateescape"), token.encode()):
        raise Unauthorized("wrong bearer token")


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``: a port only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or 0.0.0.0's like: reachable from elsewhere as far as we know


def ensure_token_file(state_dir: Path) -> tuple[str, Path]:
    """The token in ``<state_dir>/web_token``, made (readable by its owner only) if missing."""
    path = state_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token, path
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return token, path
