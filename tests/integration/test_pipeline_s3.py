"""The daemon end to end on a real S3 server (SeaweedFS), through the CLI."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import random
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from akoshad.manifest.layout import validate_manifest
from tests.helpers import akoshad, changed_paths, start_daemon
from tests.integration.test_pipeline_local import Setup, _assert_restored_equals
from tests.s3server import WeedServer
from tests.storegen import make_store


class S3Setup(Setup):
    def __init__(self, tmp: Path, s3: WeedServer, system_id: str, **cs: Any) -> None:
        self.s3 = s3
        self.system_id = system_id
        super().__init__(tmp, cloud_sync=s3.cloud_sync(system_id, **cs))

    def manifests(self) -> list[dict[str, Any]]:  # type: ignore[override]
        c = self.s3.client()
        out = []
        for key in sorted(self.s3.keys(f"systems/{self.system_id}/uploads/")):
            if key.endswith("/manifest.json"):
                out.append(json.loads(c.get_object(Bucket=self.s3.bucket, Key=key)["Body"].read()))
        return out

    def object_count(self) -> int:
        return len(self.s3.keys(f"systems/{self.system_id}/"))


@pytest.fixture
def s(tmp_path: Path, s3: WeedServer, system_id: str) -> S3Setup:
    setup = S3Setup(tmp_path, s3, system_id)
    make_store(setup.store)
    return setup


MiB = 1024 * 1024


def test_once_restore_and_dedupe(s: S3Setup, tmp_path: Path) -> None:
    res = s.once()
    assert res.returncode == 0, res.stderr
    (m,) = s.manifests()
    assert validate_manifest(m) == []
    assert len(m["metadata"]["files"]) == 8
    assert m["metadata"]["format"] == 2
    comps = {c["compression"] for f in m["metadata"]["files"] for c in f["chunks"]}
    assert "zstd" in comps and comps <= {"zstd", "none"}  # each chunk compressed on its own
    restored = tmp_path / "restored"
    s.cli("restore", "--latest", "--dest", str(restored), check=True)
    _assert_restored_equals(s.store, restored)
    res = s.cli("verify")
    assert res.returncode == 0, res.stdout
    assert (
        f"ledger: 8 file(s) checked against upload {m['metadata']['upload_id']}, ok" in res.stdout
    )
    objects = s.object_count()
    assert s.once().returncode == 0  # unchanged: no upload
    assert s.object_count() == objects
    (s.store / "akosha_sync_state.json").write_text('{"changed": 1}')
    assert s.once().returncode == 0
    previous, last = s.manifests()[-2:]
    assert changed_paths(previous, last) == {"akosha_sync_state.json"}
    assert last["files"] == [] and last["metadata"]["format"] == 2
    assert len(last["metadata"]["files"]) == 8
    assert s.object_count() == objects + 2  # a pack with its chunk and the manifest
    assert s.cli("verify", "--all").returncode == 0


def test_restore_on_a_new_machine(s: S3Setup, tmp_path: Path) -> None:
    s.once()
    (tmp_path / "new-machine").mkdir()
    fresh = S3Setup(tmp_path / "new-machine", s.s3, s.system_id)
    restored = tmp_path / "r"
    res = fresh.cli("restore", "--latest", "--dest", str(restored))
    assert res.returncode == 0, res.stderr
    _assert_restored_equals(s.store, restored)


def test_verify_and_restore_leave_a_running_upload_alone(s: S3Setup, tmp_path: Path) -> None:
    """A daemon's multipart upload in progress survives ``verify`` and ``restore``."""
    assert s.once().returncode == 0
    running = s.s3.client().create_multipart_upload(
        Bucket=s.s3.bucket, Key=f"systems/{s.system_id}/uploads/in-progress/big.bin"
    )
    assert s.cli("verify").returncode == 0
    assert s.cli("restore", "--latest", "--dest", str(tmp_path / "r")).returncode == 0
    left = [u["UploadId"] for u in s.s3.multipart_uploads(f"systems/{s.system_id}/")]
    assert left == [running["UploadId"]]
    (s.store / "akosha_sync_state.json").write_text('{"changed": 2}')
    assert s.once().returncode == 0  # an uploading start cleans it up
    assert s.s3.multipart_uploads(f"systems/{s.system_id}/") == []


