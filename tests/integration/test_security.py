"""Secrets never leak; the socket refuses strangers; TLS verification stays on."""

from __future__ import annotations

import json
from pathlib import Path

from akoshad.config import load_settings
from akoshad.targets.s3.target import S3Target
from tests.helpers import akoshad, base_env, printed_by_every_command, write_config
from tests.storegen import make_store
from tests.tmpdirs import short_dir

SECRET = "Planted-Secret-7c1f0e9d2b-DoNotLeak"


def test_planted_secret_never_appears(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    sock = short_dir() / "a.sock"
    log_file = tmp_path / "logs" / "akoshad.log"
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(sock),
        log_file=str(log_file),
        log_level="DEBUG",
        cloud_sync={
            "system_id": "sec",
            "cloud_bucket": "nope",
            "cloud_endpoint": "http://127.0.0.1:9",  # nothing listens: errors get logged
            "access_key_id": "AKIAEXAMPLEKEY",
            "secret_access_key": SECRET,
            "retry_backoff_seconds": 0.1,
            "max_retries": 1,
        },
    )
    env = base_env(tmp_path)
    outputs = printed_by_every_command(
        cfg,
        env,
        tmp_path,
        [("status", "--json"), ("status",), ("queue", "--json"), ("sync", "--wait", "--json")],
    )
    outputs.append(log_file.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text() + "bogus: [\n")
    res = akoshad("config", "check", "--config", str(bad), env=env)
    outputs.append(res.stdout + res.stderr)
    everything = "\n".join(outputs)
    assert "cannot reach" in everything  # errors were really produced and logged
    assert SECRET not in everything
    assert "**********" in everything  # config show redacts


def test_secret_not_in_reprs_or_errors(tmp_path: Path) -> None:
    s = load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "cloud_sync": {
                "cloud_bucket": "b",
                "access_key_id": "AKIAEXAMPLEKEY",
                "secret_access_key": SECRET,
            }
        },
    )
    target = S3Target.from_settings(s)
    for text in (repr(s), str(s), json.dumps(s.redacted()), repr(target), str(target)):
        assert SECRET not in text


def test_tls_verification_on_by_default(tmp_path: Path) -> None:
    s = load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "cloud_sync": {
                "cloud_bucket": "b",
                "cloud_endpoint": "https://example.r2.cloudflarestorage.com",
            }
        },
    )
    target = S3Target.from_settings(s)
    assert target.verify_tls is True
