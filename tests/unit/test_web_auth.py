"""The web token (app/web/auth.py): who may change state over the web."""
from __future__ import annotations

import stat

import pytest

from app.web.auth import Unauthorized, check_bearer, ensure_token_file, is_loopback

TOKEN = "s3cret-token-of-some-length"


def test_the_right_bearer_token_passes():
    check_bearer({"Authorization": f"Bearer {TOKEN}"}, TOKEN)


@pytest.mark.parametrize("headers,why", [
    ({}, "missing"),
    ({"Authorization": TOKEN}, "missing"),
    ({"Authorization": f"Basic {TOKEN}"}, "missing"),
    ({"Authorization": "Bearer "}, "missing"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "wrong"),
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong"),
])
def test_anything_else_is_refused(headers, why):
    with pytest.raises(Unauthorized, match=why):
        check_bearer(headers, TOKEN)


def test_without_a_token_nothing_is_allowed():
    for token in (None, ""):
        with pytest.raises(Unauthorized, match="no web token"):
            check_bearer({"Authorization": "Bearer "}, token)
        with pytest.raises(Unauthorized):
            check_bearer({"Authorization": "Bearer anything"}, token)


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.org", ""))


def test_the_token_file_is_made_once_and_private(tmp_path):
    token, path = ensure_token_file(tmp_path / "state")
    assert len(token) >= 32 and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, _ = ensure_token_file(tmp_path / "state")
    assert again == token  # kept across runs: scripts that read it keep working
