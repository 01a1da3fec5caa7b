"""One writer per system id and prune on a real S3 server (SeaweedFS), through the CLI:
a second machine configured with the same system_id is refused and leaves the owner's
multipart uploads alone; the owner cleans them up and prunes."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import akoshad, base_env, write_config
from tests.integration.test_pipeline_local import _assert_restored_equals
from tests.s3server import WeedServer
from tests.storegen import make_store

HOST = socket.gethostname()


class Machine:
    def __init__(self, tmp: Path, name: str, s3: WeedServer, system_id: str) -> None:
        self.state = tmp / f"state-{name}"
        self.env = base_env(tmp / "home")
        self.config = write_config(
            tmp / f"{name}.yaml",
            data_dir=str(tmp / "store"),
            state_dir=str(self.state),
            local_target_dir=str(tmp / f"outbox-{name}"),
            socket_path=str(tmp / f"{name}.sock"),
            retention={"keep_last": 2, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0},
            cloud_sync=s3.cloud_sync(system_id),
        )

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(self.config), env=self.env, check=check)


def manifests(s3: WeedServer, system_id: str) -> list[str]:
    keys = s3.keys(f"systems/{system_id}/uploads/")
    return sorted(k.split("/")[3] for k in keys if k.endswith("/manifest.json"))


def owner(s3: WeedServer, system_id: str) -> dict[str, Any]:
    body = s3.client().get_object(Bucket=s3.bucket, Key=f"systems/{system_id}/owner.json")
    return dict(json.loads(body["Body"].read()))


def test_non_owner_is_refused_leaves_multipart_uploads_and_the_owner_prunes(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    make_store(tmp_path / "store")
    a, b = Machine(tmp_path, "a", s3, system_id), Machine(tmp_path, "b", s3, system_id)
    res = a.cli("run", "--once")
    assert res.returncode == 0, res.stderr
    assert owner(s3, system_id)["owner_id"] == (a.state / "owner_id").read_text().strip()

    # the owner's upload in progress: a multipart upload under its prefix
    key = f"systems/{system_id}/uploads/inflight/big.bin"
    s3.client().create_multipart_upload(Bucket=s3.bucket, Key=key)
    refused = b.cli("run", "--once")
    assert refused.returncode == 1 and HOST in refused.stderr
    assert "akoshad takeover" in refused.stderr
    assert [u["Key"] for u in s3.multipart_uploads(f"systems/{system_id}/")] == [key]
    assert len(manifests(s3, system_id)) == 1
    assert b.cli("prune").returncode == 1  # prune never runs on a non-owner
    as_json = b.cli("prune", "--json")  # and says so in the JSON a script reads
    assert as_json.returncode == 1
    said = json.loads(as_json.stdout)
    assert said["ok"] is False and HOST in said["problems"][0], said

    for n in range(3):
        (tmp_path / "store" / "notes.txt").write_text(f"version {n}\n")
        assert a.cli("run", "--once").returncode == 0
    assert s3.multipart_uploads(f"systems/{system_id}/") == []  # the owner cleaned up
    ids = manifests(s3, system_id)
    assert len(ids) == 4
    # a multipart upload no pass owns (a lost reply to its create): the daemon's start
    # aborts such leftovers, and so does the owner's prune (a daemon may run for months)
    left = f"systems/{system_id}/uploads/lost/part.bin"
    s3.client().create_multipart_upload(Bucket=s3.bucket, Key=left)
    dry = json.loads(a.cli("prune", "--dry-run", "--json", check=True).stdout)
    assert sorted(dry["uploads_removed"]) == ids[:2] and manifests(s3, system_id) == ids
    assert [u["Key"] for u in s3.multipart_uploads(f"systems/{system_id}/")] == [left]
    done = json.loads(a.cli("prune", "--json", check=True).stdout)
    assert done["ok"] is True and sorted(done["uploads_removed"]) == ids[:2]
    assert done["multipart_aborted"] == 1 and s3.multipart_uploads(f"systems/{system_id}/") == []
    assert "bucket_versioning" not in done  # an unversioned bucket: the bytes are freed
    assert manifests(s3, system_id) == ids[2:]
    assert s3.keys(f"systems/{system_id}/owner.json")  # never pruned
    res = a.cli("verify", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    restored = tmp_path / "restored"
    a.cli("restore", "--latest", "--dest", str(restored), check=True)
    _assert_restored_equals(tmp_path / "store", restored)


VERSIONED_BUCKET = "akoshad-versioned"


def test_a_prune_in_a_versioned_bucket_says_the_bytes_are_not_freed(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """With versioning on, a delete only hides an object behind a delete marker: the bytes
    stay stored (and billed) as noncurrent versions. The prune must not let the user
    believe it freed them."""
    client = s3.client()
    taken = (client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists)
    with contextlib.suppress(*taken):
        client.create_bucket(Bucket=VERSIONED_BUCKET)
    client.put_bucket_versioning(
        Bucket=VERSIONED_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )
    make_store(tmp_path / "store")
    a = Machine(tmp_path, "a", s3, system_id)
    a.config = write_config(
        tmp_path / "versioned.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(a.state),
        local_target_dir=str(tmp_path / "outbox-a"),
        socket_path=str(tmp_path / "a.sock"),
        retention={"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0},
        cloud_sync=s3.cloud_sync(system_id, cloud_bucket=VERSIONED_BUCKET),
    )
    for n in range(2):
        (tmp_path / "store" / "notes.txt").write_text(f"version {n}\n" * 1000)
        assert a.cli("run", "--once").returncode == 0
    done = json.loads(a.cli("prune", "--json", check=True).stdout)
    assert done["ok"] is True and len(done["uploads_removed"]) == 1
    assert done["bytes_freed"] > 0
    versions = client.list_object_versions(Bucket=VERSIONED_BUCKET, Prefix=f"systems/{system_id}/")
    assert any(not v["IsLatest"] for v in versions.get("Versions", []))  # still stored
    assert done["bucket_versioning"] == "Enabled"
    text = a.cli("prune").stdout
    assert "versioning" in text and "noncurrent" in text and "lifecycle" in text
