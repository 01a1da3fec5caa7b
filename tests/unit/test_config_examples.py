"""Every shipped configuration example validates, and the main one names every key with
its real default."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.config import CloudSync, Encryption, Settings, load_settings
from akoshad.storage.retention import Retention

CONFIG = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = sorted(CONFIG.glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "akoshad.example.yaml",
        "r2.example.yaml",
        "aws-s3.example.yaml",
        "local-seaweedfs.example.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path, tmp_path: Path) -> None:
    settings = load_settings(path, environ={"HOME": str(tmp_path)})
    cs = settings.cloud_sync
    assert (cs.access_key_id is None) == (cs.secret_access_key is None)


def test_main_example_lists_every_key() -> None:
    text = (CONFIG / "akoshad.example.yaml").read_text()
    groups = (Settings, CloudSync, Retention, Encryption)
    for name in [field for group in groups for field in group.model_fields]:
        assert f"{name}:" in text, name


def test_main_example_states_the_defaults(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    example = load_settings(CONFIG / "akoshad.example.yaml", environ=env)
    assert example == load_settings(environ=env)


@pytest.mark.parametrize(
    ("name", "endpoint", "region"),
    [
        ("r2.example.yaml", "https://<account-id>.r2.cloudflarestorage.com", "auto"),
        ("aws-s3.example.yaml", None, None),
        ("local-seaweedfs.example.yaml", "http://127.0.0.1:8333", None),
    ],
)
def test_provider_examples(
    tmp_path: Path, name: str, endpoint: str | None, region: str | None
) -> None:
    cs = load_settings(CONFIG / name, environ={"HOME": str(tmp_path)}).cloud_sync
    assert cs.cloud_bucket
    assert cs.cloud_endpoint == endpoint
    if region is not None:
        assert cs.cloud_region == region
    assert cs.cloud_region != "auto" or name == "r2.example.yaml"


def test_main_example_says_encryption_works(tmp_path: Path) -> None:
    """Uploads are encrypted once recipients are set: the example must not tell its reader
    that akoshad refuses to start with them (what it said while it was not wired yet)."""
    text = (CONFIG / "akoshad.example.yaml").read_text()
    group = text[text.index("# Client-side encryption") : text.index("encryption:\n")]
    assert "refuses to start" not in group and "Not wired" not in group, group
    assert "encrypted" in group