def test_a_large_new_file_is_read_once_sent_and_verified(s: S3Setup, tmp_path: Path) -> None:
    """Over IN_PLACE_MIN_BYTES and new: not copied, not hashed before sending; the SHA-256
    taken while it was sent is the manifest's, and restore gives the same bytes back."""
    big = s.store / "big.bin"
    with big.open("wb") as fh:
        for _ in range(65):
            fh.write(os.urandom(1024 * 1024))
    res = s.once()
    assert res.returncode == 0, res.stderr
    entry = next(f for f in s.manifests()[-1]["metadata"]["files"] if f["path"] == "big.bin")
    assert entry["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert "chunk_list" in entry  # about 260 chunks: a shared chunk list
    packs = s.s3.keys(f"systems/{s.system_id}/packs/")
    sizes = []
    for key in packs:
        head = s.s3.client().head_object(Bucket=s.s3.bucket, Key=key, ChecksumMode="ENABLED")
        sizes.append(head["ContentLength"])
        # one PUT per pack, checked by the server with the CRC32 its writer computed
        body = s.s3.client().get_object(Bucket=s.s3.bucket, Key=key)["Body"].read()
        crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        assert head["ChecksumCRC32"] == crc
    # 65 MiB of noise in packs sealed once they pass 16 MiB (a chunk is at most 1 MiB):
    # 4 or 5 of them, as the chunk boundaries fall; all but the last one full
    assert sum(sizes) >= 65 * MiB and len(packs) in (4, 5), sizes
    assert all(n < 17 * MiB for n in sizes) and sum(n >= 16 * MiB for n in sizes) >= len(sizes) - 1
    res = s.cli("verify")
    assert res.returncode == 0 and "ledger: 9 file(s) checked" in res.stdout, res.stdout
    restored = tmp_path / "r"
    s.cli("restore", "--latest", "--dest", str(restored), check=True)
    assert (restored / "big.bin").read_bytes() == big.read_bytes()


def _big_text(path: Path, lines: int) -> None:
    """Text of random words (compressible, content-defined chunks like a log's)."""
    rng = random.Random(3)
    words = [rng.randbytes(4).hex() for _ in range(4096)]
    with path.open("w") as fh:
        for _ in range(lines // 10_000):
            fh.write("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(10_000)))


def test_a_large_file_changed_in_the_middle_rewrites_one_or_two_chunk_list_parts(
    s: S3Setup, tmp_path: Path
) -> None:
    """A file of about 350 chunks has its chunk list split into parts (``chunk_parts``):
    a change in its middle writes the top-level list and the part(s) around the change,
    not the whole list; verify and restore read the split list back from S3."""
    big = s.store / "transcript.log"
    _big_text(big, 840_000)  # about 90 MiB
    assert s.once().returncode == 0
    prefix = f"systems/{s.system_id}/chunklists/"
    lists = set(s.s3.keys(prefix))
    entry = next(f for f in s.manifests()[-1]["metadata"]["files"] if f["path"] == big.name)
    c = s.s3.client()
    top_key = entry["chunk_list"]["key"]
    body = c.get_object(Bucket=s.s3.bucket, Key=top_key)["Body"].read()
    top = json.loads(gzip.decompress(body))
    assert (
        set(top) == {"parts"}
        and len(top["parts"]) >= 4
        and set(lists) >= {p["key"] for p in top["parts"]}
    )
    with big.open("r+b") as fh:  # the same size, 1 KiB in the middle changed
        fh.seek(big.stat().st_size // 2)
        fh.write(b"#" * 1024)
    assert s.once().returncode == 0
    written = set(s.s3.keys(prefix)) - lists
    entry2 = next(f for f in s.manifests()[-1]["metadata"]["files"] if f["path"] == big.name)
    assert entry2["chunk_list"]["key"] in written and 2 <= len(written) <= 3, written
    res = s.cli("verify")
    assert res.returncode == 0, res.stdout + res.stderr
    restored = tmp_path / "r"
    s.cli("restore", "--latest", "--dest", str(restored), "--path", big.name, check=True)
    assert (restored / big.name).read_bytes() == big.read_bytes()


def test_verify_detects_a_damaged_object(s: S3Setup) -> None:
    s.once()
    m = s.manifests()[-1]
    victim = next(f for f in m["metadata"]["files"] if f["path"] == "akosha_sync_state.json")
    pack = victim["chunks"][0]["key"]  # the pack holding its chunk
    s.s3.client().put_object(Bucket=s.s3.bucket, Key=pack, Body=b"tampered")
    res = s.cli("verify")
    assert res.returncode == 1 and "akosha_sync_state.json" in res.stdout


def test_bad_credentials_one_clear_line(tmp_path: Path, s3: WeedServer, system_id: str) -> None:
    bad = S3Setup(tmp_path, s3, system_id, secret_access_key="definitely-wrong-secret-123")
    make_store(bad.store)
    t0 = time.monotonic()
    res = bad.once()
    assert res.returncode == 1
    assert time.monotonic() - t0 < 20  # no retry storm
    assert "Traceback" not in res.stderr
    assert "definitely-wrong-secret-123" not in res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if "ERROR" in line]
    assert errors and all("\n" not in e for e in errors)
    assert any("access_key_id" in e or "credentials" in e for e in errors)


def test_credentials_broken_by_an_edit_fail_a_run_that_has_nothing_to_send(
    s: S3Setup, tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """The store backed up, then the secret mistyped in the configuration: ``run --once``
    finds nothing changed, but the target refuses it. That is exit 1 with the reason, not
    "nothing changed" and 0 (a check after the edit would have looked like a working
    backup); set right again, 0."""
    assert s.once().returncode == 0
    bad = S3Setup(tmp_path, s3, system_id, secret_access_key="mistyped-secret-456")
    res = bad.once()
    assert res.returncode == 1, res.stderr
    assert "nothing changed, but the target failed" in res.stderr
    assert "mistyped-secret-456" not in res.stdout + res.stderr
    good = S3Setup(tmp_path, s3, system_id)
    res = good.once()
    assert res.returncode == 0, res.stderr
    assert len(good.manifests()) == 1  # nothing was sent again


def test_missing_bucket_one_clear_line(tmp_path: Path, s3: WeedServer, system_id: str) -> None:
    bad = S3Setup(tmp_path, s3, system_id, cloud_bucket="no-such-bucket-here")
    make_store(bad.store)
    res = bad.once()
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "no-such-bucket-here" in res.stderr and "does not exist" in res.stderr


def test_kill_9_mid_upload_then_converges(s: S3Setup, tmp_path: Path) -> None:
    big = s.store / "big.bin"
    big.write_bytes(os.urandom(150 * 1024 * 1024))
    proc = start_daemon(s.config, s.env, tmp_path / "d.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not s.s3.keys(f"systems/{s.system_id}/packs/"):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert s.s3.keys(f"systems/{s.system_id}/packs/"), "no pack landed before the kill"
    assert not any(  # killed mid-way: the big file's upload has no manifest yet
        "big.bin" in {f["path"] for f in m["metadata"].get("files", [])} for m in s.manifests()
    )
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert s.s3.multipart_uploads(f"systems/{s.system_id}/") == []
    last = s.manifests()[-1]
    assert "big.bin" in {f["path"] for f in last["metadata"]["files"]}
    restored = tmp_path / "r"
    s.cli("restore", "--latest", "--dest", str(restored), check=True)
    assert (restored / "big.bin").read_bytes() == big.read_bytes()


def test_keys_rotated_by_a_reload_say_a_restart_is_needed(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """Keys rotated in the configuration, then ``systemctl reload``: the running client
    keeps the previous keys until a restart. ``status`` must say so (else, once the old
    keys are revoked, it only says "check the keys", which the file has right), and
    neither key may reach the log."""
    import signal

    import yaml

    from tests.helpers import daemon_config, stop_daemon, wait_for

    cfg, env = daemon_config(tmp_path, system_id, cloud_sync=s3.cloud_sync(system_id))
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    rotated = "rotated-secret-that-must-never-leak-77"
    try:
        wait_for(lambda: s3.keys(f"systems/{system_id}/uploads/"), 30)
        tree = yaml.safe_load(cfg.read_text())
        tree["cloud_sync"].update(access_key_id="AKIAROTATED", secret_access_key=rotated)
        cfg.write_text(yaml.safe_dump(tree))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), 10)
        res = akoshad("status", "--json", "--config", str(cfg), env=env)
        status = json.loads(res.stdout)
        assert any("cloud_sync" in w and "restart" in w for w in status["warnings"]), status
        human = akoshad("status", "--config", str(cfg), env=env).stdout
        assert "restart" in human
    finally:
        stop_daemon(proc)
    text = log.read_text()
    assert rotated not in text and s3.secret_key not in text
