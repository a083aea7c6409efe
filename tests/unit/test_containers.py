"""Static checks of the container files (no container engine on the build machines)."""
import base64
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_kraft_cluster_id_is_a_uuid_in_url_safe_base64():
    ids = re.findall(r"^\s*CLUSTER_ID:\s*['\"]?([^'\"\s#]+)", (ROOT / "docker-compose.yml").read_text(), re.M)
    assert ids, "no CLUSTER_ID in docker-compose.yml"
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id), cluster_id
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, cluster_id


def test_the_build_context_leaves_out_state_secrets_and_the_local_venv():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    # .cryptics/ holds the simulated venue's private key and the web token; .env the compose secrets
    assert {".venv/", ".cryptics/", ".env", ".git/"} <= ignored, ignored
    assert ".env" in (ROOT / ".gitignore").read_text().split()
